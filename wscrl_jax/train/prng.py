"""The threefry hash on XLA's CPU backend: unrolled by default, rolled where that compiles and runs
faster; the same bits either way.

JAX lowers its threefry2x32 hash on CPU as a rolled loop (five iterations of four rounds) to keep
compile times of large programs down; on GPU and TPU it uses the unrolled form. Inside a
compiled training step every random draw (reparameterisation noise, averaging weights) then
runs a small while loop of many kernels per iteration. `use_unrolled_threefry` registers a CPU
rule that lowers the hash unrolled (JAX's own unrolled lowering, one fused kernel per draw) except
inside `rolled_threefry`, which selects JAX's rolled CPU lowering for the programs the calling
thread lowers in the block; other threads lowering meanwhile keep the unrolled form. The hash,
and so every random number, is bit for bit the same (tests/test_prng.py); the surrounding float
arithmetic can fuse differently, so a program's results may move in their last digits.

Where each is used (docs/performance.md): the parameter init, pretraining and the evaluation's
programs unrolled (an init of many arrays, one draw each, compiles faster; ENCO and the implicit
graph compile about twice as long rolled); the data generation rolled (its few large draws), and
the phases a method names in `RunOptions.rolled_hash` (the ILCM and dVAE main phases: shorter
compilations and faster steps on a CPU).
"""

import contextlib
import logging
import threading
from typing import Any, NamedTuple, Optional

log = logging.getLogger("wscrl_jax")
_registered = False
_thread = threading.local()  # .rolled: this thread lowers the hash rolled


def use_unrolled_threefry() -> bool:
    """Registers the CPU rule that lowers the hash unrolled outside `rolled_threefry`
    (idempotent; affects functions lowered afterwards). Returns False, changing nothing, where
    this JAX version does not have the lowerings where this module expects them (random numbers
    are then just slower)."""
    global _registered
    if _registered:
        return True
    rules = _lowering_rules()
    if rules is None:
        log.debug("unrolled threefry lowering not found in this JAX version; keeping JAX's own")
        return False
    from jax.interpreters import mlir

    def lower_threefry(ctx, *args, **params):
        rolled = getattr(_thread, "rolled", False) and rules.rolled is not None
        return (rules.rolled if rolled else rules.unrolled)(ctx, *args, **params)

    mlir.register_lowering(rules.primitive, lower_threefry, platform="cpu")
    _registered = True
    return True


@contextlib.contextmanager
def rolled_threefry(rolled: bool = True):
    """Programs this thread lowers inside the block (first calls of jitted functions, `.lower`)
    use JAX's own rolled CPU hash where `rolled` (the same bits); other threads are unaffected,
    and the form in force before is restored after. `rolled=False`: the unrolled form (where
    `use_unrolled_threefry` registered it)."""
    before = getattr(_thread, "rolled", False)
    _thread.rolled = rolled
    try:
        yield
    finally:
        _thread.rolled = before


def rolled_now() -> bool:
    """Whether this thread is inside `rolled_threefry()` (its programs lower the hash rolled)."""
    return getattr(_thread, "rolled", False)


class _Rules(NamedTuple):
    primitive: Any
    unrolled: Any
    rolled: Any  # JAX's CPU rule; None where this JAX version has none under that name


def _lowering_rules() -> Optional[_Rules]:
    try:
        from jax._src.random import threefry2x32 as impl
        return _Rules(impl.threefry2x32_p, impl._threefry2x32_lowering_rule,
                      getattr(impl, "_threefry2x32_cpu_lowering_rule", None))
    except (ImportError, AttributeError):
        return None
