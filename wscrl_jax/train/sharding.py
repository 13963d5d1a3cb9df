"""Sharding of the member axis over the devices (`jax.sharding`, no pmap): the local ones, or
every process's in a multi-process run (`distributed.mesh_devices`), and the inert padding
members that make a sweep divide over them."""

import logging
import math

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from wscrl_jax.train.distributed import mesh_devices

log = logging.getLogger("wscrl_jax")


def padded_member_count(num_members: int, num_devices: int, fill: bool = False) -> int:
    """Members plus inert padding so that they divide over the devices: at most one member a
    device needs none (3 members on 8 devices use 3), more are padded to the next multiple of
    the device count (9 members on 2 devices: 10). fill: every device gets members (3 on 8:
    8), as a multi-process run needs (each process must hold some)."""
    if num_members <= num_devices and not fill:
        return num_members
    return -(-num_members // num_devices) * num_devices


def pad_members(tree, total: int):
    """Every leaf [members, ...] extended to [total, ...] with copies of the last member (inert
    padding: trained alongside, never evaluated or written)."""
    def pad(a):
        extra = total - a.shape[0]
        if extra <= 0:
            return a
        return jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)], axis=0)
    return jax.tree_util.tree_map(pad, tree)


def unpad_members(tree, num_members: int):
    """The first `num_members` members of every leaf (drops the padding)."""
    return jax.tree_util.tree_map(lambda a: a[:num_members], tree)


def member_sharding(num_members: int, quiet: bool = False) -> NamedSharding:
    """Leading-axis sharding over the devices (`mesh_devices`): one member a device when there
    are no more members than devices, else over as many devices as divide the member count.

    gcd(members, devices) devices are used (9 members on 4 devices: 1; 8 on 4: 4) and a log
    line says when some are left idle (`padded_member_count` avoids that).
    """
    devices = mesh_devices()
    if num_members <= len(devices):
        return NamedSharding(Mesh(devices[:num_members], ("members",)),
                             PartitionSpec("members"))
    used = math.gcd(num_members, len(devices))
    if used < len(devices) and not quiet:
        log.warning("%d members do not divide over %d devices: using %d device(s); choose a "
                    "member count that is a multiple of %d to use them all", num_members,
                    len(devices), used, len(devices))
    mesh = Mesh(devices[:used], ("members",))
    return NamedSharding(mesh, PartitionSpec("members"))


def shard_members(tree, sharding: NamedSharding):
    """Places every leaf ([members, ...]) with its member axis split over the mesh."""
    return jax.device_put(tree, sharding)
