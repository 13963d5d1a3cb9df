"""Stop requests from SIGINT and SIGTERM (Ctrl-C; the preemption notice of TPU VMs, clusters
and `timeout`), honoured at the next call boundary so that a checkpoint can be saved.

The handlers only set a flag; the training loop checks it after each compiled call and raises
`Interrupted` with the state, which the experiment checkpoints before the process exits.
Once there is nothing left to checkpoint (evaluation, `stop_now_from_here`), a signal raises
`StopNow` at once instead: files are written atomically, so nothing is left half-written. A
second SIGINT while the first is pending also raises `StopNow` (the CLI prints one line, no
traceback); a third exits the process at once.
"""

import os
import signal
import threading
from typing import Optional


class Interrupted(Exception):
    """Training stopped on request at a call boundary; `state` is the state at `step`."""

    def __init__(self, state, step: int, signal_name: str):
        super().__init__(f"{signal_name} at step {step}")
        self.state, self.step, self.signal_name = state, step, signal_name


class StopNow(BaseException):
    """A signal that stops at once (not at a call boundary). A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way (e.g. a member whose
    evaluation "failed") swallows it."""

    def __init__(self, signal_name: str, phase: str):
        super().__init__(f"{signal_name} during {phase}")
        self.signal_name, self.phase = signal_name, phase


class StopRequest:
    """Records the first SIGINT/SIGTERM received while installed (`with StopRequest() as s`)."""

    def __init__(self):
        self.signal_name: Optional[str] = None
        self.immediate_phase: Optional[str] = None  # set by `stop_now_from_here`
        self._sigints = 0
        self._previous = {}

    def __call__(self) -> Optional[str]:
        """The name of the signal that asked to stop, or None."""
        return self.signal_name

    def stop_now_from_here(self, phase: str = "evaluation"):
        """From now on a signal stops at once (`StopNow`): there is no state left to
        checkpoint. Raises `StopNow` right away if a signal is already pending."""
        self.immediate_phase = phase
        if self.signal_name is not None:
            raise StopNow(self.signal_name, phase)

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            self._sigints += 1
            if self._sigints >= 3:  # the second's clean-up is too slow for the user
                os._exit(130)
            if self._sigints == 2 and self.signal_name is not None:
                raise StopNow(name, self.immediate_phase or "training")
        if self.signal_name is None:
            self.signal_name = name
        if self.immediate_phase is not None:
            raise StopNow(name, self.immediate_phase)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals need the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        if self in _ACTIVE:
            _ACTIVE.remove(self)


_ACTIVE = []  # the StopRequests whose `with` blocks are open, innermost last


def raise_if_stopped():
    """Raises the `StopNow` of a signal that arrived after `stop_now_from_here` but did not stop
    the process: the handler raised it inside library code that swallows every exception (JAX
    has bare `except:` blocks around executables, e.g. `pxla.py`). Called before results are
    written, so that such a signal still leaves no new file. No-op outside a StopRequest."""
    if _ACTIVE:
        stop = _ACTIVE[-1]
        if stop.immediate_phase is not None and stop.signal_name is not None:
            raise StopNow(stop.signal_name, stop.immediate_phase)
