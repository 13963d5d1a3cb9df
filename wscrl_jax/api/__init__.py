"""The Python API over trained runs: `load` a workdir as a model object, `train` a config,
`get_config` a shipped config with overrides; every error is an `APIError` (a `ConfigError`)."""

from wscrl_jax.api.errors import APIError
from wscrl_jax.api.load import LoadWarning, load
from wscrl_jax.api.run import get_config, train

__all__ = ["APIError", "LoadWarning", "get_config", "load", "train"]
