"""Which rows of a batch belong to which domain: the bookkeeping every MD-CRL penalty shares.

`domains` is [batch] (or [batch, 1], int or float, as the reference's loaders give it); a row
whose index is not in `[0, num_domains)` belongs to no domain (padding rows are moved there).
Domain pairs are the unordered pairs `e < e'`, as static index arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def domain_ids(domains: Array, batch: int) -> Array:
    """[batch] or [batch, 1] (int or float) -> [batch] int32."""
    d = jnp.reshape(domains, (batch,))
    return d.astype(jnp.int32)


def domain_masks(domains: Array, num_domains: int) -> Array:
    """One-hot domain membership.

    Args:
      domains: [batch] or [batch, 1].
    Returns:
      [num_domains, batch] bool, `mask[e, b] = (domains[b] == e)`.
    """
    batch = domains.shape[0]
    d = domain_ids(domains, batch)
    return d[None, :] == jnp.arange(num_domains, dtype=jnp.int32)[:, None]


def domain_pairs(num_domains: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs `e < e'` as two static int32 index arrays [P], P = D (D - 1) / 2."""
    i, j = np.triu_indices(num_domains, k=1)
    return i.astype(np.int32), j.astype(np.int32)
