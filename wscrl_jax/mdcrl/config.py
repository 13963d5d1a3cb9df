"""Checks of an MD-CRL config (`configs/md_mixing.py`) before any work, next to its allowed
values: every key the data, the model, the optimiser, the scheduler and the trainer read."""

import math
import numbers

from wscrl_jax.config_checks import (ConfigError, batch_fits, boolean, check_own_data_split,
                                     check_shared_training, finite_number, flag, is_int,
                                     number_pair, one_of, optional_int, positive_int, require)
from wscrl_jax.data.balls import balls_data_config
from wscrl_jax.data.encoded import CODE_RANGES, Stage1OutputMissing, read_encoded_meta
from wscrl_jax.data.mixing import MLP_ACTIVATIONS, mixing_data_config
from wscrl_jax.data.npz_files import DataFileError
from wscrl_jax.data.own_domains import load_domains, split_sizes
from wscrl_jax.mdcrl.autoencoders import AUTOENCODERS, IMAGE_AUTOENCODERS
from wscrl_jax.mdcrl.penalties import LOSS_TRANSFORMS
from wscrl_jax.train.schedules import TRANSFORMERS_SCHEDULE_TYPES

DATASETS = ("mixing", "encoded", "balls", "domains")  # domains: own data (data/own_domains.py)
SCHEDULERS = ("reduce_on_plateau", "none") + TRANSFORMERS_SCHEDULE_TYPES
OPTIMIZERS = ("adam", "adamw")
# Upper bound on the generated data (float32 latents, polynomial features and observations of
# every row, and the mixing's coefficients), so that a mistyped size is one line instead of
# exhausting memory (data.z_dim=100000 aborts inside XLA).
MAX_DATA_BYTES = 8 << 30
ENCODED_TRAIN_CODES = ("online", "final")
MEMBER_LOOPS = ("auto", "vmap", "sequential")


