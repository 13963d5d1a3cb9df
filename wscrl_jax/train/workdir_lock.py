"""One process per workdir: an advisory lock file, WORKDIR/.lock.

The lock is an exclusive `fcntl.flock` on WORKDIR/.lock, taken before anything else is
written to the workdir; the file holds the owner's record (one JSON line: host, pid, what it
does, when it started) so that a refused run can name it. A second run (training or
evaluation) on a locked workdir raises `WorkdirBusy`; the CLI prints it in one line (exit 2)
without touching the workdir.

Stale locks: the kernel drops a flock when its process dies (kill -9 included), so a lock
that is free but still holds a record was left by a process that did not release it; the
record is replaced with one log line. The file is never deleted (deleting a flock'ed file
lets a third process lock a new inode while a second still waits on the old one); releasing
empties it.

Other hosts: where the workdir is on a shared file system, flock may be local to each host
(NFSv3 without lock manager, some FUSE mounts) or unsupported (ENOLCK, EOPNOTSUPP). So the
owner also refreshes the file's modification time every `HEARTBEAT_S` seconds (a daemon
thread), and a record of another host whose heartbeat is younger than `STALE_AFTER_S` is
honoured even where the flock was granted: the run is refused, naming that host. An older
record is treated as stale (its owner stopped refreshing, so it is gone) and broken with a log
line. Where flock is unsupported, only the record and its heartbeat decide.

Multi-process (jax.distributed) runs: the caller takes the lock on process 0 only; the other
processes write no files.
"""

import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from typing import Optional

log = logging.getLogger("wscrl_jax")

LOCK_NAME = ".lock"
HEARTBEAT_S = 20.0
STALE_AFTER_S = 120.0


class WorkdirBusy(RuntimeError):
    """The workdir is locked by another run; the message names its owner (one line)."""


def lock_path(workdir: str) -> str:
    return os.path.join(workdir, LOCK_NAME)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def read_owner(workdir: str) -> Optional[dict]:
    """The record in WORKDIR/.lock (host, pid, role, started, heartbeat age in s), or None when
    there is none (no file, empty, released) or it cannot be parsed."""
    try:
        fd = os.open(lock_path(workdir), os.O_RDONLY)
    except OSError:
        return None
    try:
        return _read_record(fd)
    finally:
        os.close(fd)


def _read_record(fd: int) -> Optional[dict]:
    """The record of an open lock file. Read through the descriptor that holds the lock: where
    flock is emulated with POSIX locks (NFS), closing another descriptor of the file would
    drop it."""
    try:
        text = os.pread(fd, 1 << 16, 0).decode(errors="replace").strip()
        age = time.time() - os.fstat(fd).st_mtime
    except OSError:
        return None
    try:
        owner = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(owner, dict):
        return None
    owner["age_s"] = max(age, 0.0)
    return owner


def describe_owner(owner: dict) -> str:
    """"host H, pid P, training since 2026-01-01 12:00:00"."""
    started = owner.get("started")
    since = (f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
             if isinstance(started, (int, float)) else "")
    return (f"host {owner.get('host', '?')}, pid {owner.get('pid', '?')}, "
            f"{owner.get('role', 'a run')}{since}")


class WorkdirLock:
    """An acquired lock on a workdir (see `acquire`); a context manager whose exit releases it.

    Releasing empties the record and drops the flock; it is idempotent and also runs when the
    object is garbage-collected, so no exit path keeps the workdir locked in this process.
    """

    def __init__(self, workdir: str, fd: int, flocked: bool):
        self.workdir, self._fd, self._flocked = workdir, fd, flocked
        self._stop = threading.Event()
        # the thread holds no reference to self, so that garbage collection can release
        threading.Thread(target=_heartbeat, args=(lock_path(workdir), self._stop), daemon=True,
                         name="workdir-lock-heartbeat").start()

    def release(self):
        if self._fd is None:
            return
        self._stop.set()
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            if self._flocked:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()

    def __del__(self):
        self.release()


def _heartbeat(path: str, stop: threading.Event):
    """Refreshes the lock file's modification time until `stop` is set."""
    while not stop.wait(HEARTBEAT_S):
        try:
            os.utime(path)
        except OSError:  # a full or read-only disk: the flock still holds
            pass


def acquire(workdir: str, role: str = "training") -> WorkdirLock:
    """Locks `workdir` (created if absent) for this process, or raises `WorkdirBusy` naming
    the owner. role: what this process does there ("training", "evaluation"), shown to a run
    that is refused. OSError where the workdir or its lock file cannot be created."""
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(lock_path(workdir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flocked = _try_flock(fd, workdir)
        owner = _read_record(fd)
        if flocked is False:
            raise WorkdirBusy(_busy(workdir, owner))
        if owner is not None and _owner_is_live(owner, flocked):
            raise WorkdirBusy(_busy(workdir, owner))
        if owner is not None:
            log.warning("Breaking a stale lock on %s left by %s (%s)", workdir,
                        describe_owner(owner), _why_stale(owner))
        record = {"host": socket.gethostname(), "pid": os.getpid(), "role": role,
                  "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)  # drops the flock if it was taken
        raise
    return WorkdirLock(workdir, fd, bool(flocked))


def _try_flock(fd: int, workdir: str) -> Optional[bool]:
    """True: locked; False: held by another process; None: the file system has no flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            log.warning("The file system of %s has no file locks (%s); relying on the lock "
                        "file's record alone", workdir, e.strerror)
            return None
        raise


def _owner_is_live(owner: dict, flocked: Optional[bool]) -> bool:
    """Whether a record found in a lock this process could take still belongs to a live run."""
    if owner.get("host") == socket.gethostname() and flocked:
        return False  # the kernel would not have granted the flock to a live local owner
    if owner.get("host") == socket.gethostname():  # no flock: ask the kernel about the pid
        return _pid_alive(int(owner.get("pid", -1))) and owner.get("pid") != os.getpid()
    return owner["age_s"] < STALE_AFTER_S  # another host: its heartbeat decides


def _why_stale(owner: dict) -> str:
    if owner.get("host") == socket.gethostname():
        return "that process is no longer running"
    return f"no heartbeat for {owner['age_s']:.0f} s"


def _busy(workdir: str, owner: Optional[dict]) -> str:
    who = describe_owner(owner) if owner else "a process that has not written its record yet"
    return (f"{workdir} is in use by another run ({who}); wait for it to finish or use another "
            f"--workdir")
