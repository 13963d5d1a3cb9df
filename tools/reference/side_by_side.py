"""Training steps/s of the references and of wscrl_jax, interleaved, with the ratio per row.

Runs in this package's environment; the reference side runs `bench_reference.py` in the
reference's environment (torch), ours runs `scripts/benchmark.py` (one member, compiled
multi-step calls, compilation excluded). Both sides time the same cases, one group at a time,
alternating which side goes first from round to round, so both see the same machine:

    python tools/reference/side_by_side.py --rounds 2 --md performance_rows.md --json rows.jsonl

Cases (the rows of docs/performance.md's side-by-side table): ILCM at dim_z 3, 4, 8 and dVAE at
dim_z 4 in the pretraining, main and deterministic-encoder phases, beta-VAE at dim_z 4 in the
pretraining and main phases (fast schedule, batch 64), and MD-CRL linear mixing (z_dim 8, 4
domains, batch 1024) with the min-max penalty, no penalty and the MMD penalty. A row's figure is
the median over rounds; the ratio is ours over the reference's.

Where the reference lives: `WSCRL_REF_HOME` (default `~/wscrl-reference`, as
`setup_reference.sh` makes it), its environment `WSCRL_REF_VENV` (default `$WSCRL_REF_HOME/venv`).
Compare figures only from a quiet machine: torch's threads slow down many times over when
other processes hold the cores.
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# (name, our benchmark.py arguments, bench_reference.py arguments)
GROUPS = [
    ("ilcm", ["--methods", "ilcm", "--dims", "3,4,8"], ["--methods", "ilcm", "--dims", "3,4,8",
                                                       "--md-variants", ""]),
    ("dvae", ["--methods", "dvae", "--dims", "4"], ["--methods", "dvae", "--dims", "4",
                                                    "--md-variants", ""]),
    ("betavae", ["--methods", "betavae", "--dims", "4"], ["--methods", "betavae", "--dims", "4",
                                                          "--md-variants", ""]),
    ("mdcrl", ["--methods", "", "--md-variants", "linear+minmax,linear+none,linear+mmd",
               "--md-z-dim", "8", "--md-domains", "4"],
     ["--methods", "", "--md-variants", "minmax,none,mmd"]),
]
PHASE_ORDER = {"pretrain": 0, "main": 1, "deterministic": 2, "minmax": 0, "none": 1, "mmd": 2}


def row_key(result):
    """(method, phase, dim_z) of a JSON line of either side: ours names MD-CRL cases
    `mdcrl:linear+<penalty>` with phase `train`, the reference `mdcrl_linear` / `<penalty>`."""
    method, phase = result["method"], result["phase"]
    if method.startswith("mdcrl:"):
        method, phase = "mdcrl_linear", method.split("+")[-1]
    return method, phase, int(result["dim_z"])


def run_side(side, group, args):
    """JSON lines of one benchmark process of `side` for `group`, as {row key: steps/s}."""
    _, ours, reference = group
    if side == "ours":
        cmd = [sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"), *ours,
               "--members", "1", "--calls", str(args.calls)]
        env = dict(os.environ)
    else:
        home = os.environ.get("WSCRL_REF_HOME", os.path.expanduser("~/wscrl-reference"))
        venv = os.environ.get("WSCRL_REF_VENV", os.path.join(home, "venv"))
        cmd = [os.path.join(venv, "bin", "python"), os.path.join(HERE, "bench_reference.py"),
               *reference, "--threads", str(args.threads), "--steps", str(args.ref_steps)]
        env = dict(os.environ, WSCRL_REF_HOME=home)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"error: {side} benchmark for {group[0]} failed "
                         f"(exit {out.returncode}): {tail[0]}")
    rows = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            rows[row_key(result)] = float(result["steps_per_s"])
    return rows


def measure(args, groups):
    """{row key: {"ours": [steps/s per round], "reference": [...]}}, sides alternated."""
    table = {}
    for r in range(args.rounds):
        for group in groups:
            sides = ("reference", "ours") if r % 2 == 0 else ("ours", "reference")
            for side in sides:
                print(f"round {r + 1}/{args.rounds}: {group[0]}, {side}", file=sys.stderr,
                      flush=True)
                for key, value in run_side(side, group, args).items():
                    table.setdefault(key, {"ours": [], "reference": []})[side].append(value)
    return table


def markdown(table, args):
    """The side-by-side table, one row per case, with the machine, commit and date."""
    lines = ["| case | reference steps/s | wscrl_jax steps/s | ratio |",
             "| --- | --- | --- | --- |"]
    for key in sorted(table, key=lambda k: (k[0], k[2], PHASE_ORDER.get(k[1], 9))):
        sides = table[key]
        if not sides["ours"] or not sides["reference"]:
            continue
        ref, ours = statistics.median(sides["reference"]), statistics.median(sides["ours"])
        method, phase, dim = key
        label = (f"MD-CRL linear z={dim} D=4 {phase}" if method == "mdcrl_linear"
                 else f"{method} d={dim} {phase}")
        lines.append(f"| {label} | {ref:,.1f} | {ours:,.0f} | {ours / ref:.1f}x |")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip() or "unknown"
    lines.append("")
    lines.append(f"{datetime.date.today()}, commit {commit}, {os.cpu_count()} CPU cores "
                 f"({platform.processor() or platform.machine()}); the median of "
                 f"{args.rounds} round(s) a side, sides alternated; reference torch threads: "
                 f"{args.threads}; one member, compilation excluded.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="rounds per side (default 2)")
    p.add_argument("--groups", default="ilcm,dvae,betavae,mdcrl",
                   help="which cases: ilcm, dvae, betavae, mdcrl (default all)")
    p.add_argument("--threads", type=int, default=2, help="reference torch threads (default 2)")
    p.add_argument("--ref-steps", type=int, default=200,
                   help="reference steps per case and round (default 200; MMD a fifth)")
    p.add_argument("--calls", type=int, default=3, help="our timed calls per case (default 3)")
    p.add_argument("--md", default=None, help="write the markdown table here")
    p.add_argument("--json", default=None, help="write every round's figures here (JSON)")
    args = p.parse_args(argv)
    names = [g for g in args.groups.split(",") if g]
    unknown = sorted(set(names) - {g[0] for g in GROUPS})
    if unknown or args.rounds < 1:
        p.error(f"unknown --groups {','.join(unknown)}" if unknown else "--rounds must be >= 1")
    table = measure(args, [g for g in GROUPS if g[0] in names])
    text = markdown(table, args)
    print(text)
    if args.md:
        with open(args.md, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{"method": k[0], "phase": k[1], "dim_z": k[2], **v}
                       for k, v in table.items()], f, indent=1)


if __name__ == "__main__":
    main()
