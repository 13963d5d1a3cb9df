"""Side-by-side outcomes of the PyTorch references and wscrl_jax, one setting per command.

    python tools/reference/compare.py SETTING [--out parity] [--seeds 42-61] \
        [--side both|ours|reference] [--jobs 2] [--stop-at HH:MM] [--keep-enco]
    python tools/reference/compare.py --list

For SETTING (see `--list`), runs the reference once per model seed, `--jobs` runs at a time with
one torch thread each, and this package once, all seeds as one vmapped sweep; then writes
OUT/SETTING.csv with one row per (side, seed): `side, seed, data_seed, status, <outcomes>,
wall_s`. The outcomes are `causal_disentanglement`, `mse` (test reconstruction MSE) and `nll`
(test IWAE NLL) for WS-CRL settings and `hz_z_~r2` (the invariant latents recovered from the
learned invariant block, last validation epoch) for MD-CRL ones. Resumable: seeds already in
the CSV are not run again (rows whose status starts with "failed", where no outcome could be
read, are retried), and a finished reference run found on disk is read, not repeated.

The reference runs in its own environment, prepared by setup_reference.sh, located by
    WSCRL_REF_HOME  [$HOME/wscrl-reference]  work trees ws-crl/ and md-crl/, shims in stubs/
    WSCRL_REF_VENV  [$WSCRL_REF_HOME/venv]   its Python
This script itself needs only the standard library (it runs in this package's environment; our
side is `python scripts/train.py` from the repository root, whose own cache setting applies).

WS-CRL data: the reference generates its data once per data seed and caches it under its base
directory; when that cache does not exist yet, the first seed runs alone (two runs starting
together would race on it). Both sides draw the ground truth (graph, mechanism weights,
rotation) from the same data seed; the samples are a fixed draw per side. MD-CRL: both sides
draw the data from the run's seed with their own generators, so the ground truth is the same
distribution, not the same draw.
"""

import argparse
import csv
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))

MDCRL_SEEDS = (1235, 4256, 49685, 7383, 9271, 101, 202, 303, 404, 505)


def _wscrl(method, dim_z, mode, data_seed, **extra):
    return dict(family="wscrl", method=method, dim_z=dim_z, mode=mode, data_seed=data_seed,
                seeds=tuple(range(42, 62)), metrics=("causal_disentanglement", "mse", "nll"),
                **extra)


# Our one-member runs: every member trained as its seed alone (`member_loop=sequential` gives a
# sweep member the very numbers of its solo run); the reference side is the base setting's.
SOLO = dict(ours_overrides=("--config.training.member_loop=sequential",
                            "--config.training.cpu_devices=1"))


def _mdcrl(penalty, z_dim, num_domains):
    return dict(family="mdcrl", penalty=penalty, z_dim=z_dim, num_domains=num_domains,
                seeds=MDCRL_SEEDS, metrics=("hz_z_~r2",))


SETTINGS = {
    "wscrl_ilcm_d3_random": _wscrl("ilcm", 3, "random", 42),
    "wscrl_dvae_d3_random": _wscrl("dvae", 3, "random", 42),
    "wscrl_betavae_d3_random": _wscrl("betavae", 3, "random", 42),
    "wscrl_ilcm_d5_chain": _wscrl("ilcm", 5, "chain", 42),
    "wscrl_ilcm_d3_random_solo": _wscrl("ilcm", 3, "random", 42,
                                        reference_from="wscrl_ilcm_d3_random", **SOLO),
    "wscrl_ilcm_d5_chain_solo": _wscrl("ilcm", 5, "chain", 42,
                                       reference_from="wscrl_ilcm_d5_chain", **SOLO),
    "mdcrl_linear_minmax_z8_k4": _mdcrl("minmax", 8, 4),
    "mdcrl_linear_mmd_z8_k4": _mdcrl("mmd", 8, 4),
}

_print_lock = threading.Lock()


