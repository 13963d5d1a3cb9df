"""Stop requests from SIGINT and SIGTERM (Ctrl-C; the preemption notice of TPU VMs, clusters
and `timeout`), honoured at the next call boundary so that a checkpoint can be saved.

The handlers only set a flag; the training loop checks it after each compiled call and raises
`Interrupted` with the state, which the experiment checkpoints before the process exits. A
second SIGINT while the first is pending stops at once (KeyboardInterrupt), as usual.
"""

import signal
import threading
from typing import Optional


class Interrupted(Exception):
    """Training stopped on request at a call boundary; `state` is the state at `step`."""

    def __init__(self, state, step: int, signal_name: str):
        super().__init__(f"{signal_name} at step {step}")
        self.state, self.step, self.signal_name = state, step, signal_name


class StopRequest:
    """Records the first SIGINT/SIGTERM received while installed (`with StopRequest() as s`)."""

    def __init__(self):
        self.signal_name: Optional[str] = None
        self._previous = {}

    def __call__(self) -> Optional[str]:
        """The name of the signal that asked to stop, or None."""
        return self.signal_name

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.signal_name == "SIGINT":
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal_name = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals need the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
