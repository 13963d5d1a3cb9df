"""Reliability probe: tries the entry points the way a new user would, with bad input, busy and
inconsistent workdirs, storage errors and stop signals, and counts what happens.

    PYTHONPATH=. python tools/probe_reliability.py [--only SUBSTRING] [--verbose]

Every case is one command line of `wscrl-train` / `wscrl-evaluate` (run in this process with
the run itself replaced by a stub: nothing trains, so "accepted" means training would have
started) or of a helper script (run as a subprocess). Each outcome is one of

    one-line error     non-zero exit, exactly one `error:` line on stderr, no traceback
    accepted           exit 0 where that is right (e.g. --overwrite, a stale lock)
    traceback          a Python traceback reached the user (target 0)
    silent acceptance  exit 0 for input that should have been refused (target 0)
    other              a non-zero exit without the one line (e.g. usage blocks)

and, for cases on an existing workdir, whether any file there changed or disappeared ("outputs
lost", target 0; files moved by --overwrite are looked for in WORKDIR/replaced_*). The counts
are printed at the end (docs/reliability.md records them). The real-disk and two-process checks
need real training and are in tests/test_reliability_slow.py.
"""

import argparse
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("WSCRL_JAX_CACHE", "")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

SCALING = os.path.join(ROOT, "configs", "scaling.py")
MD = os.path.join(ROOT, "configs", "md_mixing.py")
BALLS = os.path.join(ROOT, "configs", "md_balls.py")
CC = os.path.join(ROOT, "configs", "causalcircuit.py")
CC1 = os.path.join(ROOT, "configs", "causalcircuit_reduce_dim.py")
NAN, INF = "nan", "inf"

# (config spec, key, value): values a user may mistype; each must be refused in one line
BAD_VALUES = [
    (f"{SCALING}:ilcm,fast", k, v) for k, v in [
        ("data.dim_z", 0), ("data.dim_z", 1), ("data.dim_z", -3), ("data.dim_z", 100000),
        ("data.dim_z", 2.5), ("data.samples.train", 0), ("data.samples.train", -1),
        ("data.samples.train", 10**10), ("data.samples.val", 0), ("data.samples.test", -5),
        ("training.batchsize", 0), ("training.batchsize", 10**7), ("training.epochs", -1),
        ("training.lr_schedule.initial", NAN), ("training.lr_schedule.initial", -1e-3),
        ("training.lr_schedule.initial", INF), ("training.iwae_samples", 0),
        ("training.steps_per_call", 0), ("training.nan_limit", -1), ("training.clip_grad_norm",
                                                                     NAN),
        ("seed", -1), ("seed", 2**40), ("data.nature.seed", -2), ("data.nature.mode", "'dag'"),
        ("data.nature.manifold_thickness", -0.1), ("data.nature.observation_noise", NAN),
        ("model.type", "'vae'"), ("model.encoder.hidden_units", 0),
        ("model.decoder.hidden_layers", 0), ("model.scm.hidden_units", -4),
        ("model.scm.spline_bins", 0), ("model.dim_z", 0), ("eval.batchsize", 0),
        ("checkpoint.every_n_steps", -1), ("checkpoint.max_to_keep", 0),
        ("sweep.seeds", "'1,1'"), ("sweep.seeds", "'a,b'"), ("sweep.data_seeds", "'-1'"),
        ("sweep.grid", "'data.dim_z'"), ("training.member_loop", "'parallel'"),
        ("data.mixing", "'swirl'"), ("data.nature.mechanisms", "'cubic'"),
    ]] + [
    (f"{MD}:poly_stage1,fast", k, v) for k, v in [
        ("data.z_dim", 0), ("data.z_dim", 100000), ("data.z_dim", 100), ("data.x_dim", 0),
        ("data.x_dim", 10**7), ("data.num_domains", 0), ("data.num_domains", 100000),
        ("data.num_samples.train", 1), ("data.num_samples.valid", 10**6),
        ("data.polynomial_degree", 0), ("data.polynomial_degree", 40),
        ("data.z_dim_invariant", 100), ("data.corr_prob", 2.0), ("model.mlp_width", 0),
        ("model.mismatch_dims", -1), ("training.batchsize", 0), ("model.top_k", 0),
        ("model.mmd.kernel_number", 0), ("training.early_stopping.patience", 0),
        ("seed", -5), ("data.dataset", "'images'"), ("model.autoencoder", "'deep'"),
    ]] + [
    (f"{MD}:poly_stage2", "data.stage1_workdir", "'/nonexistent/stage1'"),
    (f"{MD}:poly_stage2,fast", "model.z_dim_invariant_fraction", 1.5,
     ["data.stage1_workdir='STAGE1'"]),
    (f"{BALLS}:stage1", "data.image_size", 32), (f"{BALLS}:stage1", "model.z_dim", 0),
    (f"{BALLS}:stage1", "data.num_samples.train", 1),
    (f"{CC}:ilcm", "data.stage1_workdir", "'/nonexistent'"),
    (f"{CC}:ilcm", "data.stage1_member", -1, ["data.stage1_workdir='STAGE1CC'"]),
    (f"{CC1}:64", "data.tfds_dir", "''"), (f"{CC1}:64", "data.tfds_dir", "'/nonexistent'"),
    (f"{CC1}:64", "data.resolution", 17, ["data.tfds_dir='/nonexistent'"]),
]

