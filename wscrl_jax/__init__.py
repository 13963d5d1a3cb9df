"""wscrl_jax: weakly supervised and multi-domain causal representation learning in JAX.

`wscrl_jax.load(workdir)`, `wscrl_jax.train(config, workdir)`, `wscrl_jax.get_config(spec,
overrides)` and `wscrl_jax.APIError` (docs/python_api.md) are imported on first use, so that
`import wscrl_jax` stays cheap (no JAX start-up).
"""

import types

_API = ("APIError", "LoadWarning", "get_config", "load")


def __getattr__(name):
    if name in _API:
        from wscrl_jax import api
        return getattr(api, name)
    raise AttributeError(f"module 'wscrl_jax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))


class _CallableTrainPackage(types.ModuleType):
    """The `wscrl_jax.train` subpackage (the training machinery), also callable:
    `wscrl_jax.train(config, workdir, ...)` is `wscrl_jax.api.run.train`."""

    def __call__(self, config, workdir, **kwargs):
        from wscrl_jax.api.run import train
        return train(config, workdir, **kwargs)


# The subpackage and the function share the name: importing wscrl_jax.train anywhere would
# replace a plain function attribute, so the package itself is made callable (its __init__ is
# empty: this imports nothing else).
from wscrl_jax import train  # noqa: E402
train.__class__ = _CallableTrainPackage
