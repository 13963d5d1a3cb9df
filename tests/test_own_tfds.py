"""Own data built into a TFDS ArrayRecord dataset (`scripts/build_dataset.py`, `data.source=
tfds`, docs/own_data.md): the build checks the files as the in-memory route does and writes
nothing for a bad one; the dataset reads back to the very arrays of the `.npz` route, so a run
on it gives the same test_metrics.csv."""

import json
import os
import runpy
import sys
from unittest import mock

import numpy as np
import pytest

from conftest import ROOT, load_config, one_phase, tiny_scaling_config
from wscrl_jax import cli, experiment
from wscrl_jax.config_checks import ConfigError
from wscrl_jax.data import own_tfds
from wscrl_jax.data.export import export_arrays, write_arrays
from wscrl_jax.data.own_domains import make_domains_data
from wscrl_jax.data.own_pairs import make_pairs_data
from wscrl_jax.methods import validate_config
from wscrl_jax.tracking import read_csv

SCALING = os.path.join(ROOT, "configs", "scaling.py")
DIM_Z = 3


def pairs_dir(path, n=(80, 24, 24, 40)):
    """train, val, test, dci_train pair files with every optional array; true_log_prob only in
    test (the one array a split may hold alone)."""
    rng = np.random.default_rng(0)
    os.makedirs(path)
    for split, rows in zip(("train", "val", "test", "dci_train"), n):
        a = {"x1": rng.normal(size=(rows, 5)), "x2": rng.normal(size=(rows, 5)).astype(np.float32)}
        for k in ("z1", "z2", "e1", "e2"):
            a[k] = rng.normal(size=(rows, DIM_Z)).astype(np.float32)
        a["intervention_labels"] = rng.integers(0, DIM_Z + 1, rows)
        if split == "test":
            a["true_log_prob"] = rng.normal(size=rows).astype(np.float32)
        if split == "train":
            a["true_graph"] = np.triu(np.ones((DIM_Z, DIM_Z), np.int8), 1)
        np.savez(os.path.join(path, f"{split}.npz"), **a)
    return str(path)


def domains_file(path, n=150):
    rng = np.random.default_rng(1)
    np.savez(path, x=rng.normal(size=(n, 6)).astype(np.float32), domain=np.arange(n) % 3,
             z=rng.normal(size=(n, 4)), invariant=np.array([2, 0]))
    return str(path)


def build_script(*args):
    """scripts/build_dataset.py in this process: (exit code, stdout lines, stderr lines)."""
    argv = ["build_dataset.py", *map(str, args)]
    code = 0
    with mock.patch.object(sys, "argv", argv):
        try:
            runpy.run_path(os.path.join(ROOT, "scripts", "build_dataset.py"),
                           run_name="__main__")
        except SystemExit as e:
            code = e.code
    return code


def pairs_config(path, source):
    c = load_config("scaling", "ilcm,fast")
    c.data.dataset, c.data.path, c.data.dim_z, c.data.source = "pairs", path, DIM_Z, source
    c.training.batchsize = 16
    return c


def assert_same_data(a, b):
    assert sorted(a) == sorted(b)
    for split in a:
        assert sorted(a[split]) == sorted(b[split]), split
        for name in a[split]:
            x, y = np.asarray(a[split][name]), np.asarray(b[split][name])
            assert x.dtype == y.dtype and x.shape == y.shape, (split, name)
            np.testing.assert_array_equal(x, y, err_msg=f"{split}/{name}")


