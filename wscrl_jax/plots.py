"""Figures of a run, written to WORKDIR/figures/ as PNG after its evaluation.

* `training_curves.png`: every column of metrics/train_metrics.csv (the loss, and any other
  logged term) against the step, one line per member;
* `dci_importance.png` (WS-CRL): the DCI importance matrix of every member, one panel each
  (rows: model codes, columns: true factors; the causal codes' matrix where both exist);
* `graphs.png` (ILCM, dVAE): per member (one row each) the true adjacency, then every learned
  graph (the one trained with, ENCO, the implicit graph's effect strengths) carried to the
  true factors by the DCI matching, with its SHD; edges i -> j at row i, column j;
* `invariant_scatter.png` (MD-CRL, drawn by its method after training): `invariant_scatter`.

Only matplotlib's object-oriented API is used (no pyplot, no backend switch), so writing figures
never touches a user's interactive session.
"""

import importlib.util
import logging
import math
import os
import re
import statistics
from typing import Dict, List, Sequence

log = logging.getLogger("wscrl_jax")

_IMPORTANCE = re.compile(r"^(.*)importance_matrix_(\d+)_(\d+)$")


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str):
    """PNG written under a temporary name, then renamed: never a half-written figure."""
    temporary = path + ".tmp.png"
    try:
        fig.savefig(temporary, dpi=110)
        os.replace(temporary, path)
    except BaseException:  # a full disk or a signal: no temporary left behind
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def training_curves(path: str, train_rows: Sequence[Dict[str, str]]) -> bool:
    """train_rows: rows of train_metrics.csv (step, epoch, member, metric columns...)."""
    if not train_rows:
        return False
    metrics = [k for k in train_rows[0] if k not in ("step", "epoch", "member", "")]
    members = sorted({int(r["member"]) for r in train_rows})
    fig = _figure(4.2 * len(metrics), 3.2)
    for i, name in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for m in members:
            rows = [r for r in train_rows if int(r["member"]) == m]
            ax.plot([int(r["step"]) for r in rows], [_float(r[name]) for r in rows],
                    lw=1, label=f"member {m}")
        ax.set_xlabel("step")
        ax.set_title(name)
        values = sorted(abs(_float(r[name])) for r in train_rows if math.isfinite(_float(r[name])))
        if values and values[-1] > 20 * max(values[len(values) // 2], 1e-12):
            ax.set_yscale("symlog", linthresh=max(values[len(values) // 2], 1e-12))  # early
            # losses dwarf the rest of the curve on a linear axis
        if name == "loss" and len(members) <= 10:
            ax.legend(fontsize=6)
    fig.tight_layout()
    _save(fig, path)
    return True


def importance_matrices(rows: Sequence[Dict[str, object]]):
    """Per member, (prefix, matrix [d_model][d_true]) of the first `*importance_matrix_i_j`
    columns (the causal codes' for WS-CRL), or None when the rows have none."""
    prefixes = [m.group(1) for m in map(_IMPORTANCE.match, rows[0]) if m] if rows else []
    if not prefixes:
        return None
    prefix = "causal_" if "causal_" in prefixes else prefixes[0]
    cells = [(int(m.group(2)), int(m.group(3)), k) for k in rows[0]
             for m in [_IMPORTANCE.match(k)] if m and m.group(1) == prefix]
    d_model, d_true = max(c[0] for c in cells) + 1, max(c[1] for c in cells) + 1
    out = []
    for row in rows:
        matrix = [[math.nan] * d_true for _ in range(d_model)]
        for i, j, key in cells:
            matrix[i][j] = _float(row[key])
        out.append(matrix)
    return prefix, out


def dci_importance(path: str, rows: Sequence[Dict[str, object]]) -> bool:
    found = importance_matrices(rows)
    if found is None:
        return False
    prefix, matrices = found
    columns = min(len(matrices), 5)
    lines = math.ceil(len(matrices) / columns)
    fig = _figure(2.6 * columns, 2.5 * lines)
    for index, (row, matrix) in enumerate(zip(rows, matrices)):
        ax = fig.add_subplot(lines, columns, index + 1)
        ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="Blues")
        for i, values in enumerate(matrix):
            for j, v in enumerate(values):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if v > 0.6 else "black")
        ax.set_title(f"member {index} (seed {row.get('seed')}, data {row.get('data_seed')})\n"
                     f"D = {_float(row.get(prefix + 'disentanglement')):.2f}", fontsize=7)
        ax.set_xlabel("true factor", fontsize=7)
        ax.set_ylabel("code" if prefix == "code_" else f"{prefix.replace('_', ' ')}code",
                      fontsize=7)
        ax.set_xticks(range(len(matrix[0])))
        ax.set_yticks(range(len(matrix)))
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    _save(fig, path)
    return True


def _matrix(row: Dict[str, object], prefix: str, dim: int):
    return [[_float(row.get(f"{prefix}_{i}_{j}")) for j in range(dim)] for i in range(dim)]


def graphs(path: str, rows: Sequence[Dict[str, object]]) -> bool:
    """True vs learned adjacency matrices, one row of panels per member (see the module
    docstring); False when the rows carry no graphs."""
    if not rows or "true_graph_0_0" not in rows[0]:
        return False
    dim = sum(1 for k in rows[0] if k.startswith("graph_matching_"))
    learned = [name for name in ("learned", "enco", "implicit")
               if f"{name}_graph_0_0" in rows[0]]
    fig = _figure(2.3 * (1 + len(learned)), 2.3 * len(rows))
    for r, row in enumerate(rows):
        matching = [int(_float(row[f"graph_matching_{k}"])) for k in range(dim)]
        panels = [("true graph", _matrix(row, "true_graph", dim), 1.0)]
        for name in learned:
            codes = _matrix(row, f"{name}_graph", dim)
            matched = [[0.0] * dim for _ in range(dim)]
            for k in range(dim):
                for m in range(dim):
                    matched[matching[k]][matching[m]] = codes[k][m]
            scale = max(1.0, max(max(line) for line in matched))
            panels.append((f"{name} (SHD {row.get(f'{name}_shd')})", matched, scale))
        for c, (title, matrix, vmax) in enumerate(panels):
            ax = fig.add_subplot(len(rows), len(panels), r * len(panels) + c + 1)
            ax.imshow(matrix, vmin=0.0, vmax=vmax, cmap="Greens")
            for i in range(dim):
                for j in range(dim):
                    if i != j:
                        ax.text(j, i, f"{matrix[i][j]:.2g}", ha="center", va="center",
                                fontsize=6, color="white" if matrix[i][j] > 0.6 * vmax
                                else "black")
            member = f"member {r} (seed {row.get('seed')}, data {row.get('data_seed')})\n"
            ax.set_title((member if c == 0 else "\n") + title, fontsize=7)
            ax.set_xlabel("to (true factor)", fontsize=6)
            ax.set_ylabel("from", fontsize=6)
            ax.set_xticks(range(dim))
            ax.set_yticks(range(dim))
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    _save(fig, path)
    return True


def image_grid(path: str, images, labels, per_label: int = 6, title: str = "",
               row_names=None):
    """The first `per_label` images of each label (e.g. MD-CRL balls per domain), one row a
    label. images [n, H, W, 3] in [-1, 1] (or uint8); labels [n] ints; row_names: a name per
    row (default: the label)."""
    import numpy as np
    images, labels = np.asarray(images), np.asarray(labels)
    if images.dtype != np.uint8:
        images = np.clip((images + 1.0) / 2.0, 0.0, 1.0)
    rows = sorted(set(labels.tolist()))
    fig = _figure(1.0 * per_label, 1.05 * len(rows) + 0.3)
    for r, label in enumerate(rows):
        chosen = np.flatnonzero(labels == label)[:per_label]
        for c, index in enumerate(chosen):
            ax = fig.add_subplot(len(rows), per_label, r * per_label + c + 1)
            ax.imshow(images[index], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(str(label) if row_names is None else row_names[r], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def run_argument(text: str):
    """(label, workdir) of a plotting script's `WORKDIR` or `LABEL=WORKDIR` argument; an existing
    folder is a workdir whole, even with an '=' in its path (a grid point's `dim_z=4`)."""
    if os.path.isdir(text):
        return "", text
    label, _, workdir = text.partition("=")
    return (label, workdir) if workdir else ("", text)


def scaling_figure(path: str, panels: Dict[str, Dict[str, List[tuple]]]):
    """The paper's graph-scaling figure: one panel per metric, the metric against dim_z, one
    marker per member and a line through the medians, one colour per label.
    panels: {metric: {label: [(dim_z, value), ...]}} (NaN values are left out). A metric whose
    values lie in [0, 1] gets the axis 0-1; others (e.g. an SHD) start at 0."""
    fig = _figure(4.2 * len(panels), 3.4)
    labels = list(dict.fromkeys(label for points in panels.values() for label in points))
    for column, (metric, points) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), column + 1)
        points = {label: [(d, v) for d, v in pairs if v == v] for label, pairs in points.items()}
        points = {label: pairs for label, pairs in points.items() if pairs}
        all_dims = sorted({d for pairs in points.values() for d, _ in pairs})
        for index, (label, pairs) in enumerate(points.items()):
            color = f"C{labels.index(label) % 10}"  # a label keeps its colour in every panel
            dims = sorted({d for d, _ in pairs})
            offset = (index - (len(points) - 1) / 2) * 0.06  # labels side by side at a dim_z
            ax.plot([d + offset for d, _ in pairs], [v for _, v in pairs], "o", color=color,
                    ms=3, alpha=0.5)
            medians = [statistics.median(v for d2, v in pairs if d2 == d) for d in dims]
            ax.plot([d + offset for d in dims], medians, "_-", color=color, ms=12, mew=2,
                    label=f"{label} (median)")
        values = [v for pairs in points.values() for _, v in pairs]
        ax.set_xticks(all_dims)
        ax.set_xlabel("dim_z (causal variables)")
        ax.set_ylabel(metric)
        if values and 0.0 <= min(values) and max(values) <= 1.0:
            ax.set_ylim(0.0, 1.02)
        else:
            ax.set_ylim(bottom=0.0)
        ax.grid(alpha=0.3)
        if points:
            ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)


def grid_heatmap(path: str, panels: Dict[str, tuple], metric: str):
    """Median of `metric` over the members of each cell of a two-key sweep grid, one panel per
    run (e.g. one per penalty), the value written in each cell.
    panels: {title: (row key, row values, column key, column values, medians [rows, columns])}
    (NaN where a cell has no finite value)."""
    fig = _figure(3.4 * len(panels) + 1.0, 3.4)
    fig.set_layout_engine("constrained")
    image = None
    for index, (title, (row_key, rows, col_key, cols, medians)) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), index + 1)
        image = ax.imshow(medians, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        for i in range(len(rows)):
            for j in range(len(cols)):
                value = medians[i][j]
                ax.text(j, i, "-" if value != value else f"{value:.2f}", ha="center",
                        va="center", fontsize=7, color="white" if value < 0.6 else "black")
        ax.set_xticks(range(len(cols)), [str(c) for c in cols])
        ax.set_yticks(range(len(rows)), [str(r) for r in rows])
        ax.set_xlabel(col_key)
        if index == 0:
            ax.set_ylabel(row_key)
        ax.set_title(title, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=fig.axes, shrink=0.8, label=f"median {metric}")
    _save(fig, path)


def invariant_scatter(path: str, panels: Sequence[tuple]):
    """MD-CRL: true invariant latents against their linear read-out from the learned invariant
    block, one panel per member, one colour per latent (on the diagonal when recovered).
    panels: [(title, z_true [N, k], z_read [N, k])] (numpy)."""
    columns = min(len(panels), 5)
    lines = math.ceil(len(panels) / columns)
    fig = _figure(2.7 * columns, 2.6 * lines)
    for index, (title, z_true, z_read) in enumerate(panels):
        ax = fig.add_subplot(lines, columns, index + 1)
        for j in range(z_true.shape[1]):
            ax.plot(z_true[:, j], z_read[:, j], ".", ms=1.5, alpha=0.4, color=f"C{j % 10}")
        low, high = float(z_true.min()), float(z_true.max())
        ax.plot([low, high], [low, high], "k-", lw=0.6)
        ax.set_title(title, fontsize=7)
        ax.set_xlabel("true invariant z", fontsize=7)
        ax.set_ylabel("linear read-out of the code", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    _save(fig, path)


def write_run_figures(workdir: str, train_rows: Sequence[Dict[str, str]],
                      test_rows: Sequence[Dict[str, object]]) -> List[str]:
    """Writes the run's figures (see the module docstring); returns their paths. A failure is
    logged, never raised: figures are not worth losing a run's metrics for."""
    if importlib.util.find_spec("matplotlib") is None:
        log.info("No figures: matplotlib is not installed")
        return []
    folder = os.path.join(workdir, "figures")
    written = []
    for name, draw, rows in (("training_curves.png", training_curves, train_rows),
                             ("dci_importance.png", dci_importance, test_rows),
                             ("graphs.png", graphs, test_rows)):
        path = os.path.join(folder, name)
        try:
            os.makedirs(folder, exist_ok=True)
            if draw(path, rows):
                written.append(path)
        except Exception as error:  # noqa: BLE001 (any plotting problem: log it and go on)
            log.warning("Figure %s not written (%s: %s)", name, type(error).__name__, error)
    if written:
        log.info("Figures in %s", folder)
    return written
