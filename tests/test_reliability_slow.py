"""End to end, with the commands of docs/reliability.md: two processes on one workdir, a real
full disk (a small tmpfs), and stop signals during evaluation. Slow (each run trains the fast
ILCM config for ~30 s on 2 cores)."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from wscrl_jax.train.workdir_lock import read_owner

pytestmark = pytest.mark.slow

TRAIN = [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
         "--config", os.path.join(ROOT, "configs", "scaling.py") + ":ilcm,fast",
         "--config.data.samples.train=2000", "--config.data.samples.val=500",
         "--config.data.samples.test=500", "--config.training.steps_per_call=8",
         "--config.checkpoint.every_n_steps=16"]
EVALUATE = [sys.executable, os.path.join(ROOT, "scripts", "evaluate.py")]
OUTPUTS = ("config.json", "metrics/train_metrics.csv", "metrics/test_metrics.csv")


def env():
    return dict(os.environ, PYTHONPATH=ROOT)


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=900, env=env(),
                          **kwargs)


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def read(workdir, names=OUTPUTS):
    return {n: open(os.path.join(workdir, n), "rb").read() for n in names}


@pytest.fixture(scope="module")
def solo(tmp_path_factory):
    """An uninterrupted run of the command alone: its outputs."""
    workdir = str(tmp_path_factory.mktemp("solo") / "w")
    out = run(TRAIN + [f"--workdir={workdir}"])
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir, read(workdir)


@pytest.mark.parametrize("delay, extra", [(0.3, ["--config.seed=43"]), (0.3, []), (4.0, [])],
                         ids=["other_config_0.3s", "same_config_0.3s", "same_config_4s"])
def test_second_process_on_a_workdir_is_refused(solo, tmp_path, delay, extra):
    workdir = str(tmp_path / "w")
    first = subprocess.Popen(TRAIN + [f"--workdir={workdir}"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env())
    # `delay` after the first holds the lock (on a loaded machine a fixed head start from the
    # launch can let the second start up first)
    deadline = time.time() + 300
    while (read_owner(workdir) or {}).get("pid") != first.pid and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    second = run(TRAIN + [f"--workdir={workdir}"] + extra)
    _, first_err = first.communicate(timeout=900)
    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert error_lines(second.stderr) == [line for line in second.stderr.splitlines()
                                          if line.strip()], second.stderr
    assert f"pid {first.pid}" in second.stderr and "in use by another run" in second.stderr
    assert read(workdir) == solo[1]  # the first's outputs, as if it had run alone


def _mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip()}")


@pytest.mark.parametrize("free_kb", [100, 700])
def test_real_full_disk_is_one_line_and_the_rerun_matches(solo, tmp_path, free_kb):
    """A 2 MB tmpfs with 100 KB free (the first checkpoint fails inside Orbax with
    RESOURCE_EXHAUSTED) or 700 KB (two checkpoints fit, the third fails): one line naming the
    path, exit 1, no traceback, no temporaries, the committed checkpoints kept; after freeing
    the space the same command ends with the uninterrupted run's outputs."""
    mount = str(tmp_path / "fs")
    _mount_tmpfs(mount, "2m")
    try:
        filler = os.path.join(mount, "filler")
        stat = os.statvfs(mount)
        with open(filler, "wb") as f:
            f.write(b"\0" * (stat.f_bavail * stat.f_frsize - free_kb * 1024))
        workdir = os.path.join(mount, "w")
        out = run(TRAIN + [f"--workdir={workdir}"])
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
        errors = error_lines(out.stderr)
        assert len(errors) == 1 and "No space left on device writing" in errors[0], out.stderr
        assert workdir in errors[0] and "free of" in errors[0]
        left = [os.path.join(d, f) for d, dirs, files in os.walk(workdir)
                for f in files + dirs if ".tmp" in f or "orbax-checkpoint-tmp" in f]
        assert not left
        steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")))
        if steps:
            assert f"resumes from the checkpoint at step {steps[-1]}" in errors[0]
        os.remove(filler)
        again = run(TRAIN + [f"--workdir={workdir}"])
        assert again.returncode == 0, again.stderr[-3000:]
        assert read(workdir) == solo[1]
    finally:
        subprocess.run(["umount", "-l", mount], capture_output=True)


def _wait_for(path, text, count, proc, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(path) and open(path).read().count(text) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} did not appear in {path}")


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
@pytest.mark.parametrize("command", ["evaluate", "reevaluate"])
def test_signal_during_evaluation(solo, tmp_path, sig, code, command):
    """wscrl-evaluate, or the evaluation of a training run (--reevaluate), stopped by SIGTERM or
    Ctrl-C: exit 143 / 130, one line, no traceback, no metrics file written or changed."""
    workdir = str(tmp_path / "w")
    shutil.copytree(solo[0], workdir)
    before = sorted(os.listdir(os.path.join(workdir, "metrics")))
    log = os.path.join(workdir, "output.log")
    marker = "Restored the checkpoint" if command == "evaluate" else "Resuming from"
    count = open(log).read().count(marker) + 1
    args = (EVALUATE + [f"--workdir={workdir}"] if command == "evaluate"
            else TRAIN + [f"--workdir={workdir}", "--reevaluate"])
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env())
    _wait_for(log, marker, count, proc)
    time.sleep(2)  # inside the evaluation
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr
    errors = error_lines(stderr)
    assert len(errors) == 1 and f"stopped by {sig.name} during evaluation" in errors[0]
    assert sorted(os.listdir(os.path.join(workdir, "metrics"))) == before
    assert read(workdir) == solo[1]
