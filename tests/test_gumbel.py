"""wscrl_jax.causal.gumbel vs the reference's ws_crl/gumbel.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.causal.gumbel import (SAMPLING_MODES, gumbel_bernoulli, sample_permutation,
                                     soft_sort)

N_SAMPLES = 20_000
# one compilation per static configuration: faster than op-by-op dispatch on a slow CPU
GUMBEL_BERNOULLI = jax.jit(gumbel_bernoulli, static_argnames="hard")
SOFT_SORT = jax.jit(soft_sort, static_argnames=("hard", "power"))
SAMPLE_PERMUTATION = jax.jit(sample_permutation, static_argnames=("mode", "sample_shape"))


def assert_frequencies(counts_mean, probs, n, sigmas=5.0):
    """Empirical frequencies within `sigmas` binomial standard deviations of `probs`."""
    probs = np.asarray(probs, np.float64)
    std = np.sqrt(probs * (1 - probs) / n)
    np.testing.assert_array_less(np.abs(np.asarray(counts_mean) - probs), sigmas * std + 1e-12)


def test_gumbel_bernoulli_hard_marginals_and_rounding():
    logits = jnp.array([-2.0, -0.5, 0.0, 1.0, 3.0])
    batch = jnp.broadcast_to(logits, (N_SAMPLES, 5))
    key = jax.random.PRNGKey(0)
    hard, _ = GUMBEL_BERNOULLI(key, batch, tau=0.7, hard=True)
    soft, _ = GUMBEL_BERNOULLI(key, batch, tau=0.7, hard=False)
    hard, soft = np.asarray(hard), np.asarray(soft)
    assert set(np.unique(hard)) <= {0.0, 1.0}
    assert np.all((soft >= 0) & (soft <= 1))
    # same key: the hard value is the rounded soft sample
    np.testing.assert_array_equal(hard, (soft >= 0.5).astype(np.float32))
    assert_frequencies(hard.mean(0), jax.nn.sigmoid(logits), N_SAMPLES)


def test_gumbel_bernoulli_log_prob_of_outcome():
    logits = jnp.linspace(-3.0, 3.0, 7)
    sample, log_prob = GUMBEL_BERNOULLI(jax.random.PRNGKey(1), jnp.tile(logits, (50, 1)), 1.0,
                                        hard=True)
    p = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    expected = np.where(np.asarray(sample) == 1.0, np.log(p), np.log(1 - p))
    np.testing.assert_allclose(log_prob, expected, rtol=1e-5, atol=1e-6)
    # soft samples: the outcome is the rounded soft sample
    soft, log_prob_soft = GUMBEL_BERNOULLI(jax.random.PRNGKey(1), jnp.tile(logits, (50, 1)), 1.0)
    expected = np.where(np.asarray(soft) >= 0.5, np.log(p), np.log(1 - p))
    np.testing.assert_allclose(log_prob_soft, expected, rtol=1e-5, atol=1e-6)


def test_gumbel_bernoulli_extreme_logits_are_finite():
    # ws-crl gotcha 21: e^l / (1 + e^l) overflows to nan for l = 1000
    logits = jnp.array([1000.0, -1000.0, 90.0, -90.0])

    def f(l):
        sample, log_prob = GUMBEL_BERNOULLI(jax.random.PRNGKey(2), l, 0.5, hard=True)
        return jnp.sum(sample) + jnp.sum(log_prob), (sample, log_prob)

    grad, (sample, log_prob) = jax.grad(f, has_aux=True)(logits)
    np.testing.assert_array_equal(sample, [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(log_prob, 0.0, atol=1e-30)  # the certain outcome was drawn
    assert np.all(np.isfinite(grad))
    # the unlikely outcome's log-probability is -1000, finite
    np.testing.assert_allclose(jax.nn.log_sigmoid(-logits[:2]), [-1000.0, 0.0])


def test_gumbel_bernoulli_straight_through_gradient():
    logits = jnp.array([[-1.0, 0.3, 2.0]] * 4)
    w = jnp.arange(12.0).reshape(4, 3) - 5.5
    key = jax.random.PRNGKey(3)

    def loss(l, hard):
        return jnp.sum(w * GUMBEL_BERNOULLI(key, l, 0.8, hard)[0])

    g_hard = jax.grad(loss)(logits, True)
    g_soft = jax.grad(loss)(logits, False)
    np.testing.assert_array_equal(g_hard, g_soft)
    assert np.all(g_soft != 0)


def test_soft_sort_small_tau_is_the_descending_sort():
    scores = jnp.array([[3.0, -1.0, 2.0, 0.5], [0.1, 0.4, -0.2, 0.3]])
    p = np.asarray(SOFT_SORT(scores, tau=1e-3))
    expected = np.eye(4)[np.argsort(-np.asarray(scores), axis=-1)]  # [2, rank, element]
    np.testing.assert_allclose(p, expected, atol=1e-6)
    np.testing.assert_allclose(p @ np.asarray(scores)[..., None],
                               -np.sort(-np.asarray(scores))[..., None], atol=1e-5)
    hard = np.asarray(SOFT_SORT(scores, tau=1e-3, hard=True))
    np.testing.assert_array_equal(hard, expected)


def test_soft_sort_rows_are_distributions_and_closed_form():
    scores = jnp.array([0.5, 2.0, -1.0])
    p = np.asarray(SOFT_SORT(scores, tau=2.0))
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    # row 0 (largest score 2.0): softmax(-|s - 2| / 2)
    s = np.asarray(scores, np.float64)
    row0 = np.exp(-np.abs(s - 2.0) / 2.0)
    np.testing.assert_allclose(p[0], row0 / row0.sum(), rtol=1e-5)
    # power 2: row 2 (smallest score -1.0): softmax(-(s + 1)^2 / 2)
    p2 = np.asarray(SOFT_SORT(scores, tau=2.0, power=2.0))
    row2 = np.exp(-(s + 1.0) ** 2 / 2.0)
    np.testing.assert_allclose(p2[2], row2 / row2.sum(), rtol=1e-5)


def test_sample_permutation_deterministic_is_argsort():
    logits = jnp.array([0.2, -0.7, 1.5, 0.0])
    p = np.asarray(SAMPLE_PERMUTATION(None, logits, mode="deterministic"))
    np.testing.assert_array_equal(p, np.eye(4)[np.argsort(-np.asarray(logits))])
    batch = SAMPLE_PERMUTATION(None, logits, mode="deterministic", sample_shape=(3,))
    assert batch.shape == (3, 4, 4)
    np.testing.assert_array_equal(batch, np.broadcast_to(p, (3, 4, 4)))


def test_sample_permutation_hard_plackett_luce_top_rank():
    logits = jnp.array([1.0, 0.0, -1.0, 0.5])
    p = np.asarray(SAMPLE_PERMUTATION(jax.random.PRNGKey(4), logits, tau=1.0, mode="hard",
                                      sample_shape=(N_SAMPLES,)))
    assert p.shape == (N_SAMPLES, 4, 4)
    assert set(np.unique(p)) <= {0.0, 1.0}
    np.testing.assert_array_equal(p.sum(-1), 1.0)
    np.testing.assert_array_equal(p.sum(-2), 1.0)  # permutation matrices
    # Gumbel-max: the top-ranked element is c with probability softmax(logits)[c]
    assert_frequencies(p[:, 0, :].mean(0), jax.nn.softmax(logits), N_SAMPLES)
    # Plackett-Luce probability of the full order 0, 3, 1, 2
    w = np.exp(np.asarray(logits, np.float64))
    pl = w[0] / w.sum() * w[3] / (w[3] + w[1] + w[2]) * w[1] / (w[1] + w[2])
    order = np.argmax(p, axis=-1)  # [n, rank] -> element
    assert_frequencies(np.all(order == [0, 3, 1, 2], axis=-1).mean(), pl, N_SAMPLES)


def test_sample_permutation_soft_rows_sum_to_one_and_mode_check():
    p = SAMPLE_PERMUTATION(jax.random.PRNGKey(5), jnp.zeros(3), tau=1.0, mode="soft",
                           sample_shape=(2,))
    assert p.shape == (2, 3, 3)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    assert np.any((np.asarray(p) > 0.01) & (np.asarray(p) < 0.99))
    assert SAMPLING_MODES == ("hard", "soft", "deterministic")
    with pytest.raises(ValueError, match="sampling mode"):
        sample_permutation(jax.random.PRNGKey(5), jnp.zeros(3), mode="argmax")
