"""Sharding of the member axis over the local devices (`jax.sharding`, no pmap)."""

import logging
import math

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger("wscrl_jax")


def member_sharding(num_members: int) -> NamedSharding:
    """Leading-axis sharding over as many local devices as divide the member count.

    gcd(members, devices) devices are used (9 members on 4 devices: 1; 8 on 4: 4) and a log
    line says when some are left idle.
    """
    devices = jax.local_devices()
    used = math.gcd(num_members, len(devices))
    if used < len(devices):
        log.warning("%d members do not divide over %d devices: using %d device(s); choose a "
                    "member count that is a multiple of %d to use them all", num_members,
                    len(devices), used, len(devices))
    mesh = Mesh(devices[:used], ("members",))
    return NamedSharding(mesh, PartitionSpec("members"))


def shard_members(tree, sharding: NamedSharding):
    """Places every leaf ([members, ...]) with its member axis split over the mesh."""
    return jax.device_put(tree, sharding)
