"""Weighted sums of Gaussian kernels whose gradient comes out of the same pass (custom VJP).

The MMD penalties (`mmd.py`) are sums `S = sum_ab W_ab sum_i exp(-|t_a - t_b|^2 / bw_i)` over
blocks of up to a million pairs of points, with weights W and bandwidths that carry no
gradient. Differentiated by JAX, every [n, n] intermediate (distances, kernels, their
cotangents) is written and read again several times; here the forward pass computes S and,
from the same kernel values, the gradient with respect to the points,

    dS/dt_a = -4 sum_b H_ab (t_a - t_b),   H = W * sum_i exp(-l2 / bw_i) / bw_i  (W symmetric),

i.e. `-4 (rowsum(H) t - H t)`, and keeps only that [n, d] gradient for the backward pass
(the derivative of the reference's direct differences; it differs from JAX's derivative of
the same sum in the last digits). Fewer passes over memory make it faster; timings in
docs/performance.md.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _gradient_in_forward(value_and_grads, num_args: int):
    """A custom-VJP function of `num_args` arguments from value_and_grads(*args) -> (value,
    grads): the forward pass keeps `grads` (one per leading argument) as the only residuals,
    the backward pass scales them by the cotangent; the remaining arguments get none."""

    @jax.custom_vjp
    def function(*args):
        return value_and_grads(*args)[0]

    def backward(grads, ct):
        return tuple(ct * g for g in grads) + (None,) * (num_args - len(grads))

    function.defvjp(value_and_grads, backward)
    return function


def sq_dists(a: Array, b: Array) -> Array:
    """Squared Euclidean distances [..., n, m] of [..., n, d] and [..., m, d] as
    |a|^2 + |b|^2 - 2ab (one matmul). Its cancellation error grows with |a|^2 + |b|^2, so
    callers pass points centred on their mean (`mmd._centred`): distances are unchanged, and the
    error is that of the reference's direct differences (md-crl issue: fixed-bandwidth MMD lost
    1e-4 relative precision at |z| ~ 20 uncentred)."""
    a2 = jnp.sum(a * a, axis=-1)[..., :, None]
    b2 = jnp.sum(b * b, axis=-1)[..., None, :]
    ab = jnp.einsum("...nd,...md->...nm", a, b)
    return jnp.maximum(a2 + b2 - 2.0 * ab, 0.0)


def _symmetric(t: Array, weight: Array, inv_bws: Array):
    """(value, (grad,)) of `kernel_sum_symmetric`; distances from `sq_dists` (one matrix
    product; faster here than direct differences for [B, B] with B = 1024)."""
    l2 = sq_dists(t, t)
    exps = [jnp.exp(-l2 * inv_bws[i]) for i in range(inv_bws.shape[0])]
    value = jnp.sum(weight * sum(exps))
    h = weight * sum(e * inv_bws[i] for i, e in enumerate(exps))
    return value, (-4.0 * (jnp.sum(h, axis=1)[:, None] * t - h @ t),)


def kernel_sum_symmetric(t: Array, weight: Array, inv_bws: Array) -> Array:
    """`sum_ab weight_ab sum_i exp(-|t_a - t_b|^2 inv_bws_i)` of points t [n, d] with a
    symmetric weight [n, n]; gradient (with respect to t only) `-4 (rowsum(H) t - H t)`."""
    return _symmetric_vjp(t, weight, inv_bws)


def _direct_sq_dists(t):
    """|t_a - t_b|^2 [n, n] of t [n, d] as a sum of d squared differences: elementwise work
    that XLA fuses with the kernel's exponential (no [n, n] distance array, no cancellation)."""
    return sum(jnp.square(t[:, None, k] - t[None, :, k]) for k in range(t.shape[1]))


def _two_sample(x, y, sx, sy, inv_bws):
    """(value, (grad_x, grad_y)) of `two_sample_kernel_sum`."""
    t, s = jnp.concatenate([x, y]), jnp.concatenate([sx, sy])
    st = jnp.concatenate([s[:, None] * t, s[:, None]], axis=1)  # [2n, d + 1]: (s t, s)
    l2 = _direct_sq_dists(t)
    value, q = 0.0, 0.0
    for i in range(inv_bws.shape[0]):
        ks = jnp.exp(-l2 * inv_bws[i]) @ st  # [2n, d + 1]: (K (s t), K s)
        value = value + jnp.dot(s, ks[:, -1])
        q = q + inv_bws[i] * ks
    grad = -4.0 * s[:, None] * (q[:, -1:] * t - q[:, :-1])
    n = x.shape[0]
    return value, (grad[:n], grad[n:])


def two_sample_kernel_sum(x: Array, y: Array, sx: Array, sy: Array, inv_bws: Array) -> Array:
    """`sum_ab s_a s_b sum_i exp(-|t_a - t_b|^2 inv_bws_i)` over the points t = [x; y]
    ([n, d] each) with signs or weights s = [sx; sy] ([n] each): the weight matrix `s s^T` is
    never formed, each kernel block is multiplied once by [s t, s]. Gradient with respect to x
    and y only."""
    return _two_sample_vjp(x, y, sx, sy, inv_bws)


_symmetric_vjp = _gradient_in_forward(_symmetric, 3)
_two_sample_vjp = _gradient_in_forward(_two_sample, 5)
