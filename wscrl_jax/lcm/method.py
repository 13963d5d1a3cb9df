"""The WS-CRL methods (ILCM, dVAE, beta-VAE) behind the loop's `Method` interface.

Reference: `experiments/scaling.py` (training loop, phases, schedules) with the model configs
`config/model/scaling_*.yaml`. The config's `model.type` picks the model: an ILCM (whose
`model.scm.adjacency_matrix` picks the ILCM, the dVAE or a fixed order) or the beta-VAE.
"""

import functools
import logging
from typing import Dict

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from wscrl_jax.causal.flow_lcm import MECHANISMS, MIXINGS
from wscrl_jax.causal.graphs import GRAPH_MODES
from wscrl_jax.causal.gumbel import SAMPLING_MODES
from wscrl_jax.causal.implicit_scm import SOLUTION_TRANSFORMS
from wscrl_jax.causal.learned_graphs import GRAPH_KINDS
from wscrl_jax.config_checks import (SEED_LIMIT, ConfigError, batch_fits, boolean,
                                     check_shared_training,
                                     finite_number, is_int, one_of, optional_int, positive_int,
                                     require)
from wscrl_jax.data.causalcircuit.codes import load_codes
from wscrl_jax.data.causalcircuit.toy import TOY_GRAPH
from wscrl_jax.data.encoded import Stage1OutputMissing, read_encoded_meta
from wscrl_jax.data.scaling import CAUSAL_EFFECTS, NATURE_RNGS, SPLITS, make_scaling_data
from wscrl_jax.eval.dci import DCI_BACKENDS
from wscrl_jax.lcm.betavae import BetaVAE
from wscrl_jax.lcm.elcm import ELCM
from wscrl_jax.lcm.evaluate import evaluate_lcm_members
from wscrl_jax.lcm.graphs import solution_orders
from wscrl_jax.lcm.ilcm import AVERAGING_STRATEGIES, ILCM
from wscrl_jax.lcm.objective import total_loss
from wscrl_jax.lcm.phases import LossWeights, Phase
from wscrl_jax.train.distributed import to_host
from wscrl_jax.train.method import Method
from wscrl_jax.train.optim import torch_adam
from wscrl_jax.train.schedules import (LR_SCHEDULE_TYPES, STEP_SCHEDULE_TYPES,
                                       is_identically_zero, lr_schedule, optimizer_reset_epochs,
                                       step_schedule)

log = logging.getLogger("wscrl_jax")
MODEL_TYPES = ("intervention_noise_vae", "causal_vae")
# the scaling toy data, or the codes of a CausalCircuit stage-1 run (configs/causalcircuit.py)
DATASETS = ("scaling", "causalcircuit_codes")
TRUE_GRAPHS = {"": None, "toy": TOY_GRAPH}  # data.true_graph of stage-1 codes
ADJACENCY_TO_STRUCTURE = {"none": "none", "none_trivial": "trivial",
                          "none_fixed_order": "fixed_order",
                          **{kind: "none" for kind in GRAPH_KINDS}}  # + a learned graph
