"""Own data (`data.dataset=pairs` / `domains`, docs/own_data.md): bad files are one error line
before anything is written; exported built-in data train to the built-in run's metrics; runs
without ground truth leave the metrics that need it out and say so."""

import copy
import logging
import os
import sys
from unittest import mock

import numpy as np
import pytest

from conftest import ROOT, load_config, one_phase, tiny_scaling_config
from wscrl_jax import cli, experiment
from wscrl_jax.data.export import export_arrays, write_arrays
from wscrl_jax.data.own_domains import make_domains_data
from wscrl_jax.data.own_pairs import make_pairs_data
from wscrl_jax.methods import validate_config
from wscrl_jax.tracking import read_csv

SCALING = os.path.join(ROOT, "configs", "scaling.py")
MIXING = os.path.join(ROOT, "configs", "md_mixing.py")
DIM_Z = 3


# ---------------------------------------------------------------- small files
def pairs_arrays(n, rng, truth=True, dim_x=4):
    """n pairs (with z1, z2, labels where `truth`)."""
    a = {"x1": rng.normal(size=(n, dim_x)).astype(np.float32),
         "x2": rng.normal(size=(n, dim_x)).astype(np.float32)}
    if truth:
        a["z1"] = rng.normal(size=(n, DIM_Z)).astype(np.float32)
        a["z2"] = rng.normal(size=(n, DIM_Z)).astype(np.float32)
        a["intervention_labels"] = rng.integers(0, DIM_Z + 1, n).astype(np.int32)
    return a


def domain_arrays(n, rng, truth=True, domains=3):
    a = {"x": rng.normal(size=(n, 6)).astype(np.float32),
         "domain": (np.arange(n) % domains).astype(np.int32)}
    if truth:
        a["z"] = rng.normal(size=(n, 4)).astype(np.float32)
    return a


def write_dir(path, per_split):
    os.makedirs(path, exist_ok=True)
    for split, arrays in per_split.items():
        np.savez(os.path.join(path, f"{split}.npz"), **arrays)
    return str(path)


def pairs_dir(tmp_path, name="pairs", n=(96, 32, 32), edit=None, truth=True, dim_x=4):
    """A directory of pair splits; edit(split, arrays) may change them before writing."""
    rng = np.random.default_rng(0)
    per_split = {s: pairs_arrays(k, rng, truth, dim_x)
                 for s, k in zip(("train", "val", "test"), n)}
    if edit:
        for split, arrays in per_split.items():
            edit(split, arrays)
    return write_dir(tmp_path / name, per_split)


def domains_dir(tmp_path, name="domains", n=(96, 32, 32), edit=None, truth=True):
    rng = np.random.default_rng(1)
    per_split = {s: domain_arrays(k, rng, truth) for s, k in zip(("train", "val", "test"), n)}
    if truth:
        per_split["train"]["invariant"] = np.array([0, 2])
    if edit:
        for split, arrays in per_split.items():
            edit(split, arrays)
    return write_dir(tmp_path / name, per_split)


def pairs_flags(path, *more):
    return [f"--config={SCALING}:ilcm,fast", "--config.data.dataset=pairs",
            f"--config.data.path={path}", f"--config.data.dim_z={DIM_Z}",
            "--config.training.batchsize=16", *more]


def domains_flags(path, *more):
    return [f"--config={MIXING}:linear,minmax,fast", "--config.data.dataset=domains",
            f"--config.data.path={path}", "--config.data.z_dim=4",
            "--config.training.batchsize=16", *more]


# ---------------------------------------------------------------- bad files
def _set(split_name, key, value):
    """edit(): arrays[key] = value(arrays) in split `split_name` (None: delete the key)."""
    def edit(split, arrays):
        if split == split_name:
            if value is None:
                arrays.pop(key)
            else:
                arrays[key] = value(arrays)
    return edit


def _with_nan(a):
    a = a.copy()
    a[3, 1] = np.nan
    a[5, 0] = np.inf
    return a


def _images(arrays, size):
    """x1, x2 as uint8 images [N, size, size, 3]."""
    shape = (len(arrays["x1"]), size, size, 3)
    arrays.update(x1=np.zeros(shape, np.uint8), x2=np.zeros(shape, np.uint8))


def _truncate(path):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


def _not_npz(path):
    with open(path, "w") as f:
        f.write("x1,x2\n1,2\n")


