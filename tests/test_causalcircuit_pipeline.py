"""CausalCircuit end to end: the Grain pipeline over the TFDS dataset (per-member shuffling,
padded epoch ends, resumable iterator state, worker processes), stage 1 (image VAE) writing
codes and figures, and stage 2 (ILCM on the codes) with causal and noise DCI."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import load_config
from wscrl_jax import experiment
from wscrl_jax.run import evaluation
from wscrl_jax.config_checks import ConfigError
from wscrl_jax.data.causalcircuit.builder import build, data_sources
from wscrl_jax.data.causalcircuit.codes import CODE_FIELDS
from wscrl_jax.data.causalcircuit.pipeline import PairStream, iterate_split
from wscrl_jax.data.causalcircuit.toy import write_toy_dataset
from wscrl_jax.methods import validate_config
from wscrl_jax.train import checkpoint

TRAIN, VAL, TEST = 20, 6, 6


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A toy download (single-file layout, 64 x 64 JPEGs) built as causalcircuit/res64."""
    root = tmp_path_factory.mktemp("circuit")
    write_toy_dataset(str(root / "download"), TRAIN, VAL, TEST, resolution=64, seed=3)
    build(str(root / "download"), str(root / "tfds"), resolution=64)
    return str(root / "tfds")


def _index_of(images, split_images):
    flat = split_images.reshape(len(split_images), -1).astype(np.int64)
    return np.array([int(np.flatnonzero((flat == im.reshape(-1)).all(1))[0]) for im in images])


def test_stream_epochs_cover_the_split_once_per_member(tfds_dir):
    source = data_sources(tfds_dir, 64)["train"]
    parts = list(iterate_split(source, batch_size=8))
    split = {k: np.concatenate([p[k] for p in parts]) for k in ("x1", "x2", "index")}
    order = np.argsort(split["index"])
    split = {k: v[order] for k, v in split.items()}
    assert np.array_equal(split["index"], np.arange(TRAIN))  # download order restored
    stream = PairStream(source, data_seeds=[1, 2, 1], batch_size=8)  # 3 steps an epoch
    try:
        batch, weights, _ = stream.take(3)
        assert batch["x1"].shape == (3, 3, 8, 64, 64, 3) and batch["x1"].dtype == np.uint8
        assert np.array_equal(weights[:, :2], np.ones((3, 2, 8)))
        assert np.array_equal(weights[:, 2], np.tile([1.0] * 4 + [0.0] * 4, (3, 1)))
        orders = [_index_of(batch["x1"][m].reshape(-1, 64, 64, 3)[weights[m].reshape(-1) > 0],
                            split["x1"]) for m in range(3)]
        for order in orders:
            assert sorted(order) == list(range(TRAIN))  # every pair once per epoch
        assert np.array_equal(orders[0], orders[2])  # same data seed, same order
        assert not np.array_equal(orders[0], orders[1])
        x2 = batch["x2"][0].reshape(-1, 64, 64, 3)[weights[0].reshape(-1) > 0]
        assert np.array_equal(_index_of(x2, split["x2"]), orders[0])  # pairs stay pairs
        second, _, _ = stream.take(3)
        again = _index_of(second["x1"][0].reshape(-1, 64, 64, 3)[:TRAIN], split["x1"])
        assert sorted(again) == list(range(TRAIN)) and not np.array_equal(again, orders[0])
    finally:
        stream.close()


@pytest.mark.parametrize("workers", [0, 1])
def test_stream_resumes_from_its_state_with_the_same_batches(tfds_dir, workers):
    source = data_sources(tfds_dir, 64)["train"]
    whole = PairStream(source, [5], batch_size=6, workers=workers)
    first = PairStream(source, [5], batch_size=6, workers=workers)
    try:
        expected, _, _ = whole.take(7)  # crosses an epoch end (4 steps an epoch)
        first.take(5)
        state = json.loads(json.dumps(first.state()))  # as the checkpoint meta stores it
    finally:
        whole.close()
        first.close()
    resumed = PairStream(source, [5], batch_size=6, workers=workers, start_step=5,
                         restore=state)
    try:
        rest, _, _ = resumed.take(2)
    finally:
        resumed.close()
    assert np.array_equal(rest["x1"], expected["x1"][:, 5:])
    assert np.array_equal(rest["x2"], expected["x2"][:, 5:])


def tiny_stage1(tfds_dir):
    c = load_config("causalcircuit_reduce_dim", "64,fast")
    c.data.tfds_dir = tfds_dir
    c.data.workers = 0
    c.data.eval_batchsize = 8
    c.model.encoder.hidden_channels = c.model.decoder.hidden_channels = 4
    c.model.encoder.extra_mlp_hidden_units = c.model.decoder.extra_mlp_hidden_units = 16
    c.training.batchsize = 8
    c.training.epochs = 2
    c.training.steps_per_call = 2
    c.checkpoint.every_n_steps = 2
    c.checkpoint.async_save = False
    c.eval.dci_train_pairs = 16
    return c


@pytest.fixture(scope="module")
def circuit_runs(tfds_dir, tmp_path_factory):
    c1 = tiny_stage1(tfds_dir)
    validate_config(c1)
    w1 = str(tmp_path_factory.mktemp("stage1"))
    rows1 = experiment.run(c1, w1, progress=False)
    c2 = load_config("causalcircuit", "ilcm,fast")
    c2.data.stage1_workdir = w1
    c2.data.true_graph = "toy"
    c2.training.batchsize = 8
    c2.training.epochs = 2
    c2.training.pretrain_epochs = None  # one phase: one compilation
    c2.checkpoint.async_save = False
    validate_config(c2)
    w2 = str(tmp_path_factory.mktemp("stage2"))
    rows2 = experiment.run(c2, w2, progress=False)
    return w1, rows1, w2, rows2