# command lines (after the program name) that must be refused in one line
BAD_FLAGS = [
    ["--workdir=W"], ["--config=" + SCALING + ":ilcm,fast"],
    ["--config=" + SCALING + ":nonsense", "--workdir=W"],
    ["--config=/nonexistent/config.py:ilcm", "--workdir=W"],
    ["--config=" + SCALING + ":ilcm,fast", "--workdir=W", "--config.data.dimz=3"],
    ["--config=" + SCALING + ":ilcm,fast", "--workdir=W", "--config.nosuchsection.a=1"],
    ["--config=" + SCALING + ":ilcm,fast", "--workdir=W", "--config.data.dim_z=three"],
    ["--config=" + SCALING + ":ilcm,fast", "--workdir=W", "--bogus_flag"],
    ["--config=" + SCALING + ":ilcm,fast", "--workdir=W", "--cpu_devices=0"],
    ["--config=" + SCALING + ":ilcm,fast", "--workdir=W", "--num_processes=0"],
    ["--config=" + SCALING + ":ilcm,fast", "--workdir=W", "--num_processes=2"],
    ["--config=" + SCALING + ":ilcm,fast", "--workdir=W", "--num_processes=2",
     "--coordinator_address=localhost:1", "--process_id=5"],
    ["--config=" + SCALING + ":ilcm,fast", "--workdir=W", "--overwrite=maybe"],
    ["--config=" + SCALING + ":ilcm,fast", "--workdir=W", "--reevaluate=2"],
]
# command lines that must be accepted (training would start)
GOOD_FLAGS = [
    ["--config=" + SCALING + ":ilcm,fast,fast", "--workdir=W"],  # a repeated option
    ["--config=" + SCALING, "--workdir=W"],  # the default variant
]
BAD_CONFIG_FILES = {
    "no_get_config.py": "x = 1\n",
    "returns_dict.py": "def get_config(arg=None):\n    return {'method': 'lcm'}\n",
    "syntax_error.py": "def get_config(arg=None)\n    return None\n",
    "raises.py": "def get_config(arg=None):\n    raise ValueError('broken config')\n",
    "returns_none.py": "def get_config(arg=None):\n    return None\n",
    "unknown_method.py": ("import ml_collections\ndef get_config(arg=None):\n"
                          "    return ml_collections.ConfigDict({'method': 'gan'})\n"),
}

STORAGE_ERRORS = {
    "ENOSPC": lambda w: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{w}/metrics/x.csv"),
    "EDQUOT": lambda w: OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), f"{w}/config.json"),
    "EROFS": lambda w: OSError(errno.EROFS, os.strerror(errno.EROFS), w),
    "EIO": lambda w: OSError(errno.EIO, os.strerror(errno.EIO)),
    "orbax RESOURCE_EXHAUSTED": lambda w: _wrapped(ValueError(
        f'RESOURCE_EXHAUSTED: Error writing "x" in OCDBT database at local file '
        f'"{w}/checkpoints/16.orbax-checkpoint-tmp/": Failed writing: "{w}/checkpoints/16.'
        f"orbax-checkpoint-tmp/d/ab\": No space left on device [os_error_code='28']")),
    "ENOSPC wrapped": lambda w: _wrapped(OSError(errno.ENOSPC, "No space left on device")),
}


