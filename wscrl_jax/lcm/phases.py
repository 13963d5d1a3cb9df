"""Static training phases and the per-step scheduled loss_weights that a loss reads."""

from typing import NamedTuple

import jax.numpy as jnp


class Phase(NamedTuple):
    """What the loss computes in an epoch; hashable, so it is a static argument of the step.

    pretrain: beta-VAE on single images; model_interventions: include the conditional prior
    of intervened noise; deterministic_encoder: argmax intervention with straight-through
    gradients; the `need_*` flags skip regularisers whose weight is identically zero; `graph_*`:
    how a learned graph is sampled (`training.graph_sampling`), and whether it is frozen.
    """

    pretrain: bool = False
    model_interventions: bool = True
    deterministic_encoder: bool = False
    need_regularizers: bool = True
    need_inverse_consistency: bool = True
    full_likelihood: bool = False
    likelihood_reduction: str = "sum"
    graph_mode: str = "deterministic"  # learned graphs: sampling mode, temperature, frozen
    graph_temperature: float = 1.0
    graph_frozen: bool = False
    graph_samples: int = 1

    def __str__(self) -> str:
        """The log line of the phase's first epoch."""
        if self.pretrain:
            return "pretraining"
        parts = ["main phase", "interventions modelled" if self.model_interventions
                 else "interventions not modelled"]
        if self.deterministic_encoder:
            parts.append("deterministic intervention encoder")
        return ", ".join(parts)


EVAL_PHASE = Phase()
# the reference's IWAE ignores the eval settings (ws-crl gotcha 15): forward defaults
IWAE_PHASE = Phase(full_likelihood=True, graph_mode="hard", graph_samples=1)


class LossWeights(NamedTuple):
    """Weights of the loss terms at one step (traced float32 scalars), from the
    `training.*_schedule` configs; `intervention_offset` is the encoder's probability offset."""

    beta: jnp.ndarray
    beta_intervention: jnp.ndarray
    pretrain_beta: jnp.ndarray
    z_regularization: jnp.ndarray
    consistency: jnp.ndarray
    inverse_consistency: jnp.ndarray
    intervention_entropy: jnp.ndarray
    intervention_offset: jnp.ndarray
    edge: jnp.ndarray = 0.0  # learned graphs: weight of the expected edge count
    cyclicity: jnp.ndarray = 0.0  # learned graphs: weight of the NOTEARS acyclicity penalty
    manifold_thickness: jnp.ndarray = 0.01  # explicit SCMs: std of the counterfactual noise


def eval_loss_weights(beta: float = 1.0, manifold_thickness: float = 0.01):
    """Loss weights of the reference's test metrics and IWAE: regularisers 0, offset 1e-4, the
    SCM's manifold thickness at `model.scm.manifold_thickness`."""
    f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return LossWeights(f(beta), f(beta), f(beta), f(0.0), f(0.0), f(0.0), f(0.0), f(1e-4),
                       f(0.0), f(0.0), f(manifold_thickness))
