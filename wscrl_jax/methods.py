"""Method registry: the config's `method` name -> the `Method` subclass that implements it."""

from typing import Type

from wscrl_jax.config_checks import ConfigError, one_of, require
from wscrl_jax.lcm.method import LCMMethod
from wscrl_jax.mdcrl.method import MDCRLMethod
from wscrl_jax.train.method import Method
from wscrl_jax.train.sweep import grid_points, parse_seeds

METHODS = {"lcm": LCMMethod, "mdcrl": MDCRLMethod}


def method_class(config) -> Type[Method]:
    return METHODS[config.method]


def get_method(config) -> Method:
    return method_class(config)(config)


def validate_config(config):
    """Checks a whole config before any work (the sweep, then the method's own sections, at
    every grid point); raises ConfigError with one line."""
    require("method" in config, "the config has no 'method' key; use a file from configs/")
    one_of(config.method, tuple(METHODS), "method")
    sweep = config.get("sweep", {})
    for key in ("seeds", "data_seeds"):
        value = sweep.get(key)
        if key == "data_seeds" and value == "same":
            continue
        try:
            parse_seeds(value)
        except (TypeError, ValueError):
            raise ConfigError(f"sweep.{key}={value!r} must be comma-separated integers"
                              + (" or 'same'" if key == "data_seeds" else "")) from None
    try:
        points = grid_points(config)
    except (KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"sweep.grid names an unknown key {e}") from None
    for _, point_config in points or [(None, config)]:
        method_class(config).validate_config(point_config)
