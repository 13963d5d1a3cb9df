"""CoordConv ResNet blocks and the image VAE encoder/decoder (`ws_crl/encoder/image_vae.py`).

The block numerics are checked against a small numpy transcription of torch's NCHW ops
(zero-padded conv2d, AvgPool2d(2), bilinear x2 upsampling with align_corners=False written
from torch's source-index formula, leaky_relu(0.01)) with the flax parameters copied in.
"""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.lcm.image_vae import ImageDecoder, ImageEncoder, nth_permutation
from wscrl_jax.nn.conv import (ResNetDown, ResNetUp, TorchConv2d, add_coords, torch_linspace,
                               upsample_bilinear2)

DIM_Z = 4
BATCH = 2
H, U = 8, 32  # hidden channels and MLP width of the 64 px nets under test (compile time)


# ---------------------------------------------------------------- numpy transcription of torch

def np_add_coords(x):
    b, _, h, w = x.shape
    rows = np.broadcast_to(np.linspace(-1, 1, h)[:, None], (b, 1, h, w))
    cols = np.broadcast_to(np.linspace(-1, 1, w)[None, :], (b, 1, h, w))
    if h == 1:
        rows = -np.ones_like(rows)
    if w == 1:
        cols = -np.ones_like(cols)
    return np.concatenate([x, rows, cols], axis=1)


def np_conv2d(x, weight, bias, padding):
    """torch.nn.functional.conv2d, stride 1: x [B, C, H, W], weight [O, C, k, k]."""
    k = weight.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    h_out, w_out = xp.shape[2] - k + 1, xp.shape[3] - k + 1
    out = np.zeros((x.shape[0], weight.shape[0], h_out, w_out))
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i:i + h_out, j:j + w_out]
            out += np.einsum("bchw,oc->bohw", patch, weight[:, :, i, j])
    return out + bias[None, :, None, None]


def np_avgpool2(x):
    b, c, h, w = x.shape
    return x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2).mean((3, 5))


def np_upsample_axis(x, axis):
    """torch upsample_bilinear2d along one axis, align_corners=False, scale 2:
    src = max(0.5 * (dst + 0.5) - 0.5, 0); i0 = floor(src); i1 = min(i0 + 1, n - 1)."""
    n = x.shape[axis]
    rows = []
    for dst in range(2 * n):
        src = max(0.5 * (dst + 0.5) - 0.5, 0.0)
        i0 = math.floor(src)
        i1 = min(i0 + 1, n - 1)
        lam = src - i0
        rows.append((1 - lam) * np.take(x, i0, axis=axis) + lam * np.take(x, i1, axis=axis))
    return np.stack(rows, axis=axis)


def np_upsample2(x):
    return np_upsample_axis(np_upsample_axis(x, 2), 3)


def np_leaky_relu(x):
    return np.where(x >= 0, x, 0.01 * x)


def np_conv_from(params, x, padding, coord):
    """A TorchConv2d's params applied the torch way (kernel [k, k, in, out] -> [out, in, k, k])."""
    w = np.asarray(params["conv"]["kernel"], np.float64).transpose(3, 2, 0, 1)
    b = np.asarray(params["conv"]["bias"], np.float64)
    return np_conv2d(np_add_coords(x) if coord else x, w, b, padding)


def np_resnet_down(p, x, coord):
    skip = np_conv_from(p["point_wise"], np_avgpool2(x), 0, coord)
    h = np_leaky_relu(np_conv_from(p["conv1"], x, 1, coord))
    h = np_conv_from(p["conv2"], np_avgpool2(h), 1, coord)
    return np_leaky_relu(h + skip)


def np_resnet_up(p, x, coord):
    skip = np_conv_from(p["point_wise"], np_upsample2(x), 0, coord)
    h = np_leaky_relu(np_conv_from(p["conv1"], x, 1, coord))
    h = np_conv_from(p["conv2"], np_upsample2(h), 1, coord)
    return np_leaky_relu(h + skip)


def nchw(x):
    return np.asarray(x, np.float64).transpose(0, 3, 1, 2)


# ------------------------------------------------------------- torch parameter-count formula

def torch_conv_count(c_in, c_out, k, coord=True):
    return c_out * (c_in + 2 * coord) * k * k + c_out


