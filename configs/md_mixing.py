"""MD-CRL on synthetic multi-domain mixing data (the reference README commands, md-crl.md s10).

Variants, `--config configs/md_mixing.py:VARIANT[,OPTION...]`:

* `linear` (single stage, linear autoencoder on x) with one of `minmax` (default), `mmd`
  (adaptive bandwidth, `fix_sigma=null` as in the README), `minmax_mmd`, `none` (no penalty:
  the unpenalised baseline); add `dynamic` for the dynamic SCM (`correlated_z=True`,
  `corr_prob=0.5`).
* `poly_stage1`: polynomial mixing (degree 3, z_dim 14, x_dim 200, 16 domains), polynomial-
  decoder autoencoder, reconstruction only, writes its codes to WORKDIR/encoded/.
* `poly_stage2`: the small linear autoencoder with penalties (default `minmax`; `mmd`,
  `minmax_mmd` with the config's fixed bandwidth 1.0) on the codes of
  `--config.data.stage1_workdir=W1`.
* `fast`: fewer samples and epochs (tests, smoke runs).

Sweeps: `--config.sweep.seeds=1235,4256,49685,7383,9271` trains every seed as one vmapped run;
each member's data seed is its model seed (`sweep.data_seeds="same"`, as the reference's single
global seed), or give `sweep.data_seeds=...` for a product grid. Shape-changing values run one
after the other, each seed-vmapped, in WORKDIR/<key>=<value>_.../:
`--config.sweep.grid="data.z_dim=8,16;data.num_domains=2,4"`.
"""

import ml_collections
from ml_collections.config_dict import placeholder

STAGES = ("linear", "poly_stage1", "poly_stage2")
PENALTIES = ("minmax", "mmd", "minmax_mmd", "none")


def _parse(arg):
    parts = [p.strip() for p in (arg or "linear").split(",") if p.strip()]
    stage = parts[0] if parts else "linear"
    if stage not in STAGES:
        raise ValueError(f"unknown md_mixing variant {stage!r}; expected one of {STAGES}")
    opts = set(parts[1:])
    unknown = opts - set(PENALTIES) - {"dynamic", "fast"}
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; use {PENALTIES}, dynamic, fast")
    pens = opts & set(PENALTIES)
    if len(pens) > 1:
        raise ValueError(f"choose one penalty option of {PENALTIES}")
    return stage, (pens.pop() if pens else "minmax"), "dynamic" in opts, "fast" in opts


