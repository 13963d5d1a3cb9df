"""Config checks that run before any work: a bad value is one clear message."""

from wscrl_jax.causal.graphs import GRAPH_MODES
from wscrl_jax.data.scaling import CAUSAL_EFFECTS, SPLITS
from wscrl_jax.models.ilcm import AVERAGING_STRATEGIES
from wscrl_jax.models.lcm_method import ADJACENCY_TO_STRUCTURE, MODEL_TYPES
from wscrl_jax.train.schedules import LR_SCHEDULE_TYPES, STEP_SCHEDULE_TYPES


class ConfigError(ValueError):
    """A config value is invalid; the message says which and what to do."""


def _require(condition, message):
    if not condition:
        raise ConfigError(message)


def _one_of(value, allowed, key):
    _require(value in allowed, f"{key}={value!r} is not supported; use one of {tuple(allowed)}")


def _positive_int(value, key, minimum=1):
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
             f"{key}={value!r} must be an integer >= {minimum}")


def validate_lcm_config(c):
    """Checks a WS-CRL (scaling) config; raises ConfigError."""
    _one_of(c.data.dataset, ("scaling",), "data.dataset")
    _positive_int(c.data.dim_z, "data.dim_z", 2)
    _require(c.data.dim_x == c.data.dim_z,
             f"data.dim_x={c.data.dim_x} must equal data.dim_z={c.data.dim_z} for scaling data")
    for split in ("train", "val", "test"):
        _positive_int(c.data.samples[split], f"data.samples.{split}")
    _one_of(c.data.nature.mode, GRAPH_MODES, "data.nature.mode")
    _one_of(c.data.nature.causal_effects, CAUSAL_EFFECTS, "data.nature.causal_effects")
    _require(c.data.nature.observation_noise is None or c.data.nature.observation_noise >= 0,
             "data.nature.observation_noise must be >= 0")

    m = c.model
    _one_of(m.type, MODEL_TYPES, "model.type")
    if m.type == "intervention_noise_vae":
        _one_of(m.scm.type, ("mlp",), "model.scm.type")
        _one_of(m.scm.adjacency_matrix, tuple(ADJACENCY_TO_STRUCTURE), "model.scm.adjacency_matrix")
        _one_of(m.intervention_encoder.type, ("learnable_heuristic", "mlp"),
                "model.intervention_encoder.type")
        _one_of(m.averaging_strategy, AVERAGING_STRATEGIES, "model.averaging_strategy")
        _positive_int(m.scm.hidden_units, "model.scm.hidden_units")
        _positive_int(m.scm.hidden_layers, "model.scm.hidden_layers", 0)
        _require(m.scm.min_std > 0, "model.scm.min_std must be > 0")
    else:
        _one_of(m.scm.type, ("unstructured",), "model.scm.type")
    for name in ("encoder", "decoder"):
        _one_of(m[name].type, ("mlp",), f"model.{name}.type")
        _positive_int(m[name].hidden_units, f"model.{name}.hidden_units")
        _positive_int(m[name].hidden_layers, f"model.{name}.hidden_layers", 1)
        _require(m[name].std > m[name].min_std >= 0,
                 f"model.{name}.std must exceed model.{name}.min_std >= 0")

    t = c.training
    _positive_int(t.batchsize, "training.batchsize")
    _positive_int(t.epochs, "training.epochs")
    _positive_int(t.iwae_samples, "training.iwae_samples")
    _positive_int(t.steps_per_call, "training.steps_per_call")
    _positive_int(t.nan_limit, "training.nan_limit")
    _require(t.clip_grad_norm > 0, "training.clip_grad_norm must be > 0")
    _one_of(t.likelihood_reduction, ("sum", "mean"), "training.likelihood_reduction")
    _one_of(t.lr_schedule.type, LR_SCHEDULE_TYPES, "training.lr_schedule.type")
    for key in ("beta", "z_regularization", "consistency_regularization",
                "inverse_consistency_regularization", "intervention_entropy_regularization",
                "intervention_encoder_offset", "manifold_thickness"):
        _one_of(t[f"{key}_schedule"].type, STEP_SCHEDULE_TYPES, f"training.{key}_schedule.type")
    for key in ("freeze_encoder_epoch", "fix_topological_order_epoch"):
        _require(t[key] is None or t[key] >= t.epochs,
                 f"training.{key}={t[key]} is not supported yet; set it >= training.epochs")
    _one_of(c.eval.eval_partition, SPLITS, "eval.eval_partition")
    _one_of(c.eval.likelihood_reduction, ("sum", "mean"), "eval.likelihood_reduction")


