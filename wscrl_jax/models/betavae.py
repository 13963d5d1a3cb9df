"""beta-VAE baseline: the reference's `ELCM` with an `UnstructuredPrior` (`ws_crl/lcm/elcm.py`).

With the unstructured prior, log p(z1, z2 | I) = log N(z1) + log N(z2) for every target I, so
the logmeanexp over targets is the identity and the model is a per-image beta-VAE:
loss_b = -ll + beta * (log q(z1|x1) + log q(z2|x2) - log N(z1) - log N(z2)), with
`pretrain_beta` in place of beta during pretraining.
"""

import jax.numpy as jnp

from wscrl_jax.models.ilcm import sq_norm
from wscrl_jax.models.pair_autoencoder import PairAutoencoder
from wscrl_jax.models.phase import Amounts, Phase
from wscrl_jax.nn.gaussian import (gaussian_log_likelihood, gaussian_log_prob, reparameterize,
                                   standard_normal_log_prob)


class BetaVAE(PairAutoencoder):
    """Per-image VAE on pairs x1, x2 [B, dim_x]; the causal codes are the encoder means."""

    def encode_to_causal(self, x, model_state):
        del model_state
        return self.encoder(x)[0]

    def __call__(self, x1, x2, amounts: Amounts, phase: Phase, model_state):
        del model_state
        (mu1, s1), (mu2, s2) = self.encoder(x1), self.encoder(x2)
        z1 = reparameterize(self.make_rng("sample"), mu1, s1)
        z2 = reparameterize(self.make_rng("sample"), mu2, s2)
        log_posterior = (jnp.sum(gaussian_log_prob(z1, mu1, s1), -1)
                         + jnp.sum(gaussian_log_prob(z2, mu2, s2), -1))
        log_prior = (jnp.sum(standard_normal_log_prob(z1), -1)
                     + jnp.sum(standard_normal_log_prob(z2), -1))
        x1_mean, x1_std = self.decoder(z1)
        x2_mean, x2_std = self.decoder(z2)
        ll = (gaussian_log_likelihood(x1, x1_mean, x1_std, phase.full_likelihood,
                                      phase.likelihood_reduction)
              + gaussian_log_likelihood(x2, x2_mean, x2_std, phase.full_likelihood,
                                        phase.likelihood_reduction))
        mse = sq_norm(x1_mean - x1) + sq_norm(x2_mean - x2)
        outputs = {"z_regularization": sq_norm(z1) + sq_norm(z2), "consistency_mse": mse,
                   "encoder_std": 0.5 * jnp.mean(s1 + s2, axis=-1)}
        kl = log_posterior - log_prior
        if phase.pretrain:
            return -ll + amounts.pretrain_beta * kl, outputs
        if phase.need_inverse_consistency:
            re1 = reparameterize(self.make_rng("sample"), *self.encoder(x1_mean))
            re2 = reparameterize(self.make_rng("sample"), *self.encoder(x2_mean))
            outputs["inverse_consistency_mse"] = sq_norm(re1 - z1) + sq_norm(re2 - z2)
        outputs.update({"elbo": ll - kl, "beta_vae_loss": -ll + amounts.beta * kl, "kl": kl,
                        "log_likelihood": ll, "log_posterior": log_posterior,
                        "log_prior": log_prior, "mse": mse})
        return -ll + amounts.beta * kl, outputs

    def init_all(self, x1, x2, amounts: Amounts, model_state):
        return self(x1, x2, amounts, Phase(), model_state)
