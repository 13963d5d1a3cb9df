"""MD-CRL on balls images: stage 1 (CNN autoencoder with BatchNorm statistics carried in the
model state) -> codes on disk -> stage 2 (BatchNorm MLP with min-max), end to end on tiny
images; BatchNorm bookkeeping of the training step; config errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import load_config
from wscrl_jax import experiment
from wscrl_jax.run import members as run_members
from wscrl_jax.config_checks import ConfigError
from wscrl_jax.data.encoded import load_encoded_splits
from wscrl_jax.methods import validate_config
from wscrl_jax.tracking import read_csv
from wscrl_jax.train.state import member


def tiny_balls_stage1():
    """Stage 1 shrunk to seconds: 2 domains, 96 training images, the CNN autoencoder."""
    c = load_config("md_balls", "stage1,cnn,fast")
    c.data.num_domains = 2
    c.data.num_samples.train, c.data.num_samples.valid, c.data.num_samples.test = 128, 32, 16
    c.model.z_dim = 6
    c.training.batchsize = 40  # 96 training rows: the epoch's last batch is padded
    c.training.epochs = 2
    c.checkpoint.async_save = False
    return c


def _metric_names(row):
    return [k for k in row if k not in ("seed", "data_seed", "status")]


@pytest.fixture(scope="module")
def balls_runs(tmp_path_factory):
    c1 = tiny_balls_stage1()
    w1 = str(tmp_path_factory.mktemp("balls1"))
    rows1 = experiment.run(c1, w1, progress=False)
    c2 = load_config("md_balls", "stage2,minmax,fast")
    c2.data.stage1_workdir = w1
    c2.training.batchsize = 32
    c2.training.epochs = 2
    c2.model.mlp_width = 16
    c2.checkpoint.async_save = False
    validate_config(c2)
    w2 = str(tmp_path_factory.mktemp("balls2"))
    rows2 = experiment.run(c2, w2, progress=False)
    return c1, w1, rows1, w2, rows2


def test_stage1_trains_writes_codes_and_figures(balls_runs):
    c1, w1, rows1, _, _ = balls_runs
    row = rows1[0]
    assert _metric_names(row)[:2] == ["val_loss", "hz_z_~r2"]  # balls stage-1 headline
    assert np.isfinite(row["val_loss"]) and 0 < row["val_loss"] < 1.0
    for key in ("r2", "~r2", "hz_z_r2", "hz_~z_~r2", "full_hz_z_~r2"):
        assert np.isfinite(row[key]), key
    assert not any(k.startswith("hz_colors") for k in row)  # constant targets (md-crl gotcha 21)
    with open(os.path.join(w1, "encoded", "meta.json")) as f:
        meta = json.load(f)
    assert meta["source"] == "balls" and meta["latent_dim"] == 6 and meta["z_dim"] == 4
    assert meta["z_dim_invariant"] == 2 and meta["splits"] == {"train": 96, "valid": 32,
                                                               "test": 16}
    for name in ("balls_domains.png", "reconstructions.png"):
        assert os.path.getsize(os.path.join(w1, "figures", name)) > 1000


def test_stage2_reads_unit_scaled_codes_and_reports_balls_r2(balls_runs):
    _, w1, _, _, rows2 = balls_runs
    data = load_encoded_splits(w1, 0, code_range="unit")
    for name in ("train", "valid"):  # md_balls_encoded_dataset: [0, 1] per split
        assert float(jnp.min(data[name]["x"])) == pytest.approx(0.0, abs=1e-6)
        assert float(jnp.max(data[name]["x"])) == pytest.approx(1.0)
    row = rows2[0]
    assert _metric_names(row)[:2] == ["hz_z_~r2_linreg", "hz_~z_~r2_linreg"]
    for key in ("r2_linreg", "hz_z_~mse_loss_linreg", "heldout_hz_z_~r2", "val_loss"):
        assert np.isfinite(row[key]), key


def test_batchnorm_statistics_follow_applied_steps_and_ignore_padding():
    """The training forward pass returns the new running statistics; they are kept only
    where the update is applied, and the padded rows of a batch do not enter them."""
    c = tiny_balls_stage1()
    method, data, state = run_members.build(c, [(0, 0)])
    params, ms = member(state.params, 0), member(state.model_state, 0)
    x = data["train"]["x"][0][:8]
    batch = {"x": x, "domain": data["train"]["domain"][0][:8]}
    weights = jnp.asarray([1.0] * 6 + [0.0] * 2)
    lw = method.loss_weights(0.0)
    loss, aux = method.loss(params, ms, batch, weights, None, lw, "stage1")
    garbage = {**batch, "x": x.at[6:].set(jnp.uint8(17))}
    loss_g, aux_g = method.loss(params, ms, garbage, weights, None, lw, "stage1")
    assert float(loss) == pytest.approx(float(loss_g), rel=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(aux["batch_stats"]),
                    jax.tree_util.tree_leaves(aux_g["batch_stats"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    rows = jnp.arange(8)
    kept = method.record(ms, batch, aux, rows, weights, jnp.asarray(True))
    skipped = method.record(ms, batch, aux, rows, weights, jnp.asarray(False))
    old = jax.tree_util.tree_leaves(ms["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in
               zip(jax.tree_util.tree_leaves(kept["batch_stats"]), old))
    for a, b in zip(jax.tree_util.tree_leaves(skipped["batch_stats"]), old):
        np.testing.assert_array_equal(a, b)
    # online codes: the batch's training-mode codes at its rows, padding rows dropped
    codes = np.asarray(kept["online_codes"])
    np.testing.assert_allclose(codes[:6], aux["z_hat"][:6], rtol=1e-6)
    assert np.isnan(codes[6:]).all()


def test_balls_config_errors():
    c = load_config("md_balls", "stage1,fast")
    c.model.penalty_criterion.minmax = 1.0
    with pytest.raises(ConfigError, match="reconstruction only"):
        validate_config(c)
    c = load_config("md_balls", "stage1,fast")
    c.model.autoencoder = "linear"
    with pytest.raises(ConfigError, match="does not fit data.dataset"):
        validate_config(c)
    c = load_config("md_balls", "stage1,fast")
    c.data.image_size = 32
    with pytest.raises(ConfigError, match="image_size"):
        validate_config(c)
    with pytest.raises(ValueError, match="unknown md_balls option"):
        load_config("md_balls", "stage1,dynamic")


@pytest.mark.slow
def test_resnet18_stage1_runs_end_to_end(tmp_path):
    """The README's stage-1 autoencoder (ResNet-18 trunk, 11.5 M parameters) trains, writes
    its codes and evaluates on tiny data (2 epochs of 3 steps at batch 32): the training loss
    (pixel MSE) of the last call is below the first call's."""
    c = tiny_balls_stage1()
    c.model.autoencoder = "resnet18"
    c.training.batchsize = 32
    rows = experiment.run(c, str(tmp_path), progress=False)
    assert rows[0]["status"] == "ok" and np.isfinite(rows[0]["val_loss"])
    losses = [float(r["loss"]) for r in
              read_csv(os.path.join(tmp_path, "metrics", "train_metrics.csv"))]
    assert len(losses) >= 2 and np.isfinite(losses).all(), losses
    assert losses[-1] < losses[0], losses
    data = load_encoded_splits(str(tmp_path), 0, code_range="unit")
    assert data["valid"]["x"].shape == (32, 6) and np.isfinite(data["train"]["x"]).all()