def _wrapped(inner):
    try:
        try:
            raise inner
        except Exception as e:
            raise RuntimeError("background save failed") from e
    except RuntimeError as e:
        return e


class Probe:
    def __init__(self, tmp: str, verbose: bool, only: str):
        self.tmp, self.verbose, self.only = tmp, verbose, only
        self.results = []  # (name, outcome, lost)

    # ------------------------------------------------------------------ running
    def in_process(self, name, entry, argv, stub="accept", expect="error", workdir=None,
                   check=None):
        """Runs cli.train_main / evaluate_main(argv) in a fresh Python process with the run
        replaced by the stub named `stub` (see `STUBS`; "real": not replaced)."""
        if self.only and self.only not in name:
            return
        before = snapshot(workdir)
        case = json.dumps({"entry": entry, "argv": argv, "stub": stub})
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", case],
                             capture_output=True, text=True, timeout=600, cwd=self.tmp,
                             env=dict(os.environ, PYTHONPATH=ROOT))
        self.record(name, out.returncode, out.stderr, expect, workdir, before, check)

    def subprocess(self, name, args, expect="error", workdir=None, check=None, cwd=None):
        if self.only and self.only not in name:
            return
        before = snapshot(workdir)
        out = subprocess.run([sys.executable] + args, capture_output=True, text=True,
                             timeout=600, cwd=cwd or self.tmp,
                             env=dict(os.environ, PYTHONPATH=ROOT))
        self.record(name, out.returncode, out.stderr, expect, workdir, before, check)

    def record(self, name, code, stderr, expect, workdir, before, check):
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        other = [line for line in stderr.splitlines()
                 if line.strip() and not line.startswith(("error:", "["))]
        if "Traceback" in stderr:
            outcome = "traceback"
        elif code == 0:
            outcome = "accepted" if expect == "accept" else "silent acceptance"
        elif len(errors) == 1 and not other:
            outcome = "one-line error" if expect != "accept" else "refused wrongly"
        else:
            outcome = "other"
        lost = lost_files(workdir, before)
        if check is not None and outcome in ("one-line error", "accepted"):
            problem = check(errors[0] if errors else "")
            if problem:
                outcome = f"wrong message: {problem}"
        self.results.append((name, outcome, lost))
        flag = "" if outcome in ("one-line error", "accepted") and not lost else "  <--"
        if self.verbose or flag:
            shown = (errors or stderr.strip().splitlines()[-1:] or [""])[0][:150]
            print(f"{outcome:18} {'LOST ' + ','.join(lost) if lost else ''}{name}: {shown}{flag}")

    def counts(self):
        outcomes = [o for _, o, _ in self.results]
        return {"cases": len(self.results),
                "one-line errors": outcomes.count("one-line error"),
                "accepted (correctly)": outcomes.count("accepted"),
                "tracebacks": outcomes.count("traceback"),
                "silent acceptances": outcomes.count("silent acceptance"),
                "other (wrong exit/message)": sum(o not in ("one-line error", "accepted",
                                                            "traceback", "silent acceptance")
                                                  for o in outcomes),
                "outputs lost": sum(bool(lost) for _, _, lost in self.results)}


def _stub(kind: str):
    """The stand-in for experiment.run / evaluate_workdir named `kind`: "accept" (returns at
    once: training would start), "storage:NAME" (raises STORAGE_ERRORS[NAME] for the workdir),
    "signal:SIG" (the signal arrives during the evaluation of a training run, or during
    wscrl-evaluate), "twice:SIGINT" (two Ctrl-C during training)."""
    what, _, arg = kind.partition(":")

    def run(*args, stop_requested=None, **kwargs):
        # experiment.run(config, workdir, ...) or evaluate_workdir(workdir, member, step)
        workdir = args[0] if isinstance(args[0], str) else args[1]
        if what == "storage":
            raise STORAGE_ERRORS[arg](workdir)
        if what == "signal":
            if stop_requested is not None:
                stop_requested.stop_now_from_here("evaluation")  # as experiment.run does
            os.kill(os.getpid(), signal.Signals[arg])
            time.sleep(2)
        if what == "twice":
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2)
        return []
    return run


