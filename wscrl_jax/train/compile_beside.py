"""`call_beside`: a program compiled and called in a background thread while the caller goes on.

XLA releases Python's lock while it compiles, so a program compiling in a thread overlaps
whatever the calling thread does meanwhile: a run's start, which one compilation at a time
leaves partly idle on a small CPU, builds the data while the parameter init compiles
(`train/state.py: init_states_beside`). The program is traced and lowered in the calling thread,
so the lowering rules in force there (`train/prng.py` swaps the threefry rule around the data's
generation) are the ones it is built with.
"""

import concurrent.futures
from typing import Any, Callable


def call_beside(function: Callable, args: tuple) -> "concurrent.futures.Future[Any]":
    """Future of `function(*args)` (a jitted function without static arguments), lowered now
    in this thread, compiled and called in a background thread."""
    lowered = function.lower(*args)
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile-beside")
    future = pool.submit(lambda: lowered.compile()(*args))
    pool.shutdown(wait=False)
    return future