INTERVENTION_ENCODERS = ("learnable_heuristic", "mlp")
SCHEDULED_WEIGHTS = ("beta", "z_regularization", "consistency_regularization",
                     "inverse_consistency_regularization", "intervention_entropy_regularization",
                     "intervention_encoder_offset", "edge_regularization",
                     "cyclicity_regularization")


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

    train_inputs = ("x1", "x2")
    evaluates_padding = True  # evaluation is vmapped over members (lcm/evaluate.py)
    headline_metrics = ("causal_disentanglement",)

    def __init__(self, config):
        super().__init__(config)
        self.dim_z = config.data.dim_z
        self.dim_x = self.observation_dim(config.data)
        self.module = build_module(config.model, self.dim_x, self.dim_z,
                                   config.data.get("resolution", 0))
        tr = config.training
        self._schedules = {name: step_schedule(tr[f"{name}_schedule"], tr.epochs)
                           for name in SCHEDULED_WEIGHTS + ("manifold_thickness",)}
        self._need_regularizers = not (is_identically_zero(tr.z_regularization_schedule)
                                       and is_identically_zero(
                                           tr.consistency_regularization_schedule))
        self._need_inverse = not is_identically_zero(
            tr.inverse_consistency_regularization_schedule)
        self._lr = lr_schedule(tr.lr_schedule, tr.epochs)
        fix = tr.fix_topological_order_epoch
        self._fix_order_epoch = fix if fix is not None and fix < tr.epochs else None
        # ILCM and dVAE: the graph evaluations read their solution functions
        self.has_solution_functions = config.model.type == "intervention_noise_vae"
        # ILCM with a learned graph, ELCM: the graph kind it trains (else None)
        self.graph_kind = getattr(self.module, "graph_kind", None)

    @staticmethod
    def observation_dim(data_cfg) -> int:
        """Features of one observation: `data.dim_x`."""
        return data_cfg.dim_x

    # ------------------------------------------------------------------ config
    @classmethod
    def validate_config(cls, c):
        """A scaling config (configs/scaling.py) at one grid point: every key the model, the
        data, the schedules and the evaluation read (the sweep is `methods.validate_config`'s)."""
        cls.check_data(c)
        cls.check_model_and_training(c)

    @classmethod
    def check_data(cls, c):
        """`config.data`: the scaling toy data, or stage-1 codes (`causalcircuit_codes`)."""
        d = c.data
        one_of(d.dataset, DATASETS, "data.dataset")
        positive_int(d.dim_z, "data.dim_z", 2)
        if d.dataset == "causalcircuit_codes":
            require(d.stage1_workdir, "data.stage1_workdir is not set; pass the workdir of "
                    "the stage-1 run, --config.data.stage1_workdir=W1 (configs/"
                    "causalcircuit_reduce_dim.py)")
            positive_int(d.stage1_member, "data.stage1_member", 0)
            one_of(d.true_graph, tuple(TRUE_GRAPHS), "data.true_graph")
            try:
                meta = read_encoded_meta(d.stage1_workdir)
                members, latent = len(meta["members"]), int(meta["latent_dim"])
                n_train, source = int(meta["splits"]["train"]), meta.get("source")
            except Stage1OutputMissing as e:
                raise ConfigError(str(e).replace("configs/md_mixing.py:poly_stage1",
                                                 "configs/causalcircuit_reduce_dim.py")) from None
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"data.stage1_workdir={d.stage1_workdir!r} holds unreadable "
                                  f"stage-1 metadata (encoded/meta.json: {e!r}); rerun stage 1"
                                  ) from None
            require(source == "causalcircuit", f"data.stage1_workdir={d.stage1_workdir!r} "
                    f"holds {source or 'mixing'} codes; point it at a "
                    "configs/causalcircuit_reduce_dim.py run")
            require(d.stage1_member < members, f"data.stage1_member={d.stage1_member} is out "
                    f"of range: stage 1 has {members} member(s)")
            require(d.dim_x == latent, f"data.dim_x={d.dim_x} must equal the stage-1 code "
                    f"dimension {latent} (model.dim_z of the stage-1 run)")
            batch_fits(c.training.batchsize, n_train,
                       f"the stage-1 training split in {d.stage1_workdir}/encoded/meta.json")
            return
        require(d.dim_x == d.dim_z,
                f"data.dim_x={d.dim_x} must equal data.dim_z={d.dim_z} for scaling data")
        for split in ("train", "val", "test"):
            positive_int(d.samples[split], f"data.samples.{split}")
        one_of(d.nature.mode, GRAPH_MODES, "data.nature.mode")
        one_of(d.nature.causal_effects, CAUSAL_EFFECTS, "data.nature.causal_effects")
        one_of(d.nature.rng, NATURE_RNGS, "data.nature.rng")
        one_of(d.nature.mechanisms, MECHANISMS, "data.nature.mechanisms")
        one_of(d.mixing, MIXINGS, "data.mixing")
        finite_number(d.nature.manifold_thickness, "data.nature.manifold_thickness", 0)
        finite_number(d.nature.observation_noise, "data.nature.observation_noise", 0,
                      allow_none=True, unset="no noise")
        batch_fits(c.training.batchsize, d.samples.train, "data.samples.train")

    @classmethod
    def check_network(cls, g, name: str):
        """`model.encoder` / `model.decoder`: the Gaussian MLP."""
        one_of(g.type, ("mlp",), f"model.{name}.type")
        positive_int(g.hidden_units, f"model.{name}.hidden_units")
        positive_int(g.hidden_layers, f"model.{name}.hidden_layers", 1)
        finite_number(g.min_std, f"model.{name}.min_std", 0)
        finite_number(g.std, f"model.{name}.std", 0, exclusive=True)
        require(g.std > g.min_std, f"model.{name}.std={g.std!r} must exceed "
                f"model.{name}.min_std={g.min_std!r}")
        boolean(g.fix_std, f"model.{name}.fix_std")

    @classmethod
    def check_model_and_training(cls, c):
        """`config.model`, `config.training` and `config.eval`."""
        m = c.model
        one_of(m.type, MODEL_TYPES, "model.type")
        boolean(m.fix_entropy_weighting, "model.fix_entropy_weighting")
        if m.type == "intervention_noise_vae":
            one_of(m.scm.type, ("mlp",), "model.scm.type")
            one_of(m.scm.adjacency_matrix, tuple(ADJACENCY_TO_STRUCTURE),
                   "model.scm.adjacency_matrix")
            one_of(m.intervention_encoder.type, INTERVENTION_ENCODERS,
                   "model.intervention_encoder.type")
            if m.intervention_encoder.type == "mlp":
                positive_int(m.intervention_encoder.hidden_units,
                             "model.intervention_encoder.hidden_units")
                positive_int(m.intervention_encoder.hidden_layers,
                             "model.intervention_encoder.hidden_layers", 0)
            one_of(m.averaging_strategy, AVERAGING_STRATEGIES, "model.averaging_strategy")
            boolean(m.scm.homoskedastic, "model.scm.homoskedastic")
            finite_number(m.scm.manifold_thickness, "model.scm.manifold_thickness", 0)
            positive_int(m.scm.hidden_units, "model.scm.hidden_units")
            positive_int(m.scm.hidden_layers, "model.scm.hidden_layers", 0)
            finite_number(m.scm.min_std, "model.scm.min_std", 0, exclusive=True)
            one_of(m.scm.transform, SOLUTION_TRANSFORMS, "model.scm.transform")
            positive_int(m.scm.spline_bins, "model.scm.spline_bins")
            finite_number(m.scm.spline_bound, "model.scm.spline_bound", 0, exclusive=True)
        else:
            one_of(m.scm.type, ("unstructured", "mlp"), "model.scm.type")
            if m.scm.type == "mlp":  # ELCM: an explicit SCM over a learned graph
                one_of(m.scm.adjacency_matrix, GRAPH_KINDS, "model.scm.adjacency_matrix")
                boolean(m.scm.homoskedastic, "model.scm.homoskedastic")
                finite_number(m.scm.manifold_thickness, "model.scm.manifold_thickness", 0,
                              exclusive=True)
                positive_int(m.scm.hidden_units, "model.scm.hidden_units")
                positive_int(m.scm.hidden_layers, "model.scm.hidden_layers", 0)
                finite_number(m.scm.min_std, "model.scm.min_std", 0, exclusive=True)
        for name in ("encoder", "decoder"):
            cls.check_network(m[name], name)

        t = c.training
        check_shared_training(t)
        positive_int(t.iwae_samples, "training.iwae_samples")
        boolean(t.full_likelihood, "training.full_likelihood")
        one_of(t.likelihood_reduction, ("sum", "mean"), "training.likelihood_reduction")
        optional_int(t.pretrain_epochs, "training.pretrain_epochs", unset="no pretraining")
        finite_number(t.pretrain_beta, "training.pretrain_beta", 0)
        optional_int(t.model_interventions_after_epoch, "training.model_interventions_after_epoch",
                     unset="from the start")
        optional_int(t.deterministic_intervention_encoder_after_epoch,
                     "training.deterministic_intervention_encoder_after_epoch")
        optional_int(t.freeze_encoder_epoch, "training.freeze_encoder_epoch")
        require(t.freeze_encoder_epoch is None or t.freeze_encoder_epoch >= t.epochs,
                f"training.freeze_encoder_epoch={t.freeze_encoder_epoch} is not supported yet; "
                "leave it unset (never)")
        fix = t.fix_topological_order_epoch
        optional_int(fix, "training.fix_topological_order_epoch")
        require(fix is None or fix >= 1, f"training.fix_topological_order_epoch={fix} must be "
                ">= 1 (the order is read off trained solution functions) or unset (never)")
        require(fix is None or fix >= t.epochs or c.model.type == "intervention_noise_vae",
                "training.fix_topological_order_epoch needs solution functions (ILCM or dVAE, "
                "model.type=intervention_noise_vae); leave it unset for this model")
        require(fix is None or fix >= t.epochs or c.model.scm.adjacency_matrix not in GRAPH_KINDS,
                "training.fix_topological_order_epoch cannot fix the order of a learned graph "
                f"(model.scm.adjacency_matrix={c.model.scm.adjacency_matrix}); leave it unset")
        finite_number(t.increase_intervention_beta, "training.increase_intervention_beta", 0)
        lr, key = t.lr_schedule, "training.lr_schedule"  # train/schedules.py: lr_schedule
        one_of(lr.type, LR_SCHEDULE_TYPES, f"{key}.type")
        finite_number(lr.initial, f"{key}.initial", 0, exclusive=True)
        finite_number(lr.minimal, f"{key}.minimal", 0, allow_none=True, unset="0")
        if lr.type.startswith("cosine_restarts"):
            positive_int(lr.restart_every_epochs, f"{key}.restart_every_epochs")
            finite_number(lr.increase_period_by_factor, f"{key}.increase_period_by_factor", 1,
                          allow_none=True, unset="1")
        if lr.type == "cosine_restarts_reset":
            factor = lr.increase_period_by_factor
            require(factor is None or factor == 1,
                    f"{key}.increase_period_by_factor={factor!r} is not supported with "
                    "cosine_restarts_reset (the reference resets every restart_every_epochs); "
                    "use 1 or type cosine_restarts")
        if lr.type == "step":
            positive_int(lr.step_every_epochs, f"{key}.step_every_epochs")
            finite_number(lr.step_gamma, f"{key}.step_gamma", 0, exclusive=True)
        # Loss-weight schedules (train/schedules.py: step_schedule): finite values, > 0 for the
        # log-space (exponential) types, else >= 0 except the entropy term, a bonus (> 0) or a
        # penalty (< 0); epochs >= 0.
        for name in SCHEDULED_WEIGHTS + ("manifold_thickness",):
            sc, key = t[f"{name}_schedule"], f"training.{name}_schedule"
            one_of(sc.type, STEP_SCHEDULE_TYPES, f"{key}.type")
            signed = name == "intervention_entropy_regularization"
            for value in ("initial", "final"):
                if "exponential" in sc.type:
                    finite_number(sc[value], f"{key}.{value}", 0, exclusive=True)
                else:
                    finite_number(sc[value], f"{key}.{value}", None if signed else 0)
            for epochs in ("initial_constant_epochs", "decay_epochs"):
                finite_number(sc[epochs], f"{key}.{epochs}", 0, allow_none=True, unset="0")

        for key, g in (("training.graph_sampling", t.graph_sampling),
                       ("training.graph_sampling.final", t.graph_sampling.final),
                       ("eval.graph_sampling", c.eval.graph_sampling)):
            one_of(g.mode, SAMPLING_MODES, f"{key}.mode")
            finite_number(g.temperature, f"{key}.temperature", 0, exclusive=True)
            positive_int(g.samples, f"{key}.samples")
            require(g.samples == 1 or m.type == "causal_vae", f"{key}.samples={g.samples!r}: "
                    "the ILCM samples one graph per pair; use 1 (more: ELCM only)")
        positive_int(t.graph_sampling.initial.unfreeze_epoch,
                     "training.graph_sampling.initial.unfreeze_epoch", 0)
        optional_int(t.graph_sampling.final.freeze_epoch,
                     "training.graph_sampling.final.freeze_epoch")

        e = c.eval
        one_of(e.eval_partition, SPLITS, "eval.eval_partition")
        finite_number(e.beta, "eval.beta", 0)
        boolean(e.full_likelihood, "eval.full_likelihood")
        one_of(e.likelihood_reduction, ("sum", "mean"), "eval.likelihood_reduction")
        require(e.dci_random_state is None or (is_int(e.dci_random_state)
                                               and 0 <= e.dci_random_state < SEED_LIMIT),
                f"eval.dci_random_state={e.dci_random_state!r} must be an integer in [0, 2**32) "
                "or unset (nondeterministic, as the reference)")
        one_of(e.get("dci_backend", "jax"), DCI_BACKENDS, "eval.dci_backend")
        boolean(e.graphs, "eval.graphs")
        finite_number(e.enco_lambda, "eval.enco_lambda", 0)
        boolean(e.enco_reference_quirks, "eval.enco_reference_quirks")
        boolean(e.implicit_graph_fix_direction, "eval.implicit_graph_fix_direction")
        finite_number(e.implicit_graph_threshold, "eval.implicit_graph_threshold", 0)

    # ------------------------------------------------------------------ data and init
    def make_data(self, data_seed: int) -> Dict[str, Dict[str, jnp.ndarray]]:
        """The scaling data of `data_seed`, or the stage-1 codes (the same for every seed)."""
        d = self.config.data
        if d.dataset == "causalcircuit_codes":
            return load_codes(d.stage1_workdir, d.stage1_member, TRUE_GRAPHS[d.true_graph])
        return make_scaling_data(d, data_seed)

    def init_model_state(self):
        """Untrained model state: the topological order of `fixed_order` structures, and
        whether it has been fixed yet where `training.fix_topological_order_epoch` will."""
        state = {"order": jnp.arange(self.dim_z, dtype=jnp.int32)}
        if self._fix_order_epoch is not None:
            state["order_fixed"] = jnp.asarray(False)
        return state

    def end_epoch(self, state, epoch: int, stats, data):
        """At `training.fix_topological_order_epoch`: each member's topological order from its
        solution functions on the validation split (`fix_topological_order`, ws-crl.md 4.2; the
        masked noise is zero, not the logged medians: gotcha 6)."""
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
    def evaluate(self, params, model_state, data, key) -> Dict[str, float]:
        """One member: `evaluate_members` on a stack of one."""
        add_axis = functools.partial(jax.tree_util.tree_map, lambda a: a[None])
        with tqdm(disable=True) as bar:
            result, = self.evaluate_members(*add_axis((params, model_state, data, key)), bar)
        if isinstance(result, str):
            raise ValueError(result)
        return result

    def evaluate_members(self, params, model_state, data, keys, bar):
        return evaluate_lcm_members(self, params, model_state, data, keys, bar)
