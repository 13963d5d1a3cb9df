"""MD-CRL autoencoders (reference: `models/modules/mlp_ae.py`, `mlp_poly_ae.py`, `poly_decoder.py`
and the `configs/model/autoencoder/*.yaml` they are built from).

Every module maps `x [batch, x_dim] -> (z_hat [batch, latent], x_hat [batch, x_dim])`.

* `LinearAE` (`linear_ae_synthetic.yaml`, and the stage-2 `mixing_md_encoded_autoencoder.yaml`
  with `x_dim = latent`): `Linear(x -> latent)`, `Linear(latent -> x)`, both with bias. `FCAE`
  init: xavier-normal weights (gain 1, std `sqrt(2 / (fan_in + fan_out))`), zero biases.
* `MLPAE`: the FCAE init on a LeakyReLU MLP encoder/decoder (the reference's
  `mlp_ae_synthetic.yaml` is not readable by `FCAE`, gotcha 18; this is the evident intent).
* `PolyAE` (`poly_ae.yaml`, `FCAEPoly`): encoder `Linear(x -> x//2) LeakyReLU(0.5)
  Linear(x//2 -> x//2) LeakyReLU(0.5) Linear(x//2 -> latent)`, all bias-free; decoder
  `PolyDecoder`: Kronecker monomial features of degree <= `poly_degree` of the first
  `decoder_latent` code coordinates (the data's `z_dim`), then `Linear(P -> x)` with bias.
  PyTorch default inits (U(+-1/sqrt(fan_in)) for weights and bias), no custom init.
"""

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from wscrl_jax.data.mixing import polynomial_features
from wscrl_jax.nn.mlp import MLP, TorchLinear


def xavier_normal(key, shape, dtype=jnp.float32):
    """torch `xavier_normal_` (gain 1) for a flax kernel [fan_in, fan_out]."""
    fan_in, fan_out = shape
    return math.sqrt(2.0 / (fan_in + fan_out)) * jax.random.normal(key, shape, dtype)


FCAE_INIT = dict(kernel_init=xavier_normal, bias_init=nn.initializers.zeros)


class LinearAE(nn.Module):
    x_dim: int
    latent: int

    def setup(self):
        self.encoder = TorchLinear(self.latent, **FCAE_INIT, name="encoder")
        self.decoder = TorchLinear(self.x_dim, **FCAE_INIT, name="decoder")

    def encode(self, x):
        return self.encoder(x)

    def __call__(self, x):
        z = self.encoder(x)
        return z, self.decoder(z)


class MLPAE(nn.Module):
    x_dim: int
    latent: int
    hidden: Sequence[int] = (64, 64)
    negative_slope: float = 0.2

    def setup(self):
        act = functools.partial(nn.leaky_relu, negative_slope=self.negative_slope)
        self.encoder = MLP(tuple(self.hidden), self.latent, act, **FCAE_INIT)
        self.decoder = MLP(tuple(reversed(self.hidden)), self.x_dim, act, **FCAE_INIT)

    def encode(self, x):
        return self.encoder(x)

    def __call__(self, x):
        z = self.encode(x)
        return z, self.decoder(z)


class PolyAE(nn.Module):
    x_dim: int
    latent: int
    decoder_latent: int  # the data's z_dim (reference PolyDecoder latent_dim)
    poly_degree: int

    def setup(self):
        h = self.x_dim // 2
        self.enc = [TorchLinear(h, use_bias=False, name="encoder_0"),
                    TorchLinear(h, use_bias=False, name="encoder_1"),
                    TorchLinear(self.latent, use_bias=False, name="encoder_2")]
        self.decoder = TorchLinear(self.x_dim, name="decoder")

    def encode(self, x):
        h = nn.leaky_relu(self.enc[0](x), 0.5)
        h = nn.leaky_relu(self.enc[1](h), 0.5)
        return self.enc[2](h)

    def __call__(self, x):
        z = self.encode(x)
        feats = polynomial_features(z[:, :self.decoder_latent], self.poly_degree)
        return z, self.decoder(feats)


AUTOENCODERS = ("linear", "mlp", "poly")


def build_autoencoder(kind: str, x_dim: int, latent: int, *, decoder_latent: int = 0,
                      poly_degree: int = 2, hidden: Sequence[int] = (64, 64),
                      negative_slope: float = 0.2) -> nn.Module:
    if kind == "linear":
        return LinearAE(x_dim=x_dim, latent=latent)
    if kind == "mlp":
        return MLPAE(x_dim=x_dim, latent=latent, hidden=tuple(hidden),
                     negative_slope=negative_slope)
    if kind == "poly":
        return PolyAE(x_dim=x_dim, latent=latent, decoder_latent=decoder_latent or latent,
                      poly_degree=poly_degree)
    raise ValueError(f"unknown autoencoder {kind!r}; expected one of {AUTOENCODERS}")
