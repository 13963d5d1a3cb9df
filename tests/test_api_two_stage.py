"""The Python API on two-stage runs: a CausalCircuit toy (64 px images, stage 1 image VAE, stage
2 ILCM on its codes) and MD-CRL balls (stage 1 CNN autoencoder, stage 2 on its codes), loaded
from the stage-2 workdir, take raw images."""

import numpy as np
import pytest

import wscrl_jax
from test_causalcircuit_pipeline import tiny_stage1
from test_md_balls import tiny_balls_stage1
from conftest import load_config
from wscrl_jax.data.causalcircuit.builder import build, data_sources
from wscrl_jax.data.causalcircuit.pipeline import iterate_split
from wscrl_jax.data.causalcircuit.toy import write_toy_dataset


@pytest.fixture(scope="module")
def circuit(tmp_path_factory):
    """Stage 1 and 2 of a 16-pair toy CausalCircuit at 64 px, and its test images."""
    root = tmp_path_factory.mktemp("api_circuit")
    write_toy_dataset(str(root / "download"), 16, 4, 4, resolution=64, seed=5)
    build(str(root / "download"), str(root / "tfds"), resolution=64)
    c1 = tiny_stage1(str(root / "tfds"))
    c1.training.epochs = 1
    wscrl_jax.train(c1, str(root / "w1"))
    c2 = load_config("causalcircuit", "ilcm,fast")
    c2.data.stage1_workdir = str(root / "w1")
    c2.data.true_graph = "toy"
    c2.training.batchsize = 8
    c2.training.epochs = 1
    c2.training.pretrain_epochs = None
    c2.checkpoint.async_save = False
    wscrl_jax.train(c2, str(root / "w2"))
    images = next(iterate_split(data_sources(str(root / "tfds"), 64)["test"], 4))["x1"]
    return str(root / "w2"), images


def test_causalcircuit_stage2_encodes_images_and_returns_counterfactual_images(circuit):
    workdir, images = circuit
    model = wscrl_jax.load(workdir)
    assert model.stage1 is not None and model.observation_shape == (64, 64, 3)
    assert images.shape[1:] == (64, 64, 3) and images.dtype == np.uint8
    z = model.encode_to_causal(images)
    assert z.shape == (len(images), 4) and np.all(np.isfinite(z))
    assert np.allclose(model.encode_to_causal(images.astype(np.float32) / 255.0), z, atol=1e-4)
    cf = model.intervene(images, 2, 0.5)
    assert cf.shape == images.shape and cf.dtype == np.float32
    assert cf.min() >= 0.0 and cf.max() <= 1.0
    _, z_cf = model.intervene(images, 2, 0.5, return_causal=True)
    assert np.allclose(z_cf[:, 2], 0.5, atol=1e-4)
    assert model.sample(3)["x1"].shape == (3, 64, 64, 3)
    with pytest.raises(wscrl_jax.APIError, match=r"expects \[N, 64, 64, 3\]"):
        model.encode_to_causal(images[:, :32])


@pytest.fixture(scope="module")
def balls(tmp_path_factory):
    root = tmp_path_factory.mktemp("api_balls")
    c1 = tiny_balls_stage1()
    c1.training.epochs = 1
    wscrl_jax.train(c1, str(root / "w1"))
    c2 = load_config("md_balls", "stage2,minmax,fast")
    c2.data.stage1_workdir = str(root / "w1")
    c2.training.batchsize = 32
    c2.training.epochs = 1
    c2.model.mlp_width = 16
    c2.checkpoint.async_save = False
    wscrl_jax.train(c2, str(root / "w2"))
    return str(root / "w1"), str(root / "w2")


def test_balls_stage2_invariant_of_raw_images(balls):
    w1, w2 = balls
    model = wscrl_jax.load(w2)
    images = model.stage1.dataset("test")["x"]  # uint8 [N, 64, 64, 3]
    assert images.dtype == np.uint8 and images.shape[1:] == (64, 64, 3)
    inv = model.invariant(images)
    assert inv.shape == (len(images), model.invariant_dim) and model.invariant_dim == 3
    assert np.all(np.isfinite(inv))
    # the composition is stage 2 on stage 1's codes scaled as its test split
    codes = model.dataset("test")["x"]
    direct = wscrl_jax.load(w2, compose=False).encode(codes)
    stage1_codes = model.stage1.encode(images)
    assert np.allclose(model.encode(images), direct, atol=1e-4)
    assert stage1_codes.shape == (len(images), 6)
    out = model.reconstruct(images)
    assert out.shape == (len(images), 64, 64, 3) and np.all(np.isfinite(out))
