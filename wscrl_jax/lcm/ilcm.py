"""Implicit latent causal model (ILCM) and its dVAE special case (`ws_crl/lcm/ilcm.py`).

Per-sample loss in the main phase, with w_k = q(I_k | x1, x2) over the K targets:

    loss_b = -sum_k w_k ll_k + beta * sum_k w_k KL_eps,k + beta_I * (sum_k w_k^2 log w_k + log K)

where the w_k^2 is the reference's double weighting (ws-crl gotcha 2, `fix_entropy_weighting`
fixes).
All K interventions are evaluated at once as a leading [K, ...] axis.
"""

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from wscrl_jax.causal.implicit_scm import ImplicitSCM, ancestor_masks
from wscrl_jax.causal.learned_graphs import (ancestor_mask, graph_acyclicity, hard_adjacency,
                                             init_graph, num_edges, sample_adjacency)
from wscrl_jax.causal.interventions import (HeuristicInterventionEncoder, MLPInterventionEncoder,
                                            intervention_masks)
from wscrl_jax.lcm.pair_vae import PairAutoencoder, sq_norm
from wscrl_jax.lcm.phases import LossWeights, Phase
from wscrl_jax.nn.gaussian import gaussian_log_likelihood, gaussian_log_prob, reparameterize

AVERAGING_STRATEGIES = ("stochastic", "average", "mean", "z2")


def graph_context_masks(adjacency):
    """Context masks of learned graphs: adjacency [..., d, d] -> [..., d, d] whose row i holds
    the (soft) probability that each variable is an ancestor of i (`_get_ancestor_mask`), with
    the diagonal zeroed (a cyclic sample would otherwise feed a variable its own noise)."""
    masks = jnp.swapaxes(ancestor_mask(adjacency), -1, -2)
    return masks * (1.0 - jnp.eye(adjacency.shape[-1]))


