"""Scaling toy experiment: `get_config("ilcm")`, `"dvae"`, `"betavae"`, each with `,fast`.

Mirrors the reference's `config/{data/scaling,model/scaling_*,training/scaling*,eval/default}.yaml`.
Use as `--config configs/scaling.py:ilcm,fast` and override any key, e.g.
`--config.data.dim_z=4 --config.seed=42 --config.data.nature.seed=42`. Seed sweeps:
`--config.sweep.seeds=4901,4902 --config.sweep.data_seeds=302,303` (every pair is one member
of one vmapped run). Epochs meaning "never" are unset placeholders (`None`), not large numbers
(the reference's 1000). Variant parsing and the sweep, checkpoint and shared training blocks
come from the sibling `common.py`.

Expected (figures recorded in README.md and docs/results.md; where a variant is not listed,
none has been recorded):

* `ilcm,fast`, dim_z 3, seed and data seed 42 (the README smoke run): causal disentanglement
  0.95 and ENCO / implicit-graph SHD 0, the whole command in 28 s on the 2-core CPU with the
  compilation cache off; over model seeds 42-61, each alone, a median of 0.984 (the reference:
  0.985; its README reports 0.99).
* `ilcm,fast`, dim_z 4, the 3x3 sweep (seeds 4901-4903, data seeds 302-304): median causal
  disentanglement 0.98 (members 0.97-0.99) and 115 s for the whole command on an H100; ENCO
  SHD at most 1 per member; 106-180 s for the whole command on the 2-core CPU.
* the full schedule (`ilcm`, `dvae`, `betavae`), dim_z 4, seed 4901, data seed 302: 1.00, 0.34,
  0.11 (the reference's README: 0.99, 0.34, 0.13), 4-14 min a run on the 2-core CPU. Over dim_z
  2-8 at `,fast` (3x3 seeds): ILCM medians 0.99 to 0.61, dVAE 0.21-0.40, beta-VAE 0.09-0.25
  (docs/results.md, graph scaling). `elcm`: no figures recorded. On nonlinear mechanisms with flow mixing
  (`data.nature.mechanisms=nonlinear`, `data.mixing=flow`, dim_z 4, the 3x3 sweep) the median
  causal disentanglement is 0.52 (ILCM), 0.56 (dVAE), 0.24 (beta-VAE) with `,fast` on the
  2-core CPU, and 0.59, 0.51, 0.20 with the full schedule on an H100 (training 347-355 s for
  ILCM and dVAE, 154 s for beta-VAE, four sweeps sharing the GPU).
"""

import os
import runpy
import types

import ml_collections
from ml_collections.config_dict import placeholder

# The sibling common.py, loaded by path: configs/ is not a package, and config files are
# themselves loaded by path (config_flags and importlib both set __file__).
common = types.SimpleNamespace(**runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "common.py")))

METHODS = ("ilcm", "dvae", "betavae", "elcm")


def _graph_sampling():
    """How learned graphs (model.scm.adjacency_matrix = enco / dds / fixed_order) are sampled."""
    g = ml_collections.ConfigDict()
    g.mode = "deterministic"  # hard, soft (Gumbel relaxations) or deterministic (hard graph)
    g.temperature = 1.0  # Gumbel-softmax temperature (> 0)
    g.samples = 1  # graph samples per pair (ELCM: prior averaged over them; ILCM: only 1)
    return g


def _schedule(kind, initial, final, initial_constant_epochs=0, decay_epochs=0):
    """A per-step weight schedule, evaluated at the fractional epoch (`wscrl_jax/train/
    schedules.py`, the reference's `generic_scheduler`)."""
    s = ml_collections.ConfigDict()
    # constant (-> final), constant_constant, exponential, exponential_constant,
    # constant_exponential_constant, constant_linear_constant
    s.type = kind
    s.initial = initial  # value before / at the start of the ramp
    s.final = final  # value after the ramp; the only value `constant` uses
    s.initial_constant_epochs = initial_constant_epochs  # epochs held at `initial` first
    s.decay_epochs = decay_epochs  # length of the ramp in epochs (ws-crl gotcha 3: t = s / (T-1))
    return s