def run_case(case: str):
    """One case in this process (the parent counts what it prints)."""
    case = json.loads(case)
    from wscrl_jax import cli, experiment
    from wscrl_jax.run import evaluation
    if case["stub"] != "real":
        experiment.run = evaluation.evaluate_workdir = _stub(case["stub"])
    getattr(cli, case["entry"])([f"wscrl-{case['entry'][:-5]}"] + case["argv"])


def snapshot(workdir):
    """{relative path: sha256} of every file under workdir (the log and lock excluded)."""
    if not workdir or not os.path.isdir(workdir):
        return {}
    out = {}
    for folder, _, files in os.walk(workdir):
        for f in files:
            path = os.path.join(folder, f)
            rel = os.path.relpath(path, workdir)
            if rel in ("output.log", ".lock"):
                continue
            with open(path, "rb") as fh:
                out[rel] = hashlib.sha256(fh.read()).hexdigest()
    return out


def lost_files(workdir, before):
    """Files of `before` that are gone or changed (a file moved elsewhere in the workdir with
    its contents, e.g. to WORKDIR/replaced_*/ or checkpoints_rejected/, is not lost)."""
    after = snapshot(workdir)
    lost = []
    for rel, digest in before.items():
        if after.get(rel) == digest:
            continue
        moved = [r for r, d in after.items()  # set aside, or a rejected checkpoint
                 if d == digest and os.path.basename(r) == os.path.basename(rel)]
        if not moved:
            lost.append(rel)
    return lost


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def config_json(spec, **overrides):
    from wscrl_jax import cli
    c = cli.load_config(spec)
    for key, value in overrides.items():
        node = c
        *parts, leaf = key.split(".")
        for p in parts:
            node = node[p]
        node[leaf] = value
    return c.to_json_best_effort(indent=2)


# ---------------------------------------------------------------------- the cases
def probe_config_values(p):
    # stage-1 workdirs as far as validation reads them (encoded/meta.json)
    meta = {"latent_dim": 4, "num_domains": 4, "z_dim": 4, "members": [[1, 1]],
            "splits": {"train": 2000, "valid": 400, "val": 400, "test": 400}}
    stage1 = {"STAGE1": dict(meta, source="mixing"),
              "STAGE1CC": dict(meta, source="causalcircuit", latent_dim=8)}
    for name, content in stage1.items():
        write(os.path.join(p.tmp, name, "encoded", "meta.json"), json.dumps(content))
    for spec, key, value, *extra in BAD_VALUES:
        extra = [f"--config.{e}" for e in (extra[0] if extra else [])]
        for name in stage1:
            extra = [e.replace(f"'{name}'", os.path.join(p.tmp, name)) for e in extra]
        p.in_process(f"train {os.path.basename(spec)} {key}={value}", "train_main",
                     [f"--config={spec}", f"--workdir={p.tmp}/v", f"--config.{key}={value}"]
                     + extra,
                     check=lambda line, _k=key: None if _k.split(".")[-1] in line
                     and "Unknown command line flag" not in line else "does not name the key")


def probe_flags(p):
    for argv in BAD_FLAGS:
        argv = [a.replace("=W", f"={p.tmp}/f") for a in argv]
        p.in_process("train " + " ".join(os.path.basename(a) for a in argv), "train_main",
                     argv)
    for argv in GOOD_FLAGS:
        argv = [a.replace("=W", f"={p.tmp}/g") for a in argv]
        p.in_process("train (fine) " + " ".join(os.path.basename(a) for a in argv),
                     "train_main", argv, expect="accept")
    for name, text in BAD_CONFIG_FILES.items():
        path = os.path.join(p.tmp, "configs", name)
        write(path, text)
        p.in_process(f"train --config={name}", "train_main",
                     [f"--config={path}", f"--workdir={p.tmp}/c"],
                     check=lambda line: "overrides" in line and "--config.KEY" in line
                     and "blames the overrides")
    afile = os.path.join(p.tmp, "afile")
    write(afile, "keep")
    p.in_process("train --workdir=a file", "train_main",
                 [f"--config={SCALING}:ilcm,fast", f"--workdir={afile}"])
    for argv in ([], [f"--workdir={p.tmp}/nonexistent"], [f"--workdir={afile}"],
                 [f"--workdir={p.tmp}/empty", "--member=-1"], ["--workdir=x", "--bogus"],
                 [f"--workdir={p.tmp}/empty", "--cpu_devices=0"],
                 [f"--workdir={p.tmp}/empty", "--step=abc"]):
        os.makedirs(f"{p.tmp}/empty", exist_ok=True)
        p.in_process("evaluate " + " ".join(argv), "evaluate_main", argv, stub="real")


