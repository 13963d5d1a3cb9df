"""Figures per run (wscrl_jax/plots.py): files written from metric rows, matrices read right,
and a plotting failure never raises."""

import logging
import os

import pytest

from wscrl_jax import plots

pytest.importorskip("matplotlib")


def _rows():
    train = [{"step": str(s), "epoch": "0", "member": str(m), "loss": str(100.0 / s + m)}
             for m in range(2) for s in (10, 20, 30)]
    test = [{"seed": 1, "data_seed": 2 + m, "status": "ok", "causal_disentanglement": 0.9,
             **{f"causal_importance_matrix_{i}_{j}": float(i == j) + 0.1 * m
                for i in range(3) for j in range(2)},
             **{f"noise_importance_matrix_{i}_{j}": 0.5 for i in range(3) for j in range(2)}}
            for m in range(2)]
    return train, test


def test_importance_matrices_are_read_per_member_from_the_causal_columns():
    _, test = _rows()
    prefix, matrices = plots.importance_matrices(test)
    assert prefix == "causal_" and len(matrices) == 2
    assert matrices[1] == [[1.1, 0.1], [0.1, 1.1], [0.1, 0.1]]  # [d_model = 3][d_true = 2]
    assert plots.importance_matrices([{"hz_z_~r2": 0.9}]) is None  # MD-CRL rows: no matrix


def test_run_figures_are_png_files(tmp_path):
    train, test = _rows()
    written = plots.write_run_figures(str(tmp_path), train, test)
    assert sorted(os.path.basename(p) for p in written) == ["dci_importance.png",
                                                           "training_curves.png"]
    for path in written:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 5000


def test_a_plotting_failure_is_logged_not_raised(tmp_path, caplog):
    train, test = _rows()
    del train[0]["member"]  # a malformed row
    with caplog.at_level(logging.WARNING, logger="wscrl_jax"):
        written = plots.write_run_figures(str(tmp_path), train, test)
    assert [os.path.basename(p) for p in written] == ["dci_importance.png"]  # the other one
    assert "Figure training_curves.png not written (KeyError" in caplog.text


