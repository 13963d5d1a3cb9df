"""Checks of a WS-CRL config (`configs/scaling.py`, `configs/causalcircuit.py`) before any
work, next to its allowed values: every key the data, the model, the schedules and the
evaluation read. `LCMMethod.validate_config` runs them; the image method
(`lcm/image_method.py`) swaps in its own data and network checks."""

from wscrl_jax.causal.flow_lcm import MECHANISMS, MIXINGS
from wscrl_jax.causal.graphs import GRAPH_MODES
from wscrl_jax.causal.gumbel import SAMPLING_MODES
from wscrl_jax.causal.implicit_scm import SOLUTION_TRANSFORMS
from wscrl_jax.causal.learned_graphs import GRAPH_KINDS
from wscrl_jax.config_checks import (SEED_LIMIT, ConfigError, batch_fits, boolean,
                                     check_own_data_split, check_shared_training, finite_number,
                                     is_int, one_of, optional_int, positive_int, require)
from wscrl_jax.data.causalcircuit.toy import TOY_GRAPH
from wscrl_jax.data.encoded import Stage1OutputMissing, read_encoded_meta
from wscrl_jax.data.npz_files import DataFileError
from wscrl_jax.data.own_pairs import load_pairs, split_sizes
from wscrl_jax.data.scaling import CAUSAL_EFFECTS, NATURE_RNGS, SPLITS
from wscrl_jax.eval import gbrt_native
from wscrl_jax.eval.dci import DCI_BACKENDS
from wscrl_jax.lcm.ilcm import AVERAGING_STRATEGIES
from wscrl_jax.train.schedules import LR_SCHEDULE_TYPES, STEP_SCHEDULE_TYPES

COMPILE_AHEAD = ("auto", "on", "end", "off")  # eval.compile_ahead (`run/evaluation.py`)

MODEL_TYPES = ("intervention_noise_vae", "causal_vae")
# the scaling toy data, the codes of a CausalCircuit stage-1 run (configs/causalcircuit.py), or
# the user's own pairs (data/own_pairs.py)
DATASETS = ("scaling", "causalcircuit_codes", "pairs")
TRUE_GRAPHS = {"": None, "toy": TOY_GRAPH}  # data.true_graph of stage-1 codes
ADJACENCY_TO_STRUCTURE = {"none": "none", "none_trivial": "trivial",
                          "none_fixed_order": "fixed_order",
                          **{kind: "none" for kind in GRAPH_KINDS}}  # + a learned graph
INTERVENTION_ENCODERS = ("learnable_heuristic", "mlp")
# Upper bounds, so that a mistyped size is one line instead of exhausting memory: the rotation
# and the graph are dim_z x dim_z and each sample carries dim_z + 1 intervention hypotheses
# (dim_z=100000 asks for one 37 GiB matrix before training starts); 100 is far above the
# reference's 2..30. The scaling data (pairs of x and z, float32) stay under MAX_DATA_BYTES.
MAX_DIM_Z = 100
MAX_DATA_BYTES = 8 << 30
# training.member_loop: members vmapped, or one after the other (`lax.map`, train/step.py)
MEMBER_LOOPS = ("vmap", "sequential")
SCHEDULED_WEIGHTS = ("beta", "z_regularization", "consistency_regularization",
                     "inverse_consistency_regularization", "intervention_entropy_regularization",
                     "intervention_encoder_offset", "edge_regularization",
                     "cyclicity_regularization")


def check_data(c):
    """`config.data`: the scaling toy data, or stage-1 codes (`causalcircuit_codes`)."""
    d = c.data
    one_of(d.dataset, DATASETS, "data.dataset")
    positive_int(d.dim_z, "data.dim_z", 2)
    require(d.dim_z <= MAX_DIM_Z, f"data.dim_z={d.dim_z} is above {MAX_DIM_Z}: the dim_z x "
            f"dim_z rotation and graph and the dim_z + 1 intervention hypotheses of every "
            f"sample would exhaust memory (the reference tests 2..30)")
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
    if d.dataset == "pairs":
        check_pairs(c)
        return
    require(d.dim_x == d.dim_z,
            f"data.dim_x={d.dim_x} must equal data.dim_z={d.dim_z} for scaling data")
    for split in ("train", "val", "test"):
        positive_int(d.samples[split], f"data.samples.{split}")
    rows = sum(d.samples[split] for split in ("train", "val", "test"))
    size = 4 * 2 * rows * (d.dim_x + 2 * d.dim_z)  # float32 pairs of x, z and noise
    require(size <= MAX_DATA_BYTES, f"data.samples (train + val + test = {rows} pairs) at "
            f"data.dim_z={d.dim_z} make {size / 2**30:.3g} GiB of data, above the "
            f"{MAX_DATA_BYTES >> 30} GiB bound that keeps one member in host memory; use "
            "fewer samples")
    one_of(d.nature.mode, GRAPH_MODES, "data.nature.mode")
    one_of(d.nature.causal_effects, CAUSAL_EFFECTS, "data.nature.causal_effects")
    one_of(d.nature.rng, NATURE_RNGS, "data.nature.rng")
    one_of(d.nature.mechanisms, MECHANISMS, "data.nature.mechanisms")
    one_of(d.mixing, MIXINGS, "data.mixing")
    finite_number(d.nature.manifold_thickness, "data.nature.manifold_thickness", 0)
    finite_number(d.nature.observation_noise, "data.nature.observation_noise", 0,
                  allow_none=True, unset="no noise")
    batch_fits(c.training.batchsize, d.samples.train, "data.samples.train")


