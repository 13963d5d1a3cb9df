"""Storage errors, recognised in one place: a full disk, an exceeded quota, a read-only file
system, an I/O error.

They reach the run in several shapes: an `OSError` with its errno (our own files, Orbax's
JSON files), or the checkpoint library's `ValueError("RESOURCE_EXHAUSTED: ... [os_error_code=
'28']")` from tensorstore, often wrapped in other exceptions (`__cause__`, `__context__`,
exception groups). `classify` finds the first of them in an exception's chain; `message`
turns it into one line naming the path, the free space and what to do; `remove_temporaries`
deletes what an interrupted write leaves behind (`*.tmp`, `*.tmp.png`, Orbax's
`*.orbax-checkpoint-tmp*` directories), never a committed checkpoint or a finished file.
"""

import errno
import logging
import os
import re
import shutil
from dataclasses import dataclass
from typing import List, Optional

log = logging.getLogger("wscrl_jax")

# errno -> what to do (what happened: os.strerror, e.g. "No space left on device")
STORAGE_ERRNOS = {
    errno.ENOSPC: "free space there",
    errno.EDQUOT: "free space within your quota there",
    errno.EROFS: "make it writable or use another --workdir",
    errno.EIO: "check the disk (dmesg) or use another --workdir",
}
_LIBRARY_CODES = {"RESOURCE_EXHAUSTED": errno.ENOSPC}
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
_QUOTED_PATH = re.compile(r'(?:file|writing|local file)[:]? "(/[^"]+)"')
TEMPORARY_SUFFIXES = (".tmp", ".tmp.png", ".tmp.npz")
ORBAX_TMP = ".orbax-checkpoint-tmp"


@dataclass
class StorageProblem:
    """errno (one of STORAGE_ERRNOS) and the path being written, when known; checkpoint: the
    error came from the checkpoint library (its messages do not always name the path)."""
    errno: int
    path: Optional[str]
    checkpoint: bool = False


def _from_checkpoint_library(exc: BaseException) -> bool:
    for e in _chain(exc):
        tb = e.__traceback__
        while tb is not None:
            if "orbax" in tb.tb_frame.f_code.co_filename:
                return True
            tb = tb.tb_next
    return False


def _chain(exc: BaseException):
    """The exception, its causes and contexts, and the members of exception groups."""
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend([e.__cause__, e.__context__] + list(getattr(e, "exceptions", ()) or ()))


def classify(exc: BaseException) -> Optional[StorageProblem]:
    """The storage problem behind `exc`, or None when it is something else."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in STORAGE_ERRNOS:
            return StorageProblem(e.errno, e.filename, _from_checkpoint_library(exc))
        text = str(e)
        code = next((c for name, c in _LIBRARY_CODES.items() if name in text), None)
        found = _OS_ERROR_CODE.search(text)
        if found and int(found.group(1)) in STORAGE_ERRNOS:
            code = int(found.group(1))
        if code is not None:
            paths = _QUOTED_PATH.findall(text)
            return StorageProblem(code, paths[-1] if paths else None,
                                  _from_checkpoint_library(exc))
    return None


def _shown_path(path: Optional[str], workdir: Optional[str]) -> str:
    """The path without temporary suffixes (WORKDIR/checkpoints/16, not its Orbax temporary)."""
    if not path:
        return workdir or "the output directory"
    path = str(path)
    if ORBAX_TMP in path:
        path = path[:path.index(ORBAX_TMP)]
    for suffix in TEMPORARY_SUFFIXES[::-1]:
        if path.endswith(suffix):
            path = path[:-len(suffix)]
    return path


def _free_space(path: str) -> str:
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    try:
        stat = os.statvfs(path or ".")
    except OSError:
        return ""
    return f" ({_size(stat.f_bavail * stat.f_frsize)} free of {_size(stat.f_blocks * stat.f_frsize)})"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.0f} TB"


def last_checkpoint_step(workdir: str) -> Optional[int]:
    """The newest committed checkpoint step in WORKDIR/checkpoints (named by its number;
    Orbax renames a step there only once it is complete), or None."""
    try:
        names = os.listdir(os.path.join(workdir, "checkpoints"))
    except OSError:
        return None
    steps = [int(n) for n in names if n.isdigit()]
    return max(steps) if steps else None


def message(problem: StorageProblem, workdir: Optional[str], resume_hint: bool = True) -> str:
    """One line: what happened, where, how much is free, what to do and what is kept."""
    what, todo = os.strerror(problem.errno), STORAGE_ERRNOS[problem.errno]
    path = problem.path
    if path is None and problem.checkpoint and workdir:
        path = os.path.join(workdir, "checkpoints")
    where = _shown_path(path, workdir)
    line = f"{what} writing {where}{_free_space(where)}; {todo}"
    if workdir and resume_hint:
        step = last_checkpoint_step(workdir)
        line += (f", then rerun the same command: it resumes from the checkpoint at step {step}"
                 if step is not None else ", then rerun the same command (no checkpoint was "
                 "saved yet: it starts again)")
    return line


def remove_temporaries(root: str) -> List[str]:
    """Deletes the temporary files and directories of interrupted writes under `root`
    (`*.tmp`, `*.tmp.png`, Orbax's `*.orbax-checkpoint-tmp*`); returns their paths. Committed
    checkpoints (`checkpoints/<step>`) and finished files are not touched."""
    removed = []
    for folder, dirs, files in os.walk(root):
        for name in list(dirs):
            if ORBAX_TMP in name:
                path = os.path.join(folder, name)
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
                dirs.remove(name)
            elif name.isdigit() and os.path.basename(folder) == "checkpoints":
                dirs.remove(name)  # a committed step: nothing of ours inside
        for name in files:
            if name.endswith(TEMPORARY_SUFFIXES):
                path = os.path.join(folder, name)
                try:
                    os.remove(path)
                    removed.append(path)
                except OSError:
                    pass
    return removed


def handle(exc: BaseException, workdir: Optional[str]) -> Optional[str]:
    """For a storage problem: removes the workdir's temporaries (logged) and returns the one
    line for the user; None for anything else (left to the caller)."""
    problem = classify(exc)
    if problem is None:
        return None
    if workdir and os.path.isdir(workdir):
        removed = remove_temporaries(workdir)
        if removed:
            log.info("Removed %d temporary file(s) of interrupted writes", len(removed))
    return message(problem, workdir)