def validate(c):
    """An MD-CRL mixing config (configs/md_mixing.py) at one grid point: every key the data,
    the model, the optimiser, the scheduler and the trainer read (the sweep is
    `methods.validate_config`'s). Stage 2 also checks that data.stage1_workdir holds
    stage-1 output and sizes its batch by that output."""
    d, m, t = c.data, c.model, c.training
    one_of(d.dataset, DATASETS, "data.dataset")
    one_of(m.autoencoder, AUTOENCODERS, "model.autoencoder")
    check_shared_training(t)
    images = d.dataset == "balls"
    require(images == (m.autoencoder in IMAGE_AUTOENCODERS),
            f"model.autoencoder={m.autoencoder!r} does not fit data.dataset={d.dataset!r}: "
            f"images (balls) need one of {IMAGE_AUTOENCODERS}, vectors any other")
    if images:
        d_inv, split_keys, x_dim = _validate_balls(c), "", 0
    elif d.dataset == "encoded":
        try:
            meta = read_encoded_meta(d.stage1_workdir)
            members = len(meta["members"])
            n_train, x_dim = int(meta["splits"]["train"]), int(meta["latent_dim"])
        except Stage1OutputMissing as e:
            raise ConfigError(str(e)) from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"data.stage1_workdir={d.stage1_workdir!r} holds unreadable "
                              f"stage-1 metadata (encoded/meta.json: {e!r}); rerun stage 1"
                              ) from None
        source = meta.get("source", "mixing")  # MD-CRL stage 1 writes "mixing" or "balls"
        require(source in ("mixing", "balls"), f"data.stage1_workdir={d.stage1_workdir!r} "
                f"holds {source} codes of another pipeline; point it at an MD-CRL stage-1 run "
                "(configs/md_mixing.py:poly_stage1 or configs/md_balls.py:stage1)")
        positive_int(d.stage1_member, "data.stage1_member", 0)
        require(d.stage1_member < members,
                f"data.stage1_member={d.stage1_member} is out of range: stage 1 has "
                f"{members} member(s)")
        boolean(d.normalize_per_split, "data.normalize_per_split")
        one_of(d.code_range, CODE_RANGES, "data.code_range")
        finite_number(m.z_dim_invariant_fraction, "model.z_dim_invariant_fraction", 0,
                      exclusive=True, maximum=1)
        d_inv = int(x_dim * m.z_dim_invariant_fraction)
        batch_fits(t.batchsize, n_train,
                   f"the stage-1 training split in {d.stage1_workdir}/encoded/meta.json")
        split_keys = f"int(stage-1 latent_dim {x_dim} * model.z_dim_invariant_fraction)"
    elif d.dataset == "domains":
        d_inv, x_dim = _validate_domains(c)
        split_keys = "data.z_dim_invariant + model.mismatch_dims"
    else:
        one_of(d.generation_strategy, ("auto", "manual"), "data.generation_strategy")
        positive_int(d.num_domains, "data.num_domains")
        positive_int(d.z_dim, "data.z_dim")
        optional_int(d.z_dim_invariant, "data.z_dim_invariant", 0, unset="z_dim // 2")
        require(d.z_dim_invariant is None or d.z_dim_invariant <= d.z_dim,
                f"data.z_dim_invariant={d.z_dim_invariant} must be <= data.z_dim={d.z_dim}")
        optional_int(d.x_dim, "data.x_dim", 1, unset="2 * z_dim")
        x_dim = 2 * d.z_dim if d.x_dim is None else d.x_dim
        boolean(d.linear, "data.linear")
        if not d.linear:
            one_of(d.non_linearity, ("polynomial", "mlp"), "data.non_linearity")
        one_of(d.mlp_activation, tuple(MLP_ACTIVATIONS), "data.mlp_activation")
        boolean(d.correlated_z, "data.correlated_z")
        finite_number(d.corr_prob, "data.corr_prob", 0, maximum=1)
        boolean(d.test_shares_distribution, "data.test_shares_distribution")
        number_pair(d.invariant_dist_params, "data.invariant_dist_params")
        if d.generation_strategy == "auto":
            number_pair(d.domain_dist_ranges, "data.domain_dist_ranges")
        else:
            lengths, ranges, n_dom = d.domain_lengths, d.domain_dist_ranges, d.num_domains
            require(isinstance(lengths, (list, tuple)) and len(lengths) == n_dom and all(
                isinstance(v, numbers.Real) and math.isfinite(v) and v >= 0 for v in lengths)
                and sum(lengths) <= 1 + 1e-6,
                f"data.domain_lengths={lengths!r} must be {n_dom} fractions >= 0 (one per "
                "domain, data.num_domains) summing to at most 1")
            require(isinstance(ranges, (list, tuple)) and len(ranges) == n_dom,
                    f"data.domain_dist_ranges={ranges!r} must be {n_dom} pairs (low, high), "
                    "one per domain (data.num_domains), for manual generation")
            for i, pair in enumerate(ranges):
                number_pair(pair, f"data.domain_dist_ranges[{i}]")
        ns = d.num_samples
        positive_int(ns.train, "data.num_samples.train")
        positive_int(ns.valid, "data.num_samples.valid", 2)
        positive_int(ns.test, "data.num_samples.test", 0)
        n_train = ns.train - ns.valid
        require(n_train >= 2, f"data.num_samples.train={ns.train} minus "
                f"data.num_samples.valid={ns.valid} leaves {n_train} training rows; need at "
                "least 2")
        for split in ("train", "test"):
            require(ns[split] == 0 or ns[split] >= d.num_domains,
                    f"data.num_samples.{split}={ns[split]} is fewer rows than "
                    f"data.num_domains={d.num_domains}: some domains would be empty")
        batch_fits(t.batchsize, n_train,
                   "data.num_samples.train - data.num_samples.valid")
        positive_int(m.mismatch_dims, "model.mismatch_dims", 0)
        boolean(m.save_encoded_data, "model.save_encoded_data")
        one_of(m.encoded_train_codes, ENCODED_TRAIN_CODES,
               "model.encoded_train_codes")
        z_inv = d.z_dim // 2 if d.z_dim_invariant is None else d.z_dim_invariant
        d_inv = z_inv + m.mismatch_dims
        split_keys = "data.z_dim_invariant + model.mismatch_dims"
    if m.autoencoder == "poly" or (d.dataset == "mixing" and not d.linear
                                   and d.non_linearity == "polynomial"):
        positive_int(d.polynomial_degree, "data.polynomial_degree")
    if d.dataset == "mixing":
        _check_data_size(d, x_dim)
    if m.autoencoder == "poly":
        require(x_dim >= 2, f"model.autoencoder='poly' needs an input dimension >= 2 (its "
                f"hidden width is x_dim // 2); the data has x_dim={x_dim}")
    if d.dataset == "mixing":
        try:  # the generator's own checks, should a case above be missing
            mixing_data_config(d)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"data: {e}") from None
    positive_int(m.mlp_width, "model.mlp_width")
    hidden = m.mlp_hidden
    require(isinstance(hidden, (list, tuple)) and all(is_int(h) and h >= 1 for h in hidden),
            f"model.mlp_hidden={hidden!r} must be a tuple of hidden widths >= 1")
    finite_number(m.mlp_negative_slope, "model.mlp_negative_slope")

    # Penalties (mdcrl/penalties.py, mmd.py): flags, weights and their settings.
    for name in ("minmax", "stddev", "mmd", "domain_classification"):
        flag(m.penalty_criterion[name], f"model.penalty_criterion.{name}")
    finite_number(m.penalty_weight, "model.penalty_weight", 0)
    finite_number(m.hinge_loss_weight, "model.hinge_loss_weight", 0)
    on = [k for k, v in m.penalty_criterion.items() if v] + (
        ["hinge"] if m.hinge_loss_weight > 0 else [])
    require(not on or d_inv >= 1, f"the penalties {on} need an invariant block of at least "
            f"one dimension; {split_keys} gives {d_inv}")
    boolean(m.warmup, "model.warmup")
    positive_int(m.wait_steps, "model.wait_steps", 0)
    positive_int(m.linear_steps, "model.linear_steps")
    positive_int(m.top_k, "model.top_k")
    one_of(m.loss_transform, LOSS_TRANSFORMS, "model.loss_transform")
    boolean(m.skip_small_domains, "model.skip_small_domains")
    boolean(m.skip_degenerate, "model.skip_degenerate")
    finite_number(m.stddev_threshold, "model.stddev_threshold", 0)
    finite_number(m.stddev_eps, "model.stddev_eps", 0, exclusive=True)
    finite_number(m.mmd.kernel_multiplier, "model.mmd.kernel_multiplier", 0, exclusive=True)
    positive_int(m.mmd.kernel_number, "model.mmd.kernel_number")
    finite_number(m.mmd.fix_sigma, "model.mmd.fix_sigma", 0, allow_none=True,
                  unset="adaptive bandwidth; 0 too")
    optional_int(m.mmd.capacity, "model.mmd.capacity", 0,
                 unset="automatic; 0: exact")

    o = c.optimizer  # train/optim.py: torch_adam
    one_of(o.type, OPTIMIZERS, "optimizer.type")
    finite_number(o.lr, "optimizer.lr", 0, exclusive=True)
    finite_number(o.weight_decay, "optimizer.weight_decay", 0)
    finite_number(o.eps, "optimizer.eps", 0, exclusive=True)
    finite_number(o.b1, "optimizer.b1", 0, maximum=1, exclusive_max=True)
    finite_number(o.b2, "optimizer.b2", 0, maximum=1, exclusive_max=True)
    sc = c.scheduler  # keys of the chosen type only
    one_of(sc.type, SCHEDULERS, "scheduler.type")
    if sc.type == "reduce_on_plateau":  # train/callbacks.py: torch ReduceLROnPlateau
        finite_number(sc.factor, "scheduler.factor", 0, maximum=1, exclusive_max=True)
        positive_int(sc.patience, "scheduler.patience", 0)
        finite_number(sc.threshold, "scheduler.threshold", 0)
        positive_int(sc.cooldown, "scheduler.cooldown", 0)
        finite_number(sc.min_lr, "scheduler.min_lr", 0)
        finite_number(sc.eps, "scheduler.eps", 0)
    elif sc.type in TRANSFORMERS_SCHEDULE_TYPES:  # train/schedules.py
        positive_int(sc.num_warmup_steps, "scheduler.num_warmup_steps", 0)
        positive_int(sc.num_training_steps, "scheduler.num_training_steps")
        if sc.type == "polynomial":  # transformers: lr_end must be below the initial lr
            finite_number(sc.lr_end, "scheduler.lr_end", 0, maximum=o.lr,
                          exclusive_max=True)
            finite_number(sc.power, "scheduler.power", 0, exclusive=True)
        if sc.type == "cosine_hard_restarts":
            finite_number(sc.num_cycles, "scheduler.num_cycles", 0, exclusive=True)

    positive_int(t.min_epochs, "training.min_epochs", 0)
    boolean(t.shuffle, "training.shuffle")
    one_of(t.member_loop, MEMBER_LOOPS, "training.member_loop")
    es = t.early_stopping  # train/callbacks.py: Lightning EarlyStopping
    boolean(es.enabled, "training.early_stopping.enabled")
    positive_int(es.patience, "training.early_stopping.patience")
    finite_number(es.min_delta, "training.early_stopping.min_delta", 0)
    boolean(c.eval.domain_accuracy, "eval.domain_accuracy")
    boolean(c.eval.stage2_reference_names, "eval.stage2_reference_names")


