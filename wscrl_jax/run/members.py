"""The sweep's members on the devices: data, freshly initialised state, padding.

A run trains every member of the sweep (model seeds x data seeds) as one stacked state. The
members are padded with inert copies of the last one so that they divide over the devices
(`sharding.padded_member_count`); the padding trains alongside, and checkpoints, metrics and
evaluation leave it out. In a multi-process run each process builds only the members on its
own devices.
"""

import logging

import jax
from jax.sharding import NamedSharding, PartitionSpec

from wscrl_jax.config_checks import ConfigError
from wscrl_jax.methods import get_method
from wscrl_jax.train.distributed import (global_arrays, mesh_devices, multiprocess,
                                         process_member_range)
from wscrl_jax.train.prng import rolled_threefry
from wscrl_jax.train.sharding import (member_sharding, pad_members, padded_member_count,
                                      shard_members, unpad_members)
from wscrl_jax.train.state import init_states, init_states_beside, stack_members

log = logging.getLogger("wscrl_jax")


def make_member_data(method, members):
    """{split: {name: [members, N, ...]}}, each member's data from its data seed."""
    with rolled_threefry():  # data generation compiles faster with the rolled hash
        per_seed = {s: method.make_data(s) for s in dict.fromkeys(d for _, d in members)}
    return stack_members([per_seed[d] for _, d in members])


def build(config, members):
    """(method, data, state): the method of `config.method`, the members' sharded data
    {split: {name: [total, N, ...]}} and freshly initialised sharded state ([total, ...]),
    where total >= len(members) counts the inert padding."""
    method = get_method(config)
    devices = mesh_devices()
    if multiprocess() and method.options.convolutional:
        raise ConfigError(
            f"method={config.method} with data.dataset={config.data.dataset} runs in one "
            "process only (its model is convolutional); run without --num_processes, one sweep "
            "per host")
    total = padded_member_count(len(members), len(devices), fill=multiprocess())
    if total > len(members):
        log.info("%d members padded with %d inert copies of the last to divide over %d devices",
                 len(members), total - len(members), len(devices))
    padded = list(members) + [members[-1]] * (total - len(members))
    sharding = member_sharding(total)
    if not multiprocess():
        init = init_states_beside(method, [s for s, _ in padded])  # compiles beside the data
        data = shard_members(make_member_data(method, padded), sharding)
        state = shard_members(init.result(), sharding)
        return method, data, state
    first, stop = process_member_range(sharding, total)
    local = padded[first:stop]
    data = global_arrays(make_member_data(method, local), sharding, total)
    state = global_arrays(init_states(method, [s for s, _ in local]), sharding, total)
    return method, data, state


def padded_data_seeds(members, total: int):
    """The data seed of each of `total` stacked members, padding included."""
    return [d for _, d in members] + [members[-1][1]] * (total - len(members))


def checkpoint_template(state, num_members: int):
    """The stacked state of the real members (what checkpoints hold), sharded for them (in a
    multi-process run: shapes replicated on every device, since the real members need not
    divide over the processes)."""
    if state.step.shape[0] == num_members:
        return state
    if multiprocess():
        replicated = NamedSharding(state.step.sharding.mesh, PartitionSpec())
        return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(
            (num_members,) + a.shape[1:], a.dtype, sharding=replicated), state)
    return shard_members(unpad_members(state, num_members),
                         member_sharding(num_members, quiet=True))


def repad(restored, like):
    """A restored state of the real members padded back to the shape and sharding of `like`."""
    total = like.step.shape[0]
    if restored.step.shape[0] == total:
        return restored
    if not multiprocess():
        return shard_members(pad_members(restored, total), like.step.sharding)
    # restored replicated over the global mesh (`checkpoint_template`): pad and reshard there
    return jax.jit(lambda tree: pad_members(tree, total),
                   out_shardings=like.step.sharding)(restored)
