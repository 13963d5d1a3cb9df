"""Loss composition and logged metrics (`ws_crl/training.py: VAEMetrics`).

All means are weighted by a per-sample weight [B] so that padded rows of a final partial
batch (the reference's `drop_last=False`) do not count.
"""

import jax.numpy as jnp
import numpy as np

from wscrl_jax.causal.interventions import label_permutations
from wscrl_jax.models.phase import Amounts

# Per-sample outputs whose batch means are logged, in a fixed order (the reference's
# LOG_MEAN_VARS, with `kl_e` in place of the never-emitted `kl_epsilon`: gotcha 20).
LOG_MEAN_VARS = ("elbo", "kl", "kl_e", "kl_intervention_target", "mse", "consistency_mse",
                 "inverse_consistency_mse", "log_prior", "log_prior_observed",
                 "log_prior_intervened", "log_prior_nonintervened", "log_likelihood",
                 "log_posterior", "z_regularization", "encoder_std")


def weighted_mean(x, weights):
    """Mean over the batch axis (axis 0) of x [B, ...] with weights [B]."""
    w = weights.reshape(weights.shape + (1,) * (x.ndim - 1))
    return jnp.sum(w * x, axis=0) / jnp.sum(weights)


def entropy(p):
    """H(p) = -sum p log(p + 1e-9) over the last axis."""
    return -jnp.sum(p * jnp.log(p + 1e-9), axis=-1)


def total_loss(loss_b, outputs, weights, amounts: Amounts):
    """Scalar training loss: mean loss + z-reg + consistency + 2x inverse consistency (gotcha 4)
    - entropy weight * H(mean_b q)."""
    loss = weighted_mean(loss_b, weights)
    if "z_regularization" in outputs:
        loss += amounts.z_regularization * weighted_mean(outputs["z_regularization"], weights)
    if "consistency_mse" in outputs:
        loss += amounts.consistency * weighted_mean(outputs["consistency_mse"], weights)
    if "inverse_consistency_mse" in outputs:
        loss += 2.0 * amounts.inverse_consistency * weighted_mean(
            outputs["inverse_consistency_mse"], weights)
    if "intervention_posterior" in outputs:
        aggregate = weighted_mean(outputs["intervention_posterior"], weights)
        loss -= amounts.intervention_entropy * entropy(aggregate)
    return loss


def intervention_metrics(q: np.ndarray, true_labels: np.ndarray, dim_z: int) -> dict:
    """Host-side intervention-posterior metrics, in the reference's column order.

    q [N, K] posterior over targets, true_labels [N]. The correct-target metrics are each
    maximised independently over relabellings of targets 1..d (label 0 fixed); only for
    dim_z <= 5, as in the reference.
    """
    q = np.asarray(q, np.float64)
    argmax = q.argmax(-1)
    hist = np.bincount(argmax, minlength=q.shape[1]) / len(argmax)
    out = {"intervention_entropy": float(-(q.mean(0) * np.log(q.mean(0) + 1e-9)).sum()),
           "intervention_entropy_deterministic": float(-(hist * np.log(hist + 1e-9)).sum())}
    if dim_z > 5:
        return out
    for k in range(q.shape[1]):
        out[f"intervention_posterior_{k}"] = float(q[:, k].mean())
    best_log, best_post, best_acc = -np.inf, -np.inf, -np.inf
    rows = np.arange(len(true_labels))
    for mapping in label_permutations(dim_z):
        q_true = q[rows, mapping[true_labels]]
        best_log = max(best_log, float(np.log(q_true + 1e-9).mean()))
        best_post = max(best_post, float(q_true.mean()))
        best_acc = max(best_acc, float((argmax == mapping[true_labels]).mean()))
    out.update({"intervention_correct_log_posterior": best_log,
                "intervention_correct_posterior": best_post, "intervention_accuracy": best_acc})
    return out