def probe_evaluate_real(p):
    """wscrl-evaluate on workdirs without (usable) checkpoints: the real evaluate, no stub."""
    for name, files in [("no checkpoints", {"config.json": "{}"}),
                        ("empty checkpoints dir", {"checkpoints/.keep": ""}),
                        ("garbage step", {"checkpoints/16/meta/metadata": "garbage"})]:
        w = os.path.join(p.tmp, "eval-" + name.replace(" ", "_"))
        for rel, text in files.items():
            write(os.path.join(w, rel), text)
        p.in_process(f"evaluate {name}", "evaluate_main", [f"--workdir={w}"], stub="real",
                     workdir=w)


def probe_workdirs(p):
    spec = f"{SCALING}:ilcm,fast"
    same = config_json(spec)
    other = config_json(spec, **{"training.lr_schedule.initial": 1e-3})
    cases = [
        ("other config, no checkpoint", {"config.json": other,
                                         "metrics/train_metrics.csv": "step\n8\n"}, [], "error"),
        ("metrics without config.json", {"metrics/train_metrics.csv": "step\n8\n"}, [],
         "error"),
        ("final metrics, checkpoints deleted", {"config.json": same,
                                                "metrics/test_metrics.csv": ",a\n0,1\n"}, [],
         "error"),
        ("figures and other config", {"config.json": other, "figures/graphs.png": "png"}, [],
         "error"),
        ("unreadable config.json", {"config.json": "{broken",
                                    "metrics/train_metrics.csv": "s\n"}, [], "error"),
        ("config_resumed only", {"config_resumed_step8.json": other}, [], "error"),
        ("other config --overwrite", {"config.json": other, "metrics/x.csv": "1"},
         ["--overwrite"], "accept"),
        ("same config, no checkpoint (restart)", {"config.json": same}, [], "accept"),
        ("only a log", {"output.log": "x"}, [], "accept"),
        ("stale lock of a dead pid", {".lock": json.dumps({"host": os.uname().nodename,
                                                           "pid": 2**22 + 7})}, [], "accept"),
        ("fresh lock of another host", {".lock": json.dumps(
            {"host": "elsewhere.example", "pid": 1, "role": "training"})}, [], "error"),
    ]
    for name, files, extra, expect in cases:
        w = os.path.join(p.tmp, "wd-" + name.replace(" ", "_").replace(",", ""))
        for rel, text in files.items():
            write(os.path.join(w, rel), text)
        p.in_process(f"train workdir: {name}", "train_main",
                     [f"--config={spec}", f"--workdir={w}"] + extra, expect=expect, workdir=w)
    # a live process holding the lock: train and evaluate refused, nothing touched
    w = os.path.join(p.tmp, "wd-locked")
    write(os.path.join(w, "metrics", "train_metrics.csv"), "step\n8\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from wscrl_jax.train import workdir_lock; "
         "l = workdir_lock.acquire(sys.argv[1]); print('ok', flush=True); time.sleep(120)", w],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    holder.stdout.readline()
    try:
        for extra in ([], ["--config.seed=43"], ["--overwrite"], ["--reevaluate"]):
            p.in_process(f"train on a locked workdir {extra}", "train_main",
                         [f"--config={spec}", f"--workdir={w}"] + extra, workdir=w,
                         check=lambda line: None if f"pid {holder.pid}" in line
                         else "does not name the owner")
        p.in_process("evaluate a workdir being trained", "evaluate_main", [f"--workdir={w}"],
                     workdir=w)
    finally:
        holder.terminate()
        holder.wait()


def probe_storage(p):
    for name in STORAGE_ERRORS:
        w = os.path.join(p.tmp, "st-" + name.replace(" ", "_"))
        write(os.path.join(w, "checkpoints", "8", "meta", "metadata"), "committed")
        write(os.path.join(w, "metrics", "train_metrics.csv.tmp"), "half")
        write(os.path.join(w, "checkpoints", "16.orbax-checkpoint-tmp", "x"), "half")

        def check(line, _w=w, _name=name):
            if os.path.exists(os.path.join(_w, "metrics", "train_metrics.csv.tmp")):
                return "temporary left"
            if "EIO" not in _name and "wrapped" not in _name and _w not in line:
                return "no path"
            return None

        p.in_process(f"train storage error: {name}", "train_main",
                     [f"--config={SCALING}:ilcm,fast", f"--workdir={w}"],
                     stub=f"storage:{name}", check=check)
        p.in_process(f"evaluate storage error: {name}", "evaluate_main", [f"--workdir={w}"],
                     stub=f"storage:{name}", check=check)


