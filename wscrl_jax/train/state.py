"""The train state: one pytree whose leaves carry a leading member axis."""

import concurrent.futures
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from wscrl_jax.train.compile_beside import call_beside
from wscrl_jax.train.prng import use_unrolled_threefry


@flax.struct.dataclass
class TrainState:
    """Everything a run carries, stacked over members ([members, ...] on every leaf).

    params, opt_state: model parameters and the method's optimizer state; step: int32 [members];
    key: PRNG key data [members, 2] (model seed stream); nan_count: non-finite steps so far;
    model_state: untrained model state (e.g. a fixed topological order).
    """

    params: Any
    opt_state: Any
    step: jnp.ndarray
    key: jnp.ndarray
    nan_count: jnp.ndarray
    model_state: Any


def init_member_state(method, seed: int) -> TrainState:
    """One member's state from its model seed (no member axis)."""
    key = jax.random.PRNGKey(seed)
    init_key, run_key = jax.random.split(key)
    params, model_state = method.init(init_key)
    return TrainState(params=params, opt_state=method.make_optimizer().init(params),
                      step=jnp.zeros((), jnp.int32), key=run_key,
                      nan_count=jnp.zeros((), jnp.int32), model_state=model_state)


def init_states(method, seeds) -> TrainState:
    """States of all members ([members, ...]) in one compiled, vmapped init; member m equals
    `init_member_state(method, seeds[m])`. Draws through the unrolled threefry hash (the same
    bits; a shorter compilation, `train/prng.py`)."""
    use_unrolled_threefry()
    return _init_program(method)(jnp.asarray(seeds, jnp.uint32))


def init_states_beside(method, seeds) -> "concurrent.futures.Future[TrainState]":
    """Future of `init_states(method, seeds)`: traced now, compiled and run in a background
    thread while the caller goes on (the run's start builds the data meanwhile)."""
    use_unrolled_threefry()
    return call_beside(_init_program(method), (jnp.asarray(seeds, jnp.uint32),))


def _init_program(method):
    return jax.jit(jax.vmap(lambda s: init_member_state(method, s)))


def stack_members(trees):
    """[tree, tree, ...] -> tree with a leading member axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def member(tree, index: int):
    """The index-th member of a stacked tree."""
    return jax.tree_util.tree_map(lambda x: x[index], tree)
