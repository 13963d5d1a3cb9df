"""The one-pass kernel sums (custom VJPs) and the MMD penalty built on them, against plain JAX
autodiff of the reference's direct-difference formulas."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.mdcrl import kernel_sums as ks
from wscrl_jax.mdcrl import mmd as mmd_lib


def direct_kernel_sum(t, weight, inv_bws):
    l2 = jnp.sum(jnp.square(t[:, None, :] - t[None, :, :]), axis=-1)
    return jnp.sum(weight * sum(jnp.exp(-l2 * b) for b in inv_bws))


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(3)
    return rng.normal(size=(2, 9, 3)).astype(np.float32)


def test_symmetric_sum_value_and_gradient(points):
    t = jnp.asarray(points[0])
    rng = np.random.default_rng(4)
    w = rng.normal(size=(9, 9)).astype(np.float32)
    w = jnp.asarray(w + w.T)
    inv_bws = jnp.asarray([0.5, 2.0])
    val, grad = jax.jit(jax.value_and_grad(ks.kernel_sum_symmetric))(t, w, inv_bws)
    want_val, want_grad = jax.value_and_grad(direct_kernel_sum)(t, w, inv_bws)
    np.testing.assert_allclose(val, want_val, rtol=1e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-5)


def test_two_sample_sum_value_gradient_and_vmap(points):
    x, y = (jnp.asarray(a) for a in points)
    sx = jnp.asarray([1.0] * 6 + [0.0] * 3)  # the last three slots unused
    sy = -jnp.asarray([1.0] * 6 + [0.0] * 3)
    inv_bws = jnp.asarray([0.3, 1.2])

    def naive(x, y):
        t, s = jnp.concatenate([x, y]), jnp.concatenate([sx, sy])
        return direct_kernel_sum(t, s[:, None] * s[None, :], inv_bws)

    val, grads = jax.value_and_grad(ks.two_sample_kernel_sum, argnums=(0, 1))(
        x, y, sx, sy, inv_bws)
    want_val, want_grads = jax.value_and_grad(naive, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(val, want_val, rtol=1e-5, atol=1e-6)
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
        assert np.all(np.asarray(g)[6:] == 0.0)  # unused slots get no gradient
    batched = jax.vmap(jax.grad(ks.two_sample_kernel_sum), in_axes=(0, 0, None, None, None))(
        jnp.stack([x, y]), jnp.stack([y, x]), sx, sy, inv_bws)
    np.testing.assert_allclose(batched[0], grads[0], rtol=1e-6)


def reference_penalty(z, dom, num_domains, d_inv, mult, num, fix_sigma):
    """The reference's `mmd_loss` (pairs, truncation to the shorter domain, direct
    differences, detached adaptive bandwidth) in eager JAX, differentiable in z."""
    total = 0.0
    for e, g in itertools.combinations(range(num_domains), 2):
        ie, ig = np.flatnonzero(dom == e), np.flatnonzero(dom == g)
        m = min(len(ie), len(ig))
        if m == 0:
            continue
        t = jnp.concatenate([z[ie[:m], :d_inv], z[ig[:m], :d_inv]])
        l2 = jnp.sum(jnp.square(t[:, None] - t[None, :]), axis=-1)
        n = 2 * m
        base = fix_sigma or jax.lax.stop_gradient(jnp.sum(l2) / (n * n - n))
        base = base / mult ** (num // 2)
        k = sum(jnp.exp(-l2 / (base * mult ** i)) for i in range(num))
        total = total + jnp.mean(k[:m, :m] + k[m:, m:] - k[:m, m:] - k[m:, :m])
    return total


@pytest.mark.parametrize("fix_sigma,mult,num", [(None, 1.0, 1), (1.0, 1.0, 1),
                                                  (None, 2.0, 3), (0.7, 2.0, 2)])
def test_penalty_mmd_value_and_gradient_match_reference(fix_sigma, mult, num):
    rng = np.random.default_rng(5)
    dom = rng.integers(0, 4, size=40).astype(np.int32)
    dom[:3] = 3  # domain 3 small but present
    z = jnp.asarray(rng.normal(size=(40, 5)).astype(np.float32) + 2.0)

    def ours(z):
        return mmd_lib.penalty_mmd(z, jnp.asarray(dom), 4, 3, mult, num, fix_sigma)

    val, grad = jax.jit(jax.value_and_grad(ours))(z)
    want_val, want_grad = jax.jit(jax.value_and_grad(
        lambda q: reference_penalty(q, dom, 4, 3, mult, num, fix_sigma)))(z)
    np.testing.assert_allclose(val, want_val, rtol=2e-5)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-3, atol=2e-5)
    assert np.all(np.asarray(grad)[:, 3:] == 0.0)
