"""beta-VAE baseline: the reference's `ELCM` with an `UnstructuredPrior` (`ws_crl/lcm/elcm.py`).

With the unstructured prior, log p(z1, z2 | I) = log N(z1) + log N(z2) for every target I, so
the logmeanexp over targets is the identity and the model is a per-image beta-VAE:
loss_b = -ll + beta * (log q(z1|x1) + log q(z2|x2) - log N(z1) - log N(z2)), with
`pretrain_beta` in place of beta during pretraining.
"""

from wscrl_jax.lcm.pair_vae import PairAutoencoder, sq_norm
from wscrl_jax.lcm.phases import LossWeights, Phase
from wscrl_jax.nn.gaussian import reparameterize


class BetaVAE(PairAutoencoder):
    """Per-image VAE on pairs x1, x2 [B, dim_x]; the causal codes are the encoder means."""

    def encode_to_causal(self, x, model_state):
        del model_state
        return self.encoder(x)[0]

    def __call__(self, x1, x2, loss_weights: LossWeights, phase: Phase, model_state):
        del model_state
        t = self.single_image_terms(x1, x2, phase)
        outputs = dict(t.outputs)
        ll, kl = t.log_likelihood, t.log_posterior - t.log_prior
        if phase.pretrain:
            return -ll + loss_weights.pretrain_beta * kl, outputs
        log_prior = self.main_log_prior(t, loss_weights, phase, outputs)
        kl = t.log_posterior - log_prior
        if phase.need_inverse_consistency:
            re1 = reparameterize(self.make_rng("sample"), *self.encoder(t.x1_hat))
            re2 = reparameterize(self.make_rng("sample"), *self.encoder(t.x2_hat))
            outputs["inverse_consistency_mse"] = sq_norm(re1 - t.z1) + sq_norm(re2 - t.z2)
        outputs.update({"elbo": ll - kl, "beta_vae_loss": -ll + loss_weights.beta * kl,
                        "kl": kl, "log_likelihood": ll, "log_posterior": t.log_posterior,
                        "log_prior": log_prior, "mse": outputs["consistency_mse"]})
        return -ll + loss_weights.beta * kl, outputs

    def main_log_prior(self, t, loss_weights: LossWeights, phase: Phase, outputs: dict):
        """log p(z1, z2) [B] of the main phase (may add to `outputs`): the unstructured prior's
        log N(z1) + log N(z2)."""
        del loss_weights, phase, outputs
        return t.log_prior

    def init_all(self, x1, x2, loss_weights: LossWeights, model_state):
        return self(x1, x2, loss_weights, Phase(), model_state)
