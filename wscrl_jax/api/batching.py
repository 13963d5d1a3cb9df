"""Per-member functions of a loaded model applied to arrays of any size: vmapped over the
members, jitted once per function and chunk shape, fed chunk by chunk so memory stays bounded,
returned as numpy."""

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wscrl_jax.api.errors import APIError

DEFAULT_CHUNK = 4096  # rows per compiled call
IMAGE_CHUNK = 256  # rows per compiled call for image models (activation memory)


class MemberRunner:
    """Applies `fn(variables, key, *row_arrays, *shared)` (one member, arrays [n, ...]) to every
    member of `variables` (leaves [M, ...]) at once.

    Row arrays are [N, ...] (the same rows for every member) or [M, N, ...] (each member its
    own); they are cut into chunks of `chunk` rows, the last one padded to the chunk size, so
    inputs of any N longer than a chunk compile once. Results: numpy [M, N, ...], or [N, ...]
    where `single` (a model of one member)."""

    def __init__(self, variables, single: bool, chunk: int = DEFAULT_CHUNK):
        self.variables = variables
        self.num_members = int(jax.tree_util.tree_leaves(variables)[0].shape[0])
        self.single = single
        self.chunk = int(chunk)
        self._compiled = {}

    def __call__(self, fn: Callable, rows: Sequence, feature_ndims: Sequence[int],
                 shared: Sequence = (), seed: Optional[int] = None):
        """fn's outputs (a pytree of [n, ...] per member) over all rows. feature_ndims[i]:
        trailing dimensions of one row of rows[i] (a leading extra axis is the member axis).
        seed: the PRNG seed (each member and chunk draws its own key from it); None: fn gets
        a fixed key (deterministic functions ignore it)."""
        per_member = []
        for array, k in zip(rows, feature_ndims):
            extra = array.ndim - k
            if extra == 2:
                if array.shape[0] != self.num_members:
                    raise APIError(f"inputs with a member axis must have {self.num_members} "
                                   f"members in front, not {array.shape[0]} (shape "
                                   f"{tuple(array.shape)})")
                per_member.append(True)
            elif extra == 1:
                per_member.append(False)
            else:
                raise APIError(f"an input of shape {tuple(array.shape)} has {extra} leading "
                               "axes; pass [N, ...] or [members, N, ...]")
        lengths = {a.shape[1] if p else a.shape[0] for a, p in zip(rows, per_member)}
        if len(lengths) != 1:
            raise APIError(f"the inputs have different numbers of rows: {sorted(lengths)}")
        n = lengths.pop()
        if n == 0:
            raise APIError("the inputs hold no rows")
        size = min(n, self.chunk)
        compiled = self._jitted(fn, tuple(per_member), len(shared))
        base = jax.random.PRNGKey(0 if seed is None else int(seed))
        member_keys = jax.vmap(lambda m: jax.random.fold_in(base, m))(
            jnp.arange(self.num_members))
        outputs = []
        for index, start in enumerate(range(0, n, size)):
            parts = [_pad(a[:, start:start + size] if p else a[start:start + size], size,
                          axis=1 if p else 0) for a, p in zip(rows, per_member)]
            keys = jax.vmap(lambda k: jax.random.fold_in(k, index))(member_keys)
            out = compiled(self.variables, keys, *parts, *shared)
            outputs.append(jax.device_get(out))
        whole = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=1)[:, :n], *outputs)
        return jax.tree_util.tree_map(lambda a: a[0] if self.single else a, whole)

    def _jitted(self, fn, per_member, num_shared):
        key = (fn, per_member, num_shared)
        if key not in self._compiled:
            in_axes = (0, 0) + tuple(0 if p else None for p in per_member) + (None,) * num_shared
            self._compiled[key] = jax.jit(jax.vmap(fn, in_axes=in_axes))
        return self._compiled[key]


def _pad(array, size: int, axis: int):
    """array with its `axis` padded to `size` by repeating its last row."""
    missing = size - array.shape[axis]
    if missing == 0:
        return array
    last = np.take(array, [-1], axis=axis)
    return np.concatenate([array, np.repeat(last, missing, axis=axis)], axis=axis)