def check_pairs(c):
    """Own pairs (`data.dataset=pairs`): the split keys, then every file read and checked
    (`data/own_pairs.py`), a training split of at least one batch and non-empty val and test
    splits."""
    d = c.data
    check_own_data_split(d, c.get("sweep", {}))
    try:
        pairs = load_pairs(d.path, d.dim_z, d.get("source", "npz"))
    except DataFileError as e:
        raise ConfigError(str(e)) from None
    sizes = split_sizes(pairs, d.val_fraction, d.test_fraction)
    where = {s: pairs.source.files.get(s, d.path) for s in sizes}
    require(sizes["train"] >= c.training.batchsize,
            f"{where['train']}: array 'x1' gives {sizes['train']} training pairs, fewer than one "
            f"batch (training.batchsize={c.training.batchsize}); use more pairs or a smaller "
            "batch size")
    for split in ("val", "test"):
        require(sizes[split] >= 1, f"{where[split]}: array 'x1' gives no {split} pairs; add "
                f"rows or raise data.{split}_fraction")


def check_network(g, name: str):
    """`model.encoder` / `model.decoder`: the Gaussian MLP."""
    one_of(g.type, ("mlp",), f"model.{name}.type")
    positive_int(g.hidden_units, f"model.{name}.hidden_units")
    positive_int(g.hidden_layers, f"model.{name}.hidden_layers", 1)
    finite_number(g.min_std, f"model.{name}.min_std", 0)
    finite_number(g.std, f"model.{name}.std", 0, exclusive=True)
    require(g.std > g.min_std, f"model.{name}.std={g.std!r} must exceed "
            f"model.{name}.min_std={g.min_std!r}")
    boolean(g.fix_std, f"model.{name}.fix_std")


def check_model_and_training(c, check_network=check_network):
    """`config.model`, `config.training` and `config.eval`; check_network(g, name) checks
    `model.encoder` / `model.decoder` (the image method passes its own)."""
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
        check_network(m[name], name)

    t = c.training
    check_shared_training(t)
    one_of(t.member_loop, MEMBER_LOOPS, "training.member_loop")
    positive_int(t.iwae_samples, "training.iwae_samples")
    boolean(t.full_likelihood, "training.full_likelihood")
    one_of(t.likelihood_reduction, ("sum", "mean"), "training.likelihood_reduction")
    optional_int(t.pretrain_epochs, "training.pretrain_epochs", unset="no pretraining")
    finite_number(t.pretrain_beta, "training.pretrain_beta", 0)
    optional_int(t.model_interventions_after_epoch, "training.model_interventions_after_epoch",
                 unset="from the start")
    optional_int(t.deterministic_intervention_encoder_after_epoch,
                 "training.deterministic_intervention_encoder_after_epoch")
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
    one_of(e.dci_backend, DCI_BACKENDS, "eval.dci_backend")
    require(e.get("dci_backend") != "native" or gbrt_native.available(),
            "eval.dci_backend='native' needs the compiled trees, which this install lacks (no C "
            "compiler at `pip install` time): use auto, jax or sklearn, or reinstall")
    one_of(e.get("compile_ahead", "auto"), COMPILE_AHEAD, "eval.compile_ahead")
    boolean(e.graphs, "eval.graphs")
    finite_number(e.enco_lambda, "eval.enco_lambda", 0)
    boolean(e.enco_reference_quirks, "eval.enco_reference_quirks")
    boolean(e.implicit_graph_fix_direction, "eval.implicit_graph_fix_direction")
    finite_number(e.implicit_graph_threshold, "eval.implicit_graph_threshold", 0)
