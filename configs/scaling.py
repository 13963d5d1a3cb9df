"""Scaling toy experiment: `get_config("ilcm")`, `"dvae"`, `"betavae"`, each with `,fast`.

Mirrors the reference's `config/{data/scaling,model/scaling_*,training/scaling*,eval/default}.yaml`.
Use as `--config configs/scaling.py:ilcm,fast` and override any key, e.g.
`--config.data.dim_z=4 --config.seed=42 --config.data.nature.seed=42`.
"""

import ml_collections

METHODS = ("ilcm", "dvae", "betavae")


def _schedule(kind, initial, final, initial_constant_epochs=0, decay_epochs=0):
    return ml_collections.ConfigDict(dict(
        type=kind, initial=initial, final=final, initial_constant_epochs=initial_constant_epochs,
        decay_epochs=decay_epochs))


def _parse(arg):
    parts = [p.strip() for p in (arg or "ilcm").split(",") if p.strip()]
    method, flags = (parts[0] if parts else "ilcm"), set(parts[1:])
    if method not in METHODS:
        raise ValueError(f"unknown scaling config {method!r}; expected one of {METHODS} "
                         "(optionally followed by ',fast')")
    unknown = flags - {"fast"}
    if unknown:
        raise ValueError(f"unknown config variant(s) {sorted(unknown)}; only 'fast' exists")
    return method, "fast" in flags


def get_config(arg=None):
    method, fast = _parse(arg)
    c = ml_collections.ConfigDict()
    c.method = "lcm"  # method family looked up by the loop (wscrl_jax.methods)
    c.seed = 42  # model / training seed (reference: general.seed)

    # ---------------------------------------------------------------- data (data/scaling.yaml)
    c.data = ml_collections.ConfigDict()
    c.data.dataset = "scaling"
    c.data.dim_z = 2  # number of causal variables (tested with 2..30 in the reference)
    c.data.dim_x = c.data.get_ref("dim_z")  # observations are a rotation of z
    c.data.samples = ml_collections.ConfigDict(dict(train=100000, val=10000, test=10000))
    c.data.nature = ml_collections.ConfigDict()
    c.data.nature.mode = "random"  # graph: random, full, chain, empty
    c.data.nature.seed = 42  # data seed: graph, weights, rotation and samples
    c.data.nature.causal_effects = "bimodal"  # or "standard"
    c.data.nature.manifold_thickness = 1e-9
    c.data.nature.observation_noise = 0.0  # reference: null (none)

    # ---------------------------------------------------------------- model (model/scaling_*.yaml)
    c.model = ml_collections.ConfigDict()
    c.model.type = "causal_vae" if method == "betavae" else "intervention_noise_vae"
    c.model.averaging_strategy = "stochastic"  # stochastic, average/mean, z2
    c.model.fix_entropy_weighting = False  # True fixes the w^2 log w entropy term (gotcha 2)
    c.model.scm = ml_collections.ConfigDict()
    c.model.scm.type = "unstructured" if method == "betavae" else "mlp"
    c.model.scm.adjacency_matrix = {"ilcm": "none", "dvae": "none_trivial",
                                    "betavae": "none"}[method]  # none, none_trivial, none_fixed_order
    c.model.scm.homoskedastic = False
    c.model.scm.manifold_thickness = 0.01
    c.model.scm.hidden_units = 64
    c.model.scm.hidden_layers = 2
    c.model.scm.min_std = 0.2
    for name, std, min_std in (("encoder", 0.01, 1e-4), ("decoder", 0.1, 1e-3)):
        c.model[name] = ml_collections.ConfigDict(dict(
            type="mlp", hidden_units=64, hidden_layers=2, std=std, min_std=min_std,
            fix_std=False))
    c.model.intervention_encoder = ml_collections.ConfigDict(dict(
        type="learnable_heuristic", hidden_units=64, hidden_layers=2))  # or "mlp"

    # ---------------------------------------------------------------- training
    t = c.training = ml_collections.ConfigDict()
    t.batchsize = 64
    t.epochs = 3 if fast else 90
    t.clip_grad_norm = 10.0
    t.iwae_samples = 10
    t.full_likelihood = False
    t.likelihood_reduction = "sum"
    t.pretrain_epochs = 1 if fast else 10
    t.pretrain_beta = 0.001
    t.model_interventions_after_epoch = 1 if fast else 30
    t.freeze_encoder_epoch = 1000  # reference feature that never triggers; must be >= epochs
    t.deterministic_intervention_encoder_after_epoch = 2 if fast else 60
    t.fix_topological_order_epoch = 1000  # must be >= epochs (not yet supported)
    t.lr_schedule = ml_collections.ConfigDict(dict(
        type="constant" if fast else "cosine_restarts_reset", initial=3e-4,
        minimal=3e-4 if fast else 1e-8, restart_every_epochs=1 if fast else 30,
        increase_period_by_factor=1.0, step_every_epochs=0, step_gamma=0.1))
    t.manifold_thickness_schedule = _schedule("constant", 0.01, 0.01, 5, 45)
    t.increase_intervention_beta = 1.0
    if fast:
        t.beta_schedule = _schedule("constant", 1.0, 1.0, 10, 10)
        t.z_regularization_schedule = _schedule("constant", 0.0, 0.0, 10, 10)
        t.consistency_regularization_schedule = _schedule("constant", 0.0, 0.0)
        t.intervention_encoder_offset_schedule = _schedule("constant", 1e-4, 1e-4, 10, 10)
    else:
        t.beta_schedule = _schedule("constant_linear_constant", 0.0, 1.0, 10, 10)
        t.z_regularization_schedule = _schedule("constant_linear_constant", 0.01, 0.0, 10, 10)
        t.consistency_regularization_schedule = _schedule("constant", 0.01, 0.01)
        t.intervention_encoder_offset_schedule = _schedule(
            "constant_exponential_constant", 0.025, 1e-4, 10, 10)
    t.inverse_consistency_regularization_schedule = _schedule("constant", 0.0, 0.0)
    t.intervention_entropy_regularization_schedule = _schedule("constant", 1.0, 1.0)
    t.nan_limit = 10  # non-finite steps (cumulative) after which a member stops training
    t.steps_per_call = 500  # steps compiled into one call; the host wakes up between calls

    # ---------------------------------------------------------------- sweep and checkpoints
    c.sweep = ml_collections.ConfigDict()
    c.sweep.seeds = ""  # model seeds, e.g. "4901,4902,4903"; empty: config.seed
    c.sweep.data_seeds = ""  # data seeds, e.g. "302,303,304"; empty: config.data.nature.seed
    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_n_steps = 1000  # also saved at the end; rerunning resumes from the latest
    c.checkpoint.max_to_keep = 3
    c.checkpoint.async_save = True

    # ---------------------------------------------------------------- evaluation (eval/default.yaml)
    c.eval = ml_collections.ConfigDict()
    c.eval.eval_partition = "test"
    c.eval.beta = 1.0
    c.eval.full_likelihood = False
    c.eval.likelihood_reduction = "sum"
    c.eval.dci_random_state = 0  # reference: None (nondeterministic tie-breaking)
    return c
