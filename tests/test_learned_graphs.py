"""wscrl_jax.causal.learned_graphs vs the reference's ws_crl/causal/graph.py (reference 3.6)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.causal import graphs
from wscrl_jax.causal.gumbel import SAMPLING_MODES
from wscrl_jax.causal.learned_graphs import (GRAPH_KINDS, acyclicity_regularizer, ancestor_mask,
                                             graph_acyclicity, hard_adjacency, init_graph,
                                             non_descendant_mask, num_edges, sample_adjacency,
                                             soft_adjacency, upper_triangularize)

DIM = 4
N = 16
KEY = jax.random.PRNGKey(0)
WEIGHTS = jnp.arange(DIM * DIM, dtype=jnp.float32).reshape(DIM, DIM)


@functools.partial(jax.jit, static_argnames="kind")
def graph_outputs(key, params, kind):
    """Everything the per-kind tests look at, in one compilation per kind (slow CPU)."""
    out = {mode: sample_adjacency(key, params, kind, N, mode, 0.5) for mode in SAMPLING_MODES}

    def deterministic_loss(p):
        return jnp.sum(WEIGHTS * sample_adjacency(key, p, kind, N, "deterministic", 0.5)[0])

    out.update(hard_adjacency=hard_adjacency(params, kind),
               soft_adjacency=soft_adjacency(params, kind),
               num_edges=num_edges(params, kind),
               graph_acyclicity=graph_acyclicity(params, kind),
               sample_acyclicity=acyclicity_regularizer(out["hard"][0]),
               deterministic_grad=jax.grad(deterministic_loss)(params))
    return out


ACYCLICITY = jax.jit(acyclicity_regularizer)
NON_DESCENDANTS = jax.jit(non_descendant_mask)
ANCESTORS = jax.jit(ancestor_mask)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def is_nilpotent(a):
    """A^d == 0 exactly, for binary [..., d, d] (a DAG)."""
    a = np.asarray(a, np.float64)
    return np.all(np.linalg.matrix_power(a, a.shape[-1]) == 0)


def test_upper_triangularize_matches_numpy_version():
    values = np.arange(1.0, 7.0, dtype=np.float32)
    np.testing.assert_array_equal(upper_triangularize(values, 4),
                                  graphs.upper_triangularize(values, 4))
    batch = upper_triangularize(jnp.stack([values, -values]), 4)
    assert batch.shape == (2, 4, 4)
    np.testing.assert_array_equal(batch[1], -graphs.upper_triangularize(values, 4))


def test_init_statistics_and_shapes():
    keys = jax.random.split(KEY, 100)
    dim = 6
    # vmappable over members
    inits = jax.jit(jax.vmap(lambda k: {kind: init_graph(k, kind, dim) for kind in GRAPH_KINDS}))
    params = inits(keys)
    enco, dds, fixed = params["enco"], params["dds"], params["fixed_order"]
    assert set(enco) == {"edge_existence_logits", "edge_orientation_logits"}
    assert set(dds) == {"edge_existence_logits", "permutation_logits"}
    assert set(fixed) == {"edge_logits"}
    for values, mean, length in [(enco["edge_existence_logits"], 4.0, 15),
                                 (enco["edge_orientation_logits"], 0.0, 15),
                                 (dds["edge_existence_logits"], 4.0, 15),
                                 (dds["permutation_logits"], 0.0, dim),
                                 (fixed["edge_logits"], 4.0, 15)]:
        values = np.asarray(values)
        assert values.shape == (100, length) and values.dtype == np.float32
        assert abs(values.mean() - mean) < 0.002
        assert 0.009 < values.std() < 0.011
    with pytest.raises(ValueError, match="graph kind"):
        init_graph(KEY, "notears", 3)


def test_enco_adjacencies_at_init():
    params = init_graph(KEY, "enco", DIM)
    out = graph_outputs(KEY, params, "enco")
    gamma = np.asarray(params["edge_existence_logits"])
    theta = np.asarray(params["edge_orientation_logits"])
    # soft: A[i, j] = sigmoid(gamma) sigmoid(theta), A[j, i] = sigmoid(gamma) (1 - sigmoid(theta))
    expected = (graphs.upper_triangularize(sigmoid(gamma) * sigmoid(theta), DIM)
                + graphs.upper_triangularize(sigmoid(gamma) * (1 - sigmoid(theta)), DIM).T)
    np.testing.assert_allclose(out["soft_adjacency"], expected, rtol=1e-5)
    np.testing.assert_allclose(out["num_edges"], np.sum(expected), rtol=1e-5)
    # hard: every edge exists (sigmoid(4) ~ 0.98) and is oriented i -> j iff theta_ij >= 0, so
    # exactly one direction per pair (a tournament; it may contain cycles)
    hard = np.asarray(out["hard_adjacency"])
    upper = graphs.upper_triangularize((theta >= 0).astype(np.float32), DIM)
    np.testing.assert_array_equal(hard, upper + graphs.upper_triangularize(theta < 0, DIM).T)
    np.testing.assert_array_equal(hard + hard.T, 1 - np.eye(DIM))
    # NOTEARS on the soft adjacency (every pair ~0.49 both ways) is positive
    assert float(out["graph_acyclicity"]) > 1.0
    # orientation logit exactly 0: orientation 0.5 both ways, so both directions are kept
    tie = dict(params, edge_orientation_logits=jnp.zeros_like(params["edge_orientation_logits"]))
    np.testing.assert_array_equal(graph_outputs(KEY, tie, "enco")["hard_adjacency"],
                                  1 - np.eye(DIM))


def test_enco_samples():
    params = init_graph(KEY, "enco", DIM)
    out = graph_outputs(KEY, params, "enco")
    hard, log_prob = out["hard"]
    assert log_prob is None and hard.shape == (N, DIM, DIM)
    hard = np.asarray(hard)
    assert set(np.unique(hard)) <= {0.0, 1.0}
    assert np.all(hard + np.swapaxes(hard, -1, -2) <= 1)  # at most one direction per pair
    np.testing.assert_array_equal(np.diagonal(hard, axis1=-2, axis2=-1), 0)
    soft = np.asarray(out["soft"][0])
    assert np.all((soft >= 0) & (soft <= 1)) and np.any((soft > 0.01) & (soft < 0.99))
    # deterministic: value of the hard adjacency, gradient of a random soft sample
    det = out["deterministic"][0]
    np.testing.assert_array_equal(det, np.broadcast_to(out["hard_adjacency"], det.shape))
    for g in out["deterministic_grad"].values():
        assert np.all(np.isfinite(g)) and np.any(g != 0)


def test_dds_samples_are_dags():
    params = init_graph(KEY, "dds", DIM)
    out = graph_outputs(KEY, params, "dds")
    a, log_prob = out["hard"]
    assert log_prob is None and a.shape == (N, DIM, DIM)
    a = np.asarray(a)
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert is_nilpotent(a)
    np.testing.assert_allclose(out["sample_acyclicity"], 0.0, atol=1e-10)
    # the permutation is random: several different orders appear among the samples
    assert len({tuple(graphs.topological_sort(x)) for x in a}) > 1
    assert is_nilpotent(np.asarray(out["soft"][0]) > 0)  # soft edges only along a sampled order
    # hard adjacency: the full DAG in the argsort order of the permutation scores
    hard = np.asarray(out["hard_adjacency"])
    order = np.argsort(-np.asarray(params["permutation_logits"]))
    np.testing.assert_array_equal(hard[np.ix_(order, order)], np.triu(np.ones((DIM, DIM)), 1))
    det = out["deterministic"][0]
    np.testing.assert_array_equal(det, np.broadcast_to(hard, det.shape))
    np.testing.assert_array_equal(np.asarray(out["soft_adjacency"]) > 0, hard > 0)
    np.testing.assert_allclose(out["num_edges"],
                               sigmoid(params["edge_existence_logits"]).sum(), rtol=1e-5)
    assert float(out["graph_acyclicity"]) == 0.0
    assert np.any(out["deterministic_grad"]["edge_existence_logits"] != 0)


def test_fixed_order_samples_and_log_prob():
    params = init_graph(KEY, "fixed_order", DIM)
    params = {"edge_logits": params["edge_logits"].at[:3].set(jnp.array([-1.0, 0.0, 0.5]))}
    out = graph_outputs(KEY, params, "fixed_order")
    logits = np.asarray(params["edge_logits"])
    a, log_prob = out["hard"]
    assert a.shape == (N, DIM, DIM) and log_prob.shape == (N,)
    a = np.asarray(a)
    np.testing.assert_array_equal(np.tril(np.ones((DIM, DIM))) * a, 0)  # strictly upper
    edges = a[:, np.triu_indices(DIM, 1)[0], np.triu_indices(DIM, 1)[1]]
    p = sigmoid(logits)
    expected = np.sum(np.where(edges == 1, np.log(p), np.log(1 - p)), axis=-1)
    np.testing.assert_allclose(log_prob, expected, rtol=1e-5)
    np.testing.assert_array_equal(np.tril(np.ones((DIM, DIM))) * np.asarray(out["soft"][0]), 0)
    hard = np.asarray(out["hard_adjacency"])
    np.testing.assert_array_equal(hard, graphs.upper_triangularize(logits >= 0, DIM))
    det, det_log_prob = out["deterministic"]
    np.testing.assert_array_equal(det, np.broadcast_to(hard, det.shape))
    assert det_log_prob.shape == (N,)
    np.testing.assert_allclose(out["num_edges"], p.sum(), rtol=1e-5)
    assert float(out["graph_acyclicity"]) == 0.0
    with pytest.raises(ValueError, match="sampling mode"):
        sample_adjacency(KEY, params, "fixed_order", 2, "gumbel", 1.0)


def test_acyclicity_regularizer():
    dag = jnp.asarray(graphs.create_graph(4, "full", 0), jnp.float32)
    # 2-cycle with weight w both ways: expm has the block [[cosh w, sinh w], [sinh w, cosh w]]
    w = 0.7
    cycle = jnp.zeros((4, 4)).at[1, 2].set(w).at[2, 1].set(w)
    values = ACYCLICITY(jnp.stack([dag, cycle, jnp.zeros((4, 4))]))
    assert values.shape == (3,)
    np.testing.assert_allclose(values[0], 0.0, atol=1e-12)
    np.testing.assert_allclose(values[1], (2 * np.cosh(w) - 2) ** 2, rtol=1e-5)
    assert float(values[2]) == 0.0


def test_ancestor_mask_chain():
    chain = jnp.asarray(graphs.create_graph(4, "chain", 0), jnp.float32)
    # [k, i] = k is an ancestor of i: transitive closure of 0 -> 1 -> 2 -> 3
    np.testing.assert_array_equal(ANCESTORS(chain), np.triu(np.ones((4, 4)), 1))
    # soft: 0 -> 1 with probability p, 1 -> 2 with probability q: 0 is an ancestor of 2 with p q
    p, q = 0.3, 0.6
    soft = jnp.array([[0.0, p, 0.0], [0.0, 0.0, q], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(ANCESTORS(soft)[0, 2], p * q, rtol=1e-6)


def test_non_descendant_mask():
    # chain 0 -> 1 -> 2, node 3 isolated
    a = jnp.zeros((4, 4)).at[0, 1].set(1.0).at[1, 2].set(1.0)
    interventions = jnp.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 1]], bool)
    expected = [[0, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 0]]
    np.testing.assert_allclose(NON_DESCENDANTS(a, interventions), expected, atol=1e-6)
    # batched adjacencies [B, d, d] with interventions [B, d]
    batched = NON_DESCENDANTS(jnp.stack([a] * 4), interventions)
    np.testing.assert_allclose(batched, expected, atol=1e-6)
    # soft edge 0 -> 1 with probability p: intervening on 0 leaves 1 undisturbed with 1 - p
    p = 0.3
    soft = jnp.array([[0.0, p], [0.0, 0.0]])
    np.testing.assert_allclose(NON_DESCENDANTS(soft, jnp.array([1.0, 0.0])), [0.0, 1 - p],
                               atol=1e-6)


def test_graph_kinds():
    assert GRAPH_KINDS == ("enco", "dds", "fixed_order")
    with pytest.raises(ValueError, match="graph kind"):
        hard_adjacency({"edge_logits": jnp.zeros(3)}, "notears")
