"""Other libraries' error reports kept off the terminal during a run, and in WORKDIR/output.log.

When a write fails (a full disk), Orbax logs each failed background write with its traceback
(absl logger), asyncio reports every task whose exception nobody read ("Task exception was
never retrieved"), and tensorstore callbacks into closed event loops print tracebacks from
their threads: a hundred tracebacks for one problem, which the run itself reports in one
`error:` line. `to_log_file` sends all of these to the run's log file instead (nothing is
dropped), and keeps a log file that cannot be written (the same full disk) from printing
"--- Logging error ---" tracebacks. The run's own logger and a crash of the main thread are
unaffected.
"""

import contextlib
import logging
import sys
import threading
import traceback
from typing import List

# the libraries whose records go to the log file only (others keep reaching the terminal)
_LIBRARY_LOGGERS = ("absl", "asyncio", "orbax", "tensorstore")
_THREADS = "library_threads"  # outside the run's "wscrl_jax" logger: reaches the root only


class _NotFromLibraries(logging.Filter):
    def filter(self, record):
        return not record.name.split(".")[0] in _LIBRARY_LOGGERS + (_THREADS,)


def _quiet_handle_error(record):
    """A log line that could not be written (e.g. no space left): dropped silently; stderr
    still has it."""


def _file_handlers(logger: logging.Logger) -> List[logging.Handler]:
    return [h for h in logger.handlers if isinstance(h, logging.FileHandler)]


@contextlib.contextmanager
def to_log_file(logger: logging.Logger):
    """Within the block: the named libraries' log records and the exceptions that library
    threads print go to `logger`'s file handlers only (without one they are dropped); other
    records of the root logger still reach stderr; the file handlers fail silently."""
    files = _file_handlers(logger)
    root = logging.getLogger()
    saved = {"root": (root.handlers[:], root.level)}
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setFormatter(logging.Formatter(logging.BASIC_FORMAT))
    terminal.addFilter(_NotFromLibraries())
    root.handlers, root.level = list(files) + [terminal], logging.WARNING
    for name in _LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        saved[name] = (lib.handlers[:], lib.propagate)
        lib.handlers, lib.propagate = [], True
    saved_errors = {h: h.handleError for h in files}
    for h in files:
        h.handleError = _quiet_handle_error
    library = logging.getLogger(_THREADS)
    hooks = (sys.excepthook, threading.excepthook, sys.unraisablehook)

    def thread_hook(args):
        library.error("Exception in thread %s", getattr(args.thread, "name", "?"),
                      exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    def except_hook(exc_type, value, tb):
        if threading.current_thread() is threading.main_thread():
            return hooks[0](exc_type, value, tb)
        library.error("Exception printed by a library thread:\n%s",
                      "".join(traceback.format_exception(exc_type, value, tb)))

    def unraisable_hook(unraisable):
        library.error("Exception ignored in %r: %r", unraisable.object, unraisable.exc_value)

    sys.excepthook, threading.excepthook, sys.unraisablehook = (except_hook, thread_hook,
                                                                unraisable_hook)
    try:
        yield
    finally:
        sys.excepthook, threading.excepthook, sys.unraisablehook = hooks
        root.handlers, root.level = saved.pop("root")
        for name, (handlers, propagate) in saved.items():
            lib = logging.getLogger(name)
            lib.handlers, lib.propagate = handlers, propagate
        for h, original in saved_errors.items():
            h.handleError = original
