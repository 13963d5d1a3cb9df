"""Loss composition and logged metrics (`ws_crl/training.py: VAEMetrics`).

All means are weighted by a per-sample weight [B] so that padded rows of a final partial
batch (the reference's `drop_last=False`) do not count.
"""

import jax.numpy as jnp

from wscrl_jax.lcm.phases import LossWeights

# Per-sample outputs whose batch means are logged, in a fixed order (the reference's
# LOG_MEAN_VARS, with `kl_e` in place of the never-emitted `kl_epsilon`: ws-crl gotcha 20).
LOG_MEAN_VARS = ("elbo", "kl", "kl_e", "kl_intervention_target", "mse", "consistency_mse",
                 "inverse_consistency_mse", "log_prior", "log_prior_observed",
                 "log_prior_intervened", "log_prior_nonintervened", "log_likelihood",
                 "log_posterior", "z_regularization", "edges", "cyclicity", "encoder_std")


def weighted_mean(x, weights):
    """Mean over the batch axis (axis 0) of x [B, ...] with weights [B]."""
    w = weights.reshape(weights.shape + (1,) * (x.ndim - 1))
    return jnp.sum(w * x, axis=0) / jnp.sum(weights)


def entropy(p):
    """H(p) = -sum p log(p + 1e-9) over the last axis."""
    return -jnp.sum(p * jnp.log(p + 1e-9), axis=-1)


def total_loss(loss_b, outputs, weights, loss_weights: LossWeights):
    """Scalar training loss: mean loss + edges + cyclicity (learned graphs) + z-reg +
    consistency + 2x inverse consistency (ws-crl gotcha 4) - entropy weight * H(mean_b q)."""
    loss = weighted_mean(loss_b, weights)
    if "edges" in outputs:
        loss += loss_weights.edge * weighted_mean(outputs["edges"], weights)
    if "cyclicity" in outputs:
        loss += loss_weights.cyclicity * weighted_mean(outputs["cyclicity"], weights)
    if "z_regularization" in outputs:
        loss += loss_weights.z_regularization * weighted_mean(outputs["z_regularization"], weights)
    if "consistency_mse" in outputs:
        loss += loss_weights.consistency * weighted_mean(outputs["consistency_mse"], weights)
    if "inverse_consistency_mse" in outputs:
        loss += 2.0 * loss_weights.inverse_consistency * weighted_mean(
            outputs["inverse_consistency_mse"], weights)
    if "intervention_posterior" in outputs:
        aggregate = weighted_mean(outputs["intervention_posterior"], weights)
        loss -= loss_weights.intervention_entropy * entropy(aggregate)
    return loss
