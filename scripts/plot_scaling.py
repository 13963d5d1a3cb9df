"""The paper's graph-scaling figure: causal disentanglement against dim_z, one point per member,
from the workdirs of finished WS-CRL runs (one run per method and dim_z, or `sweep.grid` runs
over data.dim_z).

    python scripts/plot_scaling.py --out scaling.png runs/ilcm3 runs/ilcm4 runs/dvae3 \\
        runs/dvae4 "beta-VAE=runs/betavae3"

Each positional argument is WORKDIR or LABEL=WORKDIR; the label defaults to the run's method
(ILCM, ILCM rq_spline, dVAE, beta-VAE, from its config.json) and dim_z comes from config.json
(or, for a `sweep.grid` run over it, from the `data.dim_z` column of its metrics). `--metric` takes one metric or several,
comma-separated, one panel each (e.g. `causal_disentanglement,enco_shd,implicit_shd`); a run
without a metric (a method without graphs) is left out of that panel.
"""

import glob
import json
import os

from wscrl_jax.cli import fail
from wscrl_jax.plots import run_argument, scaling_figure
from wscrl_jax.run_guard import ArgumentParser, output_folder_exists
from wscrl_jax.tracking import read_csv


def method_label(config: dict) -> str:
    model = config.get("model", {})
    if model.get("type") == "causal_vae":
        return "beta-VAE"
    if model.get("scm", {}).get("adjacency_matrix") == "none_trivial":
        return "dVAE"
    return "ILCM" + (" rq_spline" if model.get("scm", {}).get("transform") == "rq_spline" else "")


def run_config(workdir):
    """The run's config.json; for a `sweep.grid` run, that of its first grid point (the grid's
    workdir holds one folder per point and no config of its own). None where there is none."""
    path = os.path.join(workdir, "config.json")
    if os.path.isfile(path):
        return path
    points = sorted(glob.glob(os.path.join(workdir, "*", "config.json")))
    return points[0] if points else None


def load(runs, metric):
    """{label: [(dim_z, value per member)]}; one error line when a workdir is not a finished
    WS-CRL run."""
    points = {}
    for run in runs:
        label, workdir = run_argument(run)
        metrics = os.path.join(workdir, "metrics", "test_metrics.csv")
        config_path = run_config(workdir)
        if not (os.path.isfile(metrics) and config_path):
            fail(f"{workdir} has no metrics/test_metrics.csv and config.json; pass workdirs of "
                 "finished runs")
        try:
            config = json.load(open(config_path))
        except ValueError as error:
            fail(f"{config_path} is not valid JSON ({error})")
        rows = read_csv(metrics)
        if not rows:
            fail(f"{metrics} has no rows")
        config_dim = config.get("data", {}).get("dim_z")
        column = next((c for c in ("data.dim_z", "dim_z") if c in rows[0]), None)
        if column is None and config_dim is None:
            fail(f"{workdir} has no data.dim_z in config.json (is it a WS-CRL run?)")
        for row in rows:
            dim_z = int(float(row[column] if column else config_dim))
            value = float(row[metric]) if row.get(metric) not in ("", None) else float("nan")
            points.setdefault(label or method_label(config), []).append((dim_z, value))
    if all(v != v for pairs in points.values() for _, v in pairs):
        fail(f"no run has a value of {metric!r} (is it a test_metrics.csv column of these "
             "WS-CRL runs?)")
    return points


def main():
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="WORKDIR or LABEL=WORKDIR")
    p.add_argument("--metric", default="causal_disentanglement",
                   help="a test_metrics.csv column, or several comma-separated (one panel each)")
    p.add_argument("--out", required=True, help="PNG path")
    args = p.parse_args()
    output_folder_exists(args.out)
    panels = {metric: load(args.runs, metric) for metric in args.metric.split(",") if metric}
    try:
        scaling_figure(args.out, panels)
    except OSError as e:
        fail(f"cannot write {args.out}: {e.strerror or e}", 1)
    for metric, points in panels.items():
        prefix = f"{metric} " if len(panels) > 1 else ""
        for label, pairs in points.items():
            print(f"{prefix}{label}: " + ", ".join(f"d={d} {v:.3f}" for d, v in sorted(pairs)))


if __name__ == "__main__":
    main()
