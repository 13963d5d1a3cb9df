"""Loss composition and intervention metrics (reference: `ws_crl/training.py:
VAEMetrics`; ws-crl gotcha 4)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.eval.interventions import (intervention_metrics,
                                          intervention_metrics_members, label_permutations)
from wscrl_jax.lcm.objective import entropy, total_loss, weighted_mean
from wscrl_jax.lcm.phases import LossWeights

B, K = 4, 3


def _loss_weights(z=0.1, cons=0.2, inv=0.3, ent=0.5):
    f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return LossWeights(f(1.0), f(1.0), f(1.0), f(z), f(cons), f(inv), f(ent), f(1e-4))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(K), size=B)
    return {
        "loss_b": rng.normal(size=B),
        "z_regularization": rng.uniform(size=B),
        "consistency_mse": rng.uniform(size=B),
        "inverse_consistency_mse": rng.uniform(size=B),
        "intervention_posterior": q,
        "solution_std": rng.uniform(0.5, 2.0, size=(B, K, 2)),
    }


def _outputs(b, keys=("z_regularization", "consistency_mse", "inverse_consistency_mse",
                      "intervention_posterior")):
    return {k: jnp.asarray(b[k], jnp.float32) for k in keys}


def _hand_loss(b, z=0.1, cons=0.2, inv=0.3, ent=0.5):
    # L = mean loss_b + z mean(zreg) + c mean(cons) + 2 * inv mean(icons) - ent H(mean_b q),
    # H(p) = -sum p log(p + 1e-9)
    p = b["intervention_posterior"].mean(0)
    h = -(p * np.log(p + 1e-9)).sum()
    return (b["loss_b"].mean() + z * b["z_regularization"].mean()
            + cons * b["consistency_mse"].mean() + 2 * inv * b["inverse_consistency_mse"].mean()
            - ent * h)


def test_total_loss_closed_form(batch):
    got = total_loss(jnp.asarray(batch["loss_b"], jnp.float32), _outputs(batch), jnp.ones(B),
                     _loss_weights())
    assert float(got) == pytest.approx(_hand_loss(batch), rel=1e-5)


def test_padded_rows_with_zero_weight_do_not_count(batch):
    # two padded rows full of garbage (large values, a one-hot q) with weight 0
    pad = lambda a, v: np.concatenate([a, np.full((2,) + a.shape[1:], v)])  # noqa: E731
    padded = {k: pad(a, 1e3) for k, a in batch.items()}
    padded["intervention_posterior"] = pad(batch["intervention_posterior"], 0.0)
    padded["intervention_posterior"][-2:, 0] = 1.0
    weights = jnp.asarray([1.0] * B + [0.0, 0.0])
    got = total_loss(jnp.asarray(padded["loss_b"], jnp.float32), _outputs(padded), weights,
                     _loss_weights())
    ref = total_loss(jnp.asarray(batch["loss_b"], jnp.float32), _outputs(batch), jnp.ones(B),
                     _loss_weights())
    assert float(got) == pytest.approx(float(ref), rel=1e-6)
    assert float(got) == pytest.approx(_hand_loss(batch), rel=1e-5)


def test_entropy_term_is_subtracted(batch):
    # uniform aggregate posterior: H = log K (up to the 1e-9), and a larger entropy weight
    # lowers the loss by exactly weight * H (the regulariser maximises aggregate entropy)
    uniform = dict(batch, intervention_posterior=np.full((B, K), 1.0 / K))
    lb = jnp.asarray(batch["loss_b"], jnp.float32)
    l0 = total_loss(lb, _outputs(uniform), jnp.ones(B), _loss_weights(ent=0.0))
    l1 = total_loss(lb, _outputs(uniform), jnp.ones(B), _loss_weights(ent=1.0))
    assert float(l1 - l0) == pytest.approx(-math.log(K), rel=1e-5)
    assert float(entropy(jnp.array([1.0, 0.0, 0.0]))) == pytest.approx(0.0, abs=1e-7)


def test_missing_terms_are_skipped(batch):
    lb = jnp.asarray(batch["loss_b"], jnp.float32)
    got = total_loss(lb, {}, jnp.ones(B), _loss_weights())
    assert float(got) == pytest.approx(batch["loss_b"].mean(), rel=1e-6)


def test_inverse_consistency_counts_twice(batch):
    # ws-crl gotcha 4: the reference adds the inverse-consistency term twice
    lb = jnp.asarray(batch["loss_b"], jnp.float32)
    outs = _outputs(batch, ("inverse_consistency_mse",))
    got = total_loss(lb, outs, jnp.ones(B), _loss_weights(inv=0.3))
    expected = batch["loss_b"].mean() + 2 * 0.3 * batch["inverse_consistency_mse"].mean()
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_weighted_mean():
    x = jnp.array([[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]])
    np.testing.assert_allclose(np.asarray(weighted_mean(x, jnp.array([1.0, 1.0, 0.0]))), [2, 3])


# ------------------------------------------------------------------------- intervention metrics


def test_intervention_metrics_needs_label_permutation():
    # d = 2, K = 3. The model calls true target 1 "2" and true target 2 "1": the identity
    # labelling has accuracy 1/3 (only the empty interventions), the swap has accuracy 1.
    true = np.array([0, 1, 2, 1, 2, 0])
    q = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.1, 0.7, 0.2],
                  [0.1, 0.1, 0.8], [0.0, 0.9, 0.1], [0.6, 0.2, 0.2]])
    m = intervention_metrics(q, true, dim_z=2)
    assert m["intervention_accuracy"] == pytest.approx(1.0)
    swapped = np.array([0, 2, 1])[true]
    rows = np.arange(6)
    assert m["intervention_correct_posterior"] == pytest.approx(q[rows, swapped].mean())
    assert m["intervention_correct_log_posterior"] == pytest.approx(
        np.log(q[rows, swapped] + 1e-9).mean())
    agg = q.mean(0)
    assert m["intervention_entropy"] == pytest.approx(-(agg * np.log(agg + 1e-9)).sum())
    # argmax histogram [2, 2, 2] / 6 -> log 3
    assert m["intervention_entropy_deterministic"] == pytest.approx(math.log(3), abs=1e-8)
    for k in range(3):
        assert m[f"intervention_posterior_{k}"] == pytest.approx(q[:, k].mean())


def test_intervention_metrics_maximised_independently():
    # true labels all 1 (plus one 2). Identity: accuracy 1/3, mean posterior (0.45+0.45+1)/3;
    # swap: accuracy 2/3, mean posterior (0.55+0.55+0)/3. Each metric takes its own best.
    true = np.array([1, 1, 1])
    q = np.array([[0.0, 0.45, 0.55], [0.0, 0.45, 0.55], [0.0, 1.0, 0.0]])
    m = intervention_metrics(q, true, dim_z=2)
    assert m["intervention_accuracy"] == pytest.approx(2 / 3)
    assert m["intervention_correct_posterior"] == pytest.approx(1.9 / 3)
    assert m["intervention_correct_log_posterior"] == pytest.approx(
        (2 * math.log(0.45 + 1e-9) + math.log(1 + 1e-9)) / 3)


def test_intervention_metrics_of_all_members_match_one_by_one_numpy():
    """All members at once against the reference's formula, member by member,
    in numpy float64 (the code before it, `experiments/scaling.py: evaluate`): the same bits."""
    rng = np.random.default_rng(3)
    for dim_z in (3, 4):
        q = rng.dirichlet(np.ones(dim_z + 1), size=(3, 500))  # [M, N, K]
        labels = rng.integers(0, dim_z + 1, size=(3, 500))
        for m, got in enumerate(intervention_metrics_members(q, labels, dim_z)):
            qm, argmax = q[m], q[m].argmax(-1)
            hist = np.bincount(argmax, minlength=dim_z + 1) / len(argmax)
            want = {"intervention_entropy": -(qm.mean(0) * np.log(qm.mean(0) + 1e-9)).sum(),
                    "intervention_entropy_deterministic": -(hist * np.log(hist + 1e-9)).sum()}
            want.update({f"intervention_posterior_{k}": qm[:, k].mean()
                         for k in range(dim_z + 1)})
            q_true = [qm[np.arange(500), p[labels[m]]] for p in label_permutations(dim_z)]
            want["intervention_correct_log_posterior"] = max(np.log(t + 1e-9).mean()
                                                             for t in q_true)
            want["intervention_correct_posterior"] = max(t.mean() for t in q_true)
            want["intervention_accuracy"] = max((argmax == p[labels[m]]).mean()
                                                for p in label_permutations(dim_z))
            assert list(got) == list(want)
            assert list(got.values()) == [float(v) for v in want.values()]


def test_intervention_metrics_skip_permutations_for_large_d():
    q = np.full((2, 7), 1 / 7)
    m = intervention_metrics(q, np.array([0, 3]), dim_z=6)
    assert set(m) == {"intervention_entropy", "intervention_entropy_deterministic"}
    assert m["intervention_entropy"] == pytest.approx(math.log(7), rel=1e-6)