def _validate_domains(c):
    """Own multi-domain data (`data.dataset=domains`): the split keys, every file read and
    checked (`data/own_domains.py`), a training split of at least one batch; returns (the
    model's d_inv, x_dim)."""
    d, m, t = c.data, c.model, c.training
    check_own_data_split(d, c.get("sweep", {}))
    positive_int(d.z_dim, "data.z_dim")
    optional_int(d.z_dim_invariant, "data.z_dim_invariant", 0, unset="z_dim // 2")
    require(d.z_dim_invariant is None or d.z_dim_invariant <= d.z_dim,
            f"data.z_dim_invariant={d.z_dim_invariant} must be <= data.z_dim={d.z_dim}")
    positive_int(m.mismatch_dims, "model.mismatch_dims", 0)
    require(not m.save_encoded_data, "model.save_encoded_data=True: two-stage runs on own "
            "data (data.dataset=domains) are not supported; use a single-stage autoencoder")
    try:
        domains = load_domains(d.path, d.get("source", "npz"))
    except DataFileError as e:
        raise ConfigError(str(e)) from None
    sizes = split_sizes(domains, d.val_fraction, d.test_fraction)
    where = {s: domains.source.files.get(s, d.path) for s in sizes}
    require(sizes["train"] >= t.batchsize,
            f"{where['train']}: array 'x' gives {sizes['train']} training rows, fewer than one "
            f"batch (training.batchsize={t.batchsize}); use more rows or a smaller batch size")
    for split in ("val", "test"):
        require(sizes[split] >= 2, f"{where[split]}: array 'x' gives {sizes[split]} {split} "
                f"row(s); at least 2 needed (add rows or raise data.{split}_fraction)")
    z_inv = d.z_dim // 2 if d.z_dim_invariant is None else d.z_dim_invariant
    return z_inv + m.mismatch_dims, domains.x_dim


