"""Convolutional Gaussian encoder/decoder for images (`ws_crl/encoder/image_vae.py`).

`ImageEncoder` and `ImageDecoder` have the call interface of `wscrl_jax.nn.gaussian.GaussianMLP`
(`module(x) -> (mean, std)` on flat [B, features] arrays), so the pair VAE can use either.
Images travel flattened in HWC order: x [B, R * R * C] is `images.reshape(B, -1)` of NHWC
images [B, R, R, C] (floats in [0, 1]); the reference's images are NCHW.

Layers follow the reference module by module (PyTorch default inits throughout; every conv is
a CoordConv when `coord`; no batch norm, which every WS-CRL config switches off). Parameter
names: the conv blocks are `block_<i>`, the last 1x1 conv `out_conv`, the dense layers `mlp`,
and the per-scalar residual net `elementwise` (absent when `elementwise_layers = 0`). The
reference freezes the conv net and MLP but never `elementwise`: see `UNFREEZABLE`.
"""

import math

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from wscrl_jax.nn.conv import ResNetDown, ResNetUp, TorchConv2d, leaky_relu
from wscrl_jax.nn.mlp import MLP

RESOLUTIONS = (64, 512)
UNFREEZABLE = "elementwise"  # top-level parameter subtree that `freeze()` leaves trainable


def _check_resolution(resolution: int, what: str) -> None:
    if resolution not in RESOLUTIONS:
        raise ValueError(f"image {what} resolution must be one of {RESOLUTIONS}, "
                         f"got {resolution}")


def encoder_channels(resolution: int, hidden: int) -> tuple[int, ...]:
    """Output channels of the `ResNetDown` blocks (each halves the side, R -> 1 pixel)."""
    _check_resolution(resolution, "encoder")
    h = hidden
    if resolution == 64:
        return (h, 2 * h, 4 * h, 8 * h, 8 * h, 8 * h)
    return (h, 2 * h, 4 * h, 8 * h, 16 * h, 32 * h, 32 * h, 32 * h, 32 * h)