def torch_block_count(c_in, c_out):  # ResNetDown and ResNetUp have the same layers
    return (torch_conv_count(c_in, c_out // 2, 3) + torch_conv_count(c_out // 2, c_out, 3)
            + torch_conv_count(c_in, c_out, 1))


def torch_linear_count(n_in, n_out):
    return n_in * n_out + n_out


def torch_encoder_count(blocks, h, d, m=2, u=128):
    """blocks: the (in, out) pairs of the reference's nn.Sequential, then conv1x1, MLP."""
    n = sum(torch_block_count(i, o) for i, o in blocks)
    n += torch_conv_count(blocks[-1][1], u, 1)
    n += (m - 1) * torch_linear_count(u, u) + torch_linear_count(u, 2 * d)
    return n


def torch_decoder_count(blocks, h, d, m=2, u=128):
    n = torch_linear_count(d, u) + (m - 1) * torch_linear_count(u, u)
    n += sum(torch_block_count(i, o) for i, o in blocks)
    return n + torch_conv_count(h // 2, 3, 1)  # fix_std: 3 output channels


def encoder_blocks(resolution, h):
    if resolution == 64:
        return [(3, h), (h, 2 * h), (2 * h, 4 * h), (4 * h, 8 * h), (8 * h, 8 * h),
                (8 * h, 8 * h)]
    return [(3, h), (h, 2 * h), (2 * h, 4 * h), (4 * h, 8 * h), (8 * h, 16 * h),
            (16 * h, 32 * h), (32 * h, 32 * h), (32 * h, 32 * h), (32 * h, 32 * h)]


def decoder_blocks(resolution, h, u=128):
    if resolution == 64:
        return [(u, h * 8), (h * 8, h * 8), (h * 8, h * 4), (h * 4, h * 2), (h * 2, h),
                (h, h // 2)]
    return [(u, h * 32), (h * 32, h * 32), (h * 32, h * 32), (h * 32, h * 16), (h * 16, h * 8),
            (h * 8, h * 4), (h * 4, h * 2), (h * 2, h), (h, h // 2)]


def count(params):
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))


# ------------------------------------------------------------------------- shared fixtures

@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.PRNGKey(1), (BATCH, 64 * 64 * 3))


@pytest.fixture(scope="module")
def encoded(images):
    """(params, (mean, std)) of the 64 px reduce-dim encoder (one compilation)."""
    enc = ImageEncoder(DIM_Z, 64, hidden_channels=H, mlp_hidden=U)
    (mean, std), params = jax.jit(enc.init_with_output)(jax.random.PRNGKey(2), images)
    return params, (mean, std)


@pytest.fixture(scope="module")
def decoded(encoded):
    dec = ImageDecoder(64, hidden_channels=H, mlp_hidden=U)
    z = encoded[1][0]
    (mean, std), params = jax.jit(dec.init_with_output)(jax.random.PRNGKey(3), z)
    return params, z, (mean, std)


# ----------------------------------------------------------------------------------- tests

def test_torch_linspace():
    assert torch_linspace(-1, 1, 1).tolist() == [-1.0]
    assert torch_linspace(-1, 1, 5).tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    for n in (2, 3, 7, 64, 512):
        got = torch_linspace(-1, 1, n)
        assert got.dtype == np.float32 and got[0] == -1 and got[-1] == 1
        np.testing.assert_allclose(got, np.linspace(-1, 1, n), atol=1e-7)


def test_add_coords_values():
    x = jnp.arange(2 * 3 * 4 * 2, dtype=jnp.float32).reshape(2, 3, 4, 2)
    y = np.asarray(add_coords(x))
    assert y.shape == (2, 3, 4, 4)
    np.testing.assert_array_equal(y[..., :2], np.asarray(x))
    for b in range(2):
        for j in range(4):
            np.testing.assert_allclose(y[b, :, j, 2], [-1, 0, 1])
        for i in range(3):
            np.testing.assert_allclose(y[b, i, :, 3], np.linspace(-1, 1, 4), atol=1e-7)
    single = np.asarray(add_coords(jnp.zeros((1, 1, 1, 3))))
    np.testing.assert_array_equal(single[0, 0, 0], [0, 0, 0, -1, -1])


def test_conv_torch_default_init():
    conv = TorchConv2d(64, kernel=3, padding=1, coord=True)
    params = conv.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 30)))["params"]["conv"]
    assert params["kernel"].shape == (3, 3, 32, 64)
    bound = 1 / math.sqrt(32 * 9)  # fan_in counts the two coordinate channels
    w, b = np.asarray(params["kernel"]), np.asarray(params["bias"])
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert np.abs(w).max() > 0.95 * bound
    assert abs(w.std() / (bound / math.sqrt(3)) - 1) < 0.03
    assert abs(w.mean()) < 0.03 * bound


def test_upsample_matches_torch_formula_and_jax_resize():
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 3, 5, 2))
    ours = np.asarray(upsample_bilinear2(x))
    want = np_upsample2(nchw(x)).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ours, want, atol=1e-6)
    resized = np.asarray(jax.image.resize(x, (2, 6, 10, 2), "bilinear"))
    np.testing.assert_allclose(resized, want, atol=1e-6)
    one = jnp.full((1, 1, 1, 1), 2.5)
    np.testing.assert_array_equal(np.asarray(upsample_bilinear2(one)), np.full((1, 2, 2, 1), 2.5))