def _check_data_size(d, x_dim: int):
    """Refuses mixing data above MAX_DATA_BYTES (rows x (z_dim + features + x_dim) plus the
    features x x_dim coefficients, float32; polynomial features: sum of z_dim^k, k <= degree)."""
    features = d.z_dim
    if not d.linear and d.non_linearity == "polynomial":
        features = sum(d.z_dim ** k for k in range(d.polynomial_degree + 1))
    rows = d.num_samples.train + d.num_samples.test
    size = 4 * (rows * (d.z_dim + features + x_dim) + features * x_dim)
    require(size <= MAX_DATA_BYTES, f"data.z_dim={d.z_dim}, data.x_dim={x_dim}"
            + (f", data.polynomial_degree={d.polynomial_degree} ({features} polynomial "
               "features)" if features != d.z_dim else "")
            + f" and {rows} rows make {size / 2**30:.3g} GiB of data, above the "
            f"{MAX_DATA_BYTES >> 30} GiB bound that keeps a run in host memory; use smaller "
            "sizes")


def _validate_balls(c) -> int:
    """The balls images of stage 1 (`configs/md_balls.py:stage1`); returns d_inv (0: stage 1
    trains the reconstruction only, so every penalty must be off)."""
    d, m, t = c.data, c.model, c.training
    on = [f"model.penalty_criterion.{k}" for k, v in m.penalty_criterion.items() if v] + (
        ["model.hinge_loss_weight"] if m.hinge_loss_weight else [])
    require(not on, f"{', '.join(on)} must be 0 on balls images: stage 1 trains the "
            "reconstruction only (reference BallsAutoencoderPL); the penalties belong to "
            "configs/md_balls.py:stage2")
    positive_int(m.z_dim, "model.z_dim")
    boolean(m.save_encoded_data, "model.save_encoded_data")
    one_of(m.encoded_train_codes, ENCODED_TRAIN_CODES,
           "model.encoded_train_codes")
    require(d.image_size == 64, f"data.image_size={d.image_size!r}: the balls autoencoders "
            "decode 64 x 64 images; use 64")
    ns = d.num_samples
    positive_int(ns.train, "data.num_samples.train")
    positive_int(ns.valid, "data.num_samples.valid", 2)
    positive_int(ns.test, "data.num_samples.test", 0)
    try:  # the generator's own checks (boxes that fit, ball counts, probabilities)
        cfg = balls_data_config(d)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"data: {e}") from None
    n_train = cfg.num_samples_train - cfg.num_samples_valid
    require(n_train >= 2, f"data.num_samples.train={ns.train} minus data.num_samples.valid="
            f"{ns.valid} leaves {n_train} training images; need at least 2")
    batch_fits(t.batchsize, n_train, "data.num_samples.train - data.num_samples.valid")
    return 0
