"""MD-CRL invariance penalties as pure, jit-compatible functions (reference: `models/utils.py`).

Conventions shared by every function:

* `z`: [batch, z_dim] learned latents; only the first `d_inv` columns are penalised.
* `domains`: [batch] (or [batch, 1], int or float as in the reference) domain index per row. Rows
  whose index is not in `[0, num_domains)` belong to no domain (the reference ignores them too).
* `num_domains`, `d_inv`, `top_k` and every option string/flag are static Python values. Domains
  are handled with masks over the whole batch, so shapes never depend on the data: a domain absent
  from the batch or with fewer than `top_k` rows is treated exactly as the reference treats it
  (see each function), without data-dependent Python control flow.
* Domain pairs are the unordered pairs `e < e'` (static index arrays).

Reference quirks that change numbers are reproduced by default (gotchas 9, 10, 11, 27 of the
reference notes); fixes sit behind documented keyword flags.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

LOSS_TRANSFORMS = ("mse", "l1", "log_mse", "log_l1")

# `MMD_loss` class defaults; the Hydra configs (and therefore every run) use the function
# defaults below instead: kernel_multiplier=1.0, kernel_number=1, fix_sigma=1.0.
MMD_CLASS_DEFAULTS = {"kernel_multiplier": 2.0, "kernel_number": 5, "fix_sigma": None}


def _domain_ids(domains: Array, batch: int) -> Array:
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
    d = _domain_ids(domains, batch)
    return d[None, :] == jnp.arange(num_domains, dtype=jnp.int32)[:, None]


def _pairs(num_domains: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.triu_indices(num_domains, k=1)
    return i.astype(np.int32), j.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# Min-max


def domain_extremes(z: Array, domains: Array, num_domains: int, d_inv: int, top_k: int):
    """Per-domain top-k extremes of the invariant coordinates, as the reference builds them.

    Args:
      z: [batch, z_dim]; domains: [batch] or [batch, 1].
    Returns:
      mins: [num_domains, d_inv, top_k], the `top_k` smallest values in ascending order;
      maxs: [num_domains, d_inv, top_k], the `top_k` largest values in descending order;
      counts: [num_domains] int32 rows per domain.
      Domains with fewer than `top_k` rows (including empty ones) get all-zero extremes, as the
      reference's zero-initialised buffers (gotcha 9).
    """
    batch = z.shape[0]
    mask = domain_masks(domains, num_domains)  # [D, B]
    counts = jnp.sum(mask, axis=1).astype(jnp.int32)
    zi = z[:, :d_inv].T  # [d_inv, B]
    m = mask[:, None, :]  # [D, 1, B]
    lo_vals = jnp.where(m, zi[None], jnp.inf)  # [D, d_inv, B]
    hi_vals = jnp.where(m, zi[None], -jnp.inf)
    if batch < top_k:  # top_k needs k <= last dim; padding is never selected as a real value
        pad = [(0, 0), (0, 0), (0, top_k - batch)]
        lo_vals = jnp.pad(lo_vals, pad, constant_values=jnp.inf)
        hi_vals = jnp.pad(hi_vals, pad, constant_values=-jnp.inf)
    mins = -jax.lax.top_k(-lo_vals, top_k)[0]
    maxs = jax.lax.top_k(hi_vals, top_k)[0]
    enough = (counts >= top_k)[:, None, None]
    return jnp.where(enough, mins, 0.0), jnp.where(enough, maxs, 0.0), counts


def penalty_minmax(
    z: Array,
    domains: Array,
    num_domains: int,
    d_inv: int,
    top_k: int = 5,
    loss_transform: str = "mse",
    skip_small_domains: bool = False,
) -> Array:
    """Min-max penalty (`penalty_loss_minmax`): pairwise distance of per-domain top-k extremes.

    With `f` the transform, summed over domain pairs `e < e'`:
      `mean(f(mins_e - mins_e')) + mean(f(maxs_e - maxs_e'))` (means over d_inv * top_k), with
      `f(a) = a^2` (mse), `|a|` (l1), `log(a^2)` (log_mse), `log|a|` (log_l1).

    Reference behaviour (default): domains with `0 < n_e < top_k` rows contribute all-zero extreme
    vectors (not skipped); empty domains are skipped for mse / l1; the log transforms skip nothing
    (empty domains enter as zeros; equal values give -inf). One domain -> 0.0 (the reference
    returns the int 0 and crashes on `.item()`).
    `skip_small_domains=True` (fix): every domain with fewer than `top_k` rows is left out of all
    pairs, for every transform.

    Args:
      z: [batch, z_dim]; domains: [batch] or [batch, 1].
    Returns:
      scalar.
    """
    if loss_transform not in LOSS_TRANSFORMS:
        raise ValueError(f"loss_transform must be one of {LOSS_TRANSFORMS}, got {loss_transform!r}")
    mins, maxs, counts = domain_extremes(z, domains, num_domains, d_inv, top_k)
    pi, pj = _pairs(num_domains)
    if pi.size == 0:
        return jnp.zeros((), z.dtype)
    dmin = mins[pi] - mins[pj]  # [P, d_inv, top_k]
    dmax = maxs[pi] - maxs[pj]
    if loss_transform == "mse":
        f = jnp.square
    elif loss_transform == "l1":
        f = jnp.abs
    elif loss_transform == "log_mse":
        f = lambda a: jnp.log(jnp.square(a))
    else:
        f = lambda a: jnp.log(jnp.abs(a))
    axes = (1, 2)
    per_pair = jnp.mean(f(dmin), axis=axes) + jnp.mean(f(dmax), axis=axes)  # [P]
    if skip_small_domains:
        keep = counts >= top_k
    elif loss_transform in ("mse", "l1"):
        keep = counts > 0
    else:
        return jnp.sum(per_pair)
    pair_keep = keep[pi] & keep[pj]
    if skip_small_domains and loss_transform.startswith("log"):
        # Skipped pairs may hold log(0); keep their -inf and its NaN gradient out of the sum.
        safe = lambda a: jnp.where(pair_keep[:, None, None], a, 1.0)
        per_pair = jnp.mean(f(safe(dmin)), axis=axes) + jnp.mean(f(safe(dmax)), axis=axes)
    return jnp.sum(jnp.where(pair_keep, per_pair, 0.0))


# ----------------------------------------------------------------------------------------------
# MMD


def _sq_dists(a: Array, b: Array) -> Array:
    """Squared Euclidean distances [..., n, m] of [..., n, d] and [..., m, d]."""
    a2 = jnp.sum(a * a, axis=-1)[..., :, None]
    b2 = jnp.sum(b * b, axis=-1)[..., None, :]
    ab = jnp.einsum("...nd,...md->...nm", a, b)
    return jnp.maximum(a2 + b2 - 2.0 * ab, 0.0)


def _bandwidths(base: Array, kernel_multiplier: float, kernel_number: int) -> list:
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
    t = jnp.concatenate([x, y], axis=0)
    l2 = _sq_dists(t, t)
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
    and truncated to the first `m = min(n_e, n_e')` rows (gotcha 10, reproduced), restricted to the
    first `d_inv` columns. Defaults are the configs' `(1.0, 1, 1.0)`; the README's linear-mixing
    runs use `fix_sigma=None` (adaptive bandwidth, computed per pair on the 2m truncated rows).

    `capacity` (static): at most that many rows per domain are used, i.e.
    `m = min(n_e, n_e', capacity)`. `None` = no limit (exact). Implementation, all static shapes:

    * fixed bandwidth: one kernel matrix over the batch [B, B] and per-pair signed row weights
      (+1 first m rows of e, -1 first m rows of e'): `MMD = u^T K u / m^2`. Cost `B^2 (d + P)`;
      `capacity` is only a semantic limit here.
    * adaptive bandwidth: the bandwidth differs per pair, so rows are scattered into per-domain
      slots [D, capacity, d_inv] and each pair evaluates its three capacity x capacity blocks with
      prefix masks. `None` means `capacity = batch // 2` (always exact since `m <= batch // 2`);
      memory and time scale as `P * capacity^2`, so for large batches with many domains pass
      `auto_mmd_capacity(batch, num_domains)` (exact unless two domains far exceed their share;
      `mmd_capacity_is_exact` checks a batch on the host).

    Fix (always on): when all 2m points of a pair coincide the adaptive bandwidth is 0 and the
    reference returns NaN (0/0); here that pair contributes 0 (its kernel values are all equal).

    Args:
      z: [batch, z_dim]; domains: [batch] or [batch, 1].
    Returns:
      scalar.
    """
    batch = z.shape[0]
    pi, pj = _pairs(num_domains)
    if pi.size == 0 or batch == 0:
        return jnp.zeros((), z.dtype)
    dom = _domain_ids(domains, batch)
    rank, counts = _domain_rank(dom, num_domains)
    if capacity is not None:
        counts = jnp.minimum(counts, int(capacity))
    m = jnp.minimum(counts[pi], counts[pj])  # [P]
    m_f = m.astype(z.dtype)
    zi = z[:, :d_inv]

    if fix_sigma:
        in_x = (dom[None, :] == pi[:, None]) & (rank[None, :] < m[:, None])  # [P, B]
        in_y = (dom[None, :] == pj[:, None]) & (rank[None, :] < m[:, None])
        u = in_x.astype(z.dtype) - in_y.astype(z.dtype)
        l2 = _sq_dists(zi, zi)  # [B, B]
        bws = _bandwidths(jnp.asarray(fix_sigma, z.dtype), kernel_multiplier, kernel_number)
        k = sum(jnp.exp(-l2 / bw) for bw in bws)
        s = jnp.sum((u @ k) * u, axis=1)  # u_p^T K u_p
        return jnp.sum(jnp.where(m > 0, s / jnp.where(m > 0, m_f * m_f, 1.0), 0.0))

    cap = max(batch // 2, 1) if capacity is None else int(capacity)
    # Rows of no domain go to an out-of-range slot and are dropped by the scatter (as are rows
    # beyond the capacity).
    dom_idx = jnp.where((dom >= 0) & (dom < num_domains), dom, num_domains)
    slots = jnp.zeros((num_domains, cap, d_inv), z.dtype)
    slots = slots.at[dom_idx, rank].set(zi, mode="drop")

    pm = (jnp.arange(cap)[None, :] < m[:, None]).astype(z.dtype)  # [P, cap] prefix masks
    w = pm[:, :, None] * pm[:, None, :]  # [P, cap, cap]
    x, y = slots[pi], slots[pj]  # [P, cap, d_inv]
    l2_xx, l2_yy, l2_xy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)
    total = jnp.sum(w * (l2_xx + l2_yy + 2.0 * l2_xy), axis=(1, 2))  # sum over the (2m)^2 block
    nn = 2.0 * m_f
    denom = nn * nn - nn
    ok = (m > 0) & (total > 0)
    base = jax.lax.stop_gradient(jnp.where(ok, total / jnp.where(denom > 0, denom, 1.0), 1.0))
    bws = _bandwidths(base, kernel_multiplier, kernel_number)  # each [P]

    def kern(l2):
        return sum(jnp.exp(-l2 / bw[:, None, None]) for bw in bws)

    s = jnp.sum(w * (kern(l2_xx) + kern(l2_yy) - 2.0 * kern(l2_xy)), axis=(1, 2))
    return jnp.sum(jnp.where(ok, s / jnp.where(m > 0, m_f * m_f, 1.0), 0.0))


