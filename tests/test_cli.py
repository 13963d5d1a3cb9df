"""The command-line tools fail on bad input with one clear line and a non-zero exit."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT

TRAIN = os.path.join(ROOT, "scripts", "train.py")
EVALUATE = os.path.join(ROOT, "scripts", "evaluate.py")
CONFIG = os.path.join(ROOT, "configs", "scaling.py")


def run(args, tmp_path):
    return subprocess.run([sys.executable] + args, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)


@pytest.mark.parametrize("args, message", [
    ([f"--config={CONFIG}:ilcm,fast", "--config.data.dim_z=0"], "data.dim_z=0"),
    ([f"--config={CONFIG}:nonsense"], "unknown scaling variant 'nonsense'"),
    ([f"--config={CONFIG}:ilcm", "--config.model.type=vae"], "model.type='vae'"),
    ([f"--config={CONFIG}:ilcm", "--config.data.no_such_key=1"], "unknown config key"),
])
def test_bad_config_is_one_line_and_exit_2(args, message, tmp_path):
    workdir = tmp_path / "w"
    out = run([TRAIN, f"--workdir={workdir}"] + args, tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], out.stderr
    assert not (workdir / "checkpoints").exists()  # nothing was started


def test_evaluate_without_checkpoint_is_one_line(tmp_path):
    out = run([EVALUATE, f"--workdir={tmp_path}"], tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no checkpoint" in lines[0], out.stderr


def test_plot_metrics_without_metrics_file_is_one_line(tmp_path):
    script = os.path.join(ROOT, "scripts", "plot_metrics.py")
    out = run([script, "--out", str(tmp_path / "r2.png"), f"a={tmp_path}"], tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "test_metrics.csv does not exist" in lines[0], out.stderr


@pytest.mark.parametrize("script", [TRAIN, EVALUATE])
def test_help_lists_the_flags_and_exits_0(script, tmp_path):
    out = run([script, "--help"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and "--workdir" in out.stdout