def say(msg):
    with _print_lock:
        print(time.strftime("%H:%M:%S"), msg, flush=True)


def parse_seeds(text):
    """'42-61' or '42,43,50-55' -> list of ints."""
    out = []
    for part in text.split(","):
        if "-" in part[1:]:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        elif part:
            out.append(int(part))
    return out


def ref_paths():
    """Locations of the reference environment (see the module docstring)."""
    home = os.environ.get("WSCRL_REF_HOME", os.path.expanduser("~/wscrl-reference"))
    venv = os.environ.get("WSCRL_REF_VENV", os.path.join(home, "venv"))
    return dict(home=home, python=os.path.join(venv, "bin", "python"),
                wscrl=os.path.join(home, "ws-crl"), mdcrl=os.path.join(home, "md-crl"),
                stubs=os.path.join(home, "stubs"))


def read_rows(path):
    """Rows of a CSV as dicts ([] if the file does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def to_float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


# ------------------------------------------------------------------ reference side
def wscrl_ref_job(name, s, seed, out, paths, keep_enco):
    """(command, env, result file, log file) of one WS-CRL reference run."""
    base = os.path.join(out, "runs", "reference", "wscrl")
    exp = f"{name}_seed{seed}"
    cmd = [paths["python"], os.path.join(HERE, "run_wscrl.py"), "--ref-root", paths["wscrl"],
           "--method", s["method"]] + (["--keep-enco"] if keep_enco else []) + [
        "--", f"general.exp_name={exp}", f"general.base_dir={base}", f"general.seed={seed}",
        f"data.dim_z={s['dim_z']}", f"data.nature.seed={s['data_seed']}",
        f"data.nature.mode={s['mode']}", "training=scaling_fast", "training.device=cpu"]
    env = {"PYTHONPATH": os.pathsep.join([paths["stubs"], paths["wscrl"]])}
    return cmd, env, os.path.join(base, exp, "metrics", "test_metrics.csv"), os.path.join(
        base, f"{exp}.log")


def wscrl_data_ready(s, out):
    """Whether the reference's data cache for this setting's data seed is complete."""
    subset = f"dim_{s['dim_z']}_mode_{s['mode']}_seed_{s['data_seed']}"
    return os.path.exists(os.path.join(out, "runs", "reference", "wscrl", "data", "scaling",
                                       subset, "test.pt"))


def mdcrl_ref_job(name, s, seed, out, paths):
    """(command, env, result file, log file) of one MD-CRL reference run."""
    run_dir = os.path.join(out, "runs", "reference", "mdcrl", f"{name}_seed{seed}")
    penalty = (["model.penalty_criterion.minmax=1.", "model.penalty_criterion.mmd=0."]
               if s["penalty"] == "minmax" else
               ["model.penalty_criterion.minmax=0.", "model.penalty_criterion.mmd=1.",
                "model.mmd_loss.fix_sigma=null", "datamodule.dataset.corr_prob=0.0"])
    cmd = [paths["python"], os.path.join(HERE, "run_mdcrl.py"), "--ref-root", paths["mdcrl"],
           "--", "ckpt_path=null", "model=mixing_synthetic"] + penalty + [
        "datamodule=mixing", "datamodule.batch_size=1024", "datamodule.dataset.linear=True",
        f"datamodule.dataset.z_dim={s['z_dim']}",
        f"datamodule.dataset.num_domains={s['num_domains']}",
        "~callbacks.visualization_callback", "datamodule.dataset.correlated_z=False",
        f"seed={seed}", f"hydra.run.dir={run_dir}"]
    return cmd, {}, os.path.join(run_dir, "csv", "version_0", "metrics.csv"), run_dir + ".log"


def ref_outcome(s, result):
    """Outcomes of one finished reference run, from its result file (None if unfinished)."""
    rows = read_rows(result)
    if not rows:
        return None
    if s["family"] == "wscrl":
        return {m: to_float(rows[0].get(m)) for m in s["metrics"]}
    # MD-CRL's CSV logger: one row per logging event; the metric's last validation value.
    # The log grows during training: only a run that got past fitting (it then writes
    # best_ckpt_path.txt into its run directory) counts as finished.
    run_dir = os.path.dirname(os.path.dirname(os.path.dirname(result)))
    if not os.path.exists(os.path.join(run_dir, "best_ckpt_path.txt")):
        return None
    out = {}
    for m in s["metrics"]:
        values = [r[m] for r in rows if r.get(m) not in (None, "")]
        out[m] = to_float(values[-1]) if values else float("nan")
    return out


def past(stop_at):
    """Whether the UTC clock has reached `stop_at` ("HH:MM"; None: never)."""
    return bool(stop_at) and time.strftime("%H:%M", time.gmtime()) >= stop_at


def run_reference(name, s, seeds, data_seed, out, jobs, keep_enco, record, stop_at=None):
    """Run the reference for `seeds` (`jobs` at a time) and `record` each finished seed; no
    new run starts once the UTC time `stop_at` has passed."""
    paths = ref_paths()
    if not os.path.exists(paths["python"]):
        sys.exit(f"error: no reference environment at {paths['python']} (setup_reference.sh)")

    def one(seed):
        if s["family"] == "wscrl":
            cmd, extra, result, log = wscrl_ref_job(name, s, seed, out, paths, keep_enco)
        else:
            cmd, extra, result, log = mdcrl_ref_job(name, s, seed, out, paths)
        t0, status = time.time(), "ok"
        outcome = ref_outcome(s, result)
        if outcome is None and past(stop_at):
            say(f"reference {name} seed {seed}: not started (past {stop_at} UTC)")
            return
        if outcome is None:
            os.makedirs(os.path.dirname(log), exist_ok=True)
            env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                       HYDRA_FULL_ERROR="1", **extra)
            say(f"reference {name} seed {seed}: start")
            with open(log, "w") as f:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
            outcome = ref_outcome(s, result)
            if rc != 0 or outcome is None:
                status = f"failed (exit {rc}, log {log})"
                outcome = {m: float("nan") for m in s["metrics"]}
        wall = round(time.time() - t0, 1)
        say(f"reference {name} seed {seed}: {status} {outcome} {wall} s")
        record(dict(side="reference", seed=seed, data_seed=data_seed(seed), status=status,
                    wall_s=wall, **outcome))

    seeds = list(seeds)
    if s["family"] == "wscrl" and seeds and not wscrl_data_ready(s, out):
        one(seeds.pop(0))  # writes the data cache alone
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, seeds))


# ------------------------------------------------------------------ our side
def run_ours(name, s, seeds, out, record):
    """Run this package once for all `seeds` as one sweep and `record` each member."""
    tag = f"{seeds[0]}-{seeds[-1]}_n{len(seeds)}"
    workdir = os.path.join(out, "runs", "ours", f"{name}_{tag}")
    result = os.path.join(workdir, "metrics", "test_metrics.csv")
    seed_list = ",".join(str(x) for x in seeds)
    if s["family"] == "wscrl":
        cmd = [sys.executable, "scripts/train.py", "--config",
               f"configs/scaling.py:{s['method']},fast", "--workdir", workdir,
               f"--config.data.dim_z={s['dim_z']}", f"--config.data.nature.seed={s['data_seed']}",
               f"--config.data.nature.mode={s['mode']}", f"--config.sweep.seeds={seed_list}"]
    else:
        cmd = [sys.executable, "scripts/train.py", "--config",
               f"configs/md_mixing.py:linear,{s['penalty']}", "--workdir", workdir,
               f"--config.data.z_dim={s['z_dim']}",
               f"--config.data.num_domains={s['num_domains']}",
               f"--config.sweep.seeds={seed_list}"]
    cmd += list(s.get("ours_overrides", ()))
    t0 = time.time()
    if not read_rows(result):
        say(f"ours {name} seeds {tag}: start")
        os.makedirs(os.path.dirname(workdir), exist_ok=True)
        with open(workdir + ".log", "w") as f:
            # this checkout's package first, whatever copy the environment has installed
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                [REPO] + [x for x in [os.environ.get("PYTHONPATH")] if x]))
            rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                                env=env).returncode
        if rc != 0:
            say(f"ours {name}: exit {rc}, see {workdir}.log")
    wall = round(time.time() - t0, 1)
    rows = {int(r["seed"]): r for r in read_rows(result)}
    for seed in seeds:
        r = rows.get(seed)
        if r is None:
            record(dict(side="ours", seed=seed, data_seed="", status="failed (no row)",
                        wall_s=wall, **{m: float("nan") for m in s["metrics"]}))
            continue
        record(dict(side="ours", seed=seed, data_seed=r.get("data_seed", ""),
                    status=r.get("status", "ok"), wall_s=wall,
                    **{m: to_float(r.get(m)) for m in s["metrics"]}))
    say(f"ours {name}: {len(rows)} members in {wall} s (whole sweep; wall_s is per sweep)")


# ------------------------------------------------------------------ main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("setting", nargs="?", choices=sorted(SETTINGS))
    p.add_argument("--list", action="store_true", help="list the settings and exit")
    p.add_argument("--out", default="parity", help="output folder (default: parity)")
    p.add_argument("--seeds", help="model seeds, e.g. 42-61 or 1,2,5-9 (default: the setting's)")
    p.add_argument("--side", choices=("both", "ours", "reference"), default="both")
    p.add_argument("--jobs", type=int, default=2, help="reference runs at a time (default 2)")
    p.add_argument("--stop-at", metavar="HH:MM",
                   help="start no new run after this UTC time (finished runs are still read)")
    p.add_argument("--keep-enco", action="store_true",
                   help="WS-CRL reference: keep its post-hoc ENCO (20-30 min a run on 2 cores)")
    args = p.parse_args(argv)
    if args.list or not args.setting:
        for k, v in SETTINGS.items():
            print(k, {a: b for a, b in v.items() if a not in ("family",)})
        return
    s = SETTINGS[args.setting]
    seeds = parse_seeds(args.seeds) if args.seeds else list(s["seeds"])
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    table = os.path.join(out, f"{args.setting}.csv")
    fields = ["side", "seed", "data_seed", "status"] + list(s["metrics"]) + ["wall_s"]
    # rows marked "failed" (the tool could not get an outcome) are retried; the analysis
    # reads the last row of each (side, seed)
    done = {(r["side"], int(r["seed"])) for r in read_rows(table)
            if not r["status"].startswith("failed")}
    lock = threading.Lock()

    def record(row):
        with lock:
            new = not os.path.exists(table)
            with open(table, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                if new:
                    w.writeheader()
                w.writerow(row)

    def data_seed(seed):
        return s["data_seed"] if s["family"] == "wscrl" else seed

    if args.side in ("both", "ours"):
        todo = [x for x in seeds if ("ours", x) not in done]
        if todo and not past(args.stop_at):
            run_ours(args.setting, s, todo, out, record)
    if args.side in ("both", "reference") and s.get("reference_from"):
        # the same reference runs as another setting's: their rows, copied once
        base = os.path.join(out, f"{s['reference_from']}.csv")
        for row in read_rows(base):
            if (row["side"] == "reference" and int(row["seed"]) in seeds
                    and ("reference", int(row["seed"])) not in done):
                record({k: row.get(k, "") for k in fields})
        if not read_rows(base):
            say(f"no reference rows yet: run `compare.py {s['reference_from']}` first")
    elif args.side in ("both", "reference"):
        todo = [x for x in seeds if ("reference", x) not in done]
        if todo:
            run_reference(args.setting, s, todo, data_seed, out, args.jobs, args.keep_enco,
                          record, args.stop_at)
    say(f"table: {table}")


if __name__ == "__main__":
    main()
