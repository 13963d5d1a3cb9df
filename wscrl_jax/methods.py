"""Method registry: the config's `method` name -> the `Method` subclass that implements it.

A method is a package with a `Method` subclass plus one line in `METHODS` ("module:Class",
imported on first use); code outside the package (a notebook, a test) adds one with
`register`. `validate_config` checks a whole config before any work.
"""

import importlib
from typing import Dict, Type, Union

from wscrl_jax.config_checks import (SEED_LIMIT, ConfigError, check_checkpoint,
                                     check_data_source, check_tracking, one_of, optional_int,
                                     require, seed_value, unique_seeds)
from wscrl_jax.train.method import Method
from wscrl_jax.train.sweep import OWN_DATASETS, grid_points, parse_grid, parse_seeds

METHODS: Dict[str, Union[str, Type[Method]]] = {
    "lcm": "wscrl_jax.lcm.method:LCMMethod",
    "lcm_images": "wscrl_jax.lcm.image_method:ImageLCMMethod",
    "mdcrl": "wscrl_jax.mdcrl.method:MDCRLMethod",
}


def register(name: str, cls: Type[Method]):
    """Makes `config.method = name` train `cls` (a `Method` subclass)."""
    require(isinstance(cls, type) and issubclass(cls, Method),
            f"register({name!r}, {cls!r}): not a wscrl_jax Method subclass")
    METHODS[name] = cls


def method_class(config) -> Type[Method]:
    """The class of `config.method` (imported on first use)."""
    entry = METHODS[config.method]
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        entry = METHODS[config.method] = getattr(importlib.import_module(module), name)
    return entry


def get_method(config) -> Method:
    return method_class(config)(config)


def validate_config(config):
    """Checks a whole config before any work: the method name, the sweep grid, then at every
    grid point the seeds and members, the checkpoint section and the method's own sections;
    raises ConfigError with one line."""
    require("method" in config, "the config has no 'method' key; use a file from configs/")
    one_of(config.method, tuple(METHODS), "method")
    check_grid(config)
    for point_config in [sub for _, sub in grid_points(config)] or [config]:
        check_members(point_config)
        check_data_source(point_config.get("data", {}), OWN_DATASETS)
        if "checkpoint" in config:
            check_checkpoint(point_config.checkpoint)
        if "tracking" in config:
            check_tracking(point_config.tracking)
        training = point_config.get("training")
        require(training is not None and "cpu_devices" in training,
                "the config has no training.cpu_devices; use a file from configs/")
        optional_int(training.cpu_devices, "training.cpu_devices", 1, "one device a core")
        method_class(config).validate_config(point_config)


def check_members(config):
    """`sweep.seeds` x `sweep.data_seeds` (or their fallbacks `seed` / `data.nature.seed`):
    integer seeds in [0, 2**32), none listed twice, so every member is a different (seed, data
    seed) pair (`train/sweep.py: sweep_members`)."""
    sweep = config.get("sweep", {})
    seeds = _seeds(sweep.get("seeds"), "sweep.seeds")
    unique_seeds(seeds, "sweep.seeds", sweep.get("seeds"))
    if not seeds:
        seed_value(config.get("seed"), "seed")
    data_seeds = sweep.get("data_seeds")
    if data_seeds == "same":  # each member's data seed is its (unique) model seed
        return
    same = "'same' (each member's data seed = its model seed)"
    parsed = _seeds(data_seeds, "sweep.data_seeds", same)
    unique_seeds(parsed, "sweep.data_seeds", data_seeds, "data seed")
    if parsed:
        return
    if config.get("data", {}).get("dataset") in OWN_DATASETS:  # own data: the split seed
        seed_value(config.data.get("split_seed"), "data.split_seed")
        return
    nature = config.get("data", {}).get("nature", {})
    require("seed" in nature, f"sweep.data_seeds={data_seeds!r} must be {same} or comma-separated "
            "integer seeds: this config has no data.nature.seed to fall back on")
    seed_value(nature.seed, "data.nature.seed")


def check_grid(config):
    """`sweep.grid` ("data.z_dim=8,16;data.num_domains=2,4"): KEY=VALUE[,VALUE...] parts, each
    key once and present in the config, each value once (it names its point's workdir) and of
    the key's type (values are read as int, float or string)."""
    text = config.get("sweep", {}).get("grid")
    if not text:
        return
    usage = "must read KEY=VALUE[,VALUE...][;KEY=...], e.g. 'data.z_dim=8,16'"
    require(isinstance(text, str), f"sweep.grid={text!r} {usage}")
    keys = []
    for part in text.replace(" ", "").split(";"):
        key, eq, values = part.partition("=")
        require(not part or (eq and key and all(values.split(","))),
                f"sweep.grid={text!r}: the part {part!r} {usage}")
        require(not part or key not in keys, f"sweep.grid={text!r} sets {key} more than once")
        keys.append(key)
    for key, values in parse_grid(text):
        for i, value in enumerate(values):
            require(value not in values[:i], f"sweep.grid lists {key}={value!r} more than once")
    try:
        grid_points(config)
    except KeyError as e:
        raise ConfigError(f"sweep.grid names an unknown key {e}") from None
    except TypeError as e:
        raise ConfigError(str(e)) from None


def _seeds(value, key: str, alternative: str = ""):
    """`sweep.seeds` / `sweep.data_seeds` parsed as the run will (`train.sweep.parse_seeds`),
    each in [0, 2**32); one line naming the key otherwise."""
    usage = (f"{key}={value!r} must be comma-separated integer seeds in [0, 2**32), e.g. "
             f"'1,2,3'{f', or {alternative}' if alternative else ''}")
    try:
        seeds = parse_seeds(value)
    except ValueError:
        raise ConfigError(usage) from None
    require(all(0 <= s < SEED_LIMIT for s in seeds), usage)
    return seeds