class ILCM(PairAutoencoder):
    """ILCM on flat observations x [B, dim_x] with dim_z causal variables.

    `causal_structure` 'none' is the ILCM, 'trivial' the dVAE, 'fixed_order' uses the order
    held in the model state. With `graph_kind` (ws-crl gotcha 9: the reference offers learned
    graphs in the ILCM but never passes them on) the contexts are the ancestors in a graph
    sampled per pair from learned ENCO / DDS / fixed-order parameters, whose expected edge
    count and acyclicity penalty join the outputs. Randomness comes from the 'sample' stream.
    """

    scm_hidden: Sequence[int] = (64, 64)
    scm_homoskedastic: bool = False
    scm_min_std: float = 0.2
    scm_transform: str = "affine"
    scm_spline_bins: int = 8
    scm_spline_bound: float = 5.0
    causal_structure: str = "none"
    intervention_encoder: str = "learnable_heuristic"
    intervention_encoder_hidden: Sequence[int] = (64, 64)
    averaging_strategy: str = "stochastic"
    fix_entropy_weighting: bool = False
    graph_kind: Optional[str] = None  # learned graph (enco, dds, fixed_order) or None

    def setup(self):
        super().setup()
        if self.graph_kind is not None:
            self.graph = self.param("graph", lambda key: init_graph(key, self.graph_kind,
                                                                    self.dim_z))
        self.scm = ImplicitSCM(self.dim_z, tuple(self.scm_hidden), self.scm_homoskedastic,
                               self.scm_min_std, "broad", self.scm_transform,
                               self.scm_spline_bins, self.scm_spline_bound)
        if self.intervention_encoder == "learnable_heuristic":
            self.int_encoder = HeuristicInterventionEncoder()
        elif self.intervention_encoder == "mlp":
            self.int_encoder = MLPInterventionEncoder(tuple(self.intervention_encoder_hidden),
                                                      self.dim_z + 1)
        else:
            raise ValueError(f"unknown intervention encoder {self.intervention_encoder!r}")

    # ---------------------------------------------------------------- building blocks
    def context_masks(self, model_state):
        """[d, d]: the structure's masks, or those of the topological order in the model state
        once `training.fix_topological_order_epoch` has fixed it (`order_fixed`, present only
        in runs that schedule it), or the ancestors in the learned graph's hard adjacency."""
        if self.graph_kind is not None:
            return graph_context_masks(self.hard_graph())
        masks = ancestor_masks(self.causal_structure, self.dim_z, model_state.get("order"))
        if "order_fixed" not in model_state:
            return masks
        fixed = ancestor_masks("fixed_order", self.dim_z, model_state["order"])
        return jnp.where(model_state["order_fixed"], fixed, masks)

    def hard_graph(self):
        """The learned graph's hard adjacency [d, d] (A[i, j]: edge i -> j)."""
        return hard_adjacency(self.graph, self.graph_kind)

    def _sampled_graph_masks(self, batch: int, phase: Phase):
        """Context masks [B, d, d] of one graph sample per pair (`training.graph_sampling`), and
        the graph regularisers [B] (expected edges, NOTEARS acyclicity)."""
        graph = jax.lax.stop_gradient(self.graph) if phase.graph_frozen else self.graph
        adjacency, _ = sample_adjacency(self.make_rng("sample"), graph, self.graph_kind, batch,
                                        phase.graph_mode, phase.graph_temperature)
        edges = jnp.full((batch,), num_edges(graph, self.graph_kind))
        cyclicity = jnp.full((batch,), graph_acyclicity(graph, self.graph_kind))
        return graph_context_masks(adjacency), edges, cyclicity

    def encode_to_causal(self, x, model_state):
        """Solution functions applied to the encoder means: the codes DCI evaluates."""
        return self.scm.noise_to_causal(self.encoder(x)[0], self.context_masks(model_state))

    def solution_component(self, index, inputs, conditioning_eps, mask_row, inverse: bool):
        """One solution function (`ImplicitSCM.solution_component`), for the implicit graph."""
        return self.scm.solution_component(index, inputs, conditioning_eps, mask_row, inverse)

    def enco_inputs(self, x1, x2, model_state):
        """What post-hoc ENCO learns from (`encode_decode_pair`, then `noise_to_causal`):
        the projected noise means of both observations under the most likely intervention,
        as causal variables, and that intervention's mask. x [N, dim_x] -> z1, z2, mask
        [N, d]. Stochastic averaging draws its weights from the 'sample' stream, as the
        reference does even here."""
        (mu1, s1), (mu2, s2) = self.encoder(x1), self.encoder(x2)
        q = self.int_encoder(mu1, mu2, 1e-4)  # the offset cannot move the argmax
        interventions = jnp.asarray(intervention_masks(self.dim_z))[jnp.argmax(q, -1)]
        e1, _, e2, _ = self._project(mu1, s1, mu2, s2, interventions)  # the means
        masks = self.context_masks(model_state)
        return (self.scm.noise_to_causal(e1, masks), self.scm.noise_to_causal(e2, masks),
                interventions)

    def _decode_ll(self, x, e, phase: Phase):
        mean, std = self.decoder(e)
        ll = gaussian_log_likelihood(x, mean, std, phase.full_likelihood,
                                     phase.likelihood_reduction)
        return ll, mean

    def _regularizers(self, x1, x2, mu1, s1, mu2, s2):
        """z-regularisation and consistency MSE from fresh unprojected samples (ws-crl gotcha
        19)."""
        e1 = reparameterize(self.make_rng("sample"), mu1, s1)
        e2 = reparameterize(self.make_rng("sample"), mu2, s2)
        return {"z_regularization": sq_norm(e1) + sq_norm(e2),
                "consistency_mse": sq_norm(self.decoder(e1)[0] - x1)
                + sq_norm(self.decoder(e2)[0] - x2)}

    # ---------------------------------------------------------------- pretraining
    def pretrain_loss(self, x1, x2, loss_weights: LossWeights, phase: Phase):
        """beta-VAE on single images with a standard normal prior (`forward_pretrain`)."""
        t = self.single_image_terms(x1, x2, phase)
        kl = t.log_posterior - t.log_prior
        return -t.log_likelihood + loss_weights.pretrain_beta * kl, t.outputs

    # ---------------------------------------------------------------- main phase
    def _averaging_weights(self, shape):
        if self.averaging_strategy == "stochastic":
            return jax.random.uniform(self.make_rng("sample"), shape)
        if self.averaging_strategy in ("average", "mean"):
            return jnp.full(shape, 0.5)
        # "z2" weights x1's posterior, despite the name (ws-crl gotcha 18)
        if self.averaging_strategy == "z2":
            return jnp.ones(shape)
        raise ValueError(f"unknown averaging strategy {self.averaging_strategy!r}")

    def _project(self, mu1, s1, mu2, s2, interventions):
        """Projection to the counterfactual manifold (`_project_to_manifold`): non-intervened
        components of both posteriors become their convex combination (weights from
        `averaging_strategy`). All inputs [..., B, d] (interventions broadcastable); returns the
        projected (mu1, s1, mu2, s2)."""
        lam = self._averaging_weights(jnp.broadcast_shapes(mu1.shape, interventions.shape))
        mu_bar, s_bar = lam * mu1 + (1 - lam) * mu2, lam * s1 + (1 - lam) * s2
        keep = interventions
        return (keep * mu1 + (1 - keep) * mu_bar, keep * s1 + (1 - keep) * s_bar,
                keep * mu2 + (1 - keep) * mu_bar, keep * s2 + (1 - keep) * s_bar)

    def _project_and_sample(self, mu1, s1, mu2, s2, interventions):
        """Projection to the counterfactual manifold, then sampling (`_project_and_sample`):
        e2' copies the non-intervened components of e1'. All inputs [..., B, d]. Returns
        e1', e2' [..., B, d] and log q(e1') + log q(e2'_I) [..., B].
        """
        mu1p, s1p, mu2p, s2p = self._project(mu1, s1, mu2, s2, interventions)
        keep = interventions
        e1 = reparameterize(self.make_rng("sample"), mu1p, s1p)
        e2_tilde = reparameterize(self.make_rng("sample"), mu2p, s2p)
        e2 = keep * e2_tilde + (1 - keep) * e1
        log_q = (jnp.sum(gaussian_log_prob(e1, mu1p, s1p), -1)
                 + jnp.sum(keep * gaussian_log_prob(e2_tilde, mu2p, s2p), -1))
        return e1, e2, log_q

    def __call__(self, x1, x2, loss_weights: LossWeights, phase: Phase, model_state):
        """Per-sample loss [B] and outputs (per-sample arrays, plus `intervention_posterior`
        [B, K] and `solution_std` [B, n_iter, d])."""
        if phase.pretrain:
            return self.pretrain_loss(x1, x2, loss_weights, phase)
        d = self.dim_z
        all_masks = jnp.asarray(intervention_masks(d))  # [K, d]
        num_targets = all_masks.shape[0]
        (mu1, s1), (mu2, s2) = self.encoder(x1), self.encoder(x2)
        q = self.int_encoder(mu1, mu2, loss_weights.intervention_offset)  # [B, K]
        if phase.deterministic_encoder:
            hard = jax.nn.one_hot(jnp.argmax(q, -1), num_targets, dtype=q.dtype)
            q = hard + q - jax.lax.stop_gradient(q)
            interventions = all_masks[jnp.argmax(q, -1)][None]  # [1, B, d]
            weights = jnp.ones((1,) + x1.shape[:1])  # [1, B], no gradient
        else:
            interventions = all_masks[:, None, :]  # [K, 1, d]
            weights = q.T  # [K, B]
        outputs = self._regularizers(x1, x2, mu1, s1, mu2, s2) if phase.need_regularizers else {}

        e1, e2, log_q_eps = self._project_and_sample(mu1, s1, mu2, s2, interventions)
        n_iter = e1.shape[0]
        ll1, x1_hat = self._decode_ll(x1, e1, phase)
        ll2, x2_hat = self._decode_ll(x2, e2, phase)
        flat = lambda a: a.reshape((-1,) + a.shape[2:])  # noqa: E731  [n, B, ...] -> [n*B, ...]
        if self.graph_kind is None:
            masks = self.context_masks(model_state)
        else:  # one sampled graph per pair, the same for all K targets
            masks, outputs["edges"], outputs["cyclicity"] = self._sampled_graph_masks(
                x1.shape[0], phase)
            masks = flat(jnp.broadcast_to(masks, (n_iter,) + masks.shape))
        prior = self.scm.log_prob_noise(
            flat(e1), flat(e2), flat(jnp.broadcast_to(interventions, e1.shape)), masks,
            phase.model_interventions)
        prior = jax.tree_util.tree_map(lambda a: a.reshape((n_iter, -1) + a.shape[1:]), prior)
        log_p_eps = prior["log_prior_observed"] + prior["log_prior_intervened"]
        if self.fix_entropy_weighting:
            log_q_int = jnp.log(weights)
        else:
            log_q_int = weights * jnp.log(weights)  # weighted again below (ws-crl gotcha 2)
        log_p_int = -math.log(num_targets)
        wsum = lambda a: jnp.sum(weights * a, axis=0)  # noqa: E731
        ll = wsum(ll1 + ll2)
        kl_eps = wsum(log_q_eps) - wsum(log_p_eps)
        log_q_int_total = wsum(log_q_int)
        log_p_int_total = wsum(jnp.full_like(ll1, log_p_int))
        kl_int = log_q_int_total - log_p_int_total
        kl = kl_eps + kl_int
        loss_b = -ll + loss_weights.beta * kl_eps + loss_weights.beta_intervention * kl_int
        outputs.update({
            "elbo": ll - kl,
            "beta_vae_loss": -ll + loss_weights.beta * kl,
            "kl": kl,
            "kl_intervention_target": kl_int,
            "kl_e": kl_eps,
            "log_likelihood": ll,
            "log_posterior": log_q_int_total + wsum(log_q_eps),
            "log_prior": log_p_int_total + wsum(log_p_eps),
            "log_prior_observed": jnp.mean(prior["log_prior_observed"], 0),
            "log_prior_intervened": jnp.mean(prior["log_prior_intervened"], 0),
            "log_prior_nonintervened": jnp.mean(prior["log_prior_nonintervened"], 0),
            "mse": wsum(sq_norm(x1_hat - x1) + sq_norm(x2_hat - x2)),
            "encoder_std": 0.5 * jnp.mean(s1 + s2, axis=-1),
            "intervention_posterior": q,
            "solution_std": jnp.moveaxis(prior["solution_std"], 0, 1),
        })
        if phase.need_inverse_consistency:
            re1 = reparameterize(self.make_rng("sample"), *self.encoder(x1_hat))
            re2 = reparameterize(self.make_rng("sample"), *self.encoder(x2_hat))
            outputs["inverse_consistency_mse"] = jnp.sum(sq_norm(re1 - e1) + sq_norm(re2 - e2), 0)
        return loss_b, outputs

    def init_all(self, x1, x2, loss_weights: LossWeights, model_state):
        """Touches every submodule (for `init`)."""
        return self(x1, x2, loss_weights, Phase(), model_state)