def probe_signals(p):
    for sig in ("SIGTERM", "SIGINT"):
        w = os.path.join(p.tmp, f"sig-{sig}")
        os.makedirs(w, exist_ok=True)
        p.in_process(f"train {sig} during evaluation", "train_main",
                     [f"--config={SCALING}:ilcm,fast", f"--workdir={w}"], stub=f"signal:{sig}",
                     check=lambda line, _s=sig: None if f"{_s} during evaluation" in line
                     else "not a stop line")
        p.in_process(f"evaluate {sig}", "evaluate_main", [f"--workdir={w}"],
                     stub=f"signal:{sig}")
    w = os.path.join(p.tmp, "sig-twice")
    p.in_process("train second Ctrl-C", "train_main",
                 [f"--config={SCALING}:ilcm,fast", f"--workdir={w}"], stub="twice:SIGINT",
                 check=lambda line: None if "second Ctrl-C" in line else "not a stop line")


def probe_scripts(p):
    s = lambda name: os.path.join(ROOT, "scripts", name)  # noqa: E731
    toy, bad = s("make_toy_causalcircuit.py"), s("build_causalcircuit.py")
    cases = [
        [toy], [toy, "--out_dir", "o", "--seed=-1"], [toy, "--out_dir", "o", "--seed=2**40"],
        [toy, "--out_dir", "o", "--resolution", "100000"],
        [toy, "--out_dir", "o", "--resolution", "8"], [toy, "--out_dir", "o", "--train", "0"],
        [toy, "--out_dir", "o", "--layout", "grid"], [toy, "--out_dir", "o", "--bogus"],
        [toy, "--out_dir", "/proc/no/such"],
        [bad], [bad, "--data_dir", "x"], [bad, "--data_dir", "/nonexistent", "--tfds_dir", "t"],
        [bad, "--data_dir", "x", "--tfds_dir", "t", "--resolution", "17"],
        [bad, "--data_dir", "x", "--tfds_dir", "t", "--workers", "0"],
        [s("plot_scaling.py"), "--out", "/missing/dir/x.png", "w"],
        [s("plot_scaling.py"), "--out", "x.png", "/nonexistent"], [s("plot_scaling.py")],
        [s("plot_metrics.py"), "--out", "/missing/dir/x.png", "w"],
        [s("plot_metrics.py"), "--out", "x.png", "/nonexistent"], [s("plot_metrics.py")],
        [s("benchmark.py"), "--bogus"], [s("train.py"), "--workdir"],
        [s("evaluate.py"), "--workdir=/nonexistent"],
    ]
    for args in cases:
        p.subprocess("script " + " ".join(os.path.basename(a) for a in args), args)
    # a 17-pixel download built as `full`: refused before anything is built
    toy_dir = os.path.join(p.tmp, "toy17")
    subprocess.run([sys.executable, toy, "--out_dir", toy_dir, "--train", "4", "--val", "2",
                    "--test", "2", "--resolution", "17"], capture_output=True,
                   env=dict(os.environ, PYTHONPATH=ROOT), check=True)
    p.subprocess("script build_causalcircuit 17 px download",
                 [bad, "--data_dir", toy_dir, "--tfds_dir", os.path.join(p.tmp, "tfds17")])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--verbose", action="store_true", help="print every case")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case
    args = parser.parse_args()
    if args.case:
        return run_case(args.case)
    with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
        p = Probe(tmp, args.verbose, args.only)
        for group in (probe_config_values, probe_flags, probe_evaluate_real, probe_workdirs,
                      probe_storage, probe_signals, probe_scripts):
            group(p)
        counts = p.counts()
    width = max(map(len, counts))
    for key, value in counts.items():
        print(f"{key:{width}}  {value}")
    bad = counts["tracebacks"] + counts["silent acceptances"] + counts["outputs lost"]
    sys.exit(1 if bad or counts["other (wrong exit/message)"] else 0)


if __name__ == "__main__":
    main()
