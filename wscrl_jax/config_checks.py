"""Config checks that run before any work: a bad value is one clear message.

The building blocks (`require`, `one_of`, `positive_int`) and the checks of the sections every
config shares. Each method checks its own sections in `Method.validate_config`, next to its
allowed values; `methods.validate_config` runs both.
"""

import math


class ConfigError(ValueError):
    """A config value is invalid; the message says which and what to do."""


def require(condition, message: str):
    if not condition:
        raise ConfigError(message)


def one_of(value, allowed, key: str):
    require(value in allowed, f"{key}={value!r} is not supported; use one of {tuple(allowed)}")


def positive_int(value, key: str, minimum: int = 1):
    require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
            f"{key}={value!r} must be an integer >= {minimum}")


def positive_number(value, key: str):
    require(isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0, f"{key}={value!r} must be a number > 0")


def check_shared_training(t):
    """The `training` keys the shared loop reads."""
    positive_int(t.batchsize, "training.batchsize")
    positive_int(t.epochs, "training.epochs")
    positive_int(t.steps_per_call, "training.steps_per_call")
    positive_int(t.nan_limit, "training.nan_limit")
    positive_number(t.clip_grad_norm, "training.clip_grad_norm")
