"""The ground truth as a flow model (wscrl_jax/causal/flow_lcm.py): its exact pair density
integrates to 1, the mixing inverts, nonlinear ground truth is deterministic in the data seed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.causal import flow_lcm
from wscrl_jax.causal.graphs import topological_sort
from wscrl_jax.data.scaling import create_nature, sample_pairs
from wscrl_jax.flows.so_n import so_n_rotation


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _integral(d, effects, rotation, mechanisms, mixing_flow, points, limit, thickness=0.5):
    """Riemann sum of p(x1, x2) over the grid [-limit, limit]^(2d) with `points` per axis."""
    grid = jnp.linspace(-limit, limit, points, dtype=jnp.float64)
    mesh = jnp.stack([a.reshape(-1) for a in jnp.meshgrid(*[grid] * (2 * d), indexing="ij")], 1)
    density = jax.jit(lambda p: jnp.sum(jnp.exp(flow_lcm.log_prob_pairs(
        p[:, :d], p[:, d:], effects, rotation, mechanisms, mixing_flow, thickness))))
    return float(density(mesh)) * float(grid[1] - grid[0]) ** (2 * d)


def test_pair_density_integrates_to_one_in_one_dimension(x64):
    total = _integral(1, jnp.zeros((1, 1)), jnp.eye(1), None, None, 301, 9.0)
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("kind", ["post_nonlinear", "noise_spline"])
def test_noise_through_a_spline_pair_density_integrates_to_one_in_one_dimension(kind, x64):
    """z = g(e) (no parents): the density of z1 and of the kept z2 carry g's inverse slope (a
    4-d grid cannot resolve these slopes; `test_noise_jacobian` covers d > 1)."""
    mechanisms = flow_lcm.random_mechanisms(jax.random.PRNGKey(0), 1, kind)
    total = _integral(1, jnp.zeros((1, 1)), jnp.eye(1), mechanisms, None, 1001, 9.0)
    assert total == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("kind", ["nonlinear", "post_nonlinear", "noise_spline"])
def test_noise_jacobian(kind, x64):
    """log|det de/dz| of the whole map z -> e (jax.jacfwd) is the sum of the per-variable terms
    that `log_prob_pairs` adds (the map is triangular)."""
    nature = create_nature(3, "full", 5, mechanisms=kind)
    effects = nature.adjacency * nature.weights
    z = 2.0 * jax.random.normal(jax.random.PRNGKey(1), (16, 3), jnp.float64)
    _, log_jacobian = flow_lcm.noise_and_log_jacobian(z, effects, nature.mechanisms)
    jacobians = jax.vmap(jax.jacfwd(
        lambda v: flow_lcm.noise_of(v[None], effects, nature.mechanisms)[0]))(z)
    total = np.asarray(jnp.sum(log_jacobian, axis=1))
    np.testing.assert_allclose(np.linalg.slogdet(np.asarray(jacobians))[1], total, atol=1e-8)
    assert np.ptp(total) > 0.5 if kind != "nonlinear" else np.all(total == 0.0)


@pytest.mark.parametrize("part", ["linear", "spline_mechanism", "mixing_flow"])
def test_pair_density_integrates_to_one_in_two_dimensions(part, x64):
    """Edge 0 -> 1 (weight 0.8), a rotation, and one nonlinear part at a time (each one's
    density changes by its own Jacobian; a 4-d grid of 40 points per axis)."""
    mechanisms = (flow_lcm.random_mechanisms(jax.random.PRNGKey(0), 2)
                  if part == "spline_mechanism" else None)
    mixing_flow = (flow_lcm.mixing_flow_module(2).init(jax.random.PRNGKey(1), jnp.zeros((1, 2)))
                   if part == "mixing_flow" else None)
    total = _integral(2, jnp.array([[0.0, 0.8], [0.0, 0.0]]), so_n_rotation(jnp.array([0.4]), 2),
                      mechanisms, mixing_flow, 40, 10.0)
    assert total == pytest.approx(1.0, abs=3e-3)


@pytest.fixture(scope="module")
def nonlinear_pairs():
    nature = create_nature(3, "full", 5, mechanisms="nonlinear", mixing="flow")
    order = tuple(topological_sort(np.asarray(nature.adjacency)))
    return nature, sample_pairs(jax.random.PRNGKey(0), nature, 2000, order, 0.05)


def test_nonlinear_ground_truth_inverts_and_is_nonlinear(nonlinear_pairs):
    nature, pairs = nonlinear_pairs
    z, log_det = flow_lcm.unmix(pairs["x1"], nature.rotation, nature.mixing_flow)
    np.testing.assert_allclose(z, pairs["z1"], atol=1e-4)
    assert np.std(np.asarray(log_det)) > 0.05  # a non-constant Jacobian: not a linear map
    # z1 = g(parents) + noise with a nonlinear g: the noise recovered from z1 is N(0, 1)
    effects = nature.adjacency * nature.weights
    noise = np.asarray(flow_lcm.noise_of(pairs["z1"], effects, nature.mechanisms))
    np.testing.assert_allclose(noise.std(0), 1.0, atol=0.08)
    linear_noise = np.asarray(flow_lcm.noise_of(pairs["z1"], effects, None))
    assert np.abs(linear_noise - noise).max() > 0.1


def test_nonlinear_ground_truth_is_deterministic_in_the_seed(nonlinear_pairs):
    nature, _ = nonlinear_pairs
    again = create_nature(3, "full", 5, mechanisms="nonlinear", mixing="flow")
    other = create_nature(3, "full", 6, mechanisms="nonlinear", mixing="flow")
    np.testing.assert_array_equal(again.mechanisms.params, nature.mechanisms.params)
    jax.tree_util.tree_map(np.testing.assert_array_equal, again.mixing_flow, nature.mixing_flow)
    assert not np.allclose(other.mechanisms.params, nature.mechanisms.params)
    linear = create_nature(3, "full", 5)
    assert linear.mechanisms is None and linear.mixing_flow is None


@pytest.mark.parametrize("kind", ["post_nonlinear", "noise_spline"])
def test_noise_passes_through_the_mechanism(kind):
    """z_i = g_i(pre_i + eps_i) or pre_i + g_i(eps_i; pre_i): the noise recovered from z1 is
    N(0, 1), and z1 is not additive in it; every variable that is not intervened on keeps its
    noise up to the counterfactual noise (std 0.3 here), which enters with the noise."""
    nature = create_nature(3, "full", 5, mechanisms=kind)
    additive = create_nature(3, "full", 5, mechanisms="nonlinear")
    assert nature.mechanisms.kind == kind and additive.mechanisms.kind == "nonlinear"
    order = tuple(topological_sort(np.asarray(nature.adjacency)))
    pairs = sample_pairs(jax.random.PRNGKey(0), nature, 4000, order, 0.3)
    effects = nature.adjacency * nature.weights
    noise, log_jacobian = flow_lcm.noise_and_log_jacobian(pairs["z1"], effects, nature.mechanisms)
    np.testing.assert_allclose(np.asarray(noise).std(0), 1.0, atol=0.06)
    assert np.std(np.asarray(log_jacobian)) > 0.1  # de/dz varies: the noise enters nonlinearly
    additive_noise = np.asarray(flow_lcm.noise_of(pairs["z1"], effects, additive.mechanisms))
    assert np.abs(additive_noise - np.asarray(noise)).max() > 0.3
    kept = np.asarray(pairs["true_interventions"]) == 0  # [n, d]
    change = np.asarray(flow_lcm.noise_of(pairs["z2"], effects, nature.mechanisms) - noise)
    np.testing.assert_allclose(change[kept].mean(), 0.0, atol=0.02)
    np.testing.assert_allclose(change[kept].std(), 0.3, rtol=0.05)


def test_noise_spline_shape_moves_with_the_parents():
    """In `noise_spline` the spline of a child's noise differs between parent values."""
    mechanisms = flow_lcm.random_mechanisms(jax.random.PRNGKey(0), 2, "noise_spline")
    eps = jnp.linspace(-2.0, 2.0, 9)
    low, high = (flow_lcm.causal_value(1, eps, jnp.stack([jnp.full(9, v), eps], 1),
                                       jnp.array([[0.0, 1.0], [0.0, 0.0]]), mechanisms) - v
                 for v in (-2.0, 2.0))  # the noise part, g(eps; pre) for pre = -2 and 2
    assert np.abs(np.asarray(low - high)).max() > 0.1


