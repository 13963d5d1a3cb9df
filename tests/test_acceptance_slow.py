"""Slow end-to-end checks of the issues' acceptance commands (run with `pytest -m slow`)."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT
from wscrl_jax.tracking import read_csv

pytestmark = pytest.mark.slow


def train(tmp_path, *overrides):
    workdir = tmp_path / "w"
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
           f"--config={os.path.join(ROOT, 'configs', 'scaling.py')}:ilcm,fast",
           f"--workdir={workdir}", *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stderr, read_csv(os.path.join(workdir, "metrics", "test_metrics.csv"))


def test_ilcm_fast_dim3_reaches_disentanglement(tmp_path):
    log, rows = train(tmp_path, "--config.data.dim_z=3", "--config.seed=42",
                      "--config.data.nature.seed=42")
    assert "Final evaluation: causal disentanglement = " in log
    assert float(rows[0]["causal_disentanglement"]) >= 0.95
