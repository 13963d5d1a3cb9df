"""Random bits on XLA's CPU backend from the unrolled threefry hash: the same bits, faster.

JAX lowers its threefry2x32 hash on CPU as a rolled loop (five iterations of four rounds) to keep
compile times of large programs down; on GPU and TPU it uses the unrolled form. Inside a
compiled training step every random draw (reparameterisation noise, averaging weights) then
runs a small while loop of many kernels per iteration, a large share of all the kernels of a
small model's step (docs/performance.md). `use_unrolled_threefry` registers
JAX's own unrolled lowering for CPU too; the hash, and so every random number, is bit for bit
the same (tests/test_prng.py), and fused into one kernel per draw. The compiled step and the
parameter init register it (`make_run_steps`, `init_states`): an init of many parameter
arrays, one draw each, also compiles faster unrolled. The data generation lowers inside
`rolled_threefry`: its few large draws compile faster rolled.
"""

import contextlib
import logging
from typing import Any, NamedTuple, Optional

log = logging.getLogger("wscrl_jax")
_registered = False


def use_unrolled_threefry() -> bool:
    """Registers the unrolled threefry lowering for the CPU platform (idempotent; affects
    functions lowered afterwards). Returns False, changing nothing, where this JAX version does
    not have the lowering where this module expects it (random numbers are then just slower)."""
    global _registered
    if _registered:
        return True
    rules = _lowering_rules()
    if rules is None:
        log.debug("unrolled threefry lowering not found in this JAX version; keeping JAX's own")
        return False
    _register(rules.primitive, rules.unrolled)
    _registered = True
    return True


@contextlib.contextmanager
def rolled_threefry():
    """Programs first called inside the block lower with JAX's own rolled CPU hash (the same
    bits); the unrolled lowering, where registered, is restored after."""
    rules = _lowering_rules()
    if not _registered or rules is None or rules.rolled is None:
        yield
        return
    _register(rules.primitive, rules.rolled)
    try:
        yield
    finally:
        _register(rules.primitive, rules.unrolled)


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


def _register(primitive, rule):
    from jax.interpreters import mlir
    mlir.register_lowering(primitive, rule, platform="cpu")
