"""The unrolled threefry lowering on CPU gives JAX's random numbers bit for bit; `rolled_threefry`
selects JAX's rolled form for the calling thread alone."""

import subprocess
import sys

import numpy as np

SCRIPT = """
import sys, numpy as np, jax, jax.numpy as jnp
from wscrl_jax.train.prng import use_unrolled_threefry
def draws(key):
    k1, k2 = jax.random.split(jax.random.fold_in(key, 7))
    return (jax.random.normal(k1, (3, 129)), jax.random.uniform(k2, (5,)),
            jax.random.permutation(key, 1000).astype(jnp.float32)[:64])
key = jax.random.PRNGKey(2022)
before = [np.asarray(a) for a in jax.jit(draws)(key)]
assert use_unrolled_threefry() and use_unrolled_threefry()
after_jit = jax.jit(draws)
hlo = jax.jit(lambda k: jax.random.normal(k, (9,))).lower(key).as_text()
after = [np.asarray(a) for a in after_jit(key)]
import threading
from wscrl_jax.train.prng import rolled_threefry
inside_block, lowered_beside = threading.Event(), threading.Event()
beside = {}
def lower_beside():  # another thread lowers while the main thread is inside the block
    inside_block.wait()
    beside["hlo"] = jax.jit(lambda k: jax.random.normal(k, (12,))).lower(key).as_text()
    lowered_beside.set()
thread = threading.Thread(target=lower_beside)
thread.start()
with rolled_threefry():
    inside = jax.jit(lambda k: jax.random.normal(k, (10,))).lower(key).as_text()
    rolled_again = [np.asarray(a) for a in jax.jit(lambda k: draws(k))(key)]
    with rolled_threefry(False):
        unrolled_nested = jax.jit(lambda k: jax.random.normal(k, (13,))).lower(key).as_text()
    inside_again = jax.jit(lambda k: jax.random.normal(k, (14,))).lower(key).as_text()
    inside_block.set()
    lowered_beside.wait()
thread.join()
restored = jax.jit(lambda k: jax.random.normal(k, (11,))).lower(key).as_text()
np.savez(sys.argv[1], *before, *after, *rolled_again, rolled=np.asarray("while" in hlo),
         rolled_inside=np.asarray("while" in inside and "while" in inside_again),
         rolled_nested=np.asarray("while" in unrolled_nested),
         rolled_beside=np.asarray("while" in beside["hlo"]),
         rolled_restored=np.asarray("while" in restored))

"""


def test_unrolled_threefry_gives_the_same_bits(tmp_path):
    out = tmp_path / "draws.npz"
    subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True)
    arrays = np.load(out)
    before = [arrays[f"arr_{i}"] for i in range(3)]
    after = [arrays[f"arr_{i}"] for i in range(3, 6)]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert not bool(arrays["rolled"])  # the hash of a normal draw is no longer a loop
    for b, a in zip(before, [arrays[f"arr_{i}"] for i in range(6, 9)]):
        np.testing.assert_array_equal(a, b)  # rolled_threefry: JAX's own loop, the same bits
    assert bool(arrays["rolled_inside"]) and not bool(arrays["rolled_restored"])
    assert not bool(arrays["rolled_nested"])  # rolled_threefry(False) inside: unrolled again
    assert not bool(arrays["rolled_beside"])  # the block is the calling thread's alone