def get_config(arg=None):
    method, options = common.parse_variant(arg, "scaling", METHODS, options=("fast",))
    fast = "fast" in options
    c = ml_collections.ConfigDict()
    c.method = "lcm"  # method family looked up by the loop (wscrl_jax.methods): lcm
    c.seed = 42  # model / training seed (reference: general.seed); sweeps: sweep.seeds

    # ---------------------------------------------------------------- data (data/scaling.yaml)
    c.data = ml_collections.ConfigDict()
    # "scaling": the toy data generated from data.nature.seed; "pairs": your own pairs from
    # data.path (docs/own_data.md)
    c.data.dataset = "scaling"
    c.data.dim_z = 2  # number of causal variables (tested with 2..30 in the reference)
    # observation dimension: a reference to dim_z, the observations are a rotation of z
    # (pairs: read from the files, this key is not used)
    c.data.dim_x = c.data.get_ref("dim_z")
    # pairs: a directory with train.npz, val.npz, test.npz (optional dci_train.npz) or one .npz
    # file split at random into train / val / test rows
    c.data.path = ""
    # pairs: "npz" reads data.path's .npz files into memory; "tfds" reads data.path as a dataset
    # built from them by scripts/build_dataset.py --format pairs (docs/own_data.md)
    c.data.source = "npz"
    # pairs in one file: seed of its split (the members' data seed; sweep: sweep.data_seeds)
    c.data.split_seed = 0
    c.data.val_fraction = 0.1  # pairs in one file: fraction of rows for validation
    c.data.test_fraction = 0.1  # pairs in one file: fraction of rows for the test split
    # mixing z -> x: "so_n" (the reference's rotation) or "flow" (the rotation, then a random
    # rational-quadratic coupling flow; not in the reference)
    c.data.mixing = "so_n"
    c.data.samples = ml_collections.ConfigDict()
    c.data.samples.train = 100000  # training pairs; the DCI regressors' dci_train split has as many
    c.data.samples.val = 10000  # validation pairs
    c.data.samples.test = 10000  # test pairs (the default eval.eval_partition)
    c.data.nature = ml_collections.ConfigDict()
    c.data.nature.mode = "random"  # graph: random, full, chain, empty
    c.data.nature.seed = 42  # data seed: graph, weights, rotation and samples
    # causal weights: bimodal (sign * (1 + 0.3 N(0, 1))) or standard (N(0, 1))
    c.data.nature.causal_effects = "bimodal"
    # weights and rotation of a seed: "reference" (the reference's numbers for that seed, from
    # torch's generator emulated in numpy) or "jax" (PRNGKey(seed); this package before)
    c.data.nature.rng = "reference"
    # "linear" (the reference); not in the reference, with random monotone splines g_i and
    # pre_i = sum_j w_ji z_j (causal/flow_lcm.py): "nonlinear" z_i = g_i(pre_i) + eps_i,
    # "post_nonlinear" z_i = g_i(pre_i + eps_i), "noise_spline" z_i = pre_i + g_i(eps_i; pre_i)
    c.data.nature.mechanisms = "linear"
    c.data.nature.manifold_thickness = 1e-9  # std of the true SCM's counterfactual noise
    c.data.nature.observation_noise = 0.0  # std of noise added to x; reference: null (none)

    # ---------------------------------------------------------------- model (model/scaling_*.yaml)
    c.model = ml_collections.ConfigDict()
    # intervention_noise_vae (ILCM, dVAE) or causal_vae (beta-VAE, ELCM)
    c.model.type = "causal_vae" if method in ("betavae", "elcm") else "intervention_noise_vae"
    c.model.averaging_strategy = "stochastic"  # stochastic, average/mean, z2
    # True fixes the w^2 log w entropy term to w log w (ws-crl gotcha 2; False = reference)
    c.model.fix_entropy_weighting = False
    c.model.scm = ml_collections.ConfigDict()
    # mlp (implicit SCM of ILCM / dVAE, explicit SCM of ELCM) or unstructured (beta-VAE's
    # factorised prior)
    c.model.scm.type = "unstructured" if method == "betavae" else "mlp"
    # context of each solution function: none (all other noises: ILCM), none_trivial (no
    # context: dVAE), none_fixed_order, or the ancestors in a learned graph: enco, dds,
    # fixed_order (the reference offers these but cannot run them, ws-crl gotcha 9); read only
    # by intervention_noise_vae; ELCM: its learned graph, enco, dds or fixed_order
    c.model.scm.adjacency_matrix = {"ilcm": "none", "dvae": "none_trivial",
                                    "betavae": "none", "elcm": "enco"}[method]
    c.model.scm.homoskedastic = False  # True: solution functions learn a shift only (scale 1)
    # std of the SCM's counterfactual noise outside training (training: the schedule below)
    c.model.scm.manifold_thickness = 0.01
    c.model.scm.hidden_units = 64  # width of each solution function's MLP
    c.model.scm.hidden_layers = 2  # hidden layers of each solution function's MLP (>= 0)
    c.model.scm.min_std = 0.2  # solution-function scale = exp(log_scale) + min_std (> 0)
    # solution functions: "affine" (the reference) or "rq_spline" (affine, then a conditional
    # monotone rational-quadratic spline; not in the reference, ILCM only)
    c.model.scm.transform = "affine"
    c.model.scm.spline_bins = 8  # bins of the rq_spline solution functions
    c.model.scm.spline_bound = 5.0  # the spline acts on [-bound, bound], identity outside (> 0)
    for name, std, min_std in (("encoder", 0.01, 1e-4), ("decoder", 0.1, 1e-3)):
        g = ml_collections.ConfigDict()  # Gaussian MLP encoder (x -> z) / decoder (z -> x)
        g.type = "mlp"  # the only option
        g.hidden_units = 64  # hidden width
        g.hidden_layers = 2  # hidden layers (>= 1)
        g.std = std  # initial std of the Gaussian (reference: init_std); must exceed min_std
        g.min_std = min_std  # floor of the learned std (>= 0)
        g.fix_std = False  # True: constant std inverse_softplus(std) (ws-crl gotcha 5)
        c.model[name] = g
    c.model.intervention_encoder = ml_collections.ConfigDict()
    # learnable_heuristic (3 learned scalars, the reference's) or mlp (ws-crl gotcha 8)
    c.model.intervention_encoder.type = "learnable_heuristic"
    c.model.intervention_encoder.hidden_units = 64  # mlp only: hidden width
    c.model.intervention_encoder.hidden_layers = 2  # mlp only: hidden layers

    # ------------------------------------------------------------ training (training/scaling*.yaml)
    t = c.training = common.training_block(
        batchsize=64,
        epochs=3 if fast else 90,
        clip_grad_norm=10.0,
        nan_limit=10,  # the reference aborts at 10 cumulative non-finite steps
        steps_per_call=500)
    # members side by side ("vmap") or one after the other ("sequential", lax.map: each member
    # compiles without the member axis, faster for one member of a large dim_z on CPU with
    # training.cpu_devices=1; other rounding, so other last digits and, over a run, other results)
    t.member_loop = "vmap"
    t.iwae_samples = 10  # latent samples of the IWAE NLL at evaluation (reference reads it there)
    t.full_likelihood = False  # True: decoder log-likelihoods keep 0.5 log 2 pi while training
    t.likelihood_reduction = "sum"  # decoder log-likelihood over x dims: sum or mean
    t.pretrain_epochs = 1 if fast else 10  # first epochs as a beta-VAE; unset: no pretraining
    t.pretrain_beta = 0.001  # KL weight during pretraining
    # epoch from which intervention distributions are modelled; unset: from the start
    t.model_interventions_after_epoch = 1 if fast else 30
    # epoch from which the intervention encoder is a hard argmax (straight-through); unset: never
    t.deterministic_intervention_encoder_after_epoch = 2 if fast else 60
    # ILCM / dVAE: epoch at which each member's topological order is read off its solution
    # functions (validation split) and fixed for the rest of training; unset: never (reference:
    # 1000, never reached)
    t.fix_topological_order_epoch = placeholder(int)
    t.lr_schedule = ml_collections.ConfigDict()
    # per epoch: constant, cosine, cosine_restarts, cosine_restarts_reset (Adam state reset at
    # each restart, ws-crl gotcha 29), step
    t.lr_schedule.type = "constant" if fast else "cosine_restarts_reset"
    t.lr_schedule.initial = 3e-4  # Adam learning rate at epoch 0 and at each restart
    t.lr_schedule.minimal = 3e-4 if fast else 1e-8  # cosine schedules: eta_min
    t.lr_schedule.restart_every_epochs = 1 if fast else 30  # cosine_restarts*: period T_0
    t.lr_schedule.increase_period_by_factor = 1.0  # cosine_restarts*: T_mult
    t.lr_schedule.step_every_epochs = 0  # step only: epochs per decay (must then be > 0)
    t.lr_schedule.step_gamma = 0.1  # step only: decay factor
    # SCM counterfactual-noise std during training
    t.manifold_thickness_schedule = _schedule("constant", 0.01, 0.01, 5, 45)
    t.increase_intervention_beta = 1.0  # KL weight of the intervention targets = this * beta
    if fast:
        t.beta_schedule = _schedule("constant", 1.0, 1.0, 10, 10)  # KL weight beta
        t.z_regularization_schedule = _schedule("constant", 0.0, 0.0, 10, 10)  # z-regulariser
        # encoder/decoder consistency MSE
        t.consistency_regularization_schedule = _schedule("constant", 0.0, 0.0)
        # eps mixed into the intervention posterior before renormalising
        t.intervention_encoder_offset_schedule = _schedule("constant", 1e-4, 1e-4, 10, 10)
    else:
        # KL weight beta: 0 until epoch 10, then a ramp to 1 over 10 epochs
        t.beta_schedule = _schedule("constant_linear_constant", 0.0, 1.0, 10, 10)
        # z-regulariser: 0.01 until epoch 10, then a ramp to 0 over 10 epochs
        t.z_regularization_schedule = _schedule("constant_linear_constant", 0.01, 0.0, 10, 10)
        # encoder/decoder consistency MSE
        t.consistency_regularization_schedule = _schedule("constant", 0.01, 0.01)
        # eps mixed into the intervention posterior before renormalising
        t.intervention_encoder_offset_schedule = _schedule(
            "constant_exponential_constant", 0.025, 1e-4, 10, 10)
    # learned graphs: weights of the expected edge count and of the NOTEARS acyclicity penalty
    t.edge_regularization_schedule = _schedule("constant", 0.0, 0.0)
    t.cyclicity_regularization_schedule = _schedule("constant", 0.0, 0.0)
    t.graph_sampling = _graph_sampling()
    t.graph_sampling.initial = ml_collections.ConfigDict()
    t.graph_sampling.initial.unfreeze_epoch = 0  # graph parameters frozen before this epoch
    # from this epoch on the graph is frozen and sampled with these settings; unset: never
    # (reference: 1000)
    t.graph_sampling.final = _graph_sampling()
    t.graph_sampling.final.freeze_epoch = placeholder(int)
    # inverse-consistency MSE (added twice, ws-crl gotcha 4)
    t.inverse_consistency_regularization_schedule = _schedule("constant", 0.0, 0.0)
    # bonus on the entropy of the batch-mean intervention posterior
    t.intervention_entropy_regularization_schedule = _schedule("constant", 1.0, 1.0)

    # ---------------------------------------------------------------- sweep and checkpoints
    c.sweep = common.sweep_block(seeds="", data_seeds="")
    c.checkpoint = common.checkpoint_block(every_n_steps=1000, max_to_keep=3, async_save=True)
    c.tracking = common.tracking_block()

    # ------------------------------------------------------------ evaluation (eval/default.yaml)
    c.eval = ml_collections.ConfigDict()
    c.eval.eval_partition = "test"  # split evaluated after training: train, dci_train, val, test
    c.eval.beta = 1.0  # KL weight of the evaluation loss
    c.eval.full_likelihood = False  # True: evaluation decoder log-likelihoods keep 0.5 log 2 pi
    c.eval.likelihood_reduction = "sum"  # sum or mean over x dims
    # DCI's boosted trees: auto (native on a CPU, else jax), native (compiled loops on the CPU),
    # jax (on the device) or sklearn (scikit-learn itself, on the host)
    c.eval.dci_backend = "auto"
    c.eval.dci_random_state = 0  # sklearn backend; reference: None (nondeterministic tie-breaking)
    # compile the evaluation's programs in a background thread: on (while training runs), end
    # (from the end of training, beside the evaluation: on a small CPU the compiler and the
    # training steps already share the cores while it trains), auto (on with an accelerator,
    # whose host cores idle while it trains; end on a CPU), off
    c.eval.compile_ahead = "auto"
    # ILCM / dVAE: post-hoc ENCO graph and the implicit graph (d <= 5), matched to the truth
    c.eval.graphs = True
    c.eval.graph_sampling = _graph_sampling()  # learned graphs in the evaluation loss terms
    c.eval.enco_lambda = 0.01  # ENCO's sparsity penalty
    c.eval.enco_reference_quirks = True  # ws-crl gotcha 22; False: standardised codes, fan-in = in
    c.eval.implicit_graph_fix_direction = False  # ws-crl gotcha 7; True: mechanisms map e -> z
    c.eval.implicit_graph_threshold = 0.1  # effect strength counted as an edge (implicit_shd)
    return c