# ----------------------------------------------------------------------------------------------
# Moment-based penalties


def _domain_var(z: Array, domains: Array, num_domains: int, d_inv: int):
    """Unbiased per-domain variance [D, d_inv] and counts [D]; NaN where a domain has < 2 rows."""
    mask = domain_masks(domains, num_domains).astype(z.dtype)  # [D, B]
    n = jnp.sum(mask, axis=1)  # [D]
    zi = z[:, :d_inv]
    safe_n = jnp.where(n > 0, n, 1.0)
    mean = (mask @ zi) / safe_n[:, None]
    sq = mask[:, :, None] * jnp.square(zi[None] - mean[:, None, :])  # [D, B, d_inv]
    var = jnp.sum(sq, axis=1) / jnp.where(n > 1, n - 1.0, 1.0)[:, None]
    return var, n


def hinge_loss(
    z: Array,
    domains: Array,
    num_domains: int,
    d_inv: int,
    gamma: float = 1.0,
    eps: float = 1e-4,
    skip_degenerate: bool = False,
) -> Array:
    """Variance hinge (`hinge_loss`): `sum_e mean_{i<d_inv} relu(gamma - sqrt(var_e,i + eps))`.

    `var` is the unbiased per-domain variance. The caller multiplies by `hinge_loss_weight` (the
    reference function ignores its weight argument). Reference (default): NaN when any of the
    `num_domains` domains has fewer than 2 rows in the batch (gotcha 27). `skip_degenerate=True`:
    such domains contribute 0.

    Args:
      z: [batch, z_dim]; domains: [batch] or [batch, 1].
    Returns:
      scalar.
    """
    var, n = _domain_var(z, domains, num_domains, d_inv)
    per = jnp.mean(jax.nn.relu(gamma - jnp.sqrt(var + eps)), axis=1)  # [D]
    ok = n > 1
    per = jnp.where(ok, per, 0.0 if skip_degenerate else jnp.nan)
    return jnp.sum(per)


