"""`import_beside`: modules a run needs later, imported in a background thread meanwhile.

A training run needs Orbax (0.2 s to import) once its data and state exist, and at its end
matplotlib (0.2 to 0.3 s) for its figures and scipy's optimize and special functions (0.2 s)
for the evaluation's graph matching and DCI. Imported in a thread while the run generates its data,
whose compilations release the GIL, they cost the start and the end of the run nothing.
Python's import lock makes an import of the same module elsewhere wait for the thread's.
"""

import importlib
import threading
from typing import Sequence

# what a training run imports late: checkpoints (`train/checkpoint.py`), figures (`plots.py`),
# the evaluation's graph matching (`eval/graph_match.py`) and DCI (`eval/dci.py`)
RUN_MODULES = ("orbax.checkpoint", "matplotlib.figure", "matplotlib.backends.backend_agg",
               "scipy.optimize", "scipy.special")


def import_beside(names: Sequence[str] = RUN_MODULES) -> threading.Thread:
    """Starts importing `names` in a daemon thread and returns it. A module that fails to
    import is skipped: the import where it is used reports the error."""
    def run():
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001  reported by the import that needs it
                pass

    thread = threading.Thread(target=run, name="import-beside", daemon=True)
    thread.start()
    return thread
