"""PyTorch-initialised convolutions and the CoordConv ResNet blocks of the WS-CRL image VAE.

Reference: `ws_crl/encoder/image_vae.py` (`add_coords`, `CoordConv2d`, `ResNetDown`,
`ResNetUp`). Everything here is NHWC ([B, H, W, C]); the reference is NCHW. A flax conv kernel
[kh, kw, in, out] maps onto a torch weight [out, in, kh, kw] by the axis permutation
(3, 2, 0, 1).

Init: PyTorch's `Conv2d` default, `kaiming_uniform_(a=sqrt(5))` for the weight, which is
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for the bias; fan_in = in * kh * kw,
where `in` counts the two coordinate channels of a CoordConv.

Batch norm: the reference's blocks take `batchnorm`; every WS-CRL config sets it to false, in
which case `bn1`/`bn2` are identities. Only `batchnorm=False` is implemented (the caller
validates the config).
"""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from wscrl_jax.nn.init import torch_uniform

LEAKY_SLOPE = 0.01  # torch.nn.functional.leaky_relu's default


def torch_conv(features: int, kernel: int, stride: int, padding: int, in_features: int,
               name: str) -> nn.Conv:
    """`torch.nn.Conv2d(in_features, features, kernel, stride, padding)` with bias, NHWC."""
    init = torch_uniform(in_features * kernel * kernel)
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((padding, padding), (padding, padding)), kernel_init=init,
                   bias_init=init, name=name)


def torch_linspace(start: float, end: float, steps: int) -> np.ndarray:
    """float32 `torch.linspace(start, end, steps)` with torch's CPU formula.

    torch fills the first half from `start` and the second half from `end`:
    i < steps // 2: start + i * step; else end - (steps - 1 - i) * step.
    `steps = 1` gives [start].
    """
    if steps == 1:
        return np.full((1,), start, np.float32)
    start32, end32 = np.float32(start), np.float32(end)
    step = (end32 - start32) / np.float32(steps - 1)
    idx = np.arange(steps)
    low = start32 + step * idx.astype(np.float32)
    high = end32 - step * (steps - 1 - idx).astype(np.float32)
    return np.where(idx < steps // 2, low, high).astype(np.float32)


def add_coords(x):
    """Append coordinate channels: [B, H, W, C] -> [B, H, W, C + 2].

    Channel order: the inputs, then `linspace(-1, 1, H)` varying along H (rows), then
    `linspace(-1, 1, W)` varying along W (columns); a size-1 axis gets -1, as torch.
    """
    b, h, w, _ = x.shape
    rows = jnp.asarray(torch_linspace(-1.0, 1.0, h), x.dtype)
    cols = jnp.asarray(torch_linspace(-1.0, 1.0, w), x.dtype)
    rows = jnp.broadcast_to(rows[None, :, None, None], (b, h, w, 1))
    cols = jnp.broadcast_to(cols[None, None, :, None], (b, h, w, 1))
    return jnp.concatenate([x, rows, cols], axis=-1)


class TorchConv2d(nn.Module):
    """Stride-1 `Conv2d(in, features, kernel, padding=padding)` with torch's default init.

    `coord=True` is the reference's `CoordConv2d`: `add_coords` first, so the conv sees C + 2
    input channels (and its fan_in counts them). x [B, H, W, C] -> [B, H', W', features].
    Parameters: `conv/kernel` [k, k, C (+2), features], `conv/bias` [features].
    """

    features: int
    kernel: int = 1
    padding: int = 0
    coord: bool = False

    @nn.compact
    def __call__(self, x):
        if self.coord:
            x = add_coords(x)
        return torch_conv(self.features, self.kernel, 1, self.padding, x.shape[-1],
                          name="conv")(x)


def leaky_relu(x):
    """`F.leaky_relu` with slope 0.01."""
    return nn.leaky_relu(x, LEAKY_SLOPE)


def avg_pool2(x):
    """`nn.AvgPool2d(2, 2)` on NHWC (odd trailing rows/columns dropped, as torch)."""
    return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")


def _upsample2_axis(x, axis: int):
    """Bilinear x2 along one axis with `align_corners=False` (torch's clamped half-pixel map).

    Output 2i is 0.25 x[i-1] + 0.75 x[i] and output 2i+1 is 0.75 x[i] + 0.25 x[i+1], with the
    neighbour index clamped to [0, n-1] at the borders.
    """
    n = x.shape[axis]
    prev = jnp.take(x, np.maximum(np.arange(n) - 1, 0), axis=axis)
    nxt = jnp.take(x, np.minimum(np.arange(n) + 1, n - 1), axis=axis)
    even = 0.25 * prev + 0.75 * x
    odd = 0.75 * x + 0.25 * nxt
    out = jnp.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)


def upsample_bilinear2(x):
    """`nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)` on NHWC.

    Equal (to float rounding) to `jax.image.resize(x, (B, 2H, 2W, C), "bilinear")`, written as
    a two-tap stencil instead of the dense interpolation matrices `resize` contracts with.
    """
    return _upsample2_axis(_upsample2_axis(x, 1), 2)


class ResNetDown(nn.Module):
    """Residual down-sampling block (`ResNetDown`, scale 2, batchnorm=False).

    skip = conv1x1(avgpool2(x)); h = leaky_relu(conv3x3_{C -> features//2}(x));
    h = avgpool2(h); h = conv3x3_{features//2 -> features}(h); y = leaky_relu(h + skip).
    3x3 convs use padding 1; `coord` makes every conv a CoordConv.
    x [B, H, W, C] -> [B, H/2, W/2, features].
    """

    features: int
    coord: bool = False

    @nn.compact
    def __call__(self, x):
        half = self.features // 2
        skip = TorchConv2d(self.features, 1, 0, self.coord, name="point_wise")(avg_pool2(x))
        h = leaky_relu(TorchConv2d(half, 3, 1, self.coord, name="conv1")(x))
        h = avg_pool2(h)
        h = TorchConv2d(self.features, 3, 1, self.coord, name="conv2")(h)
        return leaky_relu(h + skip)


class ResNetUp(nn.Module):
    """Residual up-sampling block (`ResNetUp`, scale 2, batchnorm=False).

    skip = conv1x1(up2(x)); h = leaky_relu(conv3x3_{C -> features//2}(x)) at the low
    resolution; h = up2(h); h = conv3x3_{features//2 -> features}(h); y = leaky_relu(h + skip),
    with up2 = bilinear x2, align_corners=False. x [B, H, W, C] -> [B, 2H, 2W, features].
    """

    features: int
    coord: bool = False

    @nn.compact
    def __call__(self, x):
        half = self.features // 2
        skip = TorchConv2d(self.features, 1, 0, self.coord,
                           name="point_wise")(upsample_bilinear2(x))
        h = leaky_relu(TorchConv2d(half, 3, 1, self.coord, name="conv1")(x))
        h = upsample_bilinear2(h)
        h = TorchConv2d(self.features, 3, 1, self.coord, name="conv2")(h)
        return leaky_relu(h + skip)