def test_scaling_figure_and_its_script(tmp_path):
    import json
    import subprocess
    import sys
    from wscrl_jax.tracking import write_csv_atomic
    runs = []
    for name, model, dim_z in (("ilcm3", {"type": "intervention_noise_vae",
                                          "scm": {"adjacency_matrix": "none"}}, 3),
                               ("dvae4", {"type": "intervention_noise_vae",
                                          "scm": {"adjacency_matrix": "none_trivial"}}, 4)):
        workdir = tmp_path / name
        os.makedirs(workdir / "metrics")
        json.dump({"data": {"dim_z": dim_z}, "model": model}, open(workdir / "config.json", "w"))
        write_csv_atomic(str(workdir / "metrics" / "test_metrics.csv"),
                         [{"seed": s, "causal_disentanglement": 0.5 + 0.1 * s,
                           "enco_shd": s if name == "ilcm3" else ""} for s in range(3)])
        runs.append(str(workdir))
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "plot_scaling.py")
    out = tmp_path / "scaling.png"
    done = subprocess.run([sys.executable, script, "--out", str(out), *runs],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ILCM: d=3 0.500, d=3 0.600, d=3 0.700" in done.stdout and "dVAE: d=4" in done.stdout
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    two = subprocess.run([sys.executable, script, "--out", str(out), "--metric",
                          "causal_disentanglement,enco_shd", *runs], capture_output=True,
                         text=True)
    assert two.returncode == 0, two.stderr
    assert "enco_shd ILCM: d=3 0.000, d=3 1.000, d=3 2.000" in two.stdout
    assert "enco_shd dVAE: d=4 nan" in two.stdout  # no graph: left out of the panel
    absent = subprocess.run([sys.executable, script, "--out", str(out), "--metric",
                             "implicit_shd", *runs], capture_output=True, text=True)
    assert absent.returncode == 2 and "no run has a value of 'implicit_shd'" in absent.stderr
    missing = subprocess.run([sys.executable, script, "--out", str(out), str(tmp_path / "no")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "has no metrics/test_metrics.csv" in missing.stderr


def test_image_grid_draws_one_row_per_label(tmp_path):
    import numpy as np
    images = np.linspace(-1.0, 1.0, 5 * 8 * 8 * 3).reshape(5, 8, 8, 3)
    path = str(tmp_path / "grid.png")
    plots.image_grid(path, images, np.array([0, 1, 0, 2, 1]), per_label=2, title="t")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_grid_heatmap_script_draws_the_median_of_each_cell(tmp_path):
    import subprocess
    import sys
    from wscrl_jax.tracking import write_csv_atomic
    workdir = tmp_path / "grid"
    os.makedirs(workdir / "metrics")
    rows = [{"data.z_dim": z, "data.num_domains": k, "seed": s, "hz_z_~r2": 0.1 * k + 0.01 * s}
            for z in (8, 16) for k in (2, 4) for s in range(3)]
    rows[0]["hz_z_~r2"] = "nan"  # a member without a value is left out of its cell
    write_csv_atomic(str(workdir / "metrics" / "test_metrics.csv"), rows)
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "plot_grid.py")
    out = tmp_path / "grid.png"
    done = subprocess.run([sys.executable, script, "--out", str(out), f"min-max={workdir}"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| data.z_dim \\\\ data.num_domains | 2 | 4 |" in done.stdout
    assert "| 8 | 0.215 (0.21-0.22) | 0.410 (0.40-0.42) |" in done.stdout
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    named = tmp_path / "named"  # a string-valued grid key
    os.makedirs(named / "metrics")
    write_csv_atomic(str(named / "metrics" / "test_metrics.csv"),
                     [{"data.mixing": m, "data.num_domains": 2, "hz_z_~r2": 0.5}
                      for m in ("so_n", "flow")])
    done = subprocess.run([sys.executable, script, "--out", str(out), str(named)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| flow | 0.500 (0.50-0.50) |" in done.stdout
    one_key = tmp_path / "one"
    os.makedirs(one_key / "metrics")
    write_csv_atomic(str(one_key / "metrics" / "test_metrics.csv"),
                     [{"data.z_dim": 8, "hz_z_~r2": 0.5}])
    bad = subprocess.run([sys.executable, script, "--out", str(out), str(one_key)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "a heat map needs a grid over two keys" in bad.stderr


def test_scaling_script_reads_a_grid_run_and_its_points(tmp_path):
    """A `sweep.grid` run over data.dim_z: the grid's workdir (no config.json of its own, a
    `data.dim_z` column) and a grid point's folder (an '=' in its path) both plot."""
    import json
    import subprocess
    import sys
    from wscrl_jax.tracking import write_csv_atomic
    grid = tmp_path / "scaling_ilcm"
    for dim_z in (2, 3):
        point = grid / f"dim_z={dim_z}"
        os.makedirs(point / "metrics")
        json.dump({"data": {"dim_z": dim_z}, "model": {"type": "intervention_noise_vae",
                                                      "scm": {"adjacency_matrix": "none"}}},
                  open(point / "config.json", "w"))
        write_csv_atomic(str(point / "metrics" / "test_metrics.csv"),
                         [{"seed": 1, "causal_disentanglement": 0.9}])
    os.makedirs(grid / "metrics")
    write_csv_atomic(str(grid / "metrics" / "test_metrics.csv"),
                     [{"data.dim_z": d, "seed": 1, "causal_disentanglement": v}
                      for d, v in ((2, 0.99), (3, 0.97))])
    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "plot_scaling.py")
    out = tmp_path / "s.png"
    done = subprocess.run([sys.executable, script, "--out", str(out), str(grid),
                           f"two={grid / 'dim_z=2'}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ILCM: d=2 0.990, d=3 0.970" in done.stdout and "two: d=2 0.900" in done.stdout
