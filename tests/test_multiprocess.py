"""Multi-process runs on jax.distributed: two CPU processes on localhost (2 host devices each)
run one 4-member sweep with the same command; it must equal the sweep in one process, and
resume from its collective checkpoint after a kill -9 of both processes."""

import os
import socket
import subprocess
import sys
import time

import pytest

from wscrl_jax.train import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")

# The tiny one-phase scaling config of conftest.py as a config file for scripts/train.py.
CONFIG = f"""
import sys
sys.path.insert(0, {TESTS!r})
from conftest import one_phase, tiny_scaling_config


def get_config(arg=None):
    c = one_phase(tiny_scaling_config())
    c.training.epochs = 3
    c.training.steps_per_call = 20
    c.checkpoint.every_n_steps = 40
    c.sweep.seeds = "1,2"
    c.sweep.data_seeds = "3,4"
    return c
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny_sweep.py"
    path.write_text(CONFIG)
    return str(path)


def _command(config_file, workdir, *flags):
    return [sys.executable, os.path.join(ROOT, "scripts", "train.py"), f"--config={config_file}",
            f"--workdir={workdir}", "--cpu_devices=2", *flags]


def _env():
    return dict(os.environ, WSCRL_JAX_CACHE="", XLA_FLAGS="")


def _start_both(config_file, workdir):
    """The same command in two processes (ids 0 and 1) with a fresh coordinator port."""
    address = f"127.0.0.1:{_free_port()}"
    return [subprocess.Popen(_command(config_file, workdir, "--num_processes=2",
                                      f"--process_id={i}", f"--coordinator_address={address}"),
                             env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
            for i in range(2)]


def _finish(procs, timeout=600):
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return outputs


@pytest.fixture(scope="module")
def one_process(config_file, tmp_path_factory):
    """The sweep in one process with 4 host devices (the same member layout: one a device)."""
    workdir = tmp_path_factory.mktemp("one_process")
    command = _command(config_file, workdir)
    command[-1] = "--cpu_devices=4"
    out = subprocess.run(command, env=_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


def _read(workdir, name):
    return open(os.path.join(workdir, "metrics", name)).read()


@pytest.mark.slow
def test_two_processes_equal_one(config_file, one_process, tmp_path):
    outputs = _finish(_start_both(config_file, tmp_path))
    for name in ("train_metrics.csv", "test_metrics.csv"):
        assert _read(tmp_path, name) == _read(one_process, name)
    assert checkpoint.restore_meta(str(tmp_path))["integrity"]["leaves"] == \
        checkpoint.restore_meta(str(one_process))["integrity"]["leaves"]
    # process 0 logs and writes; process 1 prints no info lines
    assert "process 0/2] Final evaluation" in outputs[0]
    assert "Final evaluation" not in outputs[1]
    assert "process 0/2" in open(tmp_path / "output.log").read()


@pytest.mark.slow
def test_kill_both_processes_then_resume(config_file, one_process, tmp_path):
    """kill -9 of both processes after the first checkpoint, then the same commands: the run
    resumes from the collective checkpoint and ends with the one-process run's metrics."""
    procs = _start_both(config_file, tmp_path)
    deadline = time.time() + 600
    while time.time() < deadline and not (tmp_path / "checkpoints" / "40").exists():
        time.sleep(0.1)
    for p in procs:
        p.kill()  # SIGKILL: no handler runs
        p.wait()
    assert (tmp_path / "checkpoints" / "40").exists()
    assert not (tmp_path / "metrics" / "test_metrics.csv").exists()  # killed before the end
    _finish(_start_both(config_file, tmp_path))
    assert "Resuming from the checkpoint at step 40" in open(tmp_path / "output.log").read()
    for name in ("train_metrics.csv", "test_metrics.csv"):
        assert _read(tmp_path, name) == _read(one_process, name)


def test_inconsistent_flags_are_one_line(config_file, tmp_path):
    out = subprocess.run(_command(config_file, tmp_path, "--num_processes=2", "--process_id=2",
                                  "--coordinator_address=127.0.0.1:1"),
                         env=_env(), capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --process_id=2 must be in [0, 2) for --num_processes=2"
