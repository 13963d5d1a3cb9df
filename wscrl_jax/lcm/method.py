"""The WS-CRL methods (ILCM, dVAE, beta-VAE) behind the loop's `Method` interface.

Reference: `experiments/scaling.py` (training loop, phases, schedules) with the model configs
`config/model/scaling_*.yaml`. The config's `model.type` picks the model: an ILCM (whose
`model.scm.adjacency_matrix` picks the ILCM, the dVAE or a fixed order) or the beta-VAE.
"""

from typing import Dict

import jax.numpy as jnp

from wscrl_jax.causal.graphs import GRAPH_MODES
from wscrl_jax.config_checks import check_shared_training, one_of, positive_int, require
from wscrl_jax.data.scaling import CAUSAL_EFFECTS, NATURE_RNGS, SPLITS, make_scaling_data
from wscrl_jax.lcm.betavae import BetaVAE
from wscrl_jax.lcm.evaluate import evaluate_lcm
from wscrl_jax.lcm.ilcm import AVERAGING_STRATEGIES, ILCM
from wscrl_jax.lcm.objective import total_loss
from wscrl_jax.lcm.phases import LossWeights, Phase
from wscrl_jax.train.method import Method
from wscrl_jax.train.optim import torch_adam
from wscrl_jax.train.schedules import (LR_SCHEDULE_TYPES, STEP_SCHEDULE_TYPES,
                                       is_identically_zero, lr_schedule, optimizer_reset_epochs,
                                       step_schedule)

MODEL_TYPES = ("intervention_noise_vae", "causal_vae")
ADJACENCY_TO_STRUCTURE = {"none": "none", "none_trivial": "trivial",
                          "none_fixed_order": "fixed_order"}
INTERVENTION_ENCODERS = ("learnable_heuristic", "mlp")
SCHEDULED_WEIGHTS = ("beta", "z_regularization", "consistency_regularization",
                     "inverse_consistency_regularization", "intervention_entropy_regularization",
                     "intervention_encoder_offset")


def build_module(model_cfg, dim_x: int, dim_z: int):
    """The Flax model of `config.model`: an `ILCM` or a `BetaVAE`."""
    enc, dec = model_cfg.encoder, model_cfg.decoder
    common = dict(
        dim_x=dim_x, dim_z=dim_z,
        encoder_hidden=(enc.hidden_units,) * enc.hidden_layers, encoder_std=enc.std,
        encoder_min_std=enc.min_std, encoder_fix_std=enc.fix_std,
        decoder_hidden=(dec.hidden_units,) * dec.hidden_layers, decoder_std=dec.std,
        decoder_min_std=dec.min_std, decoder_fix_std=dec.fix_std)
    if model_cfg.type == "causal_vae":
        return BetaVAE(**common)
    scm, ienc = model_cfg.scm, model_cfg.intervention_encoder
    return ILCM(**common,
                scm_hidden=(scm.hidden_units,) * scm.hidden_layers,
                scm_homoskedastic=scm.homoskedastic, scm_min_std=scm.min_std,
                causal_structure=ADJACENCY_TO_STRUCTURE[scm.adjacency_matrix],
                intervention_encoder=ienc.type,
                intervention_encoder_hidden=(ienc.hidden_units,) * ienc.hidden_layers,
                averaging_strategy=model_cfg.averaging_strategy,
                fix_entropy_weighting=model_cfg.fix_entropy_weighting)


