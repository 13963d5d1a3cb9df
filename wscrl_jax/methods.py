"""Method registry: the config's `method` name -> the `Method` subclass that implements it."""

from typing import Type

import ml_collections

from wscrl_jax.config_checks import (ConfigError, check_checkpoint, one_of, require, seed_list,
                                     seed_value, unique_seeds)
from wscrl_jax.lcm.method import LCMMethod
from wscrl_jax.mdcrl.method import MDCRLMethod
from wscrl_jax.train.method import Method
from wscrl_jax.train.sweep import grid_points, parse_grid

METHODS = {"lcm": LCMMethod, "mdcrl": MDCRLMethod}


def method_class(config) -> Type[Method]:
    return METHODS[config.method]


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
        if "checkpoint" in config:
            check_checkpoint(point_config.checkpoint)
        method_class(config).validate_config(point_config)


def check_members(config):
    """`sweep.seeds` x `sweep.data_seeds` (or their fallbacks `seed` / `data.nature.seed`):
    integer seeds in [0, 2**32), none listed twice, so every member is a different (seed, data
    seed) pair (`train/sweep.py: sweep_members`)."""
    sweep = config.get("sweep", {})
    seeds = seed_list(sweep.get("seeds"), "sweep.seeds")
    unique_seeds(seeds, "sweep.seeds", sweep.get("seeds"))
    if not seeds:
        seed_value(config.get("seed"), "seed")
    data_seeds = sweep.get("data_seeds")
    if data_seeds == "same":  # each member's data seed is its (unique) model seed
        return
    same = "'same' (each member's data seed = its model seed)"
    parsed = seed_list(data_seeds, "sweep.data_seeds", same)
    unique_seeds(parsed, "sweep.data_seeds", data_seeds, "data seed")
    if parsed:
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
    root = ml_collections.ConfigDict(config.to_dict())
    for key, values in parse_grid(text):
        node = root
        *path, leaf = key.split(".")
        for p in path:
            require(isinstance(node, ml_collections.ConfigDict) and p in node,
                    f"sweep.grid names an unknown key {key!r}")
            node = node[p]
        require(isinstance(node, ml_collections.ConfigDict) and leaf in node,
                f"sweep.grid names an unknown key {key!r}")
        for i, value in enumerate(values):
            require(value not in values[:i], f"sweep.grid lists {key}={value!r} more than once")
            trial = ml_collections.ConfigDict(node.to_dict())  # as train/sweep.py sets it
            try:
                trial[leaf] = value
            except (TypeError, ValueError):
                raise ConfigError(f"sweep.grid sets {key}={value!r}, but {key} holds "
                                  f"{type(node[leaf]).__name__} values (grid values are read as "
                                  "int, float or string)") from None