def penalty_stddev(
    z: Array,
    domains: Array,
    num_domains: int,
    d_inv: int,
    skip_degenerate: bool = False,
) -> Array:
    """Std-dev penalty (`penalty_loss_stddev`): `sum_i sum_{e<e'} (sigma_e,i - sigma_e',i)^2`.

    `sigma` is the unbiased per-domain std of each invariant coordinate. Reference (default): NaN
    when any domain has fewer than 2 rows. `skip_degenerate=True`: pairs involving such a domain
    are left out.

    Args:
      z: [batch, z_dim]; domains: [batch] or [batch, 1].
    Returns:
      scalar.
    """
    var, n = _domain_var(z, domains, num_domains, d_inv)
    ok = n > 1
    pi, pj = _pairs(num_domains)
    if pi.size == 0:
        return jnp.zeros((), z.dtype)
    sigma = jnp.sqrt(jnp.where(ok[:, None], var, 1.0))
    per_pair = jnp.sum(jnp.square(sigma[pi] - sigma[pj]), axis=1)  # [P]
    pair_ok = ok[pi] & ok[pj]
    per_pair = jnp.where(pair_ok, per_pair, 0.0 if skip_degenerate else jnp.nan)
    return jnp.sum(per_pair)


# ----------------------------------------------------------------------------------------------
# Domain classification


