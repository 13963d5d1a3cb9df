"""MD-CRL stage-1 image autoencoders for the multi-domain balls data.

References: `models/modules/resnet_ae.py` with `configs/model/autoencoder/resnet18_ae_balls.yaml`
(`ResNetAE`), and `models/modules/cnn_ae.py` with `configs/model/autoencoder/cnn_ae_balls.yaml`
(`CNNAE`).

Layout: images are NHWC float32 [B, 64, 64, 3] (the reference is NCHW); every module maps
`x -> (z [B, latent], x_hat [B, 64, 64, 3])`, and `encode(x) -> z`. Both take `train` (batch
statistics and running-statistic updates in every batch norm) and an optional row `mask` [B]
(rows with a false mask do not contribute to the batch statistics; see `TorchBatchNorm`).

Batch-norm running statistics live in the flax `batch_stats` collection, apart from `params`:
build with `variables = module.init(key, x, train=False)`, train with
`module.apply(variables, x, train=True, mask=m, mutable=["batch_stats"])`; the training step
carries the updated `batch_stats` in the member's model state.

Inits are PyTorch's defaults (U(+-1/sqrt(fan_in)) for weights and biases of Linear, Conv2d and
ConvTranspose2d; for ConvTranspose2d torch's fan_in is out_channels * kh * kw) except inside
the ResNet-18 trunk, which is initialised as torchvision does (see `wscrl_jax/nn/resnet.py`).
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from wscrl_jax.nn.batchnorm import TorchBatchNorm
from wscrl_jax.nn.conv import torch_conv
from wscrl_jax.nn.init import torch_uniform
from wscrl_jax.nn.mlp import TorchLinear
from wscrl_jax.nn.resnet import ResNet18Trunk


def torch_conv_transpose(features: int, kernel: int, stride: int, padding: int,
                         name: str) -> nn.ConvTranspose:
    """`torch.nn.ConvTranspose2d(in, features, kernel, stride, padding)` with bias, NHWC.

    Output size (n - 1) * stride - 2 * padding + kernel, as torch. The flax kernel is
    [kh, kw, out, in] with `transpose_kernel=True`: a torch weight [in, out, kh, kw] maps onto it
    by a plain axis permutation (2, 3, 1, 0), and the op is the gradient of a convolution, as
    torch's. Padding `kernel - 1 - padding` on each side of the dilated input.
    """
    init = torch_uniform(features * kernel * kernel)  # torch: fan_in = weight.size(1) * kh * kw
    pad = kernel - 1 - padding
    return nn.ConvTranspose(features, (kernel, kernel), strides=(stride, stride),
                            padding=((pad, pad), (pad, pad)), transpose_kernel=True,
                            kernel_init=init, bias_init=init, name=name)


def channel_major_to_nhwc(h, channels: int, height: int, width: int):
    """torch `h.view(B, C, H, W)` of a flat [B, C*H*W], returned as NHWC [B, H, W, C]."""
    return jnp.transpose(h.reshape(h.shape[0], channels, height, width), (0, 2, 3, 1))


def upsample_nearest2(x):
    """`nn.Upsample(scale_factor=2, mode="nearest")` on NHWC."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class ResNetAE(nn.Module):
    """`resnet18_ae_balls.yaml`: ResNet-18 trunk + MLP encoder, MLP + transposed-conv decoder.

    encode: trunk [B, 512] -> Linear(512 -> 128, no bias) -> BN -> LeakyReLU(0.1)
            -> Linear(128 -> latent, no bias) -> BN = z [B, latent].
    decode: Linear(latent -> 128, no bias) -> LeakyReLU(0.1) -> Linear(128 -> 1024, no bias)
            -> LeakyReLU(0.01) -> view as [B, 64, 4, 4] (channel-major, then NHWC [B, 4, 4, 64])
            -> 4 x ConvTranspose(k4, s2, p1) 64 -> 64 -> 32 -> 32 -> 3, LeakyReLU(0.01) between,
            4 -> 8 -> 16 -> 32 -> 64 px, no output activation.
    The 4x4 grid fed to the transposed convolutions is sown as `intermediates/grid`.
    """

    latent: int

    def setup(self):
        self.trunk = ResNet18Trunk(name="trunk")
        self.enc_fc1 = TorchLinear(128, use_bias=False, name="enc_fc1")
        self.enc_bn1 = TorchBatchNorm(name="enc_bn1")
        self.enc_fc2 = TorchLinear(self.latent, use_bias=False, name="enc_fc2")
        self.enc_bn2 = TorchBatchNorm(name="enc_bn2")
        self.dec_fc1 = TorchLinear(128, use_bias=False, name="dec_fc1")
        self.dec_fc2 = TorchLinear(64 * 4 * 4, use_bias=False, name="dec_fc2")
        self.deconvs = [torch_conv_transpose(c, 4, 2, 1, name=f"deconv{i + 1}")
                        for i, c in enumerate((64, 32, 32, 3))]

    def encode(self, x, train: bool = False, mask: Optional[jnp.ndarray] = None):
        h = self.trunk(x, train, mask)
        h = nn.leaky_relu(self.enc_bn1(self.enc_fc1(h), train, mask), 0.1)
        return self.enc_bn2(self.enc_fc2(h), train, mask)

    def decode(self, z, train: bool = False, mask: Optional[jnp.ndarray] = None):
        del train, mask  # no batch norm in this decoder; same signature as CNNAE.decode
        h = nn.leaky_relu(self.dec_fc1(z), 0.1)
        h = nn.leaky_relu(self.dec_fc2(h), 0.01)
        h = channel_major_to_nhwc(h, 64, 4, 4)
        self.sow("intermediates", "grid", h)
        for i, deconv in enumerate(self.deconvs):
            h = deconv(h)
            if i < len(self.deconvs) - 1:
                h = nn.leaky_relu(h, 0.01)
        return h

    def __call__(self, x, train: bool = False, mask: Optional[jnp.ndarray] = None):
        z = self.encode(x, train, mask)
        return z, self.decode(z, train, mask)