BAD_PAIRS = {  # name: (edit of the splits, file named in the message, array or phrase named)
    "missing key": (_set("val", "x2", None), "val.npz", "'x2'"),
    "x1/x2 shape mismatch": (_set("train", "x2", lambda a: a["x2"][:, :3]), "train.npz",
                             "'x2'"),
    "NaN and inf with count": (_set("test", "x1", lambda a: _with_nan(a["x1"])), "test.npz",
                               "'x1' holds 2 non-finite value(s) (1 NaN, 1 inf)"),
    "string dtype": (_set("train", "x2", lambda a: a["x2"].astype(str)), "train.npz", "'x2'"),
    "labels outside 0..dim_z": (_set("val", "intervention_labels",
                                     lambda a: a["intervention_labels"] + DIM_Z), "val.npz",
                                "'intervention_labels'"),
    "z1 rows not matching x1": (_set("train", "z1", lambda a: a["z1"][:-5]), "train.npz",
                                "'z1'"),
    "z1 columns not dim_z": (_set("test", "z1", lambda a: a["z1"][:, :2]), "test.npz", "'z1'"),
    "split lacks an array": (_set("test", "z2", None), "test.npz", "'z2'"),
    "dim_x differs between splits": (_set("val", "x1", lambda a: a["x1"][:, :2]), "val.npz",
                                     "'x1'"),
    "images of mixed sizes": (lambda s, a: _images(a, 16 if s == "val" else 8), "val.npz",
                              "'x1' holds images of shape [16, 16, 3]"),
    "image pairs": (lambda s, a: _images(a, 8), "train.npz", "two-stage"),
    "bad true graph": (_set("train", "true_graph", lambda a: np.full((DIM_Z, DIM_Z), 2)),
                       "train.npz", "'true_graph'"),
}


@pytest.mark.parametrize("case", sorted(BAD_PAIRS))
def test_bad_pairs_file_is_one_error_line(case, tmp_path, capsys):
    edit, filename, named = BAD_PAIRS[case]
    path = pairs_dir(tmp_path, edit=edit)
    _assert_one_error_line(pairs_flags(path), tmp_path, capsys, filename, named)


def _bad_pairs_path(tmp_path, kind):
    """Bad cases that are not an edit of the arrays: (data.path, file, what is named)."""
    if kind == "missing split file":
        path = pairs_dir(tmp_path)
        os.remove(os.path.join(path, "val.npz"))
        return path, "pairs", "lacks val.npz"
    if kind == "truncated file":
        path = pairs_dir(tmp_path)
        _truncate(os.path.join(path, "test.npz"))
        return path, "test.npz", "not a readable .npz"
    if kind == "not an npz":
        path = pairs_dir(tmp_path)
        _not_npz(os.path.join(path, "train.npz"))
        return path, "train.npz", "not a readable .npz"
    if kind == "no such file":
        return str(tmp_path / "nothing.npz"), "nothing.npz", "no such file"
    if kind == "fewer rows than one batch":
        path = pairs_dir(tmp_path, n=(10, 8, 8))
        return path, "train.npz", "'x1' gives 10 training pairs, fewer than one batch"
    if kind == "object array":
        path = tmp_path / "one.npz"
        a = pairs_arrays(100, np.random.default_rng(0))
        a["z2"] = np.array([None] * 100, dtype=object)
        np.savez(path, **a)
        return str(path), "one.npz", "'z2'"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing split file", "truncated file", "not an npz",
                                  "no such file", "fewer rows than one batch", "object array"])
def test_bad_pairs_path_is_one_error_line(kind, tmp_path, capsys):
    path, filename, named = _bad_pairs_path(tmp_path, kind)
    _assert_one_error_line(pairs_flags(path), tmp_path, capsys, filename, named)


BAD_DOMAINS = {
    "single domain": (_set("train", "domain", lambda a: np.zeros(96, np.int32)), "train.npz",
                      "'domain' holds a single domain"),
    "domains not 0..D-1": (_set("train", "domain", lambda a: a["domain"] * 2), "train.npz",
                           "'domain' is not numbered 0..D-1"),
    "domain beyond the training ones": (_set("test", "domain", lambda a: a["domain"] + 1),
                                        "test.npz", "'domain' holds domain 3"),
    "invariant out of range": (_set("train", "invariant", lambda a: np.array([0, 4])),
                               "train.npz", "'invariant'"),
    "z without invariant": (_set("train", "invariant", None), "train.npz", "'invariant'"),
    "z rows not matching x": (_set("val", "z", lambda a: a["z"][:7]), "val.npz", "'z'"),
    "x with NaN": (_set("val", "x", lambda a: _with_nan(a["x"])), "val.npz",
                   "'x' holds 2 non-finite"),
}