def penalty_domain_classification(z: Array, domains: Array, weight: Array, d_inv: int):
    """Negative cross-entropy of a bias-free linear domain classifier on `z[:, :d_inv]`.

    Reference `penalty_domain_classification` with `LogisticRegressionModel`: logits
    `z_inv @ weight`, `CE = mean cross-entropy`; returns `(-CE, accuracy)`. The penalty is `-CE`.
    In the reference the classifier weights are trained by the same optimiser on the same loss
    (so it is not adversarial, gotcha 17); how `weight` is trained is the caller's choice.

    Args:
      z: [batch, z_dim]; domains: [batch] or [batch, 1]; weight: [d_inv, num_domains]
      (the transpose of torch's `Linear.weight`).
    Returns:
      (penalty scalar, accuracy scalar).
    """
    batch = z.shape[0]
    dom = _domain_ids(domains, batch)
    logits = z[:, :d_inv] @ weight
    logp = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.mean(jnp.take_along_axis(logp, dom[:, None], axis=1))
    acc = jnp.mean((jnp.argmax(logits, axis=-1) == dom).astype(z.dtype))
    return -ce, acc


# ----------------------------------------------------------------------------------------------
# Warm-up and combination


def penalty_warmup_weight(step, penalty_weight: float, wait_steps: int = 0, linear_steps: int = 1):
    """Penalty weight at optimizer step `step` (`MixingAutoencoderPL.training_step`).

    0 for `step < wait_steps`; `penalty_weight * (step - wait_steps) / linear_steps` for
    `wait_steps <= step < wait_steps + linear_steps`; `penalty_weight` afterwards. With the defaults
    step 0 gets weight 0 (gotcha 11, reproduced). jit-compatible (`step` may be traced).
    In the reference validation reuses the last training value, and stage-2 models skip warm-up.
    """
    step = jnp.asarray(step, jnp.float32)
    ramp = penalty_weight * (step - wait_steps) / linear_steps
    w = jnp.where(
        step < wait_steps, 0.0, jnp.where(step < wait_steps + linear_steps, ramp, penalty_weight)
    )
    return w.astype(jnp.float32)


def penalty_terms(
    z: Array,
    domains: Array,
    *,
    num_domains: int,
    d_inv: int,
    minmax: bool = False,
    stddev: bool = False,
    mmd: bool = False,
    domain_classification: bool = False,
    top_k: int = 5,
    loss_transform: str = "mse",
    kernel_multiplier: float = 1.0,
    kernel_number: int = 1,
    fix_sigma: Optional[float] = 1.0,
    mmd_capacity: Optional[int] = None,
    classifier_weight: Optional[Array] = None,
    skip_small_domains: bool = False,
    skip_degenerate: bool = False,
) -> dict:
    """The enabled penalties of `BasePl.loss` (flags are the `penalty_criterion` truthiness).

    Returns a dict with one scalar per enabled term (`"minmax"`, `"stddev"`, `"mmd"`,
    `"domain_classification"`; plus `"domain_accuracy"` for the last) and `"total"` = the sum of
    the penalty terms (before multiplying by the penalty weight; accuracy is not part of it).
    """
    out = {}
    if minmax:
        out["minmax"] = penalty_minmax(
            z, domains, num_domains, d_inv, top_k, loss_transform, skip_small_domains
        )
    if stddev:
        out["stddev"] = penalty_stddev(z, domains, num_domains, d_inv, skip_degenerate)
    if mmd:
        out["mmd"] = penalty_mmd(
            z,
            domains,
            num_domains,
            d_inv,
            kernel_multiplier,
            kernel_number,
            fix_sigma,
            mmd_capacity,
        )
    if domain_classification:
        if classifier_weight is None:
            raise ValueError("domain_classification needs classifier_weight [d_inv, num_domains]")
        out["domain_classification"], out["domain_accuracy"] = penalty_domain_classification(
            z, domains, classifier_weight, d_inv
        )
    total = jnp.zeros((), z.dtype)
    for name in ("minmax", "stddev", "mmd", "domain_classification"):
        if name in out:
            total = total + out[name]
    out["total"] = total
    return out
