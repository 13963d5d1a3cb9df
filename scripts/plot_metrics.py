"""One metric of every member of several runs, side by side (a dot per member, a bar at the
median), from each workdir's metrics/test_metrics.csv.

    python scripts/plot_metrics.py --metric hz_z_~r2 --out r2.png \\
        minmax=runs/minmax none=runs/none mmd=runs/mmd

Each positional argument is WORKDIR or LABEL=WORKDIR.
"""

import os

from wscrl_jax.cli import fail
from wscrl_jax.plots import run_argument
from wscrl_jax.run_guard import ArgumentParser, output_folder_exists
from wscrl_jax.tracking import read_csv


def load(runs, metric):
    """[(label, [value per member])]; exits with one line when a file or column is missing."""
    out = []
    for run in runs:
        label, workdir = run_argument(run)
        path = os.path.join(workdir, "metrics", "test_metrics.csv")
        if not os.path.isfile(path):
            fail(f"{path} does not exist; pass workdirs of finished runs")
        rows = read_csv(path)
        if not rows or metric not in rows[0]:
            fail(f"{path} has no column {metric!r}")
        out.append((label or os.path.basename(os.path.normpath(workdir)),
                    [float(r[metric]) for r in rows]))
    return out


def plot(series, metric, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(series), 3.2))
    for i, (_, values) in enumerate(series):
        ax.bar(i, np.nanmedian(values), width=0.6, color="C0", alpha=0.3)
        ax.plot(np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values, "o",
                color="C0", ms=4)
    ax.set_xticks(range(len(series)), [label for label, _ in series])
    ax.set_ylabel(metric)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="WORKDIR or LABEL=WORKDIR")
    p.add_argument("--metric", default="hz_z_~r2")
    p.add_argument("--out", required=True, help="PNG path")
    args = p.parse_args()
    output_folder_exists(args.out)
    series = load(args.runs, args.metric)
    try:
        plot(series, args.metric, args.out)
    except OSError as e:
        fail(f"cannot write {args.out}: {e.strerror or e}", 1)
    for label, values in series:
        print(f"{label}: " + ", ".join(f"{v:.4f}" for v in values))


if __name__ == "__main__":
    main()
