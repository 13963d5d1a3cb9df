"""wscrl_jax.causal.interventions vs the reference's InterventionPrior and
HeuristicInterventionEncoder (`ws_crl/causal/interventions.py`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.causal.interventions import (HeuristicInterventionEncoder, MLPInterventionEncoder,
                                            add_offset, intervention_masks)
from wscrl_jax.eval.interventions import label_permutations


def test_masks_atomic_or_none():
    m = intervention_masks(3, "atomic_or_none")
    assert m.dtype == np.float32
    np.testing.assert_array_equal(m, [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    # default set is atomic_or_none
    np.testing.assert_array_equal(intervention_masks(3), m)


def test_masks_atomic():
    np.testing.assert_array_equal(intervention_masks(3, "atomic"), np.eye(3))


def test_masks_all_uses_bit_k_for_variable_k():
    m = intervention_masks(3, "all")
    assert m.shape == (8, 3)
    np.testing.assert_array_equal(m[0], [0, 0, 0])
    np.testing.assert_array_equal(m[1], [1, 0, 0])  # bit 0 -> variable 0
    np.testing.assert_array_equal(m[4], [0, 0, 1])  # bit 2 -> variable 2
    np.testing.assert_array_equal(m[5], [1, 0, 1])
    np.testing.assert_array_equal(m[7], [1, 1, 1])
    assert len({tuple(r) for r in m}) == 8


def test_masks_unknown_set_raises():
    with pytest.raises(ValueError):
        intervention_masks(3, "pairs")


def test_label_permutations_fix_label_zero():
    p = label_permutations(3)
    assert p.shape == (6, 4)
    np.testing.assert_array_equal(p[0], [0, 1, 2, 3])  # index 0 = identity
    assert np.all(p[:, 0] == 0)
    assert len({tuple(r) for r in p}) == 6
    for row in p:
        assert sorted(row) == [0, 1, 2, 3]


def test_add_offset():
    q = jnp.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    out = np.asarray(add_offset(q, 0.1))
    # (q + 0.1) / (1 + 4 * 0.1)
    np.testing.assert_allclose(out, (np.asarray(q) + 0.1) / 1.4, rtol=1e-6)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-6)


@pytest.fixture(scope="module")
def heuristic():
    enc = HeuristicInterventionEncoder()
    x = jnp.zeros((4, 3))
    params = enc.init(jax.random.PRNGKey(0), x, x, 0.01)
    return enc, params


def test_heuristic_init_parameters(heuristic):
    _, params = heuristic
    p = params["params"]
    assert float(p["alpha"]) == -3.0 and float(p["beta"]) == 15.0 and float(p["gamma"]) == 15.0


def test_heuristic_output_at_init_by_hand(heuristic):
    enc, params = heuristic
    # Delta = mu2 - mu1 per row, logit_k = -3 + 15 |Delta| + 15 Delta^2 (logit_0 = 0):
    #   [0.1, -0.2, 0]     -> [0, -3+1.5+0.15, -3+3+0.6, -3]       = [0, -1.35, 0.6, -3]
    #   [0, 0, 0]          -> [0, -3, -3, -3]
    #   [0.5, 0, 0]        -> [0, -3+7.5+3.75, -3, -3]            = [0, 8.25, -3, -3]
    #   [-0.05, 0.3, 1.0]  -> [0, -3+0.75+0.0375, -3+4.5+1.35, 27] = [0, -2.2125, 2.85, 27]
    delta = np.array([[0.1, -0.2, 0.0], [0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [-0.05, 0.3, 1.0]])
    logits = np.array([[0, -1.35, 0.6, -3], [0, -3, -3, -3], [0, 8.25, -3, -3],
                       [0, -2.2125, 2.85, 27]])
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    offset = 0.01
    expected = (p + offset) / (1 + 4 * offset)
    mu1 = np.random.default_rng(0).normal(size=(4, 3))  # only Delta may matter
    q = enc.apply(params, jnp.asarray(mu1, jnp.float32), jnp.asarray(mu1 + delta, jnp.float32),
                  offset)
    assert q.shape == (4, 4)
    np.testing.assert_allclose(np.asarray(q), expected, rtol=2e-5, atol=1e-7)
    # e.g. row 1: softmax([0,-3,-3,-3]) = [0.8703, 0.0432, 0.0432, 0.0432]
    assert float(q[1, 0]) == pytest.approx((1 / (1 + 3 * np.exp(-3)) + 0.01) / 1.04, rel=1e-5)


def test_heuristic_offset_bounds_probabilities(heuristic):
    enc, params = heuristic
    mu1 = jnp.zeros((4, 3))
    mu2 = jnp.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [0, 0, 0]])
    q = np.asarray(enc.apply(params, mu1, mu2, 0.025))
    # smallest possible value: softmax ~ 0 -> 0.025 / (1 + 4 * 0.025)
    assert q.min() >= 0.025 / 1.1 * (1 - 1e-5)
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(q.argmax(-1), [1, 2, 3, 0])


def test_mlp_intervention_encoder_shapes_and_offset():
    enc = MLPInterventionEncoder(hidden=(8,), num_targets=4)
    mu1 = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)), jnp.float32)
    mu2 = mu1 + 1.0
    params = enc.init(jax.random.PRNGKey(0), mu1, mu2, 0.05)
    q = np.asarray(enc.apply(params, mu1, mu2, 0.05))
    assert q.shape == (4, 4)
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-6)
    assert q.min() >= 0.05 / 1.2 * (1 - 1e-5)
    # input is [mu1, mu2 - mu1]: first layer kernel has 2d = 6 rows
    assert params["params"]["MLP_0"]["TorchLinear_0"]["kernel"].shape == (6, 8)
