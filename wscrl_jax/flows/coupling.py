"""Coupling layers with the reference's semantics (nflows, as called by `ws_crl/transforms.py`)
on distrax's `MaskedCoupling`.

A coupling layer transforms the features where `mask` is True, elementwise, with parameters
that a `ResidualNet` computes from the other ("identity") features. The inner transforms:

* `affine` (nflows `AffineCouplingTransform`): the net gives [shift_1..k, u_1..k] and
  y = x * (sigmoid(u + 2) + 1e-3) + shift (distrax `ScalarAffine`);
* `piecewise_linear` (nflows `PiecewiseLinearCouplingTransform`, linear tails): `bins` values per
  feature (`bijectors.PiecewiseLinear`);
* `rq_spline`: distrax's `RationalQuadraticSpline` with identity tails outside
  [-tail_bound, tail_bound] (3 bins + 1 values per feature).

Note the masks: nflows' mask marks the *transformed* features; distrax's marks the unchanged
ones. Here `transformed` is nflows' convention.
"""

from typing import Callable

import distrax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from wscrl_jax.flows.bijectors import PiecewiseLinear
from wscrl_jax.nn.init import torch_uniform
from wscrl_jax.nn.mlp import TorchLinear

TRANSFORMS = ("affine", "piecewise_linear", "rq_spline")


def alternating_mask(features: int, even: bool) -> np.ndarray:
    """nflows `create_alternating_binary_mask`: True at the transformed features, 0, 2, 4, ...
    when `even`, else 1, 3, 5, ... -> [features] bool."""
    return (np.arange(features) % 2) == (0 if even else 1)


def params_per_feature(transform: str, bins: int) -> int:
    """How many conditioner outputs each transformed feature takes."""
    return {"affine": 2, "piecewise_linear": bins, "rq_spline": 3 * bins + 1}[transform]


class ResidualNet(nn.Module):
    """nflows `ResidualNet` without context, dropout or batch norm: Linear(in, hidden), then
    `blocks` residual blocks h + Linear(relu(Linear(relu(h)))) whose last Linear starts at
    U(-1e-3, 1e-3), then Linear(hidden, out); torch's default init elsewhere.
    [..., in] -> [..., out]."""

    hidden: int
    out: int
    blocks: int = 1

    @nn.compact
    def __call__(self, x):
        h = TorchLinear(self.hidden)(x)
        near_zero = torch_uniform(1e6)  # bound 1 / sqrt(1e6): U(-1e-3, 1e-3), nflows' block init
        for _ in range(self.blocks):
            t = TorchLinear(self.hidden)(nn.relu(h))
            h = h + TorchLinear(self.hidden, kernel_init=near_zero, bias_init=near_zero)(nn.relu(t))
        return TorchLinear(self.out)(h)


def inner_bijector(transform: str, tail_bound: float) -> Callable:
    """params [..., params_per_feature] -> the scalar bijector of one transformed feature."""
    if transform == "affine":
        return lambda p: distrax.ScalarAffine(shift=p[..., 0],
                                              scale=jax.nn.sigmoid(p[..., 1] + 2.0) + 1e-3)
    if transform == "piecewise_linear":
        return lambda p: PiecewiseLinear(p, tail_bound)
    if transform == "rq_spline":
        return lambda p: distrax.RationalQuadraticSpline(
            p, -tail_bound, tail_bound, boundary_slopes="identity")
    raise ValueError(f"transform={transform!r} must be one of {TRANSFORMS}")


def coupling(transformed: np.ndarray, net: Callable, transform: str, bins: int = 10,
             tail_bound: float = 10.0) -> distrax.MaskedCoupling:
    """One coupling layer on [..., d] inputs.

    transformed: [d] bool, the features it changes (nflows' mask); net: a callable [..., #identity]
    -> [..., #transformed * params_per_feature] (a `ResidualNet`), its outputs read in nflows'
    layout (affine: all shifts, then all scale inputs; splines: per feature, consecutive values).
    """
    transformed = np.asarray(transformed, bool)
    identity_idx, transformed_idx = np.flatnonzero(~transformed), np.flatnonzero(transformed)
    per_feature = params_per_feature(transform, bins)

    def conditioner(x):  # x: [..., d] (distrax zeroes the transformed features first)
        out = net(x[..., identity_idx])
        k = len(transformed_idx)
        if transform == "affine":
            out = jnp.stack([out[..., :k], out[..., k:]], axis=-1)  # [..., k, 2]
        else:
            out = out.reshape(*out.shape[:-1], k, per_feature)
        params = jnp.zeros(x.shape + (per_feature,), out.dtype)  # identity features: unused
        return params.at[..., transformed_idx, :].set(out)

    return distrax.MaskedCoupling(mask=jnp.asarray(~transformed), conditioner=conditioner,
                                  bijector=inner_bijector(transform, tail_bound))
