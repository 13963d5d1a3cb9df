"""A two-key sweep grid as a heat map and a markdown table: the median of one metric over the
members of each cell, one panel per run (e.g. one run per penalty).

    python scripts/plot_grid.py --metric hz_z_~r2 --out grid.png \\
        min-max=runs/md_grid_minmax none=runs/md_grid_none

Each positional argument is WORKDIR or LABEL=WORKDIR, the workdir of a `sweep.grid` run over two
keys (its metrics/test_metrics.csv has a column per grid key); rows of the map are the first key,
columns the second. The table (cells: median, and the members' range in brackets) goes to stdout.
"""

import math
import os
import statistics

from wscrl_jax.cli import fail
from wscrl_jax.plots import grid_heatmap, run_argument
from wscrl_jax.run_guard import ArgumentParser, output_folder_exists
from wscrl_jax.tracking import read_csv


def _value(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _number(text):
    """A grid value as written: an int, a float, or the text itself (a string-valued key)."""
    value = _value(text)
    if not math.isfinite(value):
        return text
    return int(value) if value == int(value) else value


def _ordered(values):
    """Numbers in numeric order; any string among them: all in text order."""
    return sorted(values, key=str) if any(isinstance(v, str) for v in values) else sorted(values)


def grid_cells(workdir, metric):
    """(row key, row values, column key, column values, {(row, column): [member values]}) of a
    finished two-key grid run; one error line when it is not one."""
    path = os.path.join(workdir, "metrics", "test_metrics.csv")
    if not os.path.isfile(path):
        fail(f"{workdir} has no metrics/test_metrics.csv; pass the workdir of a finished "
             "sweep.grid run")
    rows = read_csv(path)
    keys = [k for k in (rows[0] if rows else {}) if "." in k]
    if len(keys) != 2:
        fail(f"{path} has {len(keys)} grid key column(s) ({', '.join(keys) or 'none'}); a heat "
             "map needs a grid over two keys")
    if metric not in rows[0]:
        fail(f"{path} has no column {metric!r}")
    row_key, col_key = keys
    cells = {}
    for r in rows:
        cells.setdefault((_number(r[row_key]), _number(r[col_key])), []).append(_value(r[metric]))
    row_values = _ordered({a for a, _ in cells})
    col_values = _ordered({b for _, b in cells})
    return row_key, row_values, col_key, col_values, cells


def median_of(values):
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def markdown(title, metric, grid):
    """One table: a row per first-key value, a column per second-key value."""
    row_key, rows, col_key, cols, cells = grid
    lines = [f"{title}: median {metric} (range over members)", "",
             f"| {row_key} \\\\ {col_key} | " + " | ".join(str(c) for c in cols) + " |",
             "| --- " * (len(cols) + 1) + "|"]
    for a in rows:
        parts = []
        for b in cols:
            values = [v for v in cells.get((a, b), []) if math.isfinite(v)]
            parts.append(f"{median_of(values):.3f} ({min(values):.2f}-{max(values):.2f})"
                         if values else "-")
        lines.append(f"| {a} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def main():
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="WORKDIR or LABEL=WORKDIR")
    p.add_argument("--metric", default="hz_z_~r2")
    p.add_argument("--out", required=True, help="PNG path")
    args = p.parse_args()
    output_folder_exists(args.out)
    panels, tables = {}, []
    for run in args.runs:
        label, workdir = run_argument(run)
        grid = grid_cells(workdir, args.metric)
        row_key, rows, col_key, cols, cells = grid
        title = label or os.path.basename(os.path.normpath(workdir))
        panels[title] = (row_key, rows, col_key, cols,
                         [[median_of(cells.get((a, b), [])) for b in cols] for a in rows])
        tables.append(markdown(title, args.metric, grid))
    try:
        grid_heatmap(args.out, panels, args.metric)
    except OSError as e:
        fail(f"cannot write {args.out}: {e.strerror or e}", 1)
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
