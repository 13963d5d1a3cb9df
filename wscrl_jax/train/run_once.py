"""`run_once_jit`: `jax.jit` for a program a run calls once, compiled for a short compilation.

An evaluation stage that runs once on a few thousand rows (the test loss terms, the IWAE
likelihood, the implicit graph) spends far longer in XLA's compiler on a CPU than in its one
call, most of it in LLVM's optimisation and code generation of its kernels. There such a
program compiles with XLA's backend optimisation at level 0: its compilation takes 0.4-0.8x as
long, and its results move in float32's last digits (relative differences of about 1e-7;
docs/performance.md). Elsewhere it is `jax.jit` as usual. A program that runs many steps
(training phases, ENCO's 40 epochs) keeps `jax.jit`: its steps would run slower.
"""

from typing import Callable

import jax

try:
    from jax.core import Tracer
except ImportError:  # where a JAX version keeps it private only
    from jax._src.core import Tracer

QUICK_CPU_COMPILE = {"xla_backend_optimization_level": 0}


class RunOnceProgram:
    """A jitted function that picks, per call, the CPU's quick-compiling variant or the plain
    one (`__call__`, `lower` as `jax.jit`'s; the plain one inside another trace, since only a
    top-level program takes compiler options)."""

    def __init__(self, function: Callable, **jit_kwargs):
        self.plain = jax.jit(function, **jit_kwargs)
        self.quick = jax.jit(function, compiler_options=QUICK_CPU_COMPILE, **jit_kwargs)
        self.__name__ = getattr(function, "__name__", "program")
        self.__doc__ = function.__doc__

    def _pick(self, args, kwargs):
        # compiler options are for top-level programs: inside another trace, the plain one
        traced = any(isinstance(leaf, Tracer)
                     for leaf in jax.tree_util.tree_leaves((args, kwargs)))
        return self.quick if jax.default_backend() == "cpu" and not traced else self.plain

    def __call__(self, *args, **kwargs):
        return self._pick(args, kwargs)(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self._pick(args, kwargs).lower(*args, **kwargs)


def run_once_jit(**jit_kwargs) -> Callable[[Callable], RunOnceProgram]:
    """Decorator: `RunOnceProgram(function, **jit_kwargs)` (e.g. `static_argnums=(0, 5)`)."""
    return lambda function: RunOnceProgram(function, **jit_kwargs)
