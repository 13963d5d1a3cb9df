"""The WS-CRL methods (ILCM, dVAE, beta-VAE) behind the loop's method interface.

A method tells the loop how to make its data, init its parameters, which static phase an
epoch is in, the scheduled amounts of a step, and its loss; it evaluates a trained member.
"""

from typing import Dict

import jax.numpy as jnp

from wscrl_jax.data.scaling import make_scaling_data
from wscrl_jax.eval.lcm_eval import evaluate_lcm
from wscrl_jax.models.betavae import BetaVAE
from wscrl_jax.models.ilcm import ILCM
from wscrl_jax.models.objective import total_loss
from wscrl_jax.models.phase import Amounts, Phase
from wscrl_jax.train.schedules import is_identically_zero, step_schedule

MODEL_TYPES = ("intervention_noise_vae", "causal_vae")
ADJACENCY_TO_STRUCTURE = {"none": "none", "none_trivial": "trivial",
                          "none_fixed_order": "fixed_order"}


def build_module(model_cfg, dim_x: int, dim_z: int):
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


class LCMMethod:
    """Weakly supervised latent causal models on pairs (x1, x2)."""

    train_split = "train"
    train_inputs = ("x1", "x2")

    def __init__(self, config):
        self.config = config
        self.dim_z = config.data.dim_z
        self.dim_x = config.data.dim_x
        self.module = build_module(config.model, self.dim_x, self.dim_z)
        tr = config.training
        self._schedules = {name: step_schedule(tr[f"{name}_schedule"], tr.epochs) for name in (
            "beta", "z_regularization", "consistency_regularization",
            "inverse_consistency_regularization", "intervention_entropy_regularization",
            "intervention_encoder_offset")}
        self._need_regularizers = not (is_identically_zero(tr.z_regularization_schedule)
                                       and is_identically_zero(
                                           tr.consistency_regularization_schedule))
        self._need_inverse = not is_identically_zero(
            tr.inverse_consistency_regularization_schedule)

    # ------------------------------------------------------------------ data and init
    def make_data(self, data_seed: int) -> Dict[str, Dict[str, jnp.ndarray]]:
        return make_scaling_data(self.config.data, data_seed)

    def init_model_state(self):
        """Untrained model state: the topological order of `fixed_order` structures."""
        return {"order": jnp.arange(self.dim_z, dtype=jnp.int32)}

    def init(self, key):
        x = jnp.zeros((2, self.dim_x))
        variables = self.module.init({"params": key, "sample": key}, x, x, self.amounts(0.0),
                                     self.init_model_state(), method="init_all")
        return variables["params"]

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

    def amounts(self, fractional_epoch) -> Amounts:
        s = {name: fn(fractional_epoch) for name, fn in self._schedules.items()}
        tr = self.config.training
        return Amounts(
            beta=s["beta"], beta_intervention=tr.increase_intervention_beta * s["beta"],
            pretrain_beta=jnp.asarray(tr.pretrain_beta, jnp.float32),
            z_regularization=s["z_regularization"], consistency=s["consistency_regularization"],
            inverse_consistency=s["inverse_consistency_regularization"],
            intervention_entropy=s["intervention_entropy_regularization"],
            intervention_offset=s["intervention_encoder_offset"])

    # ------------------------------------------------------------------ loss
    def loss(self, params, model_state, batch, weights, key, amounts: Amounts, phase: Phase):
        """Scalar loss and scalar metrics for one batch (x1, x2 [B, dim_x]; weights [B])."""
        loss_b, outputs = self.module.apply({"params": params}, batch["x1"], batch["x2"], amounts,
                                            phase, model_state, rngs={"sample": key})
        loss = total_loss(loss_b, outputs, weights, amounts)
        return loss, {"loss": loss}

    def per_sample(self, params, model_state, x1, x2, key, amounts, phase):
        """(loss_b [B], outputs) for evaluation."""
        return self.module.apply({"params": params}, x1, x2, amounts, phase, model_state,
                                 rngs={"sample": key})

    def encode_to_causal(self, params, model_state, x):
        return self.module.apply({"params": params}, x, model_state, method="encode_to_causal")

    def evaluate(self, params, model_state, data, key) -> Dict[str, float]:
        return evaluate_lcm(self, params, model_state, data, key)

