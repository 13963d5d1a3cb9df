"""Runs over several processes (hosts) on JAX's own distributed runtime (`jax.distributed`).

With more than one process the member axis is sharded over every device of every process.
Each process builds only the members on its own devices (their data from their data seeds,
their fresh state) and global arrays are assembled from those process-local pieces
(`global_arrays`). Whatever the host reads (step counters, loss sums, evaluation rows) is
gathered over the processes first (`to_host`, `gather_objects`), so every process takes the
same decisions; files are written by process 0 only (`is_main`), checkpoints by Orbax with
every process taking part. With one process every function here is the plain local case.
"""

import itertools
import pickle
from typing import Any, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

# How long a process waits for the others at a gather or barrier: one may be writing files,
# saving or evaluating meanwhile. (JAX's CPU collectives give up after 30 s, so every
# collective here is preceded by a barrier of the runtime's own, which waits this long.)
WAIT_MS = 60 * 60 * 1000
_exchanges = itertools.count()  # advances alike on every process: same calls, same order


def initialize(coordinator_address: Optional[str], num_processes: Optional[int],
               process_id: Optional[int], auto_detect: bool = False) -> None:
    """Joins the run's processes (before any JAX computation). Nothing happens for a
    one-process run (no address, at most one process, no `auto_detect`). auto_detect: let JAX
    find the cluster (TPU VM pods, SLURM, Open MPI) where the values are not given."""
    if not auto_detect and (num_processes or 1) <= 1:
        return
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)


def multiprocess() -> bool:
    return jax.process_count() > 1


def is_main() -> bool:
    """True on the process that writes files and logs (process 0)."""
    return jax.process_index() == 0


def mesh_devices() -> List[jax.Device]:
    """The devices members are sharded over: every process's (grouped by process, so each
    process holds one contiguous block of members) or, in one process, the local ones."""
    if not multiprocess():
        return jax.local_devices()
    return sorted(jax.devices(), key=lambda d: (d.process_index, d.id))


def to_host(tree):
    """Every leaf as a numpy array on this host, gathered over the processes where it is
    sharded across them (a collective: every process must call it)."""
    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))
    if any(isinstance(x, jax.Array) and not x.is_fully_addressable
           for x in jax.tree_util.tree_leaves(tree)):
        barrier()
    return jax.tree_util.tree_map(fetch, tree)


def _client():
    """JAX's distributed runtime client (its key-value store and barriers; Orbax uses it too)."""
    from jax._src.distributed import global_state
    return global_state.client


def barrier():
    """Waits (up to `WAIT_MS`) until every process got here."""
    if multiprocess():
        _client().wait_at_barrier(f"wscrl_jax/barrier/{next(_exchanges)}", WAIT_MS)


def process_member_range(sharding: NamedSharding, total: int) -> Tuple[int, int]:
    """[first, stop) of the member indices on this process's devices (a contiguous block with
    `mesh_devices` order)."""
    slices = [index[0] for index in sharding.addressable_devices_indices_map((total,)).values()]
    starts = [s.start or 0 for s in slices]
    stops = [total if s.stop is None else s.stop for s in slices]
    return min(starts), max(stops)


def global_arrays(local_tree, sharding: NamedSharding, total: int):
    """Global arrays [total, ...] sharded by `sharding` from this process's members
    ([stop - first, ...] on every leaf, see `process_member_range`)."""
    def build(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(sharding, x, (total,) + x.shape[1:])
    return jax.tree_util.tree_map(build, local_tree)


def local_block(tree) -> Tuple[Any, int]:
    """(this process's members of every global leaf, on its first device, index of its first
    member). In one process: (tree, 0).

    One device, not a mesh of the local ones: a computation over several devices of one
    process, launched while the other process ran its own, hung once in JAX 0.10's CPU
    collectives in the two-process test; single-device work needs no collectives."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves or all(not isinstance(x, jax.Array) or x.is_fully_addressable
                         for x in leaves):
        return tree, 0
    device = jax.local_devices()[0]
    starts = []

    def local(x):
        shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
        starts.append(shards[0].index[0].start or 0)
        return jnp.concatenate([jax.device_put(s.data, device) for s in shards])

    return jax.tree_util.tree_map(local, tree), starts[0]


def gather_objects(obj) -> List[Any]:
    """[obj of process 0, obj of process 1, ...], pickled through the runtime's key-value store
    (every process must call it; waits up to `WAIT_MS` for the others)."""
    if not multiprocess():
        return [obj]
    client, exchange = _client(), next(_exchanges)
    key = f"wscrl_jax/gather/{exchange}/" + "{}"
    client.key_value_set_bytes(key.format(jax.process_index()), pickle.dumps(obj))
    out = [pickle.loads(client.blocking_key_value_get_bytes(key.format(p), WAIT_MS))
           for p in range(jax.process_count())]
    client.wait_at_barrier(f"wscrl_jax/gathered/{exchange}", WAIT_MS)  # all have read
    client.key_value_delete(key.format(jax.process_index()))
    return out


def first_given(value):
    """The first process's non-None `value` (e.g. a stop request only one host received), so
    that every process acts on it at the same step; in one process: `value`."""
    if not multiprocess():
        return value
    return next((v for v in gather_objects(value) if v is not None), None)


def main_value(value):
    """Process 0's `value` on every process (e.g. what it saw on the shared file system, before
    any process changes it); in one process: `value`."""
    if not multiprocess():
        return value
    return gather_objects(value)[0]
