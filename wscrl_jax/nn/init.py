"""Initialisers that reproduce PyTorch's defaults and the reference's special inits."""

import math

import jax
import jax.numpy as jnp


def torch_uniform(fan_in: int):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's default for nn.Linear weights and biases."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def normal(mean: float, std: float):
    """N(mean, std^2) initialiser."""

    def init(key, shape, dtype=jnp.float32):
        return mean + std * jax.random.normal(key, shape, dtype)

    return init


def constant(value: float):
    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.full(shape, value, dtype)

    return init


def inverse_softplus(y: float) -> float:
    """log(exp(y) - 1) in float64, as the reference's `ws_crl/utils.py: inverse_softplus`."""
    return float(math.log(math.expm1(y)))