def validate_mdcrl_config(c):
    """Checks an MD-CRL mixing config (configs/md_mixing.py); raises ConfigError. Stage 2 also
    checks that data.stage1_workdir holds stage-1 output."""
    from wscrl_jax.models.mdcrl_autoencoders import AUTOENCODERS
    from wscrl_jax.models.mdcrl_method import (OPTIMIZERS, SCHEDULERS, Stage1OutputMissing,
                                               mixing_data_config, read_encoded_meta)
    from wscrl_jax.models.mdcrl_penalties import LOSS_TRANSFORMS

    d, m, t = c.data, c.model, c.training
    _one_of(d.dataset, ("mixing", "encoded"), "data.dataset")
    if d.dataset == "encoded":
        try:
            meta = read_encoded_meta(d.stage1_workdir)
        except Stage1OutputMissing as e:
            raise ConfigError(str(e)) from None
        _require(0 <= d.stage1_member < len(meta["members"]),
                 f"data.stage1_member={d.stage1_member} is out of range: stage 1 has "
                 f"{len(meta['members'])} member(s)")
        _require(0 < m.z_dim_invariant_fraction <= 1,
                 "model.z_dim_invariant_fraction must lie in (0, 1]")
    else:
        try:
            cfg = mixing_data_config(d)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"data: {e}") from None
        n_train = cfg.num_samples_train - cfg.num_samples_valid
        for name, n in (("train", n_train), ("valid", cfg.num_samples_valid)):
            _require(n >= 2, f"the {name} split has {n} samples; need at least 2 (check "
                     "data.num_samples)")
        _positive_int(m.mismatch_dims + 1, "model.mismatch_dims + 1")
    _one_of(m.autoencoder, AUTOENCODERS, "model.autoencoder")
    _one_of(m.loss_transform, LOSS_TRANSFORMS, "model.loss_transform")
    _one_of(m.get("encoded_train_codes", "online"), ("online", "final"),
            "model.encoded_train_codes")
    _one_of(t.get("member_loop", "vmap"), ("auto", "vmap", "sequential"), "training.member_loop")
    _positive_int(m.top_k, "model.top_k")
    _require(m.penalty_weight >= 0, "model.penalty_weight must be >= 0")
    _require(m.hinge_loss_weight >= 0, "model.hinge_loss_weight must be >= 0")
    _positive_int(m.linear_steps, "model.linear_steps")
    _positive_int(m.mmd.kernel_number, "model.mmd.kernel_number")
    _require(m.mmd.capacity is None or m.mmd.capacity >= 0,
             "model.mmd.capacity must be >= 0 (0: exact, unset: automatic)")
    _one_of(c.optimizer.type, OPTIMIZERS, "optimizer.type")
    _require(c.optimizer.lr > 0, "optimizer.lr must be > 0")
    _one_of(c.scheduler.type, SCHEDULERS, "scheduler.type")
    _positive_int(t.batchsize, "training.batchsize")
    _positive_int(t.epochs, "training.epochs")
    _positive_int(t.min_epochs, "training.min_epochs", 0)
    _positive_int(t.steps_per_call, "training.steps_per_call")
    _positive_int(t.nan_limit, "training.nan_limit")
    _require(t.clip_grad_norm > 0, "training.clip_grad_norm must be > 0")
    _positive_int(t.early_stopping.patience, "training.early_stopping.patience")
    data_seeds = c.sweep.get("data_seeds")
    _require(data_seeds == "same" or (str(data_seeds).strip() != "" and all(
        p.strip().lstrip("-").isdigit() for p in str(data_seeds).split(",") if p.strip())),
             f"sweep.data_seeds={data_seeds!r} must be 'same' or comma-separated integers")
    if c.sweep.get("grid"):
        import itertools

        from wscrl_jax.experiment import grid_point_config, parse_grid

        grid = parse_grid(c.sweep.grid)
        for values in itertools.product(*(v for _, v in grid)):
            try:
                sub = grid_point_config(c, grid, values)
            except (KeyError, TypeError, AttributeError) as e:
                raise ConfigError(f"sweep.grid names an unknown key {e}") from None
            validate_mdcrl_config(sub)


def validate_config(c):
    _require("method" in c, "the config has no 'method' key; use a file from configs/")
    validators = {"lcm": validate_lcm_config, "mdcrl": validate_mdcrl_config}
    _one_of(c.method, tuple(validators), "method")
    validators[c.method](c)
