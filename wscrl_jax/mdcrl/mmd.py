"""Maximum mean discrepancy between domains (reference: `models/utils.py: MMD_loss`, `mmd_loss`).

`mmd` is the reference's two-sample statistic; `penalty_mmd` is the MD-CRL penalty over every
pair of domains of a batch, with static shapes (see its docstring for the fixed- and
adaptive-bandwidth implementations), and `auto_mmd_capacity` / `mmd_capacity_is_exact` size
and check the adaptive one's per-domain row budget. Conventions as in `penalties.py`: `z`
[batch, z_dim], `domains` [batch] or [batch, 1], static sizes and options.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from wscrl_jax.mdcrl.domains import domain_ids, domain_pairs
from wscrl_jax.mdcrl.kernel_sums import kernel_sum_symmetric, sq_dists, two_sample_kernel_sum

Array = jax.Array

# `MMD_loss` class defaults; the Hydra configs (and therefore every run) use the function
# defaults below instead: kernel_multiplier=1.0, kernel_number=1, fix_sigma=1.0.
MMD_CLASS_DEFAULTS = {"kernel_multiplier": 2.0, "kernel_number": 5, "fix_sigma": None}


def _centred(x: Array) -> Array:
    """x [n, d] minus its mean over rows (a constant shift: pairwise distances and their
    gradients are unchanged; the mean gets no gradient)."""
    return x - jax.lax.stop_gradient(jnp.mean(x, axis=0))


def _bandwidths(base: Array, kernel_multiplier: float, kernel_number: int) -> list:
    """`kernel_number` bandwidths `base / mult^(number // 2) * mult^i` (each shaped as `base`)."""
    base = base / (kernel_multiplier ** (kernel_number // 2))
    return [base * (kernel_multiplier**i) for i in range(kernel_number)]


def mmd(
    x: Array,
    y: Array,
    kernel_multiplier: float = 1.0,
    kernel_number: int = 1,
    fix_sigma: Optional[float] = 1.0,
) -> Array:
    """Biased (V-statistic) MMD^2 of two equal-size samples, as `MMD_loss.forward`.

    `T = [x; y]`, `L2_ab = |T_a - T_b|^2`; bandwidth `fix_sigma` if truthy (None and 0 mean
    adaptive), else `sum(L2) / ((2m)^2 - 2m)` (mean off-diagonal squared distance, no gradient);
    divided by `kernel_multiplier ** (kernel_number // 2)`; kernel
    `K = sum_i exp(-L2 / (bw * kernel_multiplier**i))` (no factor 2); `mean(Kxx + Kyy - Kxy - Kyx)`.

    Args:
      x, y: [m, d] each.
    Returns:
      scalar.
    """
    m = x.shape[0]
    t = _centred(jnp.concatenate([x, y], axis=0))
    l2 = sq_dists(t, t)
    if fix_sigma:
        base = jnp.asarray(fix_sigma, l2.dtype)
    else:
        nn = 2 * m
        base = jax.lax.stop_gradient(jnp.sum(l2) / (nn * nn - nn))
    k = sum(jnp.exp(-l2 / bw) for bw in _bandwidths(base, kernel_multiplier, kernel_number))
    return jnp.mean(k[:m, :m] + k[m:, m:] - k[:m, m:] - k[m:, :m])


def auto_mmd_capacity(batch: int, num_domains: int, capacity: Optional[int] = None):
    """Rows per domain the adaptive-bandwidth `penalty_mmd` evaluates (its `capacity`).

    0 (or fewer than two domains): None, exact for any batch (`batch // 2`). None (automatic):
    the domain count's mean plus six binomial standard deviations,
    `ceil(B/D + 6 sqrt(B/D (1 - 1/D)))` capped at `B // 2`: exact unless two domains of one
    batch both exceed it (about 1e-9 per pair for i.i.d. domains), and several times faster than
    `B // 2` for B = 1024. Positive: that capacity.
    """
    if capacity == 0 or num_domains < 2:
        return None
    if capacity is not None:
        return int(capacity)
    mean = batch / num_domains
    sd = math.sqrt(mean * (1.0 - 1.0 / num_domains))
    return max(1, min(batch // 2, math.ceil(mean + 6.0 * sd)))


def mmd_capacity_is_exact(domains, num_domains: int, capacity: int) -> bool:
    """Host-side check: with this batch's domains, is `capacity` large enough for exactness
    (second-largest domain count <= capacity)?"""
    d = np.asarray(domains).reshape(-1).astype(np.int64)
    d = d[(d >= 0) & (d < num_domains)]
    counts = np.sort(np.bincount(d, minlength=num_domains))
    return num_domains < 2 or counts[-2] <= capacity


def mmd_rows_beyond_capacity(domains: Array, num_domains: int, capacity: int) -> Array:
    """Rows the capacity-limited adaptive `penalty_mmd` leaves out of this batch (traced int32
    scalar): for each domain pair, 2 (min(n_e, n_e') - capacity) when positive. 0: exact.

    Args: domains [batch] (rows of no domain, e.g. padding moved to -1, are not counted).
    """
    dom = domain_ids(domains, domains.shape[0])
    counts = jnp.sum(dom[:, None] == jnp.arange(num_domains, dtype=jnp.int32)[None, :], axis=0)
    pi, pj = domain_pairs(num_domains)
    return jnp.sum(2 * jnp.maximum(jnp.minimum(counts[pi], counts[pj]) - capacity, 0)).astype(
        jnp.int32)


def _domain_rank(dom: Array, num_domains: int):
    """Position of each row within its domain in batch order [B], and domain counts [D]."""
    onehot = (dom[:, None] == jnp.arange(num_domains, dtype=jnp.int32)[None, :]).astype(jnp.int32)
    rank = jnp.sum(jnp.cumsum(onehot, axis=0) * onehot, axis=1) - 1  # -1 for rows of no domain
    return rank, jnp.sum(onehot, axis=0)


def penalty_mmd(
    z: Array,
    domains: Array,
    num_domains: int,
    d_inv: int,
    kernel_multiplier: float = 1.0,
    kernel_number: int = 1,
    fix_sigma: Optional[float] = 1.0,
    capacity: Optional[int] = None,
) -> Array:
    """MMD penalty (`mmd_loss`): sum over present domain pairs of `mmd(Z_e, Z_e')`.

    For each pair `e < e'` with both domains present, both domains' rows are taken in batch order
    and truncated to the first `m = min(n_e, n_e')` rows (md-crl gotcha 10, reproduced),
    restricted to the first `d_inv` columns. Defaults are the configs' `(1.0, 1, 1.0)`; the
    README's linear-mixing runs use `fix_sigma=None` (adaptive bandwidth, computed per pair on
    the 2m truncated rows).

    `capacity` (static): at most that many rows per domain are used, i.e.
    `m = min(n_e, n_e', capacity)`. `None` = no limit (exact). Implementation, all static shapes:

    * fixed bandwidth: one kernel matrix over the batch [B, B] and per-pair signed row weights
      u_p (+1 first m rows of e, -1 first m rows of e'): `MMD = sum_p u_p^T K u_p / m_p^2`,
      one weighted kernel sum with weight `sum_p u_p u_p^T / m_p^2`. Cost `B^2 (d + P)`;
      `capacity` is only a semantic limit here.
    * adaptive bandwidth: the bandwidth differs per pair, so rows are scattered into per-domain
      slots [D, capacity, d_inv] and each pair, one after the other, evaluates its
      [2 capacity, 2 capacity] block with signed prefix masks. `None` means
      `capacity = batch // 2` (always exact since `m <= batch // 2`); time scales as
      `P * capacity^2`, so for large batches with many domains pass
      `auto_mmd_capacity(batch, num_domains)` (exact unless two domains far exceed their share;
      `mmd_capacity_is_exact` checks a batch on the host).

    Both sum their kernels with `kernel_sums.py` (value and gradient in one pass).

    Fix (always on): when all 2m points of a pair coincide the adaptive bandwidth is 0 and the
    reference returns NaN (0/0); here that pair contributes 0 (its kernel values are all equal).

    Args:
      z: [batch, z_dim]; domains: [batch] or [batch, 1].
    Returns:
      scalar.
    """
    batch = z.shape[0]
    pi, pj = domain_pairs(num_domains)
    if pi.size == 0 or batch == 0:
        return jnp.zeros((), z.dtype)
    dom = domain_ids(domains, batch)
    rank, counts = _domain_rank(dom, num_domains)
    if capacity is not None:
        counts = jnp.minimum(counts, int(capacity))
    m = jnp.minimum(counts[pi], counts[pj])  # [P]
    m_f = m.astype(z.dtype)
    zi = _centred(z[:, :d_inv])

    if fix_sigma:
        in_x = (dom[None, :] == pi[:, None]) & (rank[None, :] < m[:, None])  # [P, B]
        in_y = (dom[None, :] == pj[:, None]) & (rank[None, :] < m[:, None])
        u = in_x.astype(z.dtype) - in_y.astype(z.dtype)
        c = jnp.where(m > 0, 1.0 / jnp.where(m > 0, m_f * m_f, 1.0), 0.0)  # [P]
        g = (u.T * c[None, :]) @ u  # [B, B] = sum_p c_p u_p u_p^T, symmetric
        bws = _bandwidths(jnp.asarray(fix_sigma, z.dtype), kernel_multiplier, kernel_number)
        return kernel_sum_symmetric(zi, g, 1.0 / jnp.stack(bws))

    cap = max(batch // 2, 1) if capacity is None else int(capacity)
    # Rows of no domain go to an out-of-range slot and are dropped by the scatter (as are rows
    # beyond the capacity).
    dom_idx = jnp.where((dom >= 0) & (dom < num_domains), dom, num_domains)
    slots = jnp.zeros((num_domains, cap, d_inv), z.dtype)
    slots = slots.at[dom_idx, rank].set(zi, mode="drop")

    pm = (jnp.arange(cap)[None, :] < m[:, None]).astype(z.dtype)  # [P, cap] prefix masks
    x, y = slots[pi], slots[pj]  # [P, cap, d_inv]
    # Bandwidth: the mean squared distance over the (2m)^2 block of the pair's n = 2m points
    # S, from sum_{a,b in S} |t_a - t_b|^2 = 2n sum_{a in S} |t_a - mean_S|^2.
    nn = 2.0 * m_f
    mean = jnp.einsum("pc,pcd->pd", pm, x + y) / jnp.maximum(nn, 1.0)[:, None]
    dx, dy = x - mean[:, None, :], y - mean[:, None, :]
    total = 2.0 * nn * jnp.einsum("pc,pcd->p", pm, dx * dx + dy * dy)
    denom = nn * nn - nn
    ok = (m > 0) & (total > 0)
    base = jax.lax.stop_gradient(jnp.where(ok, total / jnp.where(denom > 0, denom, 1.0), 1.0))
    inv_bws = 1.0 / jnp.stack(_bandwidths(base, kernel_multiplier, kernel_number), axis=-1)

    # +1 on the first m rows of e, -1 on those of e', 0 on unused slots; pairs one at a time
    # (their [2 cap, 2 cap] kernel blocks stay in cache).
    s = jax.lax.map(lambda a: two_sample_kernel_sum(a[0], a[1], a[2], -a[2], a[3]),
                    (x, y, pm, inv_bws))
    return jnp.sum(jnp.where(ok, s / jnp.where(m > 0, m_f * m_f, 1.0), 0.0))
