"""Programs compiled beside other work (`train/compile_beside.py`) and run-once programs
compiled for a short compilation (`train/run_once.py`)."""

import threading

import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.methods import get_method
from wscrl_jax.train.compile_beside import call_beside
from wscrl_jax.train.run_once import run_once_jit
from wscrl_jax.train.state import init_states, init_states_beside

from conftest import tiny_scaling_config


@pytest.fixture
def compiles():
    """[(program name, thread name)] of every XLA compilation while the test runs."""
    events = []

    def listener(event, duration, **kwargs):
        if event.endswith("backend_compile_duration"):
            events.append((kwargs.get("fun_name"), threading.current_thread().name))

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield events
    jax.monitoring.unregister_event_duration_listener(listener)


def test_a_program_called_beside_compiles_there_once(compiles):
    @jax.jit
    def beside_program(x):
        return jnp.tanh(x @ x.T).sum(axis=0)

    x = jnp.arange(12.0).reshape(3, 4) / 10
    future = call_beside(beside_program, (x,))
    np.testing.assert_array_equal(future.result(), jnp.tanh(x @ x.T).sum(axis=0))
    beside_program(x)  # finds it compiled
    mine = [thread for name, thread in compiles if name == "jit(beside_program)"]
    assert len(mine) == 1 and mine[0].startswith("compile-beside"), compiles


def test_init_beside_the_data_is_the_init_to_the_bit():
    method = get_method(tiny_scaling_config("ilcm", dim_z=3))
    expected = init_states(method, [3, 4])
    got = init_states_beside(method, [3, 4]).result()
    for a, b in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(got)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_run_once_program_compiles_quickly_on_a_cpu_with_its_results(compiles):
    def once_program(x, power):
        return jnp.exp(jnp.sin(x) ** power).cumsum()

    program = run_once_jit(static_argnums=(1,))(once_program)
    assert program.__name__ == "once_program"
    x = jnp.linspace(-3.0, 3.0, 257)
    got = program(x, 3)
    # on a CPU the call went through the variant compiled at XLA's backend optimisation level 0
    assert program._pick((x, 3), {}) is program.quick
    program.lower(x, 3).compile()  # what compiling ahead does: the program the call compiled
    assert [n for n, _ in compiles].count("jit(once_program)") == 1
    np.testing.assert_allclose(got, jax.jit(once_program, static_argnums=(1,))(x, 3),
                               rtol=1e-6)
    # inside another program it is traced as a plain jit (compiler options are top-level only)
    np.testing.assert_allclose(jax.jit(lambda v: program(v, 3) * 2)(x), got * 2, rtol=1e-6)
