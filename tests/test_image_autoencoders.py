"""TorchBatchNorm, the ResNet-18 trunk and the MD-CRL image autoencoders (ResNetAE, CNNAE).

Initialisation uses `rbg` keys: on this CPU, compiling a jitted init with threefry keys costs
~10 s per model, with `rbg` ~3 s; the init distributions are the same.
"""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.mdcrl.image_autoencoders import (CNNAE, ResNetAE, channel_major_to_nhwc,
                                                torch_conv_transpose)
from wscrl_jax.nn.batchnorm import TorchBatchNorm
from wscrl_jax.nn.resnet import ResNet18Trunk

B = 3  # one batch size everywhere, so every jitted function compiles once
LATENT = 8


def key(seed):
    return jax.random.key(seed, impl="rbg")


def count_params(tree):
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


# ---------------------------------------------------------------------------------------------
# numpy transcriptions of torch's formulas


def np_batchnorm_train(x, mask, scale, bias, run_mean, run_var, momentum=0.1, eps=1e-5):
    """torch BatchNorm (train mode) on the rows selected by mask; every row is normalised."""
    c = x.shape[-1]
    sel = x[np.asarray(mask, bool)].reshape(-1, c).astype(np.float64)
    n = sel.shape[0]
    mean = sel.mean(0)
    var = sel.var(0)  # biased, used to normalise
    y = (x - mean) / np.sqrt(var + eps) * scale + bias
    new_mean = (1 - momentum) * run_mean + momentum * mean
    new_var = (1 - momentum) * run_var + momentum * var * n / (n - 1)
    return y, new_mean, new_var


def np_conv_transpose(x, w, b, stride, padding):
    """torch ConvTranspose2d on NHWC x with a torch weight w [in, out, kh, kw]:
    out[:, i * s - p + ki, j * s - p + kj, o] += x[:, i, j, c] * w[c, o, ki, kj]."""
    bsz, n_h, n_w, _ = x.shape
    _, c_out, kh, kw = w.shape
    full = np.zeros((bsz, (n_h - 1) * stride + kh, (n_w - 1) * stride + kw, c_out))
    for ki in range(kh):
        for kj in range(kw):
            contrib = np.einsum("bijc,co->bijo", x, w[:, :, ki, kj])
            full[:, ki:ki + (n_h - 1) * stride + 1:stride,
                 kj:kj + (n_w - 1) * stride + 1:stride] += contrib
    out = full[:, padding:full.shape[1] - padding, padding:full.shape[2] - padding]
    return out + b


def leaky(v, slope):
    return np.where(v >= 0, v, slope * v)


# ---------------------------------------------------------------------------------------------
# TorchBatchNorm


