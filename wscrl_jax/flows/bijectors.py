"""Bijectors that distrax does not have, with the semantics of the reference's nflows layers.

* `Permutation`: nflows `RandomPermutation` (a fixed reordering of the features);
* `PiecewiseLinear`: nflows `unconstrained_linear_spline` with linear tails (Mueller et al.,
  Neural Importance Sampling, 2018): identity outside [-B, B]; inside, the CDF of a piecewise-
  constant density on `bins` equal-width bins maps [-B, B] onto itself.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np


class Permutation(distrax.Bijector):
    """y[..., i] = x[..., perm[i]] (perm: a permutation of range(d)); log-determinant 0."""

    def __init__(self, perm):
        super().__init__(event_ndims_in=1, is_constant_jacobian=True)
        self.perm = np.asarray(perm)
        self.inverse_perm = np.argsort(self.perm)

    def forward_and_log_det(self, x):
        return x[..., self.perm], jnp.zeros(x.shape[:-1], x.dtype)

    def inverse_and_log_det(self, y):
        return y[..., self.inverse_perm], jnp.zeros(y.shape[:-1], y.dtype)


def _at(table, index):
    """table [..., bins] read at index [...] -> [...]."""
    return jnp.take_along_axis(table, index[..., None], -1)[..., 0]


class PiecewiseLinear(distrax.Bijector):
    """Scalar piecewise-linear spline on [-tail_bound, tail_bound], identity outside.

    params: [..., bins] unnormalised log bin probabilities (softmax over the last axis) for every
    element of x [...]. Inside the interval, with u = (x + B) / 2B in [0, 1] falling in bin k at
    fraction a: y = -B + 2B (cdf[k] + a pdf[k]) and log|dy/dx| = log(pdf[k] bins), clamped to the
    interval as nflows does; the last cdf entry is exactly 1.
    """

    def __init__(self, params, tail_bound: float):
        super().__init__(event_ndims_in=0)
        self.params = params
        self.tail_bound = tail_bound

    def _tables(self, shape):
        """pdf [*shape, bins] and cdf [*shape, bins + 1] (params broadcast against x)."""
        params = jnp.broadcast_to(self.params, tuple(shape) + self.params.shape[-1:])
        pdf = jax.nn.softmax(params, axis=-1)
        cdf = jnp.cumsum(pdf, axis=-1).at[..., -1].set(1.0)
        return pdf, jnp.concatenate([jnp.zeros_like(cdf[..., :1]), cdf], axis=-1)

    def forward_and_log_det(self, x):
        bound = self.tail_bound
        bins = self.params.shape[-1]
        inside = (x >= -bound) & (x <= bound)
        pdf, cdf = self._tables(x.shape)
        position = jnp.clip((x + bound) / (2 * bound), 0.0, 1.0) * bins
        index = jnp.minimum(jnp.floor(position).astype(jnp.int32), bins - 1)
        bin_pdf = _at(pdf, index)
        u = jnp.clip(_at(cdf, index) + (position - index) * bin_pdf, 0.0, 1.0)
        y = jnp.where(inside, 2 * bound * u - bound, x)
        return y, jnp.where(inside, jnp.log(bin_pdf * bins), 0.0)

    def inverse_and_log_det(self, y):
        bound = self.tail_bound
        bins = self.params.shape[-1]
        inside = (y >= -bound) & (y <= bound)
        _, cdf = self._tables(y.shape)
        u = jnp.clip((y + bound) / (2 * bound), 0.0, 1.0)
        # nflows' searchsorted: the last edge nudged up by 1e-6 so that u = 1 lands in the last bin
        edges = cdf.at[..., -1].add(1e-6)
        index = jnp.clip(jnp.sum(u[..., None] >= edges, axis=-1) - 1, 0, bins - 1)
        upper = _at(cdf, index + 1)
        slope = (upper - _at(cdf, index)) * bins  # from the cdf, as nflows' inverse
        offset = upper - slope * (index + 1) / bins
        x01 = jnp.clip((u - offset) / slope, 0.0, 1.0)
        x = jnp.where(inside, 2 * bound * x01 - bound, y)
        return x, jnp.where(inside, -jnp.log(slope), 0.0)
