"""Post-hoc graph evaluation: ENCO, the implicit graph, matching and SHD (eval/)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.eval.enco import _graph_nll_sums, conditional_nll, init_network
from wscrl_jax.eval.enco import learn_graph
from wscrl_jax.eval.implicit_graph import implicit_graph

CHAIN = np.array([[0, 1, 0], [0, 0, 1], [0, 0, 0]])


def linear_scm_samples(rng, adjacency, weights, masks):
    """z [n, d] of the linear ANM z_j = sum_i w_ij z_i + eps_j, intervened j ~ N(0, 1)."""
    n, d = masks.shape
    z = np.zeros((n, d), np.float32)
    for j in range(d):  # index order is topological for upper-triangular graphs
        observational = z @ (adjacency * weights)[:, j] + rng.normal(size=n)
        z[:, j] = np.where(masks[:, j] > 0, rng.normal(size=n), observational)
    return z


@pytest.fixture(scope="module")
def enco_chain():
    rng = np.random.default_rng(3)
    n, d = 10000, 3  # the evaluation split's size: 40 graph steps an epoch (4000: extra edges)
    weights = np.full((d, d), 1.5)
    z1 = linear_scm_samples(rng, CHAIN, weights, np.zeros((n, d)))
    labels = rng.integers(0, d + 1, n)
    masks = np.zeros((n, d), np.float32)
    masks[labels > 0, labels[labels > 0] - 1] = 1
    z2 = linear_scm_samples(rng, CHAIN, weights, masks)
    return jax.jit(learn_graph)(jax.random.PRNGKey(0), z1, z2, masks)


def test_enco_recovers_a_linear_chain_from_known_interventions(enco_chain):
    np.testing.assert_array_equal(np.asarray(enco_chain.adjacency), CHAIN)
    assert int(enco_chain.nonfinite_steps) == 0
    gamma = np.asarray(enco_chain.gamma)
    assert np.all(np.diag(gamma) < -1e15)  # self-edges stay impossible


def test_enco_parent_set_shortcut_equals_per_graph_evaluation():
    d = 4
    params = init_network(jax.random.PRNGKey(1), d, 16, True)
    z = jax.random.normal(jax.random.PRNGKey(2), (5, d))
    graphs = jax.random.bernoulli(jax.random.PRNGKey(3), 0.5, (30, d, d)).astype(jnp.float32)
    graphs = graphs * (1 - jnp.eye(d))
    fast = _graph_nll_sums(params, z, graphs, True)
    slow = _graph_nll_sums(params, z, graphs, False)
    for a, b in zip(fast, slow):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)
    # and the per-graph sums are what their definition says
    nll = np.stack([np.asarray(conditional_nll(params, z, g.T)) for g in graphs], 1)  # [B, G, d]
    pos = np.einsum("bgj,gij->bij", nll, np.asarray(graphs))
    np.testing.assert_allclose(np.asarray(slow[0]), pos, rtol=1e-5, atol=1e-4)


def test_enco_network_init_uses_torch_fan_in_for_3d_weights():
    torch_fan = init_network(jax.random.PRNGKey(0), 3, 64, True)
    plain = init_network(jax.random.PRNGKey(0), 3, 64, False)
    w_torch, w_plain = np.asarray(torch_fan[1]["w"]), np.asarray(plain[1]["w"])
    assert w_torch.shape == (3, 64, 64)
    assert np.abs(w_torch).max() <= np.sqrt(6 / (64 * 64)) + 1e-7
    assert np.abs(w_plain).max() > np.sqrt(6 / (64 * 64))
    assert np.abs(w_plain).max() <= np.sqrt(6 / 64) + 1e-7
    assert all(np.all(np.asarray(layer["b"]) == 0) for layer in torch_fan)


def chain_solution(index, inputs, conditioning, mask_row, inverse):
    """Solution functions of the chain z0 = e0, z1 = z0 + e1, z2 = z1 + e2 seen from noise:
    z_i = e_i - m_i(e) with m_1 = -e0, m_2 = -(e0 + e1); s = 1."""
    ctx = mask_row * conditioning
    shift = jnp.stack([jnp.zeros_like(ctx[:, 0]), -ctx[:, 0], -(ctx[:, 0] + ctx[:, 1])])[index]
    return inputs - shift if inverse else inputs + shift


@pytest.mark.parametrize("fix", [False, True])
def test_implicit_graph_of_a_known_chain(fix):
    noise = jax.random.normal(jax.random.PRNGKey(0), (2000, 3))
    causal = jnp.cumsum(noise, axis=1)
    masks = 1.0 - jnp.eye(3)
    effect, order = jax.jit(implicit_graph, static_argnums=(1, 5))(
        jax.random.PRNGKey(1), chain_solution, noise, causal, masks, fix)
    np.testing.assert_array_equal(np.asarray(order), [0, 1, 2])
    effect = np.asarray(effect)
    assert effect[0, 1] > 0.5 and effect[1, 2] > 0.5  # the two edges
    assert effect[0, 2] < 1e-6  # z0 acts on z2 only through z1: no direct effect
    assert np.all(np.tril(effect) == 0)


def test_matching_carries_a_graph_to_the_true_order_and_shd_counts_pairs():
    from wscrl_jax.eval.graph_match import (match_latents, structural_hamming_distance,
                                            to_true_order)
    true = CHAIN
    perm = np.array([2, 0, 1])  # code k encodes true factor perm[k]
    importance = np.full((3, 3), 0.05)
    importance[np.arange(3), perm] = [0.6, 0.9, 0.4]
    matching = match_latents(importance)
    np.testing.assert_array_equal(matching, perm)
    learned_codes = np.zeros((3, 3), int)  # the chain as the model's codes see it
    for i, j in zip(*np.nonzero(true)):
        learned_codes[np.argwhere(perm == i)[0, 0], np.argwhere(perm == j)[0, 0]] = 1
    np.testing.assert_array_equal(to_true_order(learned_codes, matching), true)
    assert structural_hamming_distance(true, true) == 0
    extra = true.copy()
    extra[0, 2] = 1
    assert structural_hamming_distance(extra, true) == 1
    assert structural_hamming_distance(true.T, true) == 2  # both edges reversed
    both_ways = true.copy()
    both_ways[1, 0] = 1
    assert structural_hamming_distance(both_ways, true) == 1
    assert structural_hamming_distance(np.zeros((3, 3)), true) == 2