class LCMMethod(Method):
    """Weakly supervised latent causal models on pairs (x1, x2)."""

    train_inputs = ("x1", "x2")
    headline_metrics = ("causal_disentanglement",)

    def __init__(self, config):
        super().__init__(config)
        self.dim_z = config.data.dim_z
        self.dim_x = config.data.dim_x
        self.module = build_module(config.model, self.dim_x, self.dim_z)
        tr = config.training
        self._schedules = {name: step_schedule(tr[f"{name}_schedule"], tr.epochs)
                           for name in SCHEDULED_WEIGHTS}
        self._need_regularizers = not (is_identically_zero(tr.z_regularization_schedule)
                                       and is_identically_zero(
                                           tr.consistency_regularization_schedule))
        self._need_inverse = not is_identically_zero(
            tr.inverse_consistency_regularization_schedule)
        self._lr = lr_schedule(tr.lr_schedule, tr.epochs)

    # ------------------------------------------------------------------ config
    @classmethod
    def validate_config(cls, c):
        one_of(c.data.dataset, ("scaling",), "data.dataset")
        positive_int(c.data.dim_z, "data.dim_z", 2)
        require(c.data.dim_x == c.data.dim_z,
                f"data.dim_x={c.data.dim_x} must equal data.dim_z={c.data.dim_z} for scaling "
                "data")
        for split in ("train", "val", "test"):
            positive_int(c.data.samples[split], f"data.samples.{split}")
        one_of(c.data.nature.mode, GRAPH_MODES, "data.nature.mode")
        one_of(c.data.nature.causal_effects, CAUSAL_EFFECTS, "data.nature.causal_effects")
        one_of(c.data.nature.rng, NATURE_RNGS, "data.nature.rng")
        require(c.data.nature.observation_noise is None or c.data.nature.observation_noise >= 0,
                "data.nature.observation_noise must be >= 0")

        m = c.model
        one_of(m.type, MODEL_TYPES, "model.type")
        if m.type == "intervention_noise_vae":
            one_of(m.scm.type, ("mlp",), "model.scm.type")
            one_of(m.scm.adjacency_matrix, tuple(ADJACENCY_TO_STRUCTURE),
                   "model.scm.adjacency_matrix")
            one_of(m.intervention_encoder.type, INTERVENTION_ENCODERS,
                   "model.intervention_encoder.type")
            one_of(m.averaging_strategy, AVERAGING_STRATEGIES, "model.averaging_strategy")
            positive_int(m.scm.hidden_units, "model.scm.hidden_units")
            positive_int(m.scm.hidden_layers, "model.scm.hidden_layers", 0)
            require(m.scm.min_std > 0, "model.scm.min_std must be > 0")
        else:
            one_of(m.scm.type, ("unstructured",), "model.scm.type")
        for name in ("encoder", "decoder"):
            one_of(m[name].type, ("mlp",), f"model.{name}.type")
            positive_int(m[name].hidden_units, f"model.{name}.hidden_units")
            positive_int(m[name].hidden_layers, f"model.{name}.hidden_layers", 1)
            require(m[name].std > m[name].min_std >= 0,
                    f"model.{name}.std must exceed model.{name}.min_std >= 0")

        t = c.training
        check_shared_training(t)
        positive_int(t.iwae_samples, "training.iwae_samples")
        one_of(t.likelihood_reduction, ("sum", "mean"), "training.likelihood_reduction")
        one_of(t.lr_schedule.type, LR_SCHEDULE_TYPES, "training.lr_schedule.type")
        for key in SCHEDULED_WEIGHTS + ("manifold_thickness",):
            one_of(t[f"{key}_schedule"].type, STEP_SCHEDULE_TYPES,
                   f"training.{key}_schedule.type")
        for key in ("freeze_encoder_epoch", "fix_topological_order_epoch"):
            require(t[key] is None or t[key] >= t.epochs,
                    f"training.{key}={t[key]} is not supported yet; leave it unset (never)")
        one_of(c.eval.eval_partition, SPLITS, "eval.eval_partition")
        one_of(c.eval.likelihood_reduction, ("sum", "mean"), "eval.likelihood_reduction")

    # ------------------------------------------------------------------ data and init
    def make_data(self, data_seed: int) -> Dict[str, Dict[str, jnp.ndarray]]:
        return make_scaling_data(self.config.data, data_seed)

    def init_model_state(self):
        """Untrained model state: the topological order of `fixed_order` structures."""
        return {"order": jnp.arange(self.dim_z, dtype=jnp.int32)}

    def init(self, key):
        x = jnp.zeros((2, self.dim_x))
        variables = self.module.init({"params": key, "sample": key}, x, x,
                                     self.loss_weights(0.0), self.init_model_state(),
                                     method="init_all")
        return variables["params"]

    # ------------------------------------------------------------------ optimiser
    def make_optimizer(self):
        return torch_adam()  # the reference's torch.optim.Adam defaults

    def learning_rate(self, model_state, step, epoch):
        """The reference's per-epoch torch scheduler (`training.lr_schedule`)."""
        del model_state, step
        return self._lr(epoch)

    def optimizer_reset_epochs(self):
        """`cosine_restarts_reset` re-initialises Adam at each restart (gotcha 29)."""
        tr = self.config.training
        return optimizer_reset_epochs(tr.lr_schedule, tr.epochs)

    # ------------------------------------------------------------------ phases and schedules
    def phase_for_epoch(self, epoch: int) -> Phase:
        tr = self.config.training
        pretrain = tr.pretrain_epochs is not None and epoch < tr.pretrain_epochs
        after = tr.model_interventions_after_epoch
        deterministic = tr.deterministic_intervention_encoder_after_epoch
        return Phase(pretrain=bool(pretrain),
                     model_interventions=after is None or epoch >= after,
                     deterministic_encoder=deterministic is not None and epoch >= deterministic,
                     need_regularizers=self._need_regularizers,
                     need_inverse_consistency=self._need_inverse,
                     full_likelihood=tr.full_likelihood,
                     likelihood_reduction=tr.likelihood_reduction)

    def describe_phase(self, phase: Phase) -> str:
        if phase.pretrain:
            return "pretraining"
        parts = ["main phase", "interventions modelled" if phase.model_interventions
                 else "interventions not modelled"]
        if phase.deterministic_encoder:
            parts.append("deterministic intervention encoder")
        return ", ".join(parts)

    def loss_weights(self, fractional_epoch) -> LossWeights:
        s = {name: fn(fractional_epoch) for name, fn in self._schedules.items()}
        tr = self.config.training
        return LossWeights(
            beta=s["beta"], beta_intervention=tr.increase_intervention_beta * s["beta"],
            pretrain_beta=jnp.asarray(tr.pretrain_beta, jnp.float32),
            z_regularization=s["z_regularization"], consistency=s["consistency_regularization"],
            inverse_consistency=s["inverse_consistency_regularization"],
            intervention_entropy=s["intervention_entropy_regularization"],
            intervention_offset=s["intervention_encoder_offset"])

    # ------------------------------------------------------------------ loss
    def loss(self, params, model_state, batch, weights, key, loss_weights: LossWeights,
             phase: Phase):
        """Scalar loss and scalar metrics for one batch (x1, x2 [B, dim_x]; weights [B])."""
        loss_b, outputs = self.per_sample(params, model_state, batch["x1"], batch["x2"], key,
                                          loss_weights, phase)
        loss = total_loss(loss_b, outputs, weights, loss_weights)
        return loss, {"loss": loss}

    def per_sample(self, params, model_state, x1, x2, key, loss_weights, phase):
        """(loss_b [B], outputs) of pairs x1, x2 [B, dim_x]."""
        return self.module.apply({"params": params}, x1, x2, loss_weights, phase, model_state,
                                 rngs={"sample": key})

    def encode_to_causal(self, params, model_state, x):
        """Causal codes [N, dim_z] of observations x [N, dim_x]."""
        return self.module.apply({"params": params}, x, model_state, method="encode_to_causal")

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, params, model_state, data, key) -> Dict[str, float]:
        return evaluate_lcm(self, params, model_state, data, key)
