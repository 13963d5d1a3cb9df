"""MD-CRL on synthetic multi-domain mixing data (the reference README commands;
reference: `datamodule/mixing_dataset.py`, `models/mixing_autoencoder_pl.py`).

Variants, `--config configs/md_mixing.py:VARIANT[,OPTION...]`
(`linear|poly_stage1|poly_stage2[,minmax|mmd|minmax_mmd|none][,dynamic][,fast]`):

* `linear` (single stage, linear autoencoder on x) with one of `minmax` (default), `mmd`
  (adaptive bandwidth, `fix_sigma=null` as in the README), `minmax_mmd`, `none` (no penalty:
  the unpenalised baseline); add `dynamic` for the dynamic SCM (`correlated_z=True`,
  `corr_prob=0.5`).
* `poly_stage1`: polynomial mixing (degree 3, z_dim 14, x_dim 200, 16 domains), polynomial-
  decoder autoencoder, reconstruction only (a penalty option is ignored), writes its codes to
  WORKDIR/encoded/.
* `poly_stage2`: the small linear autoencoder with penalties (default `minmax`; `mmd`,
  `minmax_mmd` with the config's fixed bandwidth 1.0) on the codes of
  `--config.data.stage1_workdir=W1`.
* `fast`: fewer samples and epochs (tests, smoke runs).

Sweeps: `--config.sweep.seeds=1235,4256,49685,7383,9271` trains every seed as one vmapped run;
each member's data seed is its model seed (`sweep.data_seeds="same"`, as the reference's single
global seed), or give `sweep.data_seeds=...` for a product grid. Shape-changing values run one
after the other, each seed-vmapped, in WORKDIR/<key>=<value>_.../:
`--config.sweep.grid="data.z_dim=8,16;data.num_domains=2,4"`.

Variant parsing and the sweep, checkpoint and shared training blocks come from the sibling
`common.py`; unset optional values are placeholders (`None`).

Expected (figures recorded in docs/benchmarks.md and tests/test_acceptance_slow.py, all on the
2-core CPU; where a variant is not listed, none has been recorded):

* `linear,minmax`, z_dim 8, 4 domains, the five seeds above as one run: 18-21 s for the whole
  command (training 9 s, early stopping near 9000 steps); the median `hz_z_~r2` must reach 0.95
  and beat the unpenalised run's (`--config.model.penalty_weight=0.0`) by more than 0.5 (the
  slow acceptance test; per-member values in docs/md_mixing_cpu.png).
* `linear,mmd`, the five seeds: about 97 s; each member's metrics equal its seed's solo run
  (`val_loss` aside, in the last digits).
* `poly_stage1`, one seed: training 712-756 s (10000 steps); `poly_stage2` on its codes, five
  seeds: training 9-10 s (early stopping). No R^2 figures recorded for the polynomial pipeline.
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

STAGES = ("linear", "poly_stage1", "poly_stage2")
PENALTIES = ("minmax", "mmd", "minmax_mmd", "none")


def get_config(arg=None):
    stage, options = common.parse_variant(arg, "md_mixing", STAGES,
                                          options=PENALTIES + ("dynamic", "fast"),
                                          exclusive=(PENALTIES,))
    penalty = common.chosen(options, PENALTIES, default="minmax")
    dynamic, fast = "dynamic" in options, "fast" in options
    poly = stage != "linear"
    c = ml_collections.ConfigDict()
    c.method = "mdcrl"  # method family looked up by the loop (wscrl_jax.methods): mdcrl
    c.seed = 1234  # model seed (reference: seed, also its data seed; see sweep.data_seeds)

    # ------------------------------------------------ data (datamodule/mixing*.yaml, dataset/*)
    d = c.data = ml_collections.ConfigDict()
    # mixing (generated from the seed), encoded (stage 2: the stage-1 run's codes) or domains
    # (your own multi-domain data from data.path, docs/own_data.md; z_dim: latents to learn)
    d.dataset = "encoded" if stage == "poly_stage2" else "mixing"
    # domains: a directory with train.npz, val.npz, test.npz or one .npz file split at random
    d.path = ""
    # domains: "npz" reads data.path's .npz files into memory; "tfds" reads data.path as a
    # dataset built from them by scripts/build_dataset.py --format domains (docs/own_data.md)
    d.source = "npz"
    # domains in one file: seed of its split (the members' data seed; with the default
    # sweep.data_seeds="same" each member's model seed)
    d.split_seed = 0
    d.val_fraction = 0.1  # domains in one file: fraction of rows for validation
    d.test_fraction = 0.1  # domains in one file: fraction of rows for the test split
    d.generation_strategy = "auto"  # "auto" (random per-domain ranges) or "manual"
    d.num_domains = 16 if poly else 4  # D, number of domains
    d.z_dim = 14 if poly else 4  # true latent dimension
    d.z_dim_invariant = placeholder(int)  # invariant latents d_inv; None: z_dim // 2
    d.x_dim = 200 if poly else placeholder(int)  # observation dimension; None: 2 * z_dim
    d.domain_lengths = placeholder(tuple)  # manual only: fraction of rows per domain
    d.domain_dist_ranges = (-5.0, 5.0)  # auto: range of the spurious lows/highs
    d.invariant_dist_params = (0.0, 1.0)  # invariant latents ~ U(a, b)
    d.linear = not poly  # linear mixing x = z G; False: data.non_linearity
    d.non_linearity = "polynomial"  # polynomial or mlp (when linear=False)
    d.polynomial_degree = 3 if poly else 2  # degree of the polynomial mixing
    d.correlated_z = dynamic  # dynamic SCM: spurious latents depend on invariant ones
    # dynamic SCM: probability that a spurious coordinate gets its invariant partner added
    d.corr_prob = 0.5 if dynamic else 0.0
    # hidden activation of the mlp mixing: relu, leaky_relu, tanh, sigmoid (reference: activation)
    d.mlp_activation = "relu"
    d.num_samples = ml_collections.ConfigDict()  # reference: datamodule.num_samples
    d.num_samples.train = 2400 if fast else 12000  # rows drawn for training, valid included
    d.num_samples.valid = 400 if fast else 2000  # validation rows, split off the train rows
    d.num_samples.test = 400 if fast else 2000  # test rows (read only by the heldout_* metrics)
    # Fix of md-crl gotcha 5 (reference: False): the test split shares the mixing map, so the
    # held-out R^2 on it means something.
    d.test_shares_distribution = True
    d.stage1_workdir = ""  # stage 2: workdir of the stage-1 run (holds encoded/meta.json)
    d.stage1_member = 0  # stage 2: which stage-1 member's codes to use
    # stage 2: each split scaled with its own extrema (reference, md-crl gotcha 13); False: the
    # training extrema everywhere
    d.normalize_per_split = True
    # stage 2: codes scaled to [-1, 1] ("symmetric", mixing_encoded) or [0, 1] ("unit", balls)
    d.code_range = "symmetric"

    # ------------------------------------------------ model (model/mixing_*.yaml)
    m = c.model = ml_collections.ConfigDict()
    # linear, poly (polynomial decoder), mlp, mlp_bn (BatchNorm MLP); images: resnet18, cnn
    m.autoencoder = {"linear": "linear", "poly_stage1": "poly", "poly_stage2": "linear"}[stage]
    m.mlp_hidden = (64, 64)  # autoencoder=mlp only: hidden widths
    m.mlp_negative_slope = 0.2  # autoencoder=mlp / mlp_bn: leaky-ReLU slope
    m.mlp_width = 200  # autoencoder=mlp_bn only (mlp_ae.yaml): width of its 3 BatchNorm layers
    m.mismatch_dims = 0  # stage 1: latent = z_dim + 2 m, d_inv = z_dim_invariant + m
    m.z_dim_invariant_fraction = 0.5  # stage 2: d_inv = int(latent * fraction)
    use_minmax = penalty in ("minmax", "minmax_mmd") and stage != "poly_stage1"
    use_mmd = penalty in ("mmd", "minmax_mmd") and stage != "poly_stage1"
    # which penalties are on: flags (truthy = on, as the reference's 1./0.), not weights
    m.penalty_criterion = ml_collections.ConfigDict()
    m.penalty_criterion.minmax = 1.0 if use_minmax else 0.0  # min-max of the invariant extremes
    m.penalty_criterion.stddev = 0.0  # per-domain std differences
    m.penalty_criterion.mmd = 1.0 if use_mmd else 0.0  # MMD between domains
    m.penalty_criterion.domain_classification = 0.0  # domain-classifier loss (md-crl gotcha 17)
    m.penalty_weight = 1.0  # weight of the summed penalties
    m.warmup = stage != "poly_stage2"  # stage-2 models skip the warm-up (reference)
    m.wait_steps = 0  # warm-up: steps with penalty weight 0
    # warm-up: steps of the linear ramp to penalty_weight; with wait 0 / linear 1, step 0 has
    # penalty weight 0 (md-crl gotcha 11)
    m.linear_steps = 1
    m.top_k = 5  # min-max: extremes per domain and invariant dimension
    m.loss_transform = "mse"  # min-max: mse, l1, log_mse, log_l1
    m.skip_small_domains = False  # min-max: skip domains with < top_k rows (md-crl gotcha 9)
    # hinge, stddev: a domain with < 2 rows in the batch gives 0, not NaN (md-crl gotcha 27)
    m.skip_degenerate = False
    m.stddev_threshold = 1.0  # hinge: target std gamma
    m.stddev_eps = 1e-4  # hinge: eps inside the square root
    m.hinge_loss_weight = 0.0  # weight of the hinge (variance) loss; 0: not computed
    m.mmd = ml_collections.ConfigDict()  # reference: model.mmd_loss
    m.mmd.kernel_multiplier = 1.0  # bandwidth ratio between successive kernels
    m.mmd.kernel_number = 1  # number of Gaussian kernels
    # fixed bandwidth; None: adaptive (mean squared distance). README linear-mixing MMD runs:
    # fix_sigma=null (adaptive); config default 1.0 (stage 2).
    m.mmd.fix_sigma = placeholder(float) if stage == "linear" else 1.0
    # rows per domain the adaptive MMD evaluates; unset: mean + 6 sd of the domain count
    # (exact in practice, much faster); 0: batch // 2 (always exact)
    m.mmd.capacity = placeholder(int)
    m.save_encoded_data = stage == "poly_stage1"  # write the codes to WORKDIR/encoded/ (stage 1)
    # Stage-1 training codes written for stage 2: "online" (reference, md-crl gotcha 12: the last
    # epoch's codes, each batch encoded before its update) or "final" (re-encoded with the
    # final weights, as the validation and test codes always are).
    m.encoded_train_codes = "online"

    # ------------------------------------------------ optimiser and scheduler
    c.optimizer = ml_collections.ConfigDict()  # reference: model.optimizer
    c.optimizer.type = "adam"  # adam or adamw (reference adamw.yaml: weight_decay 0.01)
    c.optimizer.lr = 1e-3  # learning rate
    c.optimizer.weight_decay = 0.0  # (decoupled for adamw) weight decay
    c.optimizer.eps = 1e-8  # Adam eps
    c.optimizer.b1 = 0.9  # Adam beta 1 (reference: betas[0])
    c.optimizer.b2 = 0.999  # Adam beta 2 (reference: betas[1])
    c.scheduler = ml_collections.ConfigDict()  # reference: model.scheduler_config
    # reduce_on_plateau (mixing_synthetic), none (stage 2), linear, polynomial,
    # cosine_hard_restarts (the transformers schedules, per step)
    c.scheduler.type = "none" if stage == "poly_stage2" else "reduce_on_plateau"
    c.scheduler.factor = 0.5  # reduce_on_plateau: lr multiplier on a plateau
    c.scheduler.patience = 10  # reduce_on_plateau: epochs without improvement first
    c.scheduler.threshold = 1e-3  # reduce_on_plateau: absolute improvement that counts
    c.scheduler.cooldown = 10  # reduce_on_plateau: epochs of rest after a reduction
    c.scheduler.min_lr = 1e-4  # reduce_on_plateau: lr floor
    c.scheduler.eps = 1e-8  # reduce_on_plateau: smaller lr changes are skipped
    c.scheduler.num_warmup_steps = 1500  # transformers schedules: linear warm-up steps
    c.scheduler.num_training_steps = 3000  # transformers schedules: step where decay ends
    c.scheduler.lr_end = 0.0  # polynomial: final lr (reference polynomial.yaml: 4e-5)
    c.scheduler.power = 1.0  # polynomial: decay power
    c.scheduler.num_cycles = 5.0  # cosine_hard_restarts: number of cosine cycles

    # ------------------------------------------------ trainer (trainer/default.yaml, callbacks)
    t = c.training = common.training_block(
        batchsize=1024,  # README (datamodule default 512)
        epochs=20 if fast else 1000,  # reference: trainer.max_epochs
        clip_grad_norm=0.1,  # reference: trainer.gradient_clip_val (global norm)
        nan_limit=10,
        steps_per_call=1000,
        # MMD penalties: one CPU device, members in turn (member_loop "auto"): each member's
        # kernel blocks already keep every core busy
        cpu_devices=1 if use_mmd else None)
    t.min_epochs = 5 if fast else 200  # early stopping cannot stop sooner (trainer.min_epochs)
    t.shuffle = False  # the reference's training loader does not shuffle
    t.early_stopping = ml_collections.ConfigDict()  # reference: callbacks.early_stopping
    t.early_stopping.enabled = True  # stop a member when val_loss stops improving
    t.early_stopping.patience = 20  # epochs without improvement before stopping
    t.early_stopping.min_delta = 1e-4  # improvement in val_loss that counts
    # members vmapped ("vmap") or one after the other ("sequential"); "auto": sequential for the
    # MMD penalties on one CPU device (faster there), vmap otherwise. The same computation
    # either way, up to floating-point rounding (which moves the final R^2 a little).
    t.member_loop = "auto"

    # ------------------------------------------------ sweep, checkpoints, evaluation
    # seeds e.g. "1235,4256,49685,7383,9271" (the README's); data_seeds "same": each member's
    # data seed = its model seed (this config has no data.nature.seed to fall back on)
    c.sweep = common.sweep_block(seeds="", data_seeds="same", grid="")
    c.checkpoint = common.checkpoint_block(every_n_steps=2000, max_to_keep=2, async_save=True)
    c.tracking = common.tracking_block()
    c.eval = ml_collections.ConfigDict()
    c.eval.domain_accuracy = True  # logistic-regression domain accuracies (scikit-learn)
    # Stage 2 of the reference swaps the meaning of hz_~z_~r2 and ~hz_z_~r2 (md-crl gotcha 16);
    # False keeps the stage-1 meanings in both stages (hz_~z_~r2 = spurious from invariant block).
    c.eval.stage2_reference_names = False
    return c