# ---------------------------------------------------------------- building and reading back
def test_pairs_build_reads_back_the_npz_routes_arrays(tmp_path, capsys):
    npz = pairs_dir(tmp_path / "npz")
    assert build_script("--format", "pairs", "--path", npz, "--dim_z", DIM_Z,
                        "--out", tmp_path / "tfds") == 0
    assert "ready in" in capsys.readouterr().out
    assert os.listdir(tmp_path / "tfds") == ["own_data"]  # no empty TFDS downloads folder
    built = own_tfds.dataset_dir(str(tmp_path / "tfds"), "pairs")
    info = json.load(open(os.path.join(built, "dataset_info.json")))
    counts = {s["name"]: sum(int(n) for n in s["shardLengths"]) for s in info["splits"]}
    assert counts == {"train": 80, "val": 24, "test": 24, "dci_train": 40}
    meta = json.load(open(os.path.join(built, own_tfds.META_FILE)))
    assert meta["true_graph"] == np.triu(np.ones((DIM_Z, DIM_Z)), 1).astype(int).tolist()
    assert "true_log_prob" in meta["splits"]["test"]["arrays"]
    assert "true_log_prob" not in meta["splits"]["train"]["arrays"]
    from_npz = make_pairs_data(pairs_config(npz, "npz").data, 0)
    tfds_cfg = pairs_config(str(tmp_path / "tfds"), "tfds")
    validate_config(tfds_cfg)
    assert_same_data(from_npz, make_pairs_data(tfds_cfg.data, 0))
    tfds_cfg.data.path = built  # the dataset's own directory works too
    assert_same_data(from_npz, make_pairs_data(tfds_cfg.data, 0))


def test_one_domains_file_is_built_with_its_split(tmp_path):
    path = domains_file(tmp_path / "all.npz")
    assert build_script("--format", "domains", "--path", path, "--split_seed", 7,
                        "--val_fraction", 0.2, "--out", tmp_path / "tfds") == 0
    c = load_config("md_mixing", "linear,minmax,fast")
    c.data.dataset, c.data.path, c.data.z_dim, c.data.split_seed = "domains", path, 4, 7
    c.data.val_fraction = 0.2
    c.training.batchsize = 16
    from_npz = make_domains_data(c.data, 7)
    assert [len(from_npz[s]["x"]) for s in ("train", "valid", "test")] == [105, 30, 15]
    c.data.source, c.data.path = "tfds", str(tmp_path / "tfds")
    c.sweep.data_seeds = ""
    validate_config(c)
    assert_same_data(from_npz, make_domains_data(c.data, 123))  # the split is the build's


# ---------------------------------------------------------------- bad input, failed writes
def _nan_in_val(path):
    a = dict(np.load(os.path.join(path, "val.npz")))
    a["x1"][2, 1] = np.nan
    np.savez(os.path.join(path, "val.npz"), **a)


@pytest.mark.parametrize("case", ["nan in a split", "latents not dim_z", "no such path",
                                  "domains of pairs", "no dim_z", "fractions"])
def test_bad_input_is_one_error_line_and_nothing_written(case, tmp_path, capsys):
    npz = pairs_dir(tmp_path / "npz")
    args = ["--format", "pairs", "--path", npz, "--dim_z", DIM_Z]
    named = {"nan in a split": "val.npz: array 'x1' holds 1 non-finite",
             "latents not dim_z": "'z1'", "no such path": "no such file",
             "domains of pairs": "no array 'x'", "no dim_z": "--dim_z",
             "fractions": "--test_fraction"}[case]
    if case == "nan in a split":
        _nan_in_val(npz)
    elif case == "latents not dim_z":
        args[-1] = 2
    elif case == "no such path":
        args[3] = str(tmp_path / "none.npz")
    elif case == "domains of pairs":
        args = ["--format", "domains", "--path", npz]
    elif case == "no dim_z":
        args = args[:4]
    else:
        args += ["--test_fraction", 1.5]
    capsys.readouterr()
    assert build_script(*args, "--out", tmp_path / "tfds") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and named in err[0], err
    assert not (tmp_path / "tfds").exists()


