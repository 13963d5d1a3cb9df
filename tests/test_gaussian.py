"""Numerics of wscrl_jax.nn.{gaussian,init,mlp} against closed forms (reference:
`ws_crl/encoder/vae.py`; ws-crl gotchas 5 and 16)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.nn.gaussian import (GaussianMLP, floored_variance, gaussian_log_likelihood,
                                   gaussian_log_prob, reparameterize, standard_normal_log_prob)
from wscrl_jax.nn.init import constant, inverse_softplus, normal, torch_uniform
from wscrl_jax.nn.mlp import MLP, TorchLinear

from reference_np import log_normal

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@pytest.fixture(scope="module")
def xms():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3))
    m = rng.normal(size=(4, 3))
    s = rng.uniform(0.1, 2.0, size=(4, 3))
    return x, m, s


# ------------------------------------------------------------------------- log densities


def test_log_prob_full_matches_closed_form(xms):
    x, m, s = xms
    got = np.asarray(gaussian_log_prob(jnp.asarray(x), jnp.asarray(m), jnp.asarray(s), full=True))
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, log_normal(x, m, s, True), rtol=1e-5, atol=1e-5)


def test_log_prob_not_full_drops_only_the_constant(xms):
    x, m, s = xms
    full = np.asarray(gaussian_log_prob(jnp.asarray(x), jnp.asarray(m), jnp.asarray(s), True))
    part = np.asarray(gaussian_log_prob(jnp.asarray(x), jnp.asarray(m), jnp.asarray(s), False))
    np.testing.assert_allclose(part, log_normal(x, m, s, False), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(part - full, HALF_LOG_2PI, atol=1e-5)


def test_standard_normal_log_prob():
    x = jnp.array([-2.0, 0.0, 0.5, 3.0])
    expected = -0.5 * np.square(np.asarray(x)) - HALF_LOG_2PI
    np.testing.assert_allclose(np.asarray(standard_normal_log_prob(x)), expected, rtol=1e-6)
    # value at 0 is -0.5 log(2 pi) = -0.9189385
    assert float(standard_normal_log_prob(jnp.array(0.0))) == pytest.approx(-0.9189385, abs=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_log_likelihood_reduction(xms, reduction):
    x, m, s = xms
    got = np.asarray(gaussian_log_likelihood(jnp.asarray(x), jnp.asarray(m), jnp.asarray(s),
                                             full=False, reduction=reduction))
    elem = log_normal(x, m, s, False)
    expected = elem.sum(-1) if reduction == "sum" else elem.mean(-1)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_log_likelihood_unknown_reduction_raises(xms):
    x, m, s = xms
    with pytest.raises(ValueError):
        gaussian_log_likelihood(jnp.asarray(x), jnp.asarray(m), jnp.asarray(s), reduction="none2")


# ------------------------------------------------------------------------- variance floor


def test_variance_floor_value():
    # std 1e-4 -> std^2 = 1e-8 < 1e-6, so v = 1e-6. With x - m = 1e-3: (x-m)^2/v = 1, hence
    # log p = -0.5 (log 1e-6 + 1) - 0.5 log 2pi = 6.407755 - 0.918939 = 5.488817.
    val = float(gaussian_log_prob(jnp.array(1e-3), jnp.array(0.0), jnp.array(1e-4), full=True))
    expected = -0.5 * (math.log(1e-6) + 1.0) - HALF_LOG_2PI
    assert val == pytest.approx(expected, rel=1e-5)
    assert float(floored_variance(jnp.array(1e-4))) == pytest.approx(1e-6, rel=1e-6)
    assert float(floored_variance(jnp.array(0.5))) == pytest.approx(0.25, rel=1e-7)


def test_variance_floor_straight_through_gradient():
    # Straight-through clamp: d/dv of log p is evaluated at the floored v_f = 1e-6, and
    # dv/dstd = 2 std is the unclamped chain rule. With r = x - m = 2e-3 and std = 1e-4:
    #   d logp/dv  = -0.5 (1/v_f - r^2/v_f^2) = -0.5 (1e6 - 4e6) = 1.5e6
    #   d logp/dstd = 1.5e6 * 2e-4 = 300
    #   d logp/dx  = -r / v_f = -2000
    # (an unfloored density would give d/dstd = -1/s + r^2/s^3 = 3.99e6, a hard clamp 0).
    f = lambda x, s: gaussian_log_prob(x, 0.0, s, full=True)  # noqa: E731
    gx, gs = jax.grad(f, argnums=(0, 1))(jnp.array(2e-3), jnp.array(1e-4))
    assert float(gs) == pytest.approx(300.0, rel=1e-3)
    assert float(gx) == pytest.approx(-2000.0, rel=1e-4)
    # gradient of the floored variance itself is the identity chain rule 2 * std
    assert float(jax.grad(lambda s: floored_variance(s))(jnp.array(1e-4))) == pytest.approx(2e-4)


def test_gradient_above_floor_is_exact():
    # std = 0.5, r = 0.3: d/dstd [-log s - r^2/(2 s^2)] = -1/s + r^2/s^3 = -2 + 0.72 = -1.28
    gs = jax.grad(lambda s: gaussian_log_prob(jnp.array(0.3), 0.0, s))(jnp.array(0.5))
    assert float(gs) == pytest.approx(-1.28, rel=1e-5)


def test_reparameterize_uses_the_key():
    key = jax.random.PRNGKey(3)
    mean, std = jnp.array([[1.0, -2.0]]), jnp.array([[0.5, 2.0]])
    u = jax.random.normal(key, (1, 2))
    np.testing.assert_allclose(np.asarray(reparameterize(key, mean, std)),
                               np.asarray(mean + std * u), rtol=1e-6)


# ------------------------------------------------------------------------- init helpers


def test_inverse_softplus_values():
    # log(e^1 - 1) = log(1.718281828) = 0.5413248546 (ws-crl gotcha 5's decoder std)
    assert inverse_softplus(1.0) == pytest.approx(0.5413248546129181, abs=1e-12)
    # encoder bias of the scaling config: log(expm1(0.01 - 1e-4)) = -4.6102...
    assert inverse_softplus(0.01 - 1e-4) == pytest.approx(math.log(math.expm1(0.0099)), rel=1e-12)
    assert inverse_softplus(0.01 - 1e-4) == pytest.approx(-4.6103, abs=1e-4)
    assert inverse_softplus(0.1 - 1e-3) == pytest.approx(-2.2627, abs=1e-4)
    for y in (0.01, 0.3, 2.0):
        assert float(jax.nn.softplus(inverse_softplus(y))) == pytest.approx(y, rel=1e-5)


def test_torch_uniform_bounds():
    # fan_in 4 -> U(-0.5, 0.5); 4000 draws fill the interval
    w = np.asarray(torch_uniform(4)(jax.random.PRNGKey(0), (40, 100)))
    assert w.max() < 0.5 and w.min() >= -0.5
    assert w.max() > 0.49 and w.min() < -0.49
    assert abs(w.mean()) < 0.02


def test_normal_and_constant_inits():
    w = np.asarray(normal(2.0, 0.1)(jax.random.PRNGKey(1), (2000,)))
    assert w.mean() == pytest.approx(2.0, abs=0.01)
    assert w.std() == pytest.approx(0.1, rel=0.1)
    np.testing.assert_array_equal(np.asarray(constant(-1.5)(None, (2, 3))), -1.5)


@pytest.fixture(scope="module")
def mlp_and_params():
    mlp = MLP(hidden=(8, 5), out=3)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)), jnp.float32)
    params = mlp.init(jax.random.PRNGKey(2), x)["params"]
    return mlp, params, x


def test_mlp_torch_default_bounds_per_layer(mlp_and_params):
    _, params, _ = mlp_and_params
    # Layer fan-ins 3, 8, 5: every weight and bias in U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for name, fan_in, shape in (("TorchLinear_0", 3, (3, 8)), ("TorchLinear_1", 8, (8, 5)),
                                ("TorchLinear_2", 5, (5, 3))):
        bound = 1.0 / math.sqrt(fan_in)
        k, b = np.asarray(params[name]["kernel"]), np.asarray(params[name]["bias"])
        assert k.shape == shape and b.shape == (shape[1],)
        assert np.abs(k).max() <= bound and np.abs(b).max() <= bound
        assert np.abs(k).max() > 0.5 * bound  # not a much narrower distribution


def test_mlp_forward_is_relu_chain(mlp_and_params):
    mlp, params, x = mlp_and_params
    h = np.asarray(x, np.float64)
    for i in range(3):
        p = params[f"TorchLinear_{i}"]
        h = h @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
        if i < 2:
            h = np.maximum(h, 0)
    np.testing.assert_allclose(np.asarray(mlp.apply({"params": params}, x)), h, rtol=1e-5,
                               atol=1e-6)


def test_torch_linear_custom_inits():
    lin = TorchLinear(3, kernel_init=constant(0.5), bias_init=constant(-1.0))
    x = jnp.ones((2, 4))
    p = lin.init(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(np.asarray(lin.apply(p, x)), 4 * 0.5 - 1.0)


# ------------------------------------------------------------------------- GaussianMLP


@pytest.fixture(scope="module")
def x_in():
    return jnp.asarray(np.random.default_rng(5).normal(size=(4, 3)), jnp.float32)


def test_gaussian_mlp_initial_std_is_init_std(x_in):
    # std = min_std + softplus(W h + b), b = inverse_softplus(init_std - min_std), W ~ N(0, 1e-3):
    # at init std = init_std + softplus'(b) * O(1e-3 * |h|) ~ init_std (1 +- 1%).
    for init_std, min_std in ((0.01, 1e-4), (0.1, 1e-3)):
        mod = GaussianMLP(hidden=(8,), out=3, init_std=init_std, min_std=min_std)
        params = mod.init(jax.random.PRNGKey(0), x_in)["params"]
        mean, std = mod.apply({"params": params}, x_in)
        assert mean.shape == std.shape == (4, 3)
        np.testing.assert_allclose(np.asarray(std), init_std, rtol=1e-2)
        np.testing.assert_allclose(np.asarray(params["std_head"]["bias"]),
                                   inverse_softplus(init_std - min_std), rtol=1e-6)
        w = np.asarray(params["std_head"]["kernel"])
        assert 3e-4 < w.std() < 3e-3  # N(0, 1e-3^2), 24 draws
        # the mean head keeps torch-default init (8 != 3): bound 1/sqrt(8)
        assert np.abs(np.asarray(params["mean_head"]["kernel"])).max() <= 1 / math.sqrt(8)


def test_gaussian_mlp_std_floor_is_min_std(x_in):
    # a very negative std bias makes softplus ~ 0, so std -> min_std, never below
    mod = GaussianMLP(hidden=(8,), out=3, init_std=0.01, min_std=1e-4)
    params = mod.init(jax.random.PRNGKey(0), x_in)["params"]
    params = jax.tree_util.tree_map(lambda a: a, params)  # fresh (mutable) dict copy
    params["std_head"]["bias"] = jnp.full((3,), -60.0)
    _, std = mod.apply({"params": params}, x_in)
    np.testing.assert_allclose(np.asarray(std), 1e-4, rtol=1e-4)


def test_gaussian_mlp_fix_std_is_inverse_softplus(x_in):
    # ws-crl gotcha 5: the frozen head is a bare Linear (no softplus), weight 0, bias
    # inverse_softplus(init_std), and min_std is forced to 0 -> std = log(e - 1) = 0.5413.
    mod = GaussianMLP(hidden=(8,), out=3, init_std=1.0, min_std=1e-3, fix_std=True)
    variables = mod.init(jax.random.PRNGKey(0), x_in)
    _, std = mod.apply(variables, x_in)
    np.testing.assert_allclose(np.asarray(std), 0.5413248546129181, rtol=1e-6)
    assert "std_head" not in variables["params"]  # nothing trainable


def test_gaussian_mlp_identity_mean_head_when_width_equals_out(x_in):
    # hidden[-1] == out -> mean weight I + 0.1 N(0,1): diagonal near 1, off-diagonal near 0
    # (torch default would be U(-0.58, 0.58) everywhere).
    mod = GaussianMLP(hidden=(3,), out=3, init_std=0.01, min_std=1e-4)
    params = mod.init(jax.random.PRNGKey(4), x_in)["params"]
    k = np.asarray(params["mean_head"]["kernel"])
    assert np.all(np.abs(np.diag(k) - 1.0) < 0.4)
    assert np.all(np.abs(k - np.diag(np.diag(k))) < 0.4)
    assert np.abs(k - np.eye(3)).max() > 1e-4  # noise is present