def decoder_channels(resolution: int, hidden: int) -> tuple[int, ...]:
    """Output channels of the `ResNetUp` blocks (each doubles the side, 1 pixel -> R)."""
    _check_resolution(resolution, "decoder")
    h = hidden
    if resolution == 64:
        return (8 * h, 8 * h, 4 * h, 2 * h, h, h // 2)
    return (32 * h, 32 * h, 32 * h, 16 * h, 8 * h, 4 * h, 2 * h, h, h // 2)


def nth_permutation(n: int, index: int) -> np.ndarray:
    """`tuple(itertools.permutations(range(n)))[index]` without enumerating (lexicographic
    order, via the factorial number system). ValueError unless 0 <= index < n!."""
    if not 0 <= index < math.factorial(n):
        raise ValueError(f"permutation index {index} out of range for {n} latents "
                         f"(0 .. {math.factorial(n) - 1})")
    pool = list(range(n))
    out = []
    for k in range(n, 0, -1):
        pos, index = divmod(index, math.factorial(k - 1))
        out.append(pool.pop(pos))
    return np.asarray(out, np.int32)


def vector_to_gaussian(h, min_std: float, fix_std: bool = False, axis: int = -1):
    """Network output -> (mean, std) (`vector_to_gaussian`).

    `fix_std`: mean = h, std = `min_std` everywhere. Otherwise `h` is split in half along
    `axis`: mean = first half, std = softplus(second half) + min_std.
    """
    if fix_std:
        return h, jnp.full_like(h, min_std)
    mean, raw = jnp.split(h, 2, axis=axis)
    return mean, nn.softplus(raw) + min_std


class ElementwiseResidual(nn.Module):
    """`make_elementwise_mlp`: x + MLP_{1 -> hidden x layers -> 1}(x) applied to every scalar
    (one shared net, LeakyReLU between layers, none at the end); identity when `layers = 0`."""

    layers: int
    hidden: int

    @nn.compact
    def __call__(self, x):
        if self.layers == 0:
            return x
        net = MLP((self.hidden,) * self.layers, out=1, activation=leaky_relu, name="net")
        return x + net(x[..., None])[..., 0]


class ImageEncoder(nn.Module):
    """Images -> Gaussian over latents: x [B, R * R * channels] (HWC-flattened) ->
    (mean [B, dim_z], std [B, dim_z]).

    ResNetDown blocks (`encoder_channels`) take R x R to 1 x 1, then a 1x1 conv to
    `mlp_hidden` channels (2 * dim_z when `mlp_layers = 0`); then, when `mlp_layers > 0`,
    LeakyReLU, (`mlp_layers` - 1) x [Linear(mlp_hidden) LeakyReLU], Linear(2 * dim_z); then
    `vector_to_gaussian(min_std)`, the elementwise residual net on the mean, and the fixed
    permutation `nth_permutation(dim_z, permutation)` of both (0 = identity).
    """

    dim_z: int
    resolution: int
    hidden_channels: int = 32
    mlp_layers: int = 2
    mlp_hidden: int = 128
    min_std: float = 1e-3
    coord: bool = True
    elementwise_layers: int = 0
    elementwise_hidden: int = 16
    permutation: int = 0
    channels: int = 3

    def __post_init__(self):
        _check_resolution(self.resolution, "encoder")
        nth_permutation(self.dim_z, self.permutation)
        super().__post_init__()

    @nn.compact
    def __call__(self, x):
        """x [..., R * R * channels] -> (mean, std) [..., dim_z]."""
        lead = x.shape[:-1]
        r = self.resolution
        h = x.reshape(-1, r, r, self.channels)
        for i, width in enumerate(encoder_channels(r, self.hidden_channels)):
            h = ResNetDown(width, self.coord, name=f"block_{i}")(h)
        width = self.mlp_hidden if self.mlp_layers > 0 else 2 * self.dim_z
        h = TorchConv2d(width, 1, 0, self.coord, name="out_conv")(h)
        h = h.reshape(h.shape[0], width)
        if self.mlp_layers > 0:
            h = MLP((self.mlp_hidden,) * (self.mlp_layers - 1), out=2 * self.dim_z,
                    activation=leaky_relu, name="mlp")(leaky_relu(h))
        mean, std = vector_to_gaussian(h, self.min_std)
        mean = ElementwiseResidual(self.elementwise_layers, self.elementwise_hidden,
                                   name=UNFREEZABLE)(mean)
        if self.permutation:
            perm = nth_permutation(self.dim_z, self.permutation)
            mean, std = mean[:, perm], std[:, perm]
        return mean.reshape(*lead, self.dim_z), std.reshape(*lead, self.dim_z)


class ImageDecoder(nn.Module):
    """Latents -> Gaussian over images: z [B, dim_z] -> (mean, std), each [B, R * R * channels]
    flattened in HWC order.

    The inverse of the encoder's permutation (`permutation` is the encoder's index), the
    elementwise residual net, `mlp_layers` x [Linear(mlp_hidden) LeakyReLU], the result as a
    1 x 1 image, ResNetUp blocks (`decoder_channels`) to R x R, and a 1x1 conv to `channels`
    (fix_std) or 2 * `channels` outputs. `fix_std`: std is exactly `min_std` everywhere;
    otherwise mean = the first `channels` conv outputs, std = softplus(the next `channels`) +
    min_std. Means are not squashed.
    """

    resolution: int
    hidden_channels: int = 32
    mlp_layers: int = 2
    mlp_hidden: int = 128
    fix_std: bool = True
    min_std: float = 1.0
    coord: bool = True
    elementwise_layers: int = 0
    elementwise_hidden: int = 16
    permutation: int = 0
    channels: int = 3

    def __post_init__(self):
        _check_resolution(self.resolution, "decoder")
        super().__post_init__()

    @nn.compact
    def __call__(self, z):
        """z [..., dim_z] -> (mean, std) [..., R * R * channels]."""
        lead = z.shape[:-1]
        z = z.reshape(-1, z.shape[-1])
        if self.permutation:
            z = z[:, np.argsort(nth_permutation(z.shape[-1], self.permutation))]
        h = ElementwiseResidual(self.elementwise_layers, self.elementwise_hidden,
                                name=UNFREEZABLE)(z)
        if self.mlp_layers > 0:
            h = MLP((self.mlp_hidden,) * self.mlp_layers, activation=leaky_relu, name="mlp")(h)
        h = h[:, None, None, :]
        for i, width in enumerate(decoder_channels(self.resolution, self.hidden_channels)):
            h = ResNetUp(width, self.coord, name=f"block_{i}")(h)
        outputs = self.channels if self.fix_std else 2 * self.channels
        h = TorchConv2d(outputs, 1, 0, self.coord, name="out_conv")(h)
        mean, std = vector_to_gaussian(h, self.min_std, self.fix_std)
        return mean.reshape(*lead, -1), std.reshape(*lead, -1)