def get_config(arg=None):
    stage, penalty, dynamic, fast = _parse(arg)
    poly = stage != "linear"
    c = ml_collections.ConfigDict()
    c.method = "mdcrl"
    c.seed = 1234  # model seed (reference: seed, also its data seed; see sweep.data_seeds)

    # ------------------------------------------------ data (datamodule/mixing*.yaml, dataset/*)
    d = c.data = ml_collections.ConfigDict()
    d.dataset = "encoded" if stage == "poly_stage2" else "mixing"  # or "encoded" (stage 2)
    d.generation_strategy = "auto"  # "auto" (random per-domain ranges) or "manual"
    d.num_domains = 16 if poly else 4  # D
    d.z_dim = 14 if poly else 4  # true latent dimension
    d.z_dim_invariant = placeholder(int)  # None: z_dim // 2
    d.x_dim = 200 if poly else placeholder(int)  # None: 2 * z_dim
    d.domain_lengths = placeholder(tuple)  # manual only
    d.domain_dist_ranges = (-5.0, 5.0)  # auto: range of the spurious lows/highs
    d.invariant_dist_params = (0.0, 1.0)  # invariant latents ~ U(a, b)
    d.linear = not poly
    d.non_linearity = "polynomial"  # polynomial or mlp (when linear=False)
    d.polynomial_degree = 3 if poly else 2
    d.correlated_z = dynamic  # dynamic SCM
    d.corr_prob = 0.5 if dynamic else 0.0
    d.mlp_activation = "relu"
    d.num_samples = ml_collections.ConfigDict(dict(
        train=2400 if fast else 12000, valid=400 if fast else 2000,
        test=400 if fast else 2000))  # train is split into train - valid and valid
    # Fix of gotcha 5 (reference: False): the test split shares the mixing map, so the held-out
    # R^2 on it means something.
    d.test_shares_distribution = True
    d.stage1_workdir = ""  # stage 2: workdir of the stage-1 run (holds encoded/meta.json)
    d.stage1_member = 0  # stage 2: which stage-1 member's codes to use
    d.normalize_per_split = True  # stage 2: each split scaled with its own extrema (reference)

    # ------------------------------------------------ model (model/mixing_*.yaml)
    m = c.model = ml_collections.ConfigDict()
    m.autoencoder = {"linear": "linear", "poly_stage1": "poly", "poly_stage2": "linear"}[stage]
    m.mlp_hidden = (64, 64)  # autoencoder=mlp only
    m.mlp_negative_slope = 0.2
    m.mismatch_dims = 0  # stage 1: latent = z_dim + 2 m, d_inv = z_dim_invariant + m
    m.z_dim_invariant_fraction = 0.5  # stage 2: d_inv = int(latent * fraction)
    use_minmax = penalty in ("minmax", "minmax_mmd") and stage != "poly_stage1"
    use_mmd = penalty in ("mmd", "minmax_mmd") and stage != "poly_stage1"
    m.penalty_criterion = ml_collections.ConfigDict(dict(
        minmax=1.0 if use_minmax else 0.0, stddev=0.0, mmd=1.0 if use_mmd else 0.0,
        domain_classification=0.0))  # flags (truthy = on), not weights
    m.penalty_weight = 1.0
    m.warmup = stage != "poly_stage2"  # stage-2 models skip the warm-up (reference)
    m.wait_steps = 0
    m.linear_steps = 1  # with wait 0 / linear 1 step 0 has penalty weight 0 (gotcha 11)
    m.top_k = 5
    m.loss_transform = "mse"  # mse, l1, log_mse, log_l1
    m.skip_small_domains = False  # fix of gotcha 9 (off = reference)
    m.skip_degenerate = False  # fix of gotcha 27 (off = reference)
    m.stddev_threshold = 1.0
    m.stddev_eps = 1e-4
    m.hinge_loss_weight = 0.0
    m.mmd = ml_collections.ConfigDict()
    m.mmd.kernel_multiplier = 1.0
    m.mmd.kernel_number = 1
    # README linear-mixing MMD runs: fix_sigma=null (adaptive); config default 1.0 (stage 2).
    m.mmd.fix_sigma = placeholder(float) if stage == "linear" else 1.0
    # rows per domain the adaptive MMD evaluates; unset: mean + 6 sd of the domain count
    # (exact in practice, much faster); 0: batch // 2 (always exact)
    m.mmd.capacity = placeholder(int)
    m.save_encoded_data = stage == "poly_stage1"
    # Stage-1 training codes written for stage 2: "online" (reference, gotcha 12: the last
    # epoch's codes, each batch encoded before its update) or "final" (re-encoded with the
    # final weights, as the validation and test codes always are).
    m.encoded_train_codes = "online"

    # ------------------------------------------------ optimiser and scheduler
    c.optimizer = ml_collections.ConfigDict(dict(
        type="adam", lr=1e-3, weight_decay=0.0, eps=1e-8, b1=0.9, b2=0.999))  # adamw: wd 0.01
    c.scheduler = ml_collections.ConfigDict(dict(
        # reduce_on_plateau (mixing_synthetic), none (stage 2), linear, polynomial,
        # cosine_hard_restarts (the transformers schedules, per step)
        type="none" if stage == "poly_stage2" else "reduce_on_plateau",
        factor=0.5, patience=10, threshold=1e-3, cooldown=10, min_lr=1e-4, eps=1e-8,
        num_warmup_steps=1500, num_training_steps=3000, lr_end=0.0, power=1.0, num_cycles=5.0))

    # ------------------------------------------------ trainer (trainer/default.yaml, callbacks)
    t = c.training = ml_collections.ConfigDict()
    t.batchsize = 1024  # README (datamodule default 512)
    t.epochs = 20 if fast else 1000  # max_epochs
    t.min_epochs = 5 if fast else 200
    t.clip_grad_norm = 0.1  # gradient_clip_val (global norm)
    t.shuffle = False  # the reference's training loader does not shuffle
    t.early_stopping = ml_collections.ConfigDict(dict(
        enabled=True, patience=20, min_delta=1e-4))  # on val_loss
    t.nan_limit = 10
    t.steps_per_call = 1000  # a call never crosses an epoch
    # members vmapped ("vmap") or one after the other ("sequential"); "auto": sequential for the
    # adaptive MMD on one CPU device (faster there), vmap otherwise. The same computation
    # either way, up to floating-point rounding (final R^2 within about 0.002 here).
    t.member_loop = "auto"

    # ------------------------------------------------ sweep, checkpoints, evaluation
    c.sweep = ml_collections.ConfigDict()
    c.sweep.seeds = ""  # e.g. "1235,4256,49685,7383,9271"; empty: config.seed
    c.sweep.data_seeds = "same"  # "same": each member's data seed = its model seed
    # shape-changing values, one run each (sequential), e.g. "data.z_dim=8,16;data.num_domains=2,4"
    c.sweep.grid = ""
    c.checkpoint = ml_collections.ConfigDict(dict(every_n_steps=2000, max_to_keep=2,
                                                  async_save=True))
    c.eval = ml_collections.ConfigDict()
    c.eval.domain_accuracy = True  # logistic-regression domain accuracies (scikit-learn)
    # Stage 2 of the reference swaps the meaning of hz_~z_~r2 and ~hz_z_~r2 (gotcha 16); False
    # keeps the stage-1 meanings in both stages (hz_~z_~r2 = spurious from invariant block).
    c.eval.stage2_reference_names = False
    return c
