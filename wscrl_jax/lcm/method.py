"""The WS-CRL methods (ILCM, dVAE, beta-VAE) behind the loop's `Method` interface.

Reference: `experiments/scaling.py` (training loop, phases, schedules) with the model configs
`config/model/scaling_*.yaml`. The config's `model.type` picks the model: an ILCM (whose
`model.scm.adjacency_matrix` picks the ILCM, the dVAE or a fixed order) or the beta-VAE.
"""

import logging
from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from wscrl_jax.causal.learned_graphs import GRAPH_KINDS
from wscrl_jax.data.causalcircuit.codes import load_codes
from wscrl_jax.data.own_pairs import load_pairs, make_pairs_data
from wscrl_jax.data.scaling import make_scaling_data
from wscrl_jax.lcm import config as lcm_config
from wscrl_jax.lcm.betavae import BetaVAE
from wscrl_jax.lcm.config import ADJACENCY_TO_STRUCTURE, SCHEDULED_WEIGHTS, TRUE_GRAPHS
from wscrl_jax.lcm.elcm import ELCM
from wscrl_jax.lcm.evaluate import compile_lcm_evaluation, evaluate_lcm_members
from wscrl_jax.lcm.graphs import solution_orders
from wscrl_jax.lcm.ilcm import ILCM
from wscrl_jax.lcm.objective import total_loss
from wscrl_jax.lcm.phases import LossWeights, Phase
from wscrl_jax.train.distributed import to_host
from wscrl_jax.train.method import Method, RunOptions
from wscrl_jax.train.optim import torch_adam
from wscrl_jax.train.schedules import (is_identically_zero, lr_schedule, optimizer_reset_epochs,
                                       step_schedule)

log = logging.getLogger("wscrl_jax")
def image_net_settings(model_cfg, resolution: int):
    """`PairAutoencoder.image_encoder` / `image_decoder` of conv `model.encoder` /
    `model.decoder` configs (the decoder inverts the encoder's permutation, as the reference)."""
    enc, dec = model_cfg.encoder, model_cfg.decoder

    def common(g):
        return dict(resolution=resolution, hidden_channels=g.hidden_channels,
                    mlp_layers=g.extra_mlp_layers, mlp_hidden=g.extra_mlp_hidden_units,
                    min_std=g.min_std, coord=g.coordinate_embeddings,
                    elementwise_layers=g.elementwise_layers,
                    elementwise_hidden=g.elementwise_hidden_units, permutation=enc.permutation)
    return (tuple(sorted(common(enc).items())),
            tuple(sorted(dict(common(dec), fix_std=dec.fix_std).items())))


def build_module(model_cfg, dim_x: int, dim_z: int, resolution: int = 0):
    """The Flax model of `config.model`: an `ILCM`, a `BetaVAE` or an `ELCM` (with the image
    VAE's networks where the encoder is `conv`, on resolution x resolution images)."""
    enc, dec = model_cfg.encoder, model_cfg.decoder
    if enc.type == "conv":
        image_encoder, image_decoder = image_net_settings(model_cfg, resolution)
        common = dict(dim_x=dim_x, dim_z=dim_z, image_encoder=image_encoder,
                      image_decoder=image_decoder)
    else:
        common = dict(
            dim_x=dim_x, dim_z=dim_z,
            encoder_hidden=(enc.hidden_units,) * enc.hidden_layers, encoder_std=enc.std,
            encoder_min_std=enc.min_std, encoder_fix_std=enc.fix_std,
            decoder_hidden=(dec.hidden_units,) * dec.hidden_layers, decoder_std=dec.std,
            decoder_min_std=dec.min_std, decoder_fix_std=dec.fix_std)
    scm, ienc = model_cfg.scm, model_cfg.intervention_encoder
    if model_cfg.type == "causal_vae" and scm.type == "unstructured":
        return BetaVAE(**common)
    if model_cfg.type == "causal_vae":
        return ELCM(**common, graph_kind=scm.adjacency_matrix,
                    scm_hidden=(scm.hidden_units,) * scm.hidden_layers,
                    scm_homoskedastic=scm.homoskedastic, scm_min_std=scm.min_std)
    return ILCM(**common,
                scm_hidden=(scm.hidden_units,) * scm.hidden_layers,
                scm_homoskedastic=scm.homoskedastic, scm_min_std=scm.min_std,
                scm_transform=scm.transform, scm_spline_bins=scm.spline_bins,
                scm_spline_bound=scm.spline_bound,
                causal_structure=ADJACENCY_TO_STRUCTURE[scm.adjacency_matrix],
                intervention_encoder=ienc.type,
                intervention_encoder_hidden=(ienc.hidden_units,) * ienc.hidden_layers,
                averaging_strategy=model_cfg.averaging_strategy,
                fix_entropy_weighting=model_cfg.fix_entropy_weighting,
                graph_kind=(scm.adjacency_matrix if scm.adjacency_matrix in GRAPH_KINDS
                            else None))