@pytest.mark.parametrize("case", sorted(BAD_DOMAINS))
def test_bad_domains_file_is_one_error_line(case, tmp_path, capsys):
    edit, filename, named = BAD_DOMAINS[case]
    path = domains_dir(tmp_path, edit=edit)
    _assert_one_error_line(domains_flags(path), tmp_path, capsys, filename, named)


def _assert_one_error_line(flags, tmp_path, capsys, filename, named):
    """The train command on `flags` (in this process) exits 2 with one `error:` line naming
    `filename` and `named`, and writes no workdir."""
    workdir = tmp_path / "w"
    argv = ["wscrl-train", f"--workdir={workdir}"] + flags
    with pytest.raises(SystemExit) as exit_info, mock.patch.object(sys, "argv", argv):
        cli.train_main(argv)  # config_flags finds the --config.KEY overrides in sys.argv
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith("error:"), err
    assert filename in err[0] and named in err[0], err[0]
    assert not workdir.exists()  # nothing written


def test_directory_refuses_a_split_seed_sweep(tmp_path, capsys):
    path = pairs_dir(tmp_path)
    _assert_one_error_line(pairs_flags(path, "--config.sweep.data_seeds=1,2"), tmp_path,
                           capsys, "pairs", "sweep.data_seeds")


# ---------------------------------------------------------------- one file, split seeds
def test_one_file_is_split_by_the_split_seed(tmp_path):
    rng = np.random.default_rng(2)
    a = pairs_arrays(200, rng)
    a["x1"][:, 0] = np.arange(200)  # row ids
    np.savez(tmp_path / "all.npz", **a)
    c = load_config("scaling", "ilcm,fast")
    c.data.dataset, c.data.path, c.data.dim_z = "pairs", str(tmp_path / "all.npz"), DIM_Z
    c.data.val_fraction, c.data.test_fraction = 0.1, 0.2
    c.sweep.data_seeds = "3,4"
    validate_config(c)  # split seeds of one file may be swept
    ids = {seed: {s: np.asarray(d["x1"][:, 0]).astype(int)
                  for s, d in make_pairs_data(c.data, seed).items() if s != "truth"}
           for seed in (3, 4)}
    for seed in (3, 4):
        rows = ids[seed]
        assert [len(rows[s]) for s in ("train", "val", "test")] == [140, 20, 40]
        assert sorted(np.concatenate([rows[s] for s in ("train", "val", "test")])) == list(
            range(200))
        np.testing.assert_array_equal(rows["dci_train"], rows["train"])
    assert set(ids[3]["test"]) != set(ids[4]["test"])
    again = make_pairs_data(c.data, 3)["test"]["x1"][:, 0]
    np.testing.assert_array_equal(np.asarray(again).astype(int), ids[3]["test"])


def test_domains_put_the_invariant_latents_first(tmp_path):
    path = domains_dir(tmp_path, edit=_set("train", "invariant", lambda a: np.array([3, 1])))
    c = load_config("md_mixing", "linear,fast")
    c.data.dataset, c.data.path = "domains", path
    data = make_domains_data(c.data, 0)
    raw = np.load(os.path.join(path, "val.npz"))["z"]
    np.testing.assert_array_equal(np.asarray(data["valid"]["z"]), raw[:, [3, 1, 0, 2]])
    assert data["valid"]["domain"].dtype == np.int32


def test_one_domains_file_is_split_and_checked(tmp_path):
    rng = np.random.default_rng(3)
    a = domain_arrays(120, rng, domains=4)
    a["invariant"] = np.array([1])
    a["x"][:, 0] = np.arange(120)  # row ids
    np.savez(tmp_path / "all.npz", **a)
    c = load_config("md_mixing", "linear,minmax,fast")
    c.data.dataset, c.data.path, c.data.z_dim = "domains", str(tmp_path / "all.npz"), 4
    c.training.batchsize = 32
    validate_config(c)  # sweep.data_seeds="same": each member's split seed is its model seed
    data = make_domains_data(c.data, 5)
    ids = [np.asarray(data[s]["x"][:, 0]).astype(int) for s in ("train", "valid", "test")]
    assert [len(i) for i in ids] == [96, 12, 12]
    assert sorted(np.concatenate(ids)) == list(range(120))
    np.testing.assert_array_equal(np.asarray(data["test"]["z"]),
                                  a["z"][ids[2]][:, [1, 0, 2, 3]])


