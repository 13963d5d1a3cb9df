"""What the command-line tools do around a run so that no run loses another's files: the
workdir lock, the workdir's state before training, storage errors and stop signals, each as
one `error:` line with its exit code (docs/reliability.md).

The mechanisms live in `train/` (workdir_lock, workdir_state, storage_errors, library_noise,
preemption); this module turns their outcomes into the CLI's lines and exit codes.
"""

import argparse
import contextlib
import json
import logging
import os
import sys

from wscrl_jax.train import library_noise, storage_errors, workdir_lock, workdir_state
from wscrl_jax.train.preemption import StopNow

log = logging.getLogger("wscrl_jax")


def fail(message: str, code: int = 2):
    """Prints `error: message` on stderr and exits (as `cli.fail`)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def lock_workdir(workdir: str, role: str, process_index: int = 0):
    """Locks `workdir` for this run (process 0 of a multi-process run; the others get a no-op)
    and returns the lock, a context manager that releases it. A locked workdir is one line
    naming the owner (exit 2), and nothing in it is touched; a path that cannot hold the lock
    file is one line too."""
    if process_index != 0:
        return contextlib.nullcontext()
    try:
        return workdir_lock.acquire(workdir, role)
    except workdir_lock.WorkdirBusy as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot use --workdir {workdir}: {e.strerror or e} ({e.filename or workdir})")


def check_workdir_state(workdir: str, config, overwrite: bool):
    """Refuses (one line, exit 2) to train on a workdir whose outputs a run would replace
    (`workdir_state.classify`: inconsistent), unless `overwrite`: then they are moved to
    WORKDIR/replaced_<time>/ first (logged). A sweep grid's workdir holds one folder per
    point and is not checked here."""
    if config.get("sweep", {}).get("grid"):
        return
    state = workdir_state.classify(workdir, json.loads(config.to_json_best_effort()))
    if state.kind == "restartable":
        log.info("%s has no checkpoint yet (%s); training starts again", workdir,
                 ", ".join(state.outputs))
    if state.kind != "inconsistent":
        return
    if not overwrite:
        fail(f"{workdir} is not a workdir this run can resume: {state.reason}; use a new "
             "--workdir, or pass --overwrite to move its outputs to WORKDIR/replaced_<time>/ "
             "and start again")
    target = workdir_state.set_aside(workdir, state.outputs)
    log.warning("--overwrite: moved %s of %s to %s", ", ".join(state.outputs), workdir, target)


def storage_failure(error: BaseException, workdir) -> str:
    """The one line for a storage error (`storage_errors`), after the workdir's temporary
    files are removed; None for any other error."""
    return storage_errors.handle(error, workdir)


def library_errors_to_log(logger):
    """Other libraries' error reports (Orbax, asyncio, their threads) go to output.log, not the
    terminal, while the run reports its own errors in one line (`library_noise`)."""
    return library_noise.to_log_file(logger)


def stopped_message(stop: StopNow) -> str:
    """The line for a run stopped at once by a signal."""
    if stop.phase == "training":
        return ("stopped at once by a second Ctrl-C; the last saved checkpoint is kept, rerun "
                "the same command to resume")
    return (f"stopped by {stop.signal_name} during {stop.phase}; no metrics were half-written "
            "and the checkpoint is kept, rerun the same command to evaluate")


def exit_code(signal_name: str) -> int:
    """130 after SIGINT, 143 after SIGTERM (the shells' 128 + signal number)."""
    return 130 if signal_name == "SIGINT" else 143


def remove_temporaries(workdir: str):
    """Removes what interrupted writes left in `workdir` (after a stop)."""
    if workdir and os.path.isdir(workdir):
        storage_errors.remove_temporaries(workdir)


class ArgumentParser(argparse.ArgumentParser):
    """argparse for the helper scripts: a bad argument is one `error:` line (exit 2), without
    argparse's usage block; --help still prints the usage."""

    def error(self, message):
        fail(f"{message} (see --help)")


def output_folder_exists(path: str, flag: str = "--out"):
    """One line (exit 2) when the folder an output file goes to does not exist; checked before
    any work, so nothing is computed for nothing."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        fail(f"{flag} {path}: the folder {folder} does not exist; create it or choose another "
             "path")
