"""Flow bijectors (wscrl_jax/flows): inverses, log-determinants against jax.jacfwd Jacobians,
the nflows formulas on values worked out by hand, spline monotonicity and identity tails."""

import math

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.flows.bijectors import Permutation, PiecewiseLinear
from wscrl_jax.flows.coupling import ResidualNet, alternating_mask, coupling
from wscrl_jax.flows.rotation import Rotation
from wscrl_jax.flows.so_n import so_n_rotation
from wscrl_jax.flows.stack import CouplingStack

D = 4


def _perturbed(params, key, scale=0.5):
    """Parameters moved away from the near-identity init, so that the maps are far from trivial."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(tree, [
        p + scale * jax.random.normal(k, p.shape, p.dtype)
        for p, k in zip(leaves, keys)])


def _stack(transform, sigmoid=False, scale=0.5):
    module = CouplingStack(D, transform=transform, sigmoid=sigmoid, tail_bound=3.0)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, D)))
    params = _perturbed(params, jax.random.PRNGKey(1), scale)
    return (lambda x: module.apply(params, x),
            lambda y: module.apply(params, y, method="inverse_and_log_det"))


def _bijector_pair(bijector):
    return bijector.forward_and_log_det, bijector.inverse_and_log_det


def _coupling(transform):
    net = ResidualNet(hidden=8, out=2 * {"affine": 2, "piecewise_linear": 5,
                                         "rq_spline": 16}[transform])
    params = _perturbed(net.init(jax.random.PRNGKey(2), jnp.zeros((1, 2))), jax.random.PRNGKey(3))
    layer = coupling(alternating_mask(D, even=False), lambda h: net.apply(params, h), transform,
                     bins=5, tail_bound=3.0)
    return _bijector_pair(layer)


CASES = {
    "rotation": lambda: _bijector_pair(Rotation(so_n_rotation(
        jnp.arange(6, dtype=jnp.float64) * 0.3 - 0.7, D))),
    "permutation": lambda: _bijector_pair(Permutation([2, 0, 3, 1])),
    "piecewise_linear": lambda: _bijector_pair(distrax.Block(PiecewiseLinear(
        jax.random.normal(jax.random.PRNGKey(4), (D, 6), jnp.float64), 3.0), 1)),
    "affine_coupling": lambda: _coupling("affine"),
    "piecewise_linear_coupling": lambda: _coupling("piecewise_linear"),
    "rq_spline_coupling": lambda: _coupling("rq_spline"),
    "affine_stack": lambda: _stack("affine"),
    "piecewise_linear_stack": lambda: _stack("piecewise_linear"),
    # milder: three strongly bent splines in a row make the inverse ill-conditioned (~1e5)
    "rq_spline_stack_sigmoid": lambda: _stack("rq_spline", sigmoid=True, scale=0.2),
}


@pytest.fixture
def x64():
    """float64 throughout: composed float32 maps invert only to ~1e-3 where scales are small."""
    with jax.enable_x64(True):
        yield


@pytest.mark.parametrize("name", sorted(CASES))
def test_invertible_with_the_jacobians_log_determinant(name, x64):
    forward, inverse = CASES[name]()
    x = 1.5 * jax.random.normal(jax.random.PRNGKey(5), (3, D), jnp.float64)  # some in the tails

    @jax.jit
    def check(x):
        y, log_det = forward(x)
        x_back, inverse_log_det = inverse(y)
        jacobian_log_det = jax.vmap(
            lambda v: jnp.linalg.slogdet(jax.jacfwd(lambda u: forward(u[None])[0][0])(v))[1])(x)
        return y, log_det, x_back, inverse_log_det, jacobian_log_det

    y, log_det, x_back, inverse_log_det, jacobian_log_det = check(x)
    assert y.shape == x.shape and log_det.shape == (3,)
    assert not np.allclose(y, x, atol=1e-2)  # a real map, not the identity
    assert y.dtype == jnp.float64
    np.testing.assert_allclose(x_back, x, atol=1e-9)
    np.testing.assert_allclose(log_det, jacobian_log_det, atol=1e-9)
    np.testing.assert_allclose(inverse_log_det, -log_det, atol=1e-9)


def test_so_n_rotation_is_a_rotation():
    r = np.asarray(so_n_rotation(jnp.array([0.3, -1.2, 0.8]), 3), np.float64)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-5)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-5)
    assert not np.allclose(r, np.eye(3), atol=0.1)


def test_piecewise_linear_matches_nflows_by_hand():
    # two bins on [-1, 1] with probabilities 1/4 and 3/4: cdf 0, 1/4, 1
    bijector = PiecewiseLinear(jnp.tile(jnp.array([0.0, math.log(3.0)]), (6, 1)), tail_bound=1.0)
    x = jnp.array([-0.5, 0.0, 0.5, 1.0, 2.0, -3.0])
    y, log_det = bijector.forward_and_log_det(x)
    # u = (x + 1) / 2; bin 0 (u < 1/2): cdf = u/2, slope 1/2; bin 1: cdf = 1/4 + 3/2 (u - 1/2)
    np.testing.assert_allclose(y, [-0.75, -0.5, 0.25, 1.0, 2.0, -3.0], atol=1e-6)
    np.testing.assert_allclose(log_det, [math.log(0.5), math.log(1.5), math.log(1.5),
                                         math.log(1.5), 0.0, 0.0], atol=1e-6)
    x_back, inverse_log_det = bijector.inverse_and_log_det(y)
    np.testing.assert_allclose(x_back, x, atol=1e-6)
    np.testing.assert_allclose(inverse_log_det, -log_det, atol=1e-6)


def test_affine_coupling_matches_nflows_by_hand():
    # feature 0 transformed from feature 1; the net's output is [shift, u] = [0.5, -2]
    layer = coupling(np.array([True, False]), lambda h: jnp.broadcast_to(
        jnp.array([0.5, -2.0]), h.shape[:-1] + (2,)), "affine")
    x = jnp.array([[2.0, -7.0], [-1.0, 3.0]])
    y, log_det = layer.forward_and_log_det(x)
    scale = 1.0 / (1.0 + math.exp(0.0)) + 1e-3  # sigmoid(u + 2) + 1e-3
    np.testing.assert_allclose(y, [[2.0 * scale + 0.5, -7.0], [-scale + 0.5, 3.0]], atol=1e-6)
    np.testing.assert_allclose(log_det, [math.log(scale)] * 2, atol=1e-6)


def test_alternating_masks_follow_nflows():
    np.testing.assert_array_equal(alternating_mask(5, even=True), [1, 0, 1, 0, 1])
    np.testing.assert_array_equal(alternating_mask(5, even=False), [0, 1, 0, 1, 0])


@pytest.mark.parametrize("transform", ["piecewise_linear", "rq_spline"])
def test_splines_are_monotone_with_identity_tails(transform):
    forward, _ = _coupling(transform)
    grid = jnp.linspace(-6.0, 6.0, 2001)
    x = jnp.zeros((grid.shape[0], D)).at[:, 1].set(grid).at[:, 0].set(0.7).at[:, 2].set(-0.4)
    y = np.asarray(jax.jit(forward)(x)[0])
    assert np.all(np.diff(y[:, 1]) > 0)  # strictly increasing in the transformed feature
    tails = np.abs(np.asarray(grid)) > 3.0
    np.testing.assert_allclose(y[tails, 1], np.asarray(grid)[tails], atol=1e-5)
    assert np.abs(y[~tails, 1] - np.asarray(grid)[~tails]).max() > 0.05  # not the identity inside
    np.testing.assert_array_equal(y[:, [0, 2]], np.asarray(x)[:, [0, 2]])  # identity features


def test_stack_rejects_an_unknown_transform():
    with pytest.raises(ValueError, match="transform='spline' must be one of"):
        CouplingStack(D, transform="spline").init(jax.random.PRNGKey(0), jnp.zeros((1, D)))
