"""The one exception the Python API raises, and the checks of what a caller passes in."""

import numpy as np

from wscrl_jax.config_checks import ConfigError


class APIError(ConfigError):
    """Bad use of the Python API (or a config, checkpoint or run error met through it): one
    line saying what is wrong and what to do, the line the command-line tools print after
    `error: `."""


def require(condition, message: str):
    if not condition:
        raise APIError(message)


def as_observations(x, feature_shape, name: str = "x", allow_uint8: bool = False):
    """x as a numpy array [..., *feature_shape] of float32 (uint8 kept where `allow_uint8`),
    refused in one line when its trailing shape is wrong or it holds NaN or infinite values."""
    try:
        x = np.asarray(x)
    except Exception as e:  # ragged lists, objects
        raise APIError(f"{name} cannot be read as an array ({e})") from None
    feature_shape = tuple(feature_shape)
    k = len(feature_shape)
    require(x.ndim >= k + 1 and tuple(x.shape[x.ndim - k:]) == feature_shape,
            f"{name} has shape {tuple(x.shape)}; this model expects [N, "
            f"{', '.join(str(s) for s in feature_shape)}] (or a leading member axis)")
    if x.dtype == np.uint8 and allow_uint8:
        return x
    require(np.issubdtype(x.dtype, np.number) or x.dtype == bool,
            f"{name} has dtype {x.dtype}; pass numbers")
    x = x.astype(np.float32)
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    require(bad == 0, f"{name} holds {bad} NaN or infinite value(s) out of {x.size}; clean or "
            "drop those rows first")
    return x