class LCMMethod(Method):
    """Weakly supervised latent causal models on pairs (x1, x2)."""

    def __init__(self, config):
        super().__init__(config)
        self.dim_z = config.data.dim_z
        self.dim_x = self.observation_dim(config.data)
        self.module = build_module(config.model, self.dim_x, self.dim_z,
                                   self.image_resolution(config.data))
        tr = config.training
        self._schedules = {name: step_schedule(tr[f"{name}_schedule"], tr.epochs)
                           for name in SCHEDULED_WEIGHTS + ("manifold_thickness",)}
        self._need_regularizers = not (is_identically_zero(tr.z_regularization_schedule)
                                       and is_identically_zero(
                                           tr.consistency_regularization_schedule))
        self._need_inverse = not is_identically_zero(
            tr.inverse_consistency_regularization_schedule)
        self._lr = lr_schedule(tr.lr_schedule, tr.epochs)
        # ILCM and dVAE on vectors: their phases after pretraining draw per intervention target
        # and compile 0.5-1.5 s shorter and step 1.1-1.5x faster with the hash as a loop on a
        # CPU (docs/performance.md); pretraining, beta-VAE and image models keep it unrolled
        rolled = isinstance(self.module, ILCM) and self.module.image_encoder is None
        # evaluation is vmapped over members (lcm/evaluate.py)
        self.options = RunOptions(train_inputs=("x1", "x2"), evaluates_padding=True,
                                  member_loop=tr.member_loop,
                                  optimizer_reset_epochs=optimizer_reset_epochs(
                                      tr.lr_schedule, tr.epochs),
                                  rolled_hash=_after_pretraining if rolled else
                                  RunOptions.rolled_hash)
        fix = tr.fix_topological_order_epoch
        self._fix_order_epoch = fix if fix is not None and fix < tr.epochs else None
        # ILCM and dVAE: the graph evaluations read their solution functions
        self.has_solution_functions = config.model.type == "intervention_noise_vae"
        # ILCM with a learned graph, ELCM: the graph kind it trains (else None)
        self.graph_kind = getattr(self.module, "graph_kind", None)

    @staticmethod
    def observation_dim(data_cfg) -> int:
        """Features of one observation: `data.dim_x`, or own pairs' from their files."""
        if data_cfg.dataset == "pairs":
            return load_pairs(data_cfg.path, data_cfg.dim_z,
                              data_cfg.get("source", "npz")).dim_x
        return data_cfg.dim_x

    @staticmethod
    def image_resolution(data_cfg) -> int:
        """Side of the image observations (0: vector observations)."""
        del data_cfg
        return 0

    # ------------------------------------------------------------------ config
    @classmethod
    def validate_config(cls, c):
        """A scaling config (configs/scaling.py) at one grid point: every key the model, the
        data, the schedules and the evaluation read (`lcm/config.py`; the sweep is
        `methods.validate_config`'s)."""
        cls.check_data(c)
        cls.check_model_and_training(c)

    @classmethod
    def check_data(cls, c):
        lcm_config.check_data(c)

    @classmethod
    def check_network(cls, g, name: str):
        lcm_config.check_network(g, name)

    @classmethod
    def check_model_and_training(cls, c):
        lcm_config.check_model_and_training(c, cls.check_network)

    # ------------------------------------------------------------------ data and init
    def make_data(self, data_seed: int) -> Dict[str, Dict[str, jnp.ndarray]]:
        """The scaling data of `data_seed`, the stage-1 codes (the same for every seed), or own
        pairs (`data_seed`: the split seed of one file)."""
        d = self.config.data
        if d.dataset == "pairs":
            return make_pairs_data(d, data_seed)
        if d.dataset == "causalcircuit_codes":
            return load_codes(d.stage1_workdir, d.stage1_member, TRUE_GRAPHS[d.true_graph])
        return make_scaling_data(d, data_seed)

    def initial_model_state(self):
        """Untrained model state: the topological order of `fixed_order` structures, and
        whether it has been fixed yet where `training.fix_topological_order_epoch` will."""
        state = {"order": jnp.arange(self.dim_z, dtype=jnp.int32)}
        if self._fix_order_epoch is not None:
            state["order_fixed"] = jnp.asarray(False)
        return state

    def end_epoch(self, state, epoch: int, stats, data):
        """At `training.fix_topological_order_epoch`: each member's topological order from its
        solution functions on the validation split (reference: `fix_topological_order` in
        `experiments/scaling.py: train`; the masked noise is zero, not the logged medians:
        ws-crl gotcha 6)."""
        del stats
        if self._fix_order_epoch is None or epoch + 1 != self._fix_order_epoch:
            return state
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(state.key, epoch)
        orders = solution_orders(self, state.params, data["val"]["x1"], keys)
        log.info("Epoch %d: topological order fixed, per member: %s", epoch + 1,
                 to_host(orders).tolist())
        ms = dict(state.model_state, order=orders.astype(jnp.int32),
                  order_fixed=jnp.ones_like(state.model_state["order_fixed"]))
        return state.replace(model_state=ms)

    def init(self, key):
        x = jnp.zeros((2, self.dim_x))
        variables = self.module.init({"params": key, "sample": key}, x, x,
                                     self.loss_weights(0.0), self.initial_model_state(),
                                     method="init_all")
        return variables["params"], self.initial_model_state()

    # ------------------------------------------------------------------ optimiser
    def make_optimizer(self):
        return torch_adam()  # the reference's torch.optim.Adam defaults

    def learning_rate(self, model_state, step, epoch):
        """The reference's per-epoch torch scheduler (`training.lr_schedule`)."""
        del model_state, step
        return self._lr(epoch)

    # ------------------------------------------------------------------ phases and schedules
    def phase_for_epoch(self, epoch: int) -> Phase:
        tr = self.config.training
        pretrain = tr.pretrain_epochs is not None and epoch < tr.pretrain_epochs
        after = tr.model_interventions_after_epoch
        deterministic = tr.deterministic_intervention_encoder_after_epoch
        g = tr.graph_sampling
        final = g.final.freeze_epoch is not None and epoch >= g.final.freeze_epoch
        sampling = g.final if final else g
        return Phase(pretrain=bool(pretrain),
                     graph_mode=sampling.mode, graph_temperature=float(sampling.temperature),
                     graph_samples=int(sampling.samples),
                     graph_frozen=bool(final or epoch < g.initial.unfreeze_epoch),
                     model_interventions=after is None or epoch >= after,
                     deterministic_encoder=deterministic is not None and epoch >= deterministic,
                     need_regularizers=self._need_regularizers,
                     need_inverse_consistency=self._need_inverse,
                     full_likelihood=tr.full_likelihood,
                     likelihood_reduction=tr.likelihood_reduction)

    def loss_weights(self, fractional_epoch) -> LossWeights:
        s = {name: fn(fractional_epoch) for name, fn in self._schedules.items()}
        tr = self.config.training
        return LossWeights(
            beta=s["beta"], beta_intervention=tr.increase_intervention_beta * s["beta"],
            pretrain_beta=jnp.asarray(tr.pretrain_beta, jnp.float32),
            z_regularization=s["z_regularization"], consistency=s["consistency_regularization"],
            inverse_consistency=s["inverse_consistency_regularization"],
            intervention_entropy=s["intervention_entropy_regularization"],
            intervention_offset=s["intervention_encoder_offset"],
            edge=s["edge_regularization"], cyclicity=s["cyclicity_regularization"],
            manifold_thickness=s["manifold_thickness"])

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

    def encode_to_noise(self, params, x):
        """Noise codes (encoder means) [N, dim_z] of observations x [N, dim_x]."""
        return self.module.apply({"params": params}, x, method="encode_to_noise")

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, params, model_state, data, keys, initial_params, *, real, progress,
                 compile_only=False):
        """Every member at once (`lcm/evaluate.py`); the untrained model is not evaluated."""
        del initial_params
        if compile_only:
            compile_lcm_evaluation(self, params, model_state, data, keys)
            return []
        return evaluate_lcm_members(self, params, model_state, data, keys, real=real,
                                    progress=progress)

    def summary(self, rows: List[Dict[str, float]]) -> str:
        """"causal disentanglement = 0.94" (one member) or the median over members, with the
        noise disentanglement where the run knows the true noise (CausalCircuit); the IWAE NLL
        where the data have no true causal variables (own pairs without z1)."""
        def part(key, name):
            values = [r[key] for r in rows if key in r]
            return f"{name} = {float(np.nanmedian(values)):.2f}" if values else None

        parts = [p for p in (part("causal_disentanglement", "causal disentanglement"),
                             part("noise_disentanglement", "noise disentanglement")) if p]
        if not parts:
            parts = [p for p in [part("nll", "IWAE NLL")] if p]
        text = ", ".join(parts)
        if len(rows) > 1:
            text += f" (median{'s' if len(parts) > 1 else ''} of {len(rows)} members)"
        return text


def _after_pretraining(phase: Phase) -> bool:
    return not phase.pretrain
