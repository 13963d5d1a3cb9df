"""torchvision's `resnet18` without its classifier (`fc`), in NHWC.

The MD-CRL ResNet autoencoder (reference `models/modules/resnet_ae.py`, built from
`configs/model/autoencoder/resnet18_ae_balls.yaml`) uses `list(resnet18().children())[:-1]`:
every layer up to and including the global average pool, randomly initialised.

Layout: x [B, H, W, 3] -> [B, 512]. All convolutions are bias-free and padded explicitly so
the spatial sizes equal torch's (64 px in: 32 after `conv1`, 16 after the max pool, then 16,
8, 4, 2 after `layer1`..`layer4`). Every batch norm is a `TorchBatchNorm` (statistics in the
`batch_stats` collection) and receives the trunk's `train` flag and row `mask`.

Init as torchvision: conv kernels `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, i.e.
N(0, 2 / (out_channels * kh * kw)); batch-norm scale 1, bias 0 (`zero_init_residual=False`).
Parameters: 11,176,512 (torchvision's 11,689,512 minus the 513,000 of `fc`).
"""

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from wscrl_jax.nn.batchnorm import TorchBatchNorm


def kaiming_normal_fan_out(key, shape, dtype=jnp.float32):
    """N(0, 2 / fan_out) for a flax conv kernel [kh, kw, in, out]; fan_out = out * kh * kw."""
    receptive = 1
    for d in shape[:-2]:
        receptive *= d
    std = math.sqrt(2.0 / (shape[-1] * receptive))
    return std * jax.random.normal(key, shape, dtype)


def _conv(features: int, kernel: int, stride: int, padding: int, name: str) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((padding, padding), (padding, padding)), use_bias=False,
                   kernel_init=kaiming_normal_fan_out, name=name)


class BasicBlock(nn.Module):
    """torchvision `BasicBlock`: conv3x3(stride) BN ReLU conv3x3 BN, + shortcut, ReLU.

    The shortcut is the identity, or conv1x1(stride) + BN when the stride or width changes.
    x [B, H, W, C_in] -> [B, H / stride, W / stride, features].
    """

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool, mask: Optional[jnp.ndarray] = None):
        h = _conv(self.features, 3, self.stride, 1, "conv1")(x)
        h = nn.relu(TorchBatchNorm(name="bn1")(h, train, mask))
        h = _conv(self.features, 3, 1, 1, "conv2")(h)
        h = TorchBatchNorm(name="bn2")(h, train, mask)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = _conv(self.features, 1, self.stride, 0, "downsample_conv")(x)
            x = TorchBatchNorm(name="downsample_bn")(x, train, mask)
        return nn.relu(h + x)


class ResNet18Trunk(nn.Module):
    """resnet18 up to the global average pool: x [B, H, W, 3] -> [B, 512].

    Submodule names follow torchvision's (`conv1`, `bn1`, `layer{1..4}_{0,1}` for
    `layer{i}[j]`, with `downsample_conv` / `downsample_bn` for `downsample[0]` / `[1]`).
    """

    widths: tuple = (64, 128, 256, 512)
    blocks_per_layer: int = 2

    @nn.compact
    def __call__(self, x, train: bool, mask: Optional[jnp.ndarray] = None):
        x = _conv(64, 7, 2, 3, "conv1")(x)
        x = nn.relu(TorchBatchNorm(name="bn1")(x, train, mask))
        # flax pads max_pool with -inf, as torch's MaxPool2d(3, 2, padding=1)
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for i, width in enumerate(self.widths):
            for j in range(self.blocks_per_layer):
                stride = 2 if (i > 0 and j == 0) else 1
                x = BasicBlock(width, stride, name=f"layer{i + 1}_{j}")(x, train, mask)
        return jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d(1) + flatten
