"""The Gaussian encoder/decoder pair that every WS-CRL model is built on."""

from typing import Sequence

import flax.linen as nn

from wscrl_jax.nn.gaussian import GaussianMLP


class PairAutoencoder(nn.Module):
    """Gaussian MLP encoder x [B, dim_x] -> noise [B, dim_z] and decoder back, with the
    reference's `model.encoder.*` / `model.decoder.*` settings. Subclasses add the prior."""

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

    def setup(self):
        self.encoder = GaussianMLP(tuple(self.encoder_hidden), self.dim_z, self.encoder_std,
                                   self.encoder_min_std, self.encoder_fix_std)
        self.decoder = GaussianMLP(tuple(self.decoder_hidden), self.dim_x, self.decoder_std,
                                   self.decoder_min_std, self.decoder_fix_std)

    def encode_to_noise(self, x):
        """Encoder means [B, dim_z]."""
        return self.encoder(x)[0]