# ---------------------------------------------------------------- exported = built-in
def _rows_equal(a, b):
    assert [list(r) for r in a] == [list(r) for r in b]  # same columns in the same order
    for ra, rb in zip(a, b):
        for k in ra:
            assert str(ra[k]) == str(rb[k]), (k, ra[k], rb[k])


def test_exported_pairs_train_like_the_builtin_data(tmp_path):
    c = one_phase(tiny_scaling_config("ilcm", dim_z=2))
    c.training.epochs = 1
    c.data.samples.train = 320
    c.data.nature.seed = 7
    builtin = experiment.run(c, str(tmp_path / "builtin"), progress=False)
    write_arrays(str(tmp_path / "data"), export_arrays(c, 7))
    own = copy.deepcopy(c)
    own.data.dataset, own.data.path = "pairs", str(tmp_path / "data")
    own.data.split_seed = 7  # the data seed column
    validate_config(own)
    exported = experiment.run(own, str(tmp_path / "exported"), progress=False)
    assert "causal_disentanglement" in builtin[0]
    _rows_equal(read_csv(str(tmp_path / "builtin/metrics/test_metrics.csv")),
                read_csv(str(tmp_path / "exported/metrics/test_metrics.csv")))
    assert len(exported) == len(builtin)


def test_exported_domains_train_like_the_builtin_data(tmp_path):
    c = load_config("md_mixing", "linear,minmax,fast")
    c.data.num_samples.train, c.data.num_samples.valid, c.data.num_samples.test = 600, 100, 100
    c.training.batchsize, c.training.epochs = 100, 2
    c.sweep.seeds, c.sweep.data_seeds = "5,6", "11"
    experiment.run(c, str(tmp_path / "builtin"), progress=False)
    write_arrays(str(tmp_path / "data"), export_arrays(c, 11))
    c.data.dataset, c.data.path = "domains", str(tmp_path / "data")
    c.sweep.data_seeds, c.data.split_seed = "", 11
    validate_config(c)
    experiment.run(c, str(tmp_path / "exported"), progress=False)
    builtin = read_csv(str(tmp_path / "builtin/metrics/test_metrics.csv"))
    assert "hz_z_~r2" in builtin[0] and len(builtin) == 2
    _rows_equal(builtin, read_csv(str(tmp_path / "exported/metrics/test_metrics.csv")))


# ---------------------------------------------------------------- without ground truth
def test_pairs_without_ground_truth_report_what_they_can(tmp_path, caplog):
    # the shapes of the exported test's run: its compiled training step is reused
    path = pairs_dir(tmp_path, n=(320, 256, 256), truth=False, dim_x=2)
    c = one_phase(tiny_scaling_config("ilcm", dim_z=2))
    c.training.epochs = 1
    c.eval.graphs = True  # the post-hoc graphs need no truth
    c.data.dataset, c.data.path = "pairs", path
    validate_config(c)
    with caplog.at_level(logging.INFO, logger="wscrl_jax"):
        rows = experiment.run(c, str(tmp_path / "w"), progress=False)
    row = rows[0]
    assert not any(k.startswith(("causal_", "intervention_")) or k.endswith("_shd")
                   or k.startswith(("true_graph", "graph_matching")) for k in row), list(row)
    assert {"loss", "nll", "enco_graph_0_1", "implicit_graph_0_1"} <= set(row)
    assert np.isfinite(row["nll"])
    skipped = [r.message for r in caplog.records if "Metrics skipped" in r.message]
    assert len(skipped) == 1 and "z1" in skipped[0] and "intervention_labels" in skipped[0]
    assert "true_graph" in skipped[0]
    header = open(tmp_path / "w/metrics/test_metrics.csv").readline()
    assert "causal" not in header  # absent columns, not NaN ones


def test_domains_without_ground_truth_report_what_they_can(tmp_path, caplog):
    path = domains_dir(tmp_path, n=(200, 40, 40), truth=False)
    c = load_config("md_mixing", "linear,minmax,fast")
    c.data.dataset, c.data.path, c.data.z_dim = "domains", path, 4
    c.training.batchsize, c.training.epochs = 50, 2
    validate_config(c)
    with caplog.at_level(logging.INFO, logger="wscrl_jax"):
        rows = experiment.run(c, str(tmp_path / "w"), progress=False)
    row = rows[0]
    assert not any("r2" in k for k in row), list(row)
    assert {"val_loss", "z_norm", "domain_acc", "heldout_domain_acc"} <= set(row)
    assert list(row)[3] == "val_loss"  # the headline metric first
    skipped = [r.message for r in caplog.records if "Metrics skipped" in r.message]
    assert len(skipped) == 1 and "z" in skipped[0]