def test_log_prob_pairs_prefers_the_true_counterfactuals(nonlinear_pairs):
    """Real pairs are likelier than pairs whose x2 belongs to another sample."""
    nature, pairs = nonlinear_pairs
    args = (nature.adjacency * nature.weights, nature.rotation, nature.mechanisms,
            nature.mixing_flow, 0.05)
    real = flow_lcm.log_prob_pairs(pairs["x1"], pairs["x2"], *args)
    shuffled = flow_lcm.log_prob_pairs(pairs["x1"], jnp.roll(pairs["x2"], 1, axis=0), *args)
    assert np.all(np.isfinite(real))
    assert float(jnp.mean(real)) > float(jnp.mean(shuffled)) + 5.0


def test_unknown_mechanisms_or_mixing_raise():
    with pytest.raises(ValueError, match="mechanisms='quadratic'"):
        create_nature(3, "full", 5, mechanisms="quadratic")


def test_evaluation_splits_carry_the_true_likelihood_where_it_applies():
    from conftest import tiny_scaling_config
    from wscrl_jax.data.scaling import make_scaling_data
    config = tiny_scaling_config("ilcm")
    data = make_scaling_data(config.data, 3)
    assert not any("true_log_prob" in split for split in data.values())  # thickness 1e-9
    config.data.nature.manifold_thickness = 0.01
    config.data.nature.mechanisms = "nonlinear"
    data = make_scaling_data(config.data, 3)
    assert "true_log_prob" not in data["train"] and "true_log_prob" not in data["dci_train"]
    nature = create_nature(config.data.dim_z, config.data.nature.mode, 3, mechanisms="nonlinear")
    test = data["test"]
    expected = flow_lcm.log_prob_pairs(test["x1"], test["x2"], nature.adjacency * nature.weights,
                                       nature.rotation, nature.mechanisms, None, 0.01)
    np.testing.assert_allclose(test["true_log_prob"], expected, rtol=1e-6)
    assert np.all(np.isfinite(test["true_log_prob"]))