@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 2, 5)], ids=["1d", "2d"])
def test_batchnorm_train_matches_torch_with_mask(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(1.5, 2.0, shape).astype(np.float32)
    mask = np.ones(shape[0], bool)
    mask[[1, shape[0] - 1]] = False
    c = shape[-1]
    bn = TorchBatchNorm()
    v = bn.init(key(0), jnp.asarray(x), train=True)
    # init with train=True must not touch the running statistics
    np.testing.assert_array_equal(v["batch_stats"]["mean"], np.zeros(c))
    np.testing.assert_array_equal(v["batch_stats"]["var"], np.ones(c))
    scale, bias = rng.normal(size=c), rng.normal(size=c)
    run_mean, run_var = rng.normal(size=c), rng.uniform(0.5, 2.0, c)
    v = {"params": {"scale": jnp.asarray(scale, jnp.float32),
                    "bias": jnp.asarray(bias, jnp.float32)},
         "batch_stats": {"mean": jnp.asarray(run_mean, jnp.float32),
                         "var": jnp.asarray(run_var, jnp.float32)}}
    y, upd = bn.apply(v, jnp.asarray(x), train=True, mask=jnp.asarray(mask),
                      mutable=["batch_stats"])
    y_ref, m_ref, v_ref = np_batchnorm_train(x, mask, scale, bias, run_mean, run_var)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(upd["batch_stats"]["mean"], m_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(upd["batch_stats"]["var"], v_ref, rtol=1e-5, atol=1e-6)

    # excluded rows do not move the statistics, whatever they hold; 0/1 float mask == bool
    x2 = x.copy()
    x2[~mask] = 1e3
    y2, upd2 = bn.apply(v, jnp.asarray(x2), train=True, mask=jnp.asarray(mask, jnp.float32),
                        mutable=["batch_stats"])
    np.testing.assert_allclose(y2[mask], y[mask], rtol=1e-6, atol=1e-6)
    for name in ("mean", "var"):
        np.testing.assert_allclose(upd2["batch_stats"][name], upd["batch_stats"][name],
                                   rtol=1e-6)

    # mask=None counts every row
    y3, upd3 = bn.apply(v, jnp.asarray(x), train=True, mutable=["batch_stats"])
    y_ref3, m_ref3, v_ref3 = np_batchnorm_train(x, np.ones(shape[0]), scale, bias, run_mean,
                                                run_var)
    np.testing.assert_allclose(y3, y_ref3, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(upd3["batch_stats"]["var"], v_ref3, rtol=1e-5, atol=1e-6)

    # eval: running statistics, nothing updated even when mutable
    y4, upd4 = bn.apply(v, jnp.asarray(x), train=False, mask=jnp.asarray(mask),
                        mutable=["batch_stats"])
    y_ref4 = (x - run_mean) / np.sqrt(run_var + 1e-5) * scale + bias
    np.testing.assert_allclose(y4, y_ref4, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(upd4["batch_stats"]["var"], v["batch_stats"]["var"])

    # train without a mutable batch_stats: batch statistics, no error
    y5 = bn.apply(v, jnp.asarray(x), train=True, mask=jnp.asarray(mask))
    np.testing.assert_allclose(y5, y, rtol=1e-6, atol=1e-6)


def test_batchnorm_degenerate_counts_are_finite():
    bn = TorchBatchNorm()
    x = jnp.arange(8.0).reshape(4, 2)
    v = bn.init(key(0), x, train=False)
    for mask in ([1, 0, 0, 0], [0, 0, 0, 0]):
        y, upd = bn.apply(v, x, train=True, mask=jnp.asarray(mask), mutable=["batch_stats"])
        assert np.isfinite(y).all()
        assert all(np.isfinite(a).all() for a in jax.tree.leaves(upd))
    # one row: biased var 0, unbiased var guarded to 0 -> running var 0.9
    _, upd = bn.apply(v, x, train=True, mask=jnp.asarray([0, 1, 0, 0]), mutable=["batch_stats"])
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * np.array([2.0, 3.0]))
    np.testing.assert_allclose(upd["batch_stats"]["var"], [0.9, 0.9])


# ---------------------------------------------------------------------------------------------
# ResNet-18 trunk


def test_resnet18_trunk_params_and_shapes():
    trunk = ResNet18Trunk()
    x = jax.ShapeDtypeStruct((B, 64, 64, 3), jnp.float32)
    shapes = jax.eval_shape(lambda k, x: trunk.init(k, x, train=False), key(0), x)
    assert count_params(shapes["params"]) == 11_689_512 - 513_000
    bs = shapes["batch_stats"]
    assert count_params(bs) == 2 * 4800  # mean and var of the 4,800 BN channels
    (out, inter) = jax.eval_shape(
        lambda v, x: trunk.apply(v, x, train=False, capture_intermediates=True), shapes, x)
    assert out.shape == (B, 512)
    inter = inter["intermediates"]
    sizes = {"conv1": 32, "layer1_1": 16, "layer2_1": 8, "layer3_1": 4, "layer4_1": 2}
    widths = {"conv1": 64, "layer1_1": 64, "layer2_1": 128, "layer3_1": 256, "layer4_1": 512}
    for name, size in sizes.items():
        assert inter[name]["__call__"][0].shape == (B, size, size, widths[name]), name


# ---------------------------------------------------------------------------------------------
# autoencoders: one initialised instance of each, shared


def _build(cls):
    model = cls(latent=LATENT)
    x = jax.random.normal(jax.random.PRNGKey(1), (B, 64, 64, 3))
    variables = jax.jit(lambda k: model.init(k, x, train=False))(key(0))

    @jax.jit
    def evaluate(v, x):
        return model.apply(v, x), model.apply(v, x, method="encode")

    @jax.jit
    def train(v, x, mask):
        return model.apply(v, x, train=True, mask=mask, mutable=["batch_stats"])

    return dict(model=model, x=x, variables=variables, evaluate=evaluate, train=train)


@pytest.fixture(scope="module")
def resnet_ae():
    return _build(ResNetAE)


@pytest.fixture(scope="module")
def cnn_ae():
    return _build(CNNAE)


@pytest.fixture(params=["resnet", "cnn"])
def ae(request, resnet_ae, cnn_ae):
    return {"resnet": resnet_ae, "cnn": cnn_ae}[request.param]


def test_param_counts_match_torch():
    x = jax.ShapeDtypeStruct((B, 64, 64, 3), jnp.float32)
    # torch counts from the yamls (latent 8): resnet trunk + fc 512*128 + BN 2*128
    # + fc 128*8 + BN 2*8 + fc 8*128 + fc 128*1024 + deconvs (in*out*16 + out)
    resnet = (11_176_512 + 512 * 128 + 256 + 128 * 8 + 16 + 8 * 128 + 128 * 1024
              + sum(i * o * 16 + o for i, o in ((64, 64), (64, 32), (32, 32), (32, 3))))
    enc = [(3, 16), (16, 32), (32, 64), (64, 128), (128, 128)]
    dec = [(128, 128, 3), (128, 64, 3), (64, 32, 3), (32, 16, 3)]
    cnn = (sum(i * o * 16 + o + 2 * o for i, o in enc) + 128 * LATENT * 16 + LATENT
           + LATENT * 128 * 4 + 128 + 2 * 128
           + sum(i * o * k * k + o + 2 * o for i, o, k in dec) + 16 * 3 * 9 + 3)
    for cls, expected in ((ResNetAE, resnet), (CNNAE, cnn)):
        model = cls(latent=LATENT)
        shapes = jax.eval_shape(lambda k, x: model.init(k, x, train=False), key(0), x)
        assert count_params(shapes["params"]) == expected, cls.__name__


def test_cnn_ae_layer_sizes():
    model = CNNAE(latent=LATENT)
    x = jax.ShapeDtypeStruct((B, 64, 64, 3), jnp.float32)
    shapes = jax.eval_shape(lambda k, x: model.init(k, x, train=False), key(0), x)
    _, inter = jax.eval_shape(
        lambda v, x: model.apply(v, x, capture_intermediates=True), shapes, x)
    inter = inter["intermediates"]
    expect = {"enc_conv1": (32, 16), "enc_conv5": (2, 128), "enc_conv6": (1, LATENT),
              "dec_conv1": (2, 128), "dec_conv2": (4, 128), "dec_conv3": (8, 64),
              "dec_conv4": (16, 32), "dec_conv5": (32, 16), "dec_conv6": (64, 3)}
    for name, (size, width) in expect.items():
        assert inter[name]["__call__"][0].shape == (B, size, size, width), name


def test_resnet_trunk_init_is_torchvision(resnet_ae):
    p = resnet_ae["variables"]["params"]["trunk"]
    for kernel in (p["layer4_1"]["conv2"]["kernel"], p["layer4_0"]["conv1"]["kernel"],
                   p["conv1"]["kernel"]):
        kh, kw, _, c_out = kernel.shape
        expected = math.sqrt(2.0 / (c_out * kh * kw))
        assert abs(float(jnp.std(kernel)) / expected - 1) < 0.05
        assert abs(float(jnp.mean(kernel))) < 0.05 * expected
    np.testing.assert_array_equal(p["layer2_0"]["downsample_bn"]["scale"], np.ones(128))
    np.testing.assert_array_equal(p["layer2_0"]["bn2"]["bias"], np.zeros(128))


def test_torch_default_inits(resnet_ae, cnn_ae):
    rp, cp = resnet_ae["variables"]["params"], cnn_ae["variables"]["params"]
    # (param, torch fan_in): ConvTranspose2d fan_in is out_channels * kh * kw
    cases = [(rp["deconv2"]["kernel"], 32 * 16), (rp["deconv2"]["bias"], 32 * 16),
             (rp["dec_fc2"]["kernel"], 128), (cp["enc_conv3"]["kernel"], 32 * 16),
             (cp["dec_conv1"]["kernel"], LATENT * 4), (cp["dec_conv2"]["bias"], 128 * 9)]
    for value, fan_in in cases:
        bound = 1 / math.sqrt(fan_in)
        assert float(jnp.max(jnp.abs(value))) <= bound
        if value.size > 500:
            assert float(jnp.max(jnp.abs(value))) > 0.95 * bound


def test_output_shapes_and_encode(ae):
    (z, x_hat), z_enc = ae["evaluate"](ae["variables"], ae["x"])
    assert z.shape == (B, LATENT)
    assert x_hat.shape == (B, 64, 64, 3)
    assert np.isfinite(x_hat).all()
    np.testing.assert_allclose(z_enc, z, rtol=1e-6, atol=1e-6)


def test_train_updates_batch_stats_and_respects_mask(ae):
    v, x = ae["variables"], ae["x"]
    mask = jnp.asarray([True, True, False])
    (z, x_hat), upd = ae["train"](v, x, mask)
    old, new = v["batch_stats"], upd["batch_stats"]
    assert jax.tree.structure(old) == jax.tree.structure(new)
    old_flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(old))
    new_flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(new))
    for path, value in old_flat.items():
        assert not np.allclose(value, new_flat[path]), path  # every BN saw the batch
    # the excluded row changes neither the statistics nor the valid rows' outputs
    x2 = x.at[2].set(jax.random.normal(jax.random.PRNGKey(7), x.shape[1:]) * 3 + 1)
    (z2, x_hat2), upd2 = ae["train"](v, x2, mask)
    np.testing.assert_allclose(z2[:2], z[:2], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(x_hat2[:2], x_hat[:2], rtol=1e-4, atol=1e-4)
    for a, b in zip(jax.tree.leaves(upd2), jax.tree.leaves(upd)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # and train mode differs from eval mode
    (z_eval, _), _ = ae["evaluate"](v, x)
    assert not np.allclose(z, z_eval, atol=1e-3)


def test_resnet_decoder_matches_numpy_torch(resnet_ae):
    """Whole ResNetAE decoder in numpy with torch's view(B, 64, 4, 4) and ConvTranspose2d."""
    model, v = resnet_ae["model"], resnet_ae["variables"]
    z = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (B, LATENT)))
    x_hat, inter = model.apply(v, jnp.asarray(z), method="decode", mutable=["intermediates"])
    p = jax.tree.map(np.asarray, v["params"])
    h = leaky(leaky(z @ p["dec_fc1"]["kernel"], 0.1) @ p["dec_fc2"]["kernel"], 0.01)
    grid = h.reshape(B, 64, 4, 4)  # torch's channel-major view
    np.testing.assert_allclose(inter["intermediates"]["grid"][0], grid.transpose(0, 2, 3, 1),
                               rtol=1e-5, atol=1e-6)
    out = grid.transpose(0, 2, 3, 1)
    for i in range(4):
        k = p[f"deconv{i + 1}"]["kernel"]  # [kh, kw, out, in]; torch weight = [in, out, kh, kw]
        out = np_conv_transpose(out, k.transpose(3, 2, 0, 1), p[f"deconv{i + 1}"]["bias"], 2, 1)
        if i < 3:
            out = leaky(out, 0.01)
    assert out.shape == (B, 64, 64, 3)
    np.testing.assert_allclose(x_hat, out, rtol=1e-4, atol=1e-5)


def test_channel_major_to_nhwc():
    h = jnp.arange(2 * 64 * 16).reshape(2, 1024)
    g = channel_major_to_nhwc(h, 64, 4, 4)
    assert g.shape == (2, 4, 4, 64)
    # torch view: flat index c * 16 + i * 4 + j holds channel c at (i, j)
    assert int(g[1, 2, 3, 5]) == 1024 + 5 * 16 + 2 * 4 + 3


def test_conv_transpose_torch_semantics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 5)).astype(np.float32)
    layer = torch_conv_transpose(3, 4, 2, 1, name="deconv")
    v = layer.init(key(0), jnp.asarray(x))
    y = layer.apply(v, jnp.asarray(x))
    assert y.shape == (2, 8, 8, 3)  # (4 - 1) * 2 - 2 * 1 + 4
    assert v["params"]["kernel"].shape == (4, 4, 3, 5)
    w = rng.normal(size=(5, 3, 4, 4)).astype(np.float32)  # a torch weight [in, out, kh, kw]
    b = rng.normal(size=3).astype(np.float32)
    v = {"params": {"kernel": jnp.asarray(w.transpose(2, 3, 1, 0)), "bias": jnp.asarray(b)}}
    np.testing.assert_allclose(layer.apply(v, jnp.asarray(x)),
                               np_conv_transpose(x, w, b, 2, 1), rtol=1e-5, atol=1e-5)


def test_cnn_decoder_relu_after_bn4_and_nearest_upsample(cnn_ae):
    """dec_conv5's output recomputed in numpy from dec_bn4's: ReLU, nearest x2, conv k3 p1."""
    model, v = cnn_ae["model"], cnn_ae["variables"]
    _, inter = model.apply(v, cnn_ae["x"], capture_intermediates=True)
    inter = inter["intermediates"]
    bn4 = np.asarray(inter["dec_bn4"]["__call__"][0])
    assert (bn4 < 0).any()  # so ReLU and LeakyReLU would differ
    h = np.maximum(bn4, 0).repeat(2, axis=1).repeat(2, axis=2)
    hp = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
    k = np.asarray(v["params"]["dec_conv5"]["kernel"])  # [kh, kw, in, out]
    size = h.shape[1]
    out = sum(np.einsum("bijc,co->bijo", hp[:, a:a + size, c:c + size], k[a, c])
              for a in range(3) for c in range(3)) + np.asarray(v["params"]["dec_conv5"]["bias"])
    np.testing.assert_allclose(inter["dec_conv5"]["__call__"][0], out, rtol=1e-4, atol=1e-5)
