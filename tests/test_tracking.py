"""Metric files (a resumed run rewrites the training log from its checkpoint step) and the
optional MLflow / TensorBoard tracking."""

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_scaling_config
from wscrl_jax import experiment
from wscrl_jax.config_checks import ConfigError, check_tracking
from wscrl_jax.tracking import TrainMetricsWriter, read_csv


def test_train_metrics_resume_drops_rows_after_checkpoint_and_partial_line(tmp_path):
    path = tmp_path / "metrics" / "train_metrics.csv"
    path.parent.mkdir()
    # an earlier process logged steps 10-30, checkpointed at 20, and died writing step 40
    path.write_text("step,epoch,member,loss\n10,0,0,1.5\n20,1,0,1.2\n30,2,0,1.0\n4")
    writer = TrainMetricsWriter(str(path), start_step=20)
    writer.write(30, 2, [0.9, 0.8])
    writer.close()
    rows = read_csv(str(path))
    assert [(r["step"], r["member"], r["loss"]) for r in rows] == [
        ("10", "0", "1.5"), ("20", "0", "1.2"), ("30", "0", "0.9"), ("30", "1", "0.8")]


def test_train_metrics_fresh_file_has_header(tmp_path):
    path = tmp_path / "m" / "train_metrics.csv"
    writer = TrainMetricsWriter(str(path))
    writer.write(5, 0, [2.0])
    writer.close()
    assert path.read_text().splitlines() == ["step,epoch,member,loss", "5,0,0,2.0"]


def test_mlflow_and_tensorboard_record_the_run(tmp_path):
    """With MLflow (and tensorboardX) installed: one MLflow run per member in
    WORKDIR/mlruns.db holding the flattened config, the training losses, the final metrics of
    test_metrics.csv and the figures; TensorBoard event files per member."""
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboardX")
    from mlflow.tracking import MlflowClient
    config = tiny_scaling_config("ilcm")
    config.training.epochs = 1
    config.training.pretrain_epochs = None
    config.sweep.seeds = "1,2"
    config.tracking.mlflow = True
    config.tracking.tensorboard = True
    rows = experiment.run(config, str(tmp_path), progress=False)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns.db")
    runs = client.search_runs([client.get_experiment_by_name(tmp_path.name).experiment_id])
    by_member = {int(r.data.tags["member"]): r for r in runs}
    assert sorted(by_member) == [0, 1]
    for k, row in enumerate(rows):
        run = by_member[k]
        assert run.info.run_name == f"seed{row['seed']}_data42"
        assert run.data.params["training.epochs"] == "1" and run.data.params["seed"] == str(
            row["seed"])
        assert run.data.metrics["eval.causal_disentanglement"] == row["causal_disentanglement"]
        assert len(client.get_metric_history(run.info.run_id, "train.loss")) >= 1
        figures = [a.path for a in client.list_artifacts(run.info.run_id, "figures")]
        assert "figures/dci_importance.png" in figures
        events = os.listdir(tmp_path / "tensorboard" / f"member_{k}")
        assert any(name.startswith("events.out.tfevents") for name in events)


def test_tracking_without_its_package_is_one_config_line(monkeypatch):
    config = tiny_scaling_config("ilcm")
    check_tracking(config.tracking)
    config.tracking.mlflow = True
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r'tracking.mlflow=True needs the mlflow package: '
                                          r'pip install -e "\.\[mlflow\]"'):
        check_tracking(config.tracking)


def test_unusable_mlflow_uri_is_one_error_line(tmp_path):
    """A run whose MLflow store cannot start stops before training with one line."""
    pytest.importorskip("mlflow")
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
         f"--config={os.path.join(ROOT, 'configs', 'scaling.py')}:ilcm,fast",
         f"--workdir={tmp_path}", "--config.tracking.mlflow=True",
         "--config.tracking.mlflow_uri=nosuchscheme://x"], capture_output=True, text=True,
        timeout=600)
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: tracking.mlflow_uri='nosuchscheme://x': MLflow could not "
                           "start") and "Traceback" not in out.stderr, out.stderr[-2000:]