def test_stage1_writes_codes_figures_and_pipeline_state(circuit_runs, tfds_dir):
    w1, rows1, _, _ = circuit_runs
    row = rows1[0]
    assert 0 < row["reconstruction_mse"] < 0.5 and np.isfinite(row["code_disentanglement"])
    meta = json.load(open(os.path.join(w1, "encoded", "meta.json")))
    assert meta["source"] == "causalcircuit" and meta["splits"] == {
        "train": TRAIN, "val": VAL, "test": TEST}
    codes = np.load(os.path.join(w1, "encoded", "member0.npz"))
    download = np.load(os.path.join(os.path.dirname(tfds_dir), "download", "test.npz"))
    assert codes["x1_train"].shape == (TRAIN, 8) and np.all(np.isfinite(codes["x1_train"]))
    for field in CODE_FIELDS:
        assert f"{field}_test" in codes.files
    # rows in the download's order although TFDS shuffles its records
    assert np.allclose(codes["z1_test"], download["original_latents"][:, 0], atol=1e-6)
    assert np.allclose(codes["e2_test"], download["epsilon"][:, 1], atol=1e-6)
    assert os.path.getsize(os.path.join(w1, "figures", "reconstructions.png")) > 1000
    meta = checkpoint.restore_meta(w1)
    assert meta["step"] == 6 and set(meta["data_iterators"]) == {"42"}


def test_stage1_evaluation_from_the_checkpoint_reproduces_the_metrics(circuit_runs):
    w1, rows1, _, _ = circuit_runs
    again = evaluation.evaluate_workdir(w1, progress=False)[0]
    for key in ("reconstruction_mse", "code_disentanglement", "code_informativeness_test"):
        assert again[key] == pytest.approx(rows1[0][key], rel=1e-5, abs=1e-6), key


def test_stage2_trains_on_the_codes_with_causal_and_noise_dci(circuit_runs):
    _, _, _, rows2 = circuit_runs
    row = rows2[0]
    names = [k for k in row if k not in ("seed", "data_seed", "status")]
    first_causal = min(i for i, n in enumerate(names) if n.startswith("causal_"))
    assert all(n.startswith("noise_") for n in names[:first_causal])  # noise DCI first
    assert "noise_disentanglement" in names[:first_causal]
    for key in ("noise_completeness", "causal_disentanglement", "causal_informativeness_test",
                "enco_graph_shd" if "enco_graph_shd" in row else "enco_graph_0_1", "nll"):
        assert np.isfinite(row[key]), key
    assert "true_graph_3_0" in row and row["true_graph_3_0"] == 1  # the toy's arm -> red


def test_config_errors_are_one_line(tfds_dir, tmp_path):
    c = tiny_stage1(str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="scripts/build_causalcircuit.py"):
        validate_config(c)
    c = tiny_stage1(tfds_dir)
    c.training.fix_topological_order_epoch = 1
    with pytest.raises(ConfigError, match="fix_topological_order_epoch"):
        validate_config(c)
    c2 = load_config("causalcircuit", "betavae")
    with pytest.raises(ConfigError, match="stage1_workdir is not set"):
        validate_config(c2)
    c2.data.stage1_workdir = str(tmp_path)
    with pytest.raises(ConfigError, match="causalcircuit_reduce_dim"):
        validate_config(c2)


@pytest.mark.slow
def test_kill_during_stage1_resumes_with_the_same_batches(tfds_dir, tmp_path):
    """kill -9 of a stage-1 run after its first checkpoint, then the same command: it resumes
    from the checkpoint's pipeline state and ends bit-identical to an uninterrupted run (the
    checkpoints' leaf checksums agree), with the same metrics."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = [f"--config.data.tfds_dir={tfds_dir}", "--config.data.workers=1",
            "--config.model.encoder.hidden_channels=4", "--config.model.decoder.hidden_channels=4",
            "--config.training.batchsize=8", "--config.training.epochs=3",
            "--config.training.steps_per_call=1", "--config.checkpoint.every_n_steps=2",
            "--config.checkpoint.async_save=False", "--config.eval.dci_train_pairs=16"]

    def command(workdir):
        return [sys.executable, os.path.join(root, "scripts", "train.py"),
                f"--config={os.path.join(root, 'configs', 'causalcircuit_reduce_dim.py:64,fast')}",
                f"--workdir={workdir}", *args]

    subprocess.run(command(tmp_path / "whole"), check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and not (killed / "checkpoints" / "4").exists():
        time.sleep(0.1)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    assert not (killed / "metrics" / "test_metrics.csv").exists()  # killed before the end
    subprocess.run(command(killed), check=True, capture_output=True)
    whole, resumed = (checkpoint.restore_meta(str(tmp_path / w)) for w in ("whole", "killed"))
    assert whole["step"] == resumed["step"] == 9
    assert whole["integrity"]["leaves"] == resumed["integrity"]["leaves"]
    assert whole["data_iterators"] == resumed["data_iterators"]
    assert (open(tmp_path / "whole" / "metrics" / "test_metrics.csv").read()
            == open(killed / "metrics" / "test_metrics.csv").read())


def test_missing_tfds_is_a_config_error(tfds_dir, monkeypatch):
    """Where TFDS (or Grain) does not import, a CausalCircuit config is one ConfigError line, and
    the other methods never import either (`lcm/image_method.py`)."""
    monkeypatch.setitem(sys.modules, "wscrl_jax.data.causalcircuit.builder", None)
    with pytest.raises(ConfigError, match="need tensorflow-datasets and grain"):
        validate_config(tiny_stage1(tfds_dir))