def test_a_failed_write_removes_what_was_written(tmp_path):
    npz = pairs_dir(tmp_path / "npz")
    os.makedirs(tmp_path / "tfds")
    with mock.patch.object(own_tfds.json, "dump", side_effect=OSError("disk full")):
        with pytest.raises(OSError):
            own_tfds.build("pairs", npz, str(tmp_path / "tfds"), DIM_Z)
    assert os.listdir(tmp_path / "tfds") == []  # the folder was there before: it stays, empty
    own_tfds.build("pairs", npz, str(tmp_path / "tfds"), DIM_Z)  # builds after the failure
    with pytest.raises(own_tfds.DataFileError, match="already built"):
        own_tfds.build("pairs", npz, str(tmp_path / "tfds"), DIM_Z)


# ---------------------------------------------------------------- config checks
def test_data_source_is_checked(tmp_path):
    npz = pairs_dir(tmp_path / "npz")
    own_tfds.build("pairs", npz, str(tmp_path / "tfds"), DIM_Z)
    cases = {
        "data.source='parquet' is not supported": pairs_config(npz, "parquet"),
        "built with --dim_z 3, but data.dim_z=2": pairs_config(str(tmp_path / "tfds"), "tfds"),
        "no pairs dataset built": pairs_config(npz, "tfds"),
        "reads own data only": load_config("scaling", "ilcm,fast"),
        "no domains dataset built by scripts/build_dataset.py": load_config(
            "md_mixing", "linear,fast"),
        "fixed, so there are no split seeds": pairs_config(str(tmp_path / "tfds"), "tfds"),
    }
    cases["built with --dim_z 3, but data.dim_z=2"].data.dim_z = 2
    cases["reads own data only"].data.source = "tfds"
    md = cases["no domains dataset built by scripts/build_dataset.py"]
    md.data.dataset, md.data.path, md.data.source = "domains", str(tmp_path / "tfds"), "tfds"
    cases["fixed, so there are no split seeds"].sweep.data_seeds = "1,2"
    for message, config in cases.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            validate_config(config)
    with pytest.raises(ConfigError, match="it holds pairs data"):
        validate_config(md)


# ---------------------------------------------------------------- same metrics
def test_a_run_on_the_built_dataset_gives_the_npz_routes_metrics(tmp_path):
    c = one_phase(tiny_scaling_config("ilcm", dim_z=2))
    c.training.epochs = 1
    c.data.samples.train = 320
    c.data.nature.seed = 7
    write_arrays(str(tmp_path / "data"), export_arrays(c, 7))
    c.data.dataset, c.data.path, c.data.split_seed = "pairs", str(tmp_path / "data"), 7
    validate_config(c)
    experiment.run(c, str(tmp_path / "npz_run"), progress=False)
    own_tfds.build("pairs", str(tmp_path / "data"), str(tmp_path / "tfds"), 2)
    c.data.source, c.data.path = "tfds", str(tmp_path / "tfds")
    validate_config(c)
    experiment.run(c, str(tmp_path / "tfds_run"), progress=False)
    npz_rows = read_csv(str(tmp_path / "npz_run/metrics/test_metrics.csv"))
    tfds_rows = read_csv(str(tmp_path / "tfds_run/metrics/test_metrics.csv"))
    assert "causal_disentanglement" in npz_rows[0] and "intervention_accuracy" in npz_rows[0]
    assert [list(r.items()) for r in npz_rows] == [list(r.items()) for r in tfds_rows]


def test_train_command_takes_data_source(tmp_path, capsys):
    """The CLI override spells the key as users do; an unknown value is one error line."""
    argv = ["wscrl-train", f"--workdir={tmp_path / 'w'}", f"--config={SCALING}:ilcm,fast",
            "--config.data.dataset=pairs", f"--config.data.path={tmp_path}",
            "--config.data.source=arrow"]
    with pytest.raises(SystemExit) as exit_info, mock.patch.object(sys, "argv", argv):
        cli.train_main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and "data.source='arrow'" in err[0], err
    assert not (tmp_path / "w").exists()

