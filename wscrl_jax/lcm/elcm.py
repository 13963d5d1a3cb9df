"""Explicit latent causal model (`ws_crl/lcm/elcm.py: ELCM` with an MLP explicit SCM and a learned
graph; `ws_crl/causal/scm.py`, `ws_crl/causal/graph.py`): a VAE whose codes are the causal
variables themselves, with the weakly supervised prior of an explicit SCM over a learned
ENCO / DDS / fixed-order graph.

Main-phase prior of a pair, one graph A sampled per pair (`training.graph_sampling`):

    log p(z1, z2) = logmeanexp_k log p(z1, z2 | I_k, A)    over the K = d + 1 targets

(`BaseLCM._evaluate_prior`), and `loss_b = -ll + beta * (log q - log p)` (no separate
intervention KL weight), plus the graph regularisers (expected edges, NOTEARS acyclicity) and the
intervention posterior `softmax_k log p(z1, z2 | I_k, A)` whose aggregate entropy the objective
rewards. Pretraining and everything else is the beta-VAE's. The reference offers this model with
learned graphs but ships no config for it; `configs/scaling.py:elcm` does.
"""

from typing import Sequence

import jax
import jax.numpy as jnp

from wscrl_jax.causal.explicit_scm import ExplicitSCM, is_acyclic
from wscrl_jax.causal.interventions import intervention_masks
from wscrl_jax.causal.learned_graphs import (graph_acyclicity, hard_adjacency, init_graph,
                                             num_edges, sample_adjacency)
from wscrl_jax.lcm.betavae import BetaVAE
from wscrl_jax.lcm.phases import LossWeights, Phase


class ELCM(BetaVAE):
    """ELCM on pairs x1, x2 [B, dim_x]; `graph_kind` in enco, dds (variable order) or
    fixed_order (the index order). Randomness from the 'sample' stream."""

    graph_kind: str = "enco"
    scm_hidden: Sequence[int] = (64, 64)
    scm_homoskedastic: bool = False
    scm_min_std: float = 0.2

    def setup(self):
        super().setup()
        self.graph = self.param("graph", lambda key: init_graph(key, self.graph_kind,
                                                                self.dim_z))
        self.scm = ExplicitSCM(self.dim_z, tuple(self.scm_hidden), self.scm_homoskedastic,
                               self.scm_min_std, False,
                               "fixed" if self.graph_kind == "fixed_order" else "variable")

    def hard_graph(self):
        """The learned graph's hard adjacency [d, d] (A[i, j]: edge i -> j)."""
        return hard_adjacency(self.graph, self.graph_kind)

    def graph_is_acyclic(self):
        """Whether the hard graph has no cycle (scalar bool; ENCO's can have one)."""
        return is_acyclic(self.hard_graph())

    def main_log_prior(self, t, loss_weights: LossWeights, phase: Phase, outputs: dict):
        """The explicit SCM's prior of the module docstring, averaged over
        `phase.graph_samples` graphs per pair (`_evaluate_prior`: the mean of the log prior over
        graph samples; the intervention posterior is the softmax of the mean)."""
        batch, samples = t.z1.shape[0], phase.graph_samples
        graph = jax.lax.stop_gradient(self.graph) if phase.graph_frozen else self.graph
        adjacency, _ = sample_adjacency(self.make_rng("sample"), graph, self.graph_kind,
                                        samples * batch, phase.graph_mode,
                                        phase.graph_temperature)  # [G * B, d, d]
        masks = jnp.asarray(intervention_masks(self.dim_z))  # [K, d]
        k = masks.shape[0]

        def tile(a, n):  # [B, ...] -> [n * B, ...]
            return jnp.broadcast_to(a, (n,) + a.shape).reshape((-1,) + a.shape[1:])
        per_target = self.scm.log_prob_weakly_supervised(  # every (target, graph) in one batch
            tile(t.z1, k * samples), tile(t.z2, k * samples),
            jnp.repeat(masks, samples * batch, axis=0), tile(adjacency, k),
            loss_weights.manifold_thickness)["scm_log_prior"]
        per_target = jnp.moveaxis(per_target.reshape(k, samples, batch), 0, -1)  # [G, B, K]
        log_prior = jnp.mean(jax.scipy.special.logsumexp(per_target, axis=-1) - jnp.log(k), 0)
        outputs.update({
            "intervention_posterior": jax.nn.softmax(jnp.mean(per_target, 0), axis=-1),
            "edges": jnp.full((batch,), num_edges(graph, self.graph_kind)),
            "cyclicity": jnp.full((batch,), graph_acyclicity(graph, self.graph_kind))})
        return log_prior

    def init_all(self, x1, x2, loss_weights: LossWeights, model_state):
        self.hard_graph()
        return self(x1, x2, loss_weights, Phase(), model_state)
