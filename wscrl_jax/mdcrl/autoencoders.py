"""MD-CRL autoencoders (reference: `models/modules/mlp_ae.py`, `mlp_poly_ae.py`, `poly_decoder.py`
and the `configs/model/autoencoder/*.yaml` they are built from).

Every module maps `x [batch, x_dim] -> (z_hat [batch, latent], x_hat [batch, x_dim])`.

* `LinearAE` (`linear_ae_synthetic.yaml`, and the stage-2 `mixing_md_encoded_autoencoder.yaml`
  with `x_dim = latent`): `Linear(x -> latent)`, `Linear(latent -> x)`, both with bias. `FCAE`
  init: xavier-normal weights (gain 1, std `sqrt(2 / (fan_in + fan_out))`), zero biases.
* `MLPAE`: the FCAE init on a LeakyReLU MLP encoder/decoder (the reference's
  `mlp_ae_synthetic.yaml` is not readable by `FCAE`, md-crl gotcha 18; this is the evident intent).
* `PolyAE` (`poly_ae.yaml`, `FCAEPoly`): encoder `Linear(x -> x//2) LeakyReLU(0.5)
  Linear(x//2 -> x//2) LeakyReLU(0.5) Linear(x//2 -> latent)`, all bias-free; decoder
  `PolyDecoder`: Kronecker monomial features of degree <= `poly_degree` of the first
  `decoder_latent` code coordinates (the data's `z_dim`), then `Linear(P -> x)` with bias.
  PyTorch default inits (U(+-1/sqrt(fan_in)) for weights and bias), no custom init.
* `BatchNormMLPAE` (`mlp_ae.yaml`, balls stage 2) and the image autoencoders of
  `image_autoencoders.py` (balls stage 1) carry BatchNorm statistics.
"""

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from wscrl_jax.data.mixing import polynomial_features
from wscrl_jax.mdcrl.image_autoencoders import CNNAE, ResNetAE
from wscrl_jax.nn.batchnorm import TorchBatchNorm
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

    def decode(self, z):
        return self.decoder(z)

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

    def decode(self, z):
        return self.decoder(z)

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

    def decode(self, z):
        """The polynomial decoder of the first `decoder_latent` code coordinates."""
        return self.decoder(polynomial_features(z[:, :self.decoder_latent], self.poly_degree))

    def __call__(self, x):
        z = self.encode(x)
        return z, self.decode(z)


class _BatchNormMLP(nn.Module):
    """`[Linear(-> width) BN LeakyReLU] x 3, Linear(-> out)`, FCAE init."""

    out: int
    width: int
    negative_slope: float

    @nn.compact
    def __call__(self, x, train: bool, mask):
        for _ in range(3):
            x = TorchLinear(self.width, **FCAE_INIT)(x)
            x = nn.leaky_relu(TorchBatchNorm()(x, train, mask), self.negative_slope)
        return TorchLinear(self.out, **FCAE_INIT)(x)


class BatchNormMLPAE(nn.Module):
    """`mlp_ae.yaml` (the balls stage 2; the README's `mlp_ae_balls` does not exist, md-crl
    md-crl gotcha 2): encoder `[Linear(-> width) BN LeakyReLU] x 3, Linear(-> latent)`, decoder the
    same to `x_dim`; FCAE init (xavier-normal, zero bias), BatchNorm statistics in the
    `batch_stats` collection. x [B, x_dim] -> (z [B, latent], x_hat [B, x_dim]); `train` uses
    the batch statistics of the rows where `mask` [B] is set."""

    x_dim: int
    latent: int
    width: int = 200
    negative_slope: float = 0.2

    def setup(self):
        self.encoder = _BatchNormMLP(self.latent, self.width, self.negative_slope)
        self.decoder = _BatchNormMLP(self.x_dim, self.width, self.negative_slope)

    def encode(self, x, train: bool = False, mask=None):
        return self.encoder(x, train, mask)

    def decode(self, z, train: bool = False, mask=None):
        return self.decoder(z, train, mask)

    def __call__(self, x, train: bool = False, mask=None):
        z = self.encoder(x, train, mask)
        return z, self.decoder(z, train, mask)


#: Autoencoders for vectors ([B, x_dim]) and for images ([B, H, W, 3]).
VECTOR_AUTOENCODERS = ("linear", "mlp", "poly", "mlp_bn")
IMAGE_AUTOENCODERS = ("resnet18", "cnn")
AUTOENCODERS = VECTOR_AUTOENCODERS + IMAGE_AUTOENCODERS
#: Those with BatchNorm: applied with `train` / `mask` and a `batch_stats` collection.
BATCHNORM_AUTOENCODERS = ("mlp_bn",) + IMAGE_AUTOENCODERS


def build_autoencoder(kind: str, x_dim: int, latent: int, *, decoder_latent: int = 0,
                      poly_degree: int = 2, hidden: Sequence[int] = (64, 64),
                      negative_slope: float = 0.2, width: int = 200) -> nn.Module:
    """The module of `model.autoencoder`; x_dim is ignored by the image autoencoders (64 x 64
    x 3 images)."""
    if kind == "mlp_bn":
        return BatchNormMLPAE(x_dim=x_dim, latent=latent, width=width,
                              negative_slope=negative_slope)
    if kind == "resnet18":
        return ResNetAE(latent=latent)
    if kind == "cnn":
        return CNNAE(latent=latent)
    if kind == "linear":
        return LinearAE(x_dim=x_dim, latent=latent)
    if kind == "mlp":
        return MLPAE(x_dim=x_dim, latent=latent, hidden=tuple(hidden),
                     negative_slope=negative_slope)
    if kind == "poly":
        return PolyAE(x_dim=x_dim, latent=latent, decoder_latent=decoder_latent or latent,
                      poly_degree=poly_degree)
    raise ValueError(f"unknown autoencoder {kind!r}; expected one of {AUTOENCODERS}")
