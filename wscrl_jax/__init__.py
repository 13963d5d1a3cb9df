"""wscrl_jax: weakly supervised and multi-domain causal representation learning in JAX.

`wscrl_jax.load(workdir)`, `wscrl_jax.train(config, workdir)`, `wscrl_jax.get_config(spec,
overrides)` and `wscrl_jax.APIError` (docs/python_api.md) are imported on first use, so that
`import wscrl_jax` stays cheap (no JAX start-up).
"""

_API = ("APIError", "LoadWarning", "get_config", "load", "train")


def __getattr__(name):
    if name in _API:
        from wscrl_jax import api
        return getattr(api, name)
    raise AttributeError(f"module 'wscrl_jax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
