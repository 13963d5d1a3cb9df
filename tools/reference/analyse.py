"""Summarise the tables of compare.py: per setting and side, the median, interquartile range and
failure rate of the headline outcome; a rank test between the sides; strip plots.

    python tools/reference/analyse.py [--out parity] [--md parity/summary.md] \
        [--plot parity/parity.png] [SETTING ...]

Reads OUT/<setting>.csv (all of them, or the settings named), keeping the last row of each
(side, seed). The headline outcome, fixed before any run was looked at, is
`causal_disentanglement` for WS-CRL settings and `hz_z_~r2` for MD-CRL ones; a run fails when
its headline is below 0.9 or is not a number (a run that produced no outcome). Between the
sides: a two-sided Mann-Whitney U test on the headline (scipy, exact where it can be), and the
p-values are Holm-corrected over all the settings analysed together. Secondary outcomes (test
MSE and IWAE NLL for WS-CRL) are reported as medians only. Writes a markdown table (--md) and
one PNG with a strip plot per setting (--plot); prints the table.
"""

import argparse
import csv
import glob
import math
import os

import numpy as np
from scipy.stats import mannwhitneyu

FAIL_BELOW = 0.9
SIDES = ("reference", "ours")
LABELS = {"reference": "reference (PyTorch)", "ours": "wscrl_jax"}


def headline(setting):
    """The outcome tested for a setting (chosen by family, before looking at results)."""
    return "hz_z_~r2" if setting.startswith("mdcrl") else "causal_disentanglement"


def load(path):
    """{side: {seed: row}} from a compare.py table; the last row of a (side, seed) wins."""
    out = {side: {} for side in SIDES}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["side"], {})[int(row["seed"])] = row
    return out


def values(rows, metric):
    """The metric of every row as floats (NaN where missing)."""
    out = []
    for r in rows.values():
        try:
            out.append(float(r.get(metric, "nan")))
        except ValueError:
            out.append(float("nan"))
    return np.array(out, dtype=float)


def holm(pvalues):
    """Holm step-down adjusted p-values (same order as given; NaN passes through)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    adjusted, running = list(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def summarise(setting, data):
    """Per side: n, median, quartiles, failure rate of the headline; medians of the others."""
    metric = headline(setting)
    summary = {}
    for side in SIDES:
        rows = data.get(side, {})
        h = values(rows, metric)
        finite = h[np.isfinite(h)]
        fails = int(np.sum(~np.isfinite(h) | (h < FAIL_BELOW)))
        extra = {}
        for m in ("mse", "nll"):
            v = values(rows, m)
            v = v[np.isfinite(v)]
            if len(v):
                extra[m] = float(np.median(v))
        summary[side] = dict(
            n=len(h), values=h, fails=fails,
            median=float(np.median(finite)) if len(finite) else float("nan"),
            q1=float(np.percentile(finite, 25)) if len(finite) else float("nan"),
            q3=float(np.percentile(finite, 75)) if len(finite) else float("nan"), **extra)
    a, b = summary["reference"]["values"], summary["ours"]["values"]
    # NaN (no outcome) ranks lowest: it is a failed run on either side
    a, b = np.nan_to_num(a, nan=-np.inf), np.nan_to_num(b, nan=-np.inf)
    p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue) if len(a) and len(b) else float("nan")
    return dict(metric=metric, sides=summary, p=p)


def fmt(x, digits=3):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown(results):
    """The summary table as markdown."""
    lines = ["| setting | headline | side | n | median | IQR (Q1-Q3) | failures (< 0.9) "
             "| test MSE (median) | IWAE NLL (median) | p (Mann-Whitney U) | p (Holm) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for setting, r in results.items():
        for k, side in enumerate(SIDES):
            s = r["sides"][side]
            first = k == 0
            lines.append("| " + " | ".join([
                setting if first else "", r["metric"] if first else "", LABELS[side],
                str(s["n"]), fmt(s["median"]), f"{fmt(s['q1'])}-{fmt(s['q3'])}",
                f"{s['fails']}/{s['n']}", fmt(s.get("mse", float("nan")), 4),
                fmt(s.get("nll", float("nan")), 2),
                fmt(r["p"], 3) if first else "", fmt(r["p_holm"], 3) if first else ""]) + " |")
    return "\n".join(lines) + "\n"


def strip_plot(results, path):
    """One panel per setting: every run of both sides as a jittered dot, medians as bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    columns = min(n, 4)  # four panels a row
    lines = -(-n // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(2.6 * columns + 0.6, 3.0 * lines),
                             squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    rng = np.random.default_rng(0)
    for ax, (setting, r) in zip(axes.flat, results.items()):
        for x, side in enumerate(SIDES):
            v = r["sides"][side]["values"]
            v = v[np.isfinite(v)]
            ax.scatter(x + rng.uniform(-0.15, 0.15, len(v)), v, s=12, alpha=0.7,
                       color=("tab:gray", "tab:blue")[x])
            if len(v):
                ax.hlines(np.median(v), x - 0.3, x + 0.3, color="k", lw=1.5)
        ax.axhline(FAIL_BELOW, color="tab:red", lw=0.8, ls=":")
        ax.set_xticks([0, 1], ["reference", "wscrl_jax"], fontsize=8)
        ax.set_xlim(-0.6, 1.6)
        ax.set_title(f"{setting}\np = {fmt(r['p'], 2)} (Holm {fmt(r['p_holm'], 2)})", fontsize=7)
        ax.set_ylabel(r["metric"], fontsize=8)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("settings", nargs="*", help="settings to analyse (default: every table)")
    p.add_argument("--out", default="parity", help="folder of compare.py's tables")
    p.add_argument("--md", help="write the markdown table here (default OUT/summary.md)")
    p.add_argument("--plot", help="write the strip plots here (default OUT/parity.png)")
    args = p.parse_args(argv)
    names = args.settings or sorted(os.path.basename(f)[:-4]
                                    for f in glob.glob(os.path.join(args.out, "*.csv")))
    results = {n: summarise(n, load(os.path.join(args.out, f"{n}.csv"))) for n in names}
    for r, ph in zip(results.values(), holm([r["p"] for r in results.values()])):
        r["p_holm"] = ph
    table = markdown(results)
    print(table)
    with open(args.md or os.path.join(args.out, "summary.md"), "w") as f:
        f.write(table)
    if results:
        strip_plot(results, args.plot or os.path.join(args.out, "parity.png"))


if __name__ == "__main__":
    main()
