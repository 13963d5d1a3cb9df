"""Config checks that run before any work: a bad value is one clear message.

The building blocks (`require`, `one_of`, `positive_int`, `optional_int`, `finite_number`,
`boolean`, `flag`, `seed_value`, `unique_seeds`, `batch_fits`) and the checks of the sections
every config shares (`check_shared_training`, `check_checkpoint`, `check_tracking`). Each
method checks its own sections in `Method.validate_config`, next to its allowed values;
`methods.validate_config` runs both. Every message names the key, the bad value and what is allowed.
"""

import importlib.util
import math
import numbers
import os

# Seeds become uint32 PRNG keys (`train/state.py`) and numpy generator seeds: anything outside
# [0, 2**32) either fails there or silently collides with another seed.
SEED_LIMIT = 2 ** 32


class ConfigError(ValueError):
    """A config value is invalid; the message says which and what to do."""


def require(condition, message: str):
    if not condition:
        raise ConfigError(message)


def one_of(value, allowed, key: str):
    require(value in allowed, f"{key}={value!r} is not supported; use one of {tuple(allowed)}")


def is_int(value) -> bool:
    """An integer that is not a bool (True would otherwise pass as 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(value, key: str, minimum: int = 1):
    require(is_int(value) and value >= minimum, f"{key}={value!r} must be an integer >= {minimum}")


def optional_int(value, key: str, minimum: int = 0, unset: str = "never"):
    """None (the placeholder) or an integer >= minimum."""
    require(value is None or (is_int(value) and value >= minimum),
            f"{key}={value!r} must be an integer >= {minimum} or unset ({unset})")


def _interval(minimum, exclusive, maximum, exclusive_max) -> str:
    if minimum is not None and maximum is not None:
        return (f"in {'(' if exclusive else '['}{minimum:g}, {maximum:g}"
                f"{')' if exclusive_max else ']'}")
    if minimum is not None:
        return f"{'>' if exclusive else '>='} {minimum:g}"
    if maximum is not None:
        return f"{'<' if exclusive_max else '<='} {maximum:g}"
    return ""


def finite_number(value, key: str, minimum=None, *, exclusive: bool = False, maximum=None,
                  exclusive_max: bool = False, allow_none: bool = False, unset: str = ""):
    """A finite int or float (not a bool, NaN or inf) within the bounds: `minimum` (exclusive
    when `exclusive`) and `maximum` (exclusive when `exclusive_max`); None passes when
    `allow_none` (`unset` says what None means, for the message)."""
    if allow_none and value is None:
        return
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(value))
    if ok and minimum is not None:
        ok = value > minimum if exclusive else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if exclusive_max else value <= maximum
    if not ok:
        bounds = _interval(minimum, exclusive, maximum, exclusive_max)
        none = f" or unset{f' ({unset})' if unset else ''}" if allow_none else ""
        raise ConfigError(f"{key}={value!r} must be a finite number{' ' + bounds if bounds else ''}"
                          f"{none}")


def positive_number(value, key: str):
    """A finite number > 0."""
    finite_number(value, key, 0, exclusive=True)


def boolean(value, key: str):
    """True or False: a string such as "False" would silently count as on."""
    require(isinstance(value, bool) or type(value).__name__ == "bool_",
            f"{key}={value!r} must be True or False")


def flag(value, key: str):
    """An on/off switch written as the reference's 1./0.: a bool or a finite number >= 0
    (nonzero = on); not a string, NaN or a negative number (that reads as a weight)."""
    require(isinstance(value, bool) or (isinstance(value, numbers.Real) and math.isfinite(value)
                                        and value >= 0),
            f"{key}={value!r} must be a flag: True/False or a number >= 0 (nonzero = on)")


def number_pair(value, key: str, ordered: bool = True):
    """A (low, high) pair of finite numbers with low <= high (when `ordered`)."""
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                  for v in value))
    require(ok and (not ordered or value[0] <= value[1]),
            f"{key}={value!r} must be a pair (low, high) of finite numbers with low <= high")


# ---------------------------------------------------------------- seeds and members
def seed_value(value, key: str):
    """One seed: an integer in [0, 2**32)."""
    require(is_int(value) and 0 <= value < SEED_LIMIT,
            f"{key}={value!r} must be an integer seed in [0, 2**32)")


def unique_seeds(seeds, key: str, value=None, what: str = "seed"):
    """No seed twice in `seeds` (parsed from `value`, the config's spelling): a repeated seed
    would train the same member twice in one run."""
    seen, dups = set(), []
    for s in seeds:
        if s in seen and s not in dups:
            dups.append(s)
        seen.add(s)
    require(not dups, f"{key}={seeds if value is None else value!r} lists the {what}(s) "
            f"{', '.join(map(str, dups))} more than once; each member of a run must be a "
            "different (seed, data seed) pair")


def batch_fits(batchsize, n_train: int, split: str):
    """A batch no larger than the training split (`split` says which keys set its size)."""
    require(batchsize <= n_train,
            f"training.batchsize={batchsize} is larger than the training split ({n_train} rows: "
            f"{split}); use a batch size <= {n_train}")


# ---------------------------------------------------------------- shared sections
def check_shared_training(t):
    """The `training` keys the shared loop reads."""
    positive_int(t.batchsize, "training.batchsize")
    positive_int(t.epochs, "training.epochs")
    positive_int(t.steps_per_call, "training.steps_per_call")
    positive_int(t.nan_limit, "training.nan_limit")
    positive_number(t.clip_grad_norm, "training.clip_grad_norm")


def check_tracking(tr):
    """The `tracking` keys (`configs/common.py: tracking_block`); the packages they need."""
    boolean(tr.mlflow, "tracking.mlflow")
    boolean(tr.tensorboard, "tracking.tensorboard")
    require(tr.mlflow_uri is None or isinstance(tr.mlflow_uri, str),
            f"tracking.mlflow_uri={tr.mlflow_uri!r} must be a URI string or unset")
    for key, module, extra in (("mlflow", "mlflow", "mlflow"),
                               ("tensorboard", "tensorboardX", "tensorboard")):
        require(not tr[key] or importlib.util.find_spec(module) is not None,
                f"tracking.{key}=True needs the {module} package: pip install -e \".[{extra}]\"")


def check_checkpoint(ck):
    """The `checkpoint` keys the experiment runner reads (`configs/common.py`)."""
    positive_int(ck.every_n_steps, "checkpoint.every_n_steps", 0)
    optional_int(ck.max_to_keep, "checkpoint.max_to_keep", 1, unset="keep all")
    boolean(ck.async_save, "checkpoint.async_save")


def check_own_data_split(d, sweep):
    """`data.path`, `data.split_seed`, `data.val_fraction`, `data.test_fraction` of a user's
    own data (`data.dataset` pairs or domains, docs/own_data.md), and `sweep.data_seeds`: split
    seeds where one file is split, refused where a directory fixes the splits."""
    require(isinstance(d.path, str) and d.path, "data.path is not set; pass a directory with "
            "train.npz, val.npz and test.npz, or one .npz file: --config.data.path=PATH")
    seed_value(d.split_seed, "data.split_seed")
    finite_number(d.val_fraction, "data.val_fraction", 0, exclusive=True, maximum=1,
                  exclusive_max=True)
    finite_number(d.test_fraction, "data.test_fraction", 0, exclusive=True, maximum=1,
                  exclusive_max=True)
    require(d.val_fraction + d.test_fraction < 1, f"data.val_fraction={d.val_fraction} and "
            f"data.test_fraction={d.test_fraction} leave no training rows; their sum must be < 1")
    data_seeds = sweep.get("data_seeds")
    fixed = ("a dataset built by scripts/build_dataset.py (data.source=tfds), whose "
             "train/val/test splits are fixed" if d.get("source") == "tfds" else
             "a directory whose train/val/test files fix the splits")
    require(not os.path.isdir(d.path) or data_seeds in ("", None, "same"),
            f"sweep.data_seeds={data_seeds!r}: data.path={d.path} is {fixed}, so there are no "
            "split seeds to sweep; leave sweep.data_seeds empty, or pass one .npz file to split")


DATA_SOURCES = ("npz", "tfds")  # data.source of own data (docs/own_data.md)


def check_data_source(d, own_datasets):
    """`data.source` (where the config has it): "npz" (default) or "tfds", the latter only for
    the own datasets (`data.dataset` in `own_datasets`), which it reads from a built dataset."""
    source = d.get("source", "npz")
    require(source in DATA_SOURCES, f"data.source={source!r} is not supported; use \"npz\" "
            "(data.path's .npz files) or \"tfds\" (a dataset built by scripts/build_dataset.py)")
    require(source == "npz" or d.get("dataset") in own_datasets,
            f"data.source={source!r} reads own data only (data.dataset one of "
            f"{', '.join(own_datasets)}); data.dataset={d.get('dataset')!r} takes no data.source")
