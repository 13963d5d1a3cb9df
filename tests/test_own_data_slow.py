"""Slow: the acceptance runs of own data (run with `pytest -m slow`). A built-in dataset
exported with scripts/export_dataset.py and trained through `data.dataset=pairs` / `domains`
gives the built-in run's test_metrics.csv: the README smoke run, and MD-CRL linear min-max
(z_dim 8, 4 domains) with the README's five seeds on one dataset. One domains file built into a
TFDS dataset (`data.source=tfds`) gives the `.npz` route's test_metrics.csv (the pairs case
runs by default, tests/test_own_tfds.py)."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, load_config
from wscrl_jax import experiment
from wscrl_jax.data import own_tfds
from wscrl_jax.data.export import export_arrays
from wscrl_jax.methods import validate_config
from wscrl_jax.tracking import read_csv

pytestmark = pytest.mark.slow
MD_SEEDS = "1235,4256,49685,7383,9271"


def script(name, *args):
    cmd = [sys.executable, os.path.join(ROOT, "scripts", name), *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def train_rows(workdir, config, *overrides):
    script("train.py", f"--config={os.path.join(ROOT, 'configs', config)}",
           f"--workdir={workdir}", *overrides)
    return read_csv(os.path.join(workdir, "metrics", "test_metrics.csv"))


def assert_same_metrics(builtin, exported, rel=1e-6):
    """The same columns in the same order; every value identical, or numbers within `rel`."""
    assert [list(r) for r in builtin] == [list(r) for r in exported]
    for a, b in zip(builtin, exported):
        for key in a:
            if a[key] == b[key]:
                continue
            x, y = float(a[key]), float(b[key])
            assert math.isclose(x, y, rel_tol=rel) or (math.isnan(x) and math.isnan(y)), (
                key, a[key], b[key])


def test_readme_smoke_run_exported_as_pairs(tmp_path):
    config = "scaling.py:ilcm,fast"
    data = ["--config.data.dim_z=3", "--config.data.nature.seed=42"]
    builtin = train_rows(tmp_path / "builtin", config, *data, "--config.seed=42")
    script("export_dataset.py", f"--config={os.path.join(ROOT, 'configs', config)}", *data,
           f"--out={tmp_path / 'data'}")
    exported = train_rows(tmp_path / "exported", config, "--config.data.dim_z=3",
                          "--config.seed=42", "--config.data.dataset=pairs",
                          f"--config.data.path={tmp_path / 'data'}",
                          "--config.data.split_seed=42")  # the data seed column
    assert float(builtin[0]["causal_disentanglement"]) > 0.5  # a run that learned
    assert_same_metrics(builtin, exported)


def test_md_mixing_linear_minmax_exported_as_domains(tmp_path):
    config = "md_mixing.py:linear,minmax"
    common = ["--config.data.z_dim=8", "--config.data.num_domains=4",
              f"--config.sweep.seeds={MD_SEEDS}"]
    builtin = train_rows(tmp_path / "builtin", config, *common,
                         "--config.sweep.data_seeds=1235")
    script("export_dataset.py", f"--config={os.path.join(ROOT, 'configs', config)}",
           "--config.data.z_dim=8", "--config.data.num_domains=4", "--data_seed=1235",
           f"--out={tmp_path / 'data'}")
    exported = train_rows(tmp_path / "exported", config, *common,
                          "--config.sweep.data_seeds=", "--config.data.split_seed=1235",
                          "--config.data.dataset=domains",
                          f"--config.data.path={tmp_path / 'data'}")
    assert len(builtin) == 5 and "hz_z_~r2" in builtin[0]
    assert_same_metrics(builtin, exported)


def test_a_domains_run_on_a_built_tfds_dataset_gives_the_npz_routes_metrics(tmp_path):
    c = load_config("md_mixing", "linear,minmax,fast")
    c.data.num_samples.train, c.data.num_samples.valid, c.data.num_samples.test = 600, 100, 100
    c.training.batchsize, c.training.epochs = 100, 2
    c.sweep.seeds = "5,6"
    arrays = export_arrays(c, 11)
    np.savez(tmp_path / "all.npz", **{k: np.concatenate([arrays[s][k] for s in arrays])
                                      for k in ("x", "domain", "z")},
             invariant=arrays["train"]["invariant"])  # one file, split by the split seed
    c.data.dataset, c.data.path, c.data.split_seed = "domains", str(tmp_path / "all.npz"), 11
    c.data.val_fraction, c.data.test_fraction, c.sweep.data_seeds = 0.125, 0.125, ""
    validate_config(c)
    experiment.run(c, str(tmp_path / "npz_run"), progress=False)
    own_tfds.build("domains", c.data.path, str(tmp_path / "tfds"), split_seed=11,
                   val_fraction=0.125, test_fraction=0.125)
    c.data.source, c.data.path = "tfds", str(tmp_path / "tfds")
    validate_config(c)
    experiment.run(c, str(tmp_path / "tfds_run"), progress=False)
    npz_rows = read_csv(str(tmp_path / "npz_run/metrics/test_metrics.csv"))
    tfds_rows = read_csv(str(tmp_path / "tfds_run/metrics/test_metrics.csv"))
    assert len(npz_rows) == 2 and "hz_~z_~r2" in npz_rows[0]
    assert [list(r.items()) for r in npz_rows] == [list(r.items()) for r in tfds_rows]