@pytest.mark.parametrize("coord", [True, False])
def test_resnet_down_matches_torch(coord):
    x = jax.random.normal(jax.random.PRNGKey(5), (2, 6, 8, 3))
    block = ResNetDown(6, coord)
    y, variables = jax.jit(block.init_with_output)(jax.random.PRNGKey(6), x)
    assert y.shape == (2, 3, 4, 6)
    want = np_resnet_down(variables["params"], nchw(x), coord)
    np.testing.assert_allclose(nchw(y), want, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 5, 4), (2, 1, 1, 4)])
def test_resnet_up_matches_torch(shape):
    x = jax.random.normal(jax.random.PRNGKey(7), shape)
    block = ResNetUp(6, coord=True)
    y, variables = jax.jit(block.init_with_output)(jax.random.PRNGKey(8), x)
    assert y.shape == (shape[0], 2 * shape[1], 2 * shape[2], 6)
    want = np_resnet_up(variables["params"], nchw(x), True)
    np.testing.assert_allclose(nchw(y), want, atol=1e-5)


def test_encoder_outputs(encoded):
    _, (mean, std) = encoded
    assert mean.shape == std.shape == (BATCH, DIM_Z)
    assert np.all(np.isfinite(mean)) and np.all(np.asarray(std) >= 1e-3)


def test_decoder_outputs(decoded):
    _, _, (mean, std) = decoded
    assert mean.shape == std.shape == (BATCH, 64 * 64 * 3)
    assert np.all(np.isfinite(mean))
    np.testing.assert_array_equal(np.asarray(std), 1.0)


def test_decoder_learned_std_channel_split(decoded):
    """fix_std=False: conv outputs 0-2 are the mean, 3-5 the std (softplus + min_std)."""
    params, z, (mean_fixed, _) = decoded
    params = jax.tree_util.tree_map(lambda a: a, params)
    out = params["params"]["out_conv"]["conv"]
    extra_k = 0.1 * jax.random.normal(jax.random.PRNGKey(9), out["kernel"].shape)
    out["kernel"] = jnp.concatenate([out["kernel"], extra_k], axis=-1)
    out["bias"] = jnp.concatenate([out["bias"], jnp.full((3,), -2.0)])
    decoder = ImageDecoder(64, H, mlp_hidden=U, fix_std=False, min_std=0.01)
    mean, std = jax.jit(decoder.apply)(params, z)
    np.testing.assert_allclose(np.asarray(mean), np.asarray(mean_fixed), atol=1e-5)
    assert std.shape == mean.shape and np.all(np.asarray(std) > 0.01)
    assert not np.allclose(np.asarray(std), np.asarray(std)[0, 0])


def test_parameter_counts(encoded, decoded):
    assert count(encoded[0]) == torch_encoder_count(encoder_blocks(64, H), H, DIM_Z, u=U)
    assert count(decoded[0]) == torch_decoder_count(decoder_blocks(64, H, U), H, DIM_Z, u=U)
    h, d = 32, DIM_Z  # the reduce-dim nets at 512 px, shapes only
    key = jax.random.PRNGKey(0)
    big_x = jax.ShapeDtypeStruct((1, 512 * 512 * 3), jnp.float32)
    big_z = jax.ShapeDtypeStruct((1, d), jnp.float32)
    enc = jax.eval_shape(ImageEncoder(d, 512).init, key, big_x)
    dec = jax.eval_shape(ImageDecoder(512).init, key, big_z)
    assert count(enc) == torch_encoder_count(encoder_blocks(512, h), h, d)
    assert count(dec) == torch_decoder_count(decoder_blocks(512, h), h, d)


def test_nth_permutation_matches_itertools():
    perms = list(itertools.permutations(range(4)))
    for i, p in enumerate(perms):
        assert tuple(nth_permutation(4, i)) == p
    with pytest.raises(ValueError):
        nth_permutation(4, 24)


def test_permutation_reorders_latents(images, encoded, decoded):
    enc_params, (mean, std) = encoded
    dec_params, _, (x_mean, _) = decoded
    index = 17
    perm = list(itertools.permutations(range(DIM_Z)))[index]
    encode = jax.jit(ImageEncoder(DIM_Z, 64, H, mlp_hidden=U, permutation=index).apply)
    mean_p, std_p = encode(enc_params, images)
    np.testing.assert_allclose(np.asarray(mean_p), np.asarray(mean)[:, perm], atol=1e-6)
    np.testing.assert_allclose(np.asarray(std_p), np.asarray(std)[:, perm], atol=1e-6)
    # the decoder undoes the encoder's permutation
    decoder = ImageDecoder(64, H, mlp_hidden=U, permutation=index)
    x_mean_p, _ = jax.jit(decoder.apply)(dec_params, mean_p)
    np.testing.assert_allclose(np.asarray(x_mean_p), np.asarray(x_mean), atol=1e-5)


def test_bad_resolution():
    with pytest.raises(ValueError, match="64, 512"):
        ImageEncoder(DIM_Z, 128)
    with pytest.raises(ValueError, match="64, 512"):
        ImageDecoder(32)
