"""The Gaussian encoder/decoder pair that every WS-CRL model is built on."""

from typing import Any, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from wscrl_jax.lcm.image_vae import ImageDecoder, ImageEncoder
from wscrl_jax.lcm.phases import Phase
from wscrl_jax.nn.gaussian import (GaussianMLP, gaussian_log_likelihood, gaussian_log_prob,
                                   reparameterize, standard_normal_log_prob)


def sq_norm(x):
    """Squared Euclidean norm over the last axis."""
    return jnp.sum(jnp.square(x), axis=-1)


class SingleImageTerms(NamedTuple):
    """Both images of a pair through the VAE with a standard normal prior, each on its own.

    z1, z2 [B, dim_z]: posterior samples; x1_hat, x2_hat [B, dim_x]: decoder means;
    log_posterior, log_prior, log_likelihood [B]: summed over both images; outputs: the
    per-sample terms every model logs (z_regularization, consistency_mse, encoder_std).
    """

    z1: jnp.ndarray
    z2: jnp.ndarray
    x1_hat: jnp.ndarray
    x2_hat: jnp.ndarray
    log_posterior: jnp.ndarray
    log_prior: jnp.ndarray
    log_likelihood: jnp.ndarray
    outputs: dict


Settings = Optional[Tuple[Tuple[str, Any], ...]]  # keyword arguments, hashable


class PairAutoencoder(nn.Module):
    """Gaussian MLP encoder x [B, dim_x] -> noise [B, dim_z] and decoder back, with the
    reference's `model.encoder.*` / `model.decoder.*` settings; with `image_encoder` /
    `image_decoder` (the keyword arguments of `ImageEncoder` / `ImageDecoder`) the CoordConv
    ResNets of the CausalCircuit image VAE on HWC-flattened images instead (dim_x = R * R * 3).
    Subclasses add the prior."""

    dim_x: int
    dim_z: int
    encoder_hidden: Sequence[int] = (64, 64)
    encoder_std: float = 0.01
    encoder_min_std: float = 1e-4
    encoder_fix_std: bool = False
    decoder_hidden: Sequence[int] = (64, 64)
    decoder_std: float = 0.1
    decoder_min_std: float = 1e-3
    decoder_fix_std: bool = False
    image_encoder: Settings = None
    image_decoder: Settings = None

    def setup(self):
        if self.image_encoder is not None:
            self.encoder = ImageEncoder(self.dim_z, **dict(self.image_encoder))
            self.decoder = ImageDecoder(**dict(self.image_decoder))
            return
        self.encoder = GaussianMLP(tuple(self.encoder_hidden), self.dim_z, self.encoder_std,
                                   self.encoder_min_std, self.encoder_fix_std)
        self.decoder = GaussianMLP(tuple(self.decoder_hidden), self.dim_x, self.decoder_std,
                                   self.decoder_min_std, self.decoder_fix_std)

    def encode_to_noise(self, x):
        """Encoder means e [N, dim_z] of observations x [N, dim_x] (the noise codes)."""
        return self.encoder(x)[0]

    def reconstruct(self, x):
        """(encoder means [N, dim_z], decoder means of them [N, dim_x]) of x [N, dim_x]."""
        e = self.encoder(x)[0]
        return e, self.decoder(e)[0]

    def single_image_terms(self, x1, x2, phase: Phase) -> SingleImageTerms:
        """The beta-VAE terms of x1, x2 [B, dim_x] (the ILCM's pretraining, the beta-VAE's
        loss; reference `forward_pretrain`). Draws from the 'sample' RNG stream."""
        (mu1, s1), (mu2, s2) = self.encoder(x1), self.encoder(x2)
        z1 = reparameterize(self.make_rng("sample"), mu1, s1)
        z2 = reparameterize(self.make_rng("sample"), mu2, s2)
        log_posterior = (jnp.sum(gaussian_log_prob(z1, mu1, s1), -1)
                         + jnp.sum(gaussian_log_prob(z2, mu2, s2), -1))
        log_prior = (jnp.sum(standard_normal_log_prob(z1), -1)
                     + jnp.sum(standard_normal_log_prob(z2), -1))
        x1_hat, x1_std = self.decoder(z1)
        x2_hat, x2_std = self.decoder(z2)
        ll = (gaussian_log_likelihood(x1, x1_hat, x1_std, phase.full_likelihood,
                                      phase.likelihood_reduction)
              + gaussian_log_likelihood(x2, x2_hat, x2_std, phase.full_likelihood,
                                        phase.likelihood_reduction))
        outputs = {"z_regularization": sq_norm(z1) + sq_norm(z2),
                   "consistency_mse": sq_norm(x1_hat - x1) + sq_norm(x2_hat - x2),
                   "encoder_std": 0.5 * jnp.mean(s1 + s2, axis=-1)}
        return SingleImageTerms(z1, z2, x1_hat, x2_hat, log_posterior, log_prior, ll, outputs)