# CNNAE encoder conv 1-5 widths (conv 6 maps to `latent`)
_CNN_ENC_WIDTHS = (16, 32, 64, 128, 128)
# (out channels, kernel, stride, padding, activation after BN) per CNNAE decoder conv 1-5
_CNN_DEC = ((128, 2, 2, 1, "leaky"), (128, 3, 1, 1, "leaky"), (64, 3, 1, 1, "leaky"),
            (32, 3, 1, 1, "relu"), (16, 3, 1, 1, "leaky"))


class CNNAE(nn.Module):
    """`cnn_ae_balls.yaml`: convolutional encoder and upsample + conv decoder.

    encode: 5 x [Conv(k4, s2, p1) -> BN -> LeakyReLU(0.01)], 3 -> 16 -> 32 -> 64 -> 128 -> 128
            channels, 64 -> 2 px; then Conv(k4, s2, p1) 128 -> latent, 2 -> 1 px, no BN or
            activation; z = that 1x1 output flattened [B, latent].
    decode: z as [B, 1, 1, latent]; 6 x [nearest Upsample x2 -> Conv]: Conv1 k2 s2 p1
            (2x2 stays 2x2), Conv2-6 k3 s1 p1; channels latent -> 128 -> 128 -> 64 -> 32 -> 16
            -> 3; BN after Conv1-5, then LeakyReLU(0.01) except ReLU after BN4; nothing after
            Conv6. 1 -> 2 -> 4 -> 8 -> 16 -> 32 -> 64 px.
    """

    latent: int
    in_channels: int = 3

    def setup(self):
        enc, bns, c_in = [], [], self.in_channels
        for i, c in enumerate(_CNN_ENC_WIDTHS):
            enc.append(torch_conv(c, 4, 2, 1, c_in, name=f"enc_conv{i + 1}"))
            bns.append(TorchBatchNorm(name=f"enc_bn{i + 1}"))
            c_in = c
        enc.append(torch_conv(self.latent, 4, 2, 1, c_in, name="enc_conv6"))
        self.enc_convs, self.enc_bns = enc, bns

        dec, dbns, c_in = [], [], self.latent
        for i, (c, k, s, p, _) in enumerate(_CNN_DEC):
            dec.append(torch_conv(c, k, s, p, c_in, name=f"dec_conv{i + 1}"))
            dbns.append(TorchBatchNorm(name=f"dec_bn{i + 1}"))
            c_in = c
        dec.append(torch_conv(self.in_channels, 3, 1, 1, c_in, name="dec_conv6"))
        self.dec_convs, self.dec_bns = dec, dbns

    def encode(self, x, train: bool = False, mask: Optional[jnp.ndarray] = None):
        h = x
        for conv, bn in zip(self.enc_convs[:-1], self.enc_bns):
            h = nn.leaky_relu(bn(conv(h), train, mask), 0.01)
        h = self.enc_convs[-1](h)  # [B, 1, 1, latent]
        return h.reshape(h.shape[0], -1)

    def decode(self, z, train: bool = False, mask: Optional[jnp.ndarray] = None):
        h = z.reshape(z.shape[0], 1, 1, -1)
        for (conv, bn), spec in zip(zip(self.dec_convs[:-1], self.dec_bns), _CNN_DEC):
            h = bn(conv(upsample_nearest2(h)), train, mask)
            h = nn.relu(h) if spec[-1] == "relu" else nn.leaky_relu(h, 0.01)
        return self.dec_convs[-1](upsample_nearest2(h))

    def __call__(self, x, train: bool = False, mask: Optional[jnp.ndarray] = None):
        z = self.encode(x, train, mask)
        return z, self.decode(z, train, mask)
