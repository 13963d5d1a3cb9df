"""Gaussian MLP encoders/decoders and Gaussian log-densities (`ws_crl/encoder/vae.py`)."""

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from wscrl_jax.nn.init import constant, inverse_softplus, normal, torch_uniform
from wscrl_jax.nn.mlp import MLP, TorchLinear

LOG_2PI = math.log(2.0 * math.pi)
VARIANCE_FLOOR = 1e-6  # torch.nn.functional.gaussian_nll_loss's default eps


def floored_variance(std):
    """std^2 floored at 1e-6 in the forward pass with an identity gradient.

    PyTorch's `gaussian_nll_loss` clamps a clone of the variance under `no_grad`, so the
    value is clamped while gradients flow as if it were not (ws-crl gotcha 16).
    """
    var = jnp.square(std)
    return var + jax.lax.stop_gradient(jnp.maximum(var, VARIANCE_FLOOR) - var)


def gaussian_log_prob(x, mean, std, full: bool = True):
    """Elementwise log N(x; mean, std^2) with the variance floor; same shape as x.

    `full=False` drops the 0.5 log(2 pi) constant, as the reference's reconstruction terms do.
    """
    var = floored_variance(std)
    out = -0.5 * (jnp.log(var) + jnp.square(x - mean) / var)
    if full:
        out = out - 0.5 * LOG_2PI
    return out


def gaussian_log_likelihood(x, mean, std, full: bool = True, reduction: str = "sum"):
    """Per-sample log-likelihood: [B, D] -> [B] ('sum' or 'mean' over features)."""
    elementwise = gaussian_log_prob(x, mean, std, full)
    if reduction == "sum":
        return jnp.sum(elementwise, axis=-1)
    if reduction == "mean":
        return jnp.mean(elementwise, axis=-1)
    raise ValueError(f"unknown likelihood reduction {reduction!r}")


def standard_normal_log_prob(x):
    """Elementwise log N(x; 0, 1) including the constant (no variance floor needed)."""
    return -0.5 * jnp.square(x) - 0.5 * LOG_2PI


class GaussianMLP(nn.Module):
    """Gaussian encoder/decoder: x [B, in] -> (mean [B, out], std [B, out]).

    ReLU trunk (ReLU after the last hidden layer too), linear mean head, and
    `std = min_std + softplus(W h + b)` with W ~ N(0, 1e-3^2), b = inverse_softplus(init_std -
    min_std). With `fix_std` the std is the constant `inverse_softplus(init_std)`: the
    reference's frozen zero-weight head has no softplus (ws-crl gotcha 5, reproduced).
    """

    hidden: Sequence[int]
    out: int
    init_std: float
    min_std: float
    fix_std: bool = False

    @nn.compact
    def __call__(self, x):
        h = MLP(tuple(self.hidden))(x)
        width = h.shape[-1]
        if width == self.out:
            eye_init = lambda key, shape, dtype=jnp.float32: (  # noqa: E731
                jnp.eye(shape[0], dtype=dtype) + 0.1 * jax.random.normal(key, shape, dtype))
            mean = TorchLinear(self.out, kernel_init=eye_init, bias_init=torch_uniform(width),
                               name="mean_head")(h)
        else:
            mean = TorchLinear(self.out, name="mean_head")(h)
        if self.fix_std:
            std = jnp.full_like(mean, inverse_softplus(self.init_std))
        else:
            bias = inverse_softplus(self.init_std - self.min_std)
            raw = TorchLinear(self.out, kernel_init=normal(0.0, 1e-3), bias_init=constant(bias),
                              name="std_head")(h)
            std = self.min_std + nn.softplus(raw)
        return mean, std


def reparameterize(key, mean, std):
    """mean + std * u with u ~ N(0, I); shapes [B, D]."""
    return mean + std * jax.random.normal(key, mean.shape, mean.dtype)
