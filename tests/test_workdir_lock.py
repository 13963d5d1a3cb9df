"""The workdir lock (train/workdir_lock.py): one process per workdir, stale locks broken."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from wscrl_jax.train import workdir_lock
from wscrl_jax.train.workdir_lock import WorkdirBusy

HOLD = ("import sys, time; from wscrl_jax.train import workdir_lock; "
        "lock = workdir_lock.acquire(sys.argv[1], 'training'); print('locked', flush=True); "
        "time.sleep(60)")


def hold_in_subprocess(workdir):
    """A real second process that takes the lock and keeps it (until killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_process_is_refused_naming_the_owner(tmp_path):
    proc = hold_in_subprocess(tmp_path)
    try:
        with pytest.raises(WorkdirBusy) as info:
            workdir_lock.acquire(str(tmp_path), "evaluation")
        message = str(info.value)
        assert f"pid {proc.pid}" in message and socket.gethostname() in message
        assert "training" in message and "\n" not in message
        # the refused process changed nothing: the owner's record is still there
        assert workdir_lock.read_owner(str(tmp_path))["pid"] == proc.pid
    finally:
        proc.terminate()
        proc.wait()


def test_lock_of_a_killed_process_is_broken_with_a_log_line(tmp_path, caplog):
    proc = hold_in_subprocess(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert workdir_lock.read_owner(str(tmp_path))["pid"] == proc.pid  # the record stayed
    with caplog.at_level(logging.WARNING, logger="wscrl_jax"):
        with workdir_lock.acquire(str(tmp_path)):
            assert workdir_lock.read_owner(str(tmp_path))["pid"] == os.getpid()
    assert any("stale lock" in r.message and str(proc.pid) in r.message
               for r in caplog.records), caplog.text


def test_release_on_exception_empties_the_record_and_frees_the_lock(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with workdir_lock.acquire(str(tmp_path)):
            with pytest.raises(WorkdirBusy):  # a second open file description is refused too
                workdir_lock.acquire(str(tmp_path))
            1 / 0
    assert workdir_lock.read_owner(str(tmp_path)) is None
    assert os.path.exists(workdir_lock.lock_path(str(tmp_path)))  # never deleted
    workdir_lock.acquire(str(tmp_path)).release()


def test_creates_the_workdir(tmp_path):
    with workdir_lock.acquire(str(tmp_path / "new" / "w")):
        assert (tmp_path / "new" / "w" / ".lock").exists()


@pytest.mark.parametrize("age, refused", [(5, True), (workdir_lock.STALE_AFTER_S + 60, False)])
def test_record_of_another_host_follows_its_heartbeat(tmp_path, age, refused, caplog):
    """Where flock is local to each host (shared file systems), a fresh record of another host
    is honoured; one whose heartbeat stopped is broken."""
    path = workdir_lock.lock_path(str(tmp_path))
    with open(path, "w") as f:
        json.dump({"host": "other-host.example", "pid": 123, "role": "training",
                   "started": time.time() - 1000}, f)
    os.utime(path, (time.time() - age, time.time() - age))
    if refused:
        with pytest.raises(WorkdirBusy, match="host other-host.example, pid 123"):
            workdir_lock.acquire(str(tmp_path))
        return
    with caplog.at_level(logging.WARNING, logger="wscrl_jax"):
        workdir_lock.acquire(str(tmp_path)).release()
    assert "no heartbeat" in caplog.text


def test_without_flock_a_live_local_pid_is_refused(tmp_path, monkeypatch):
    """File systems without flock: the record alone decides (here: a live local process)."""
    def no_flock(fd, operation):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(workdir_lock.fcntl, "flock", no_flock)
    with open(workdir_lock.lock_path(str(tmp_path)), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getppid(), "role": "training"}, f)
    with pytest.raises(WorkdirBusy, match=f"pid {os.getppid()}"):
        workdir_lock.acquire(str(tmp_path))
