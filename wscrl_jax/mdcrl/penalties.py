"""MD-CRL invariance penalties as pure, jit-compatible functions (reference: `models/utils.py`).

Conventions shared by every function:

* `z`: [batch, z_dim] learned latents; only the first `d_inv` columns are penalised.
* `domains`: [batch] (or [batch, 1], int or float as in the reference) domain index per row. Rows
  whose index is not in `[0, num_domains)` belong to no domain (the reference ignores them too).
* `num_domains`, `d_inv`, `top_k` and every option string/flag are static Python values. Domains
  are handled with masks over the whole batch, so shapes never depend on the data: a domain absent
  from the batch or with fewer than `top_k` rows is treated exactly as the reference treats it
  (see each function), without data-dependent Python control flow.
* Domain pairs are the unordered pairs `e < e'` (static index arrays, `domains.py`).

The MMD penalty is in `mmd.py`; `penalty_terms` combines it with the others here.

Reference quirks that change numbers are reproduced by default (md-crl gotchas 9, 10, 11, 27);
fixes sit behind documented keyword flags.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from wscrl_jax.mdcrl.domains import domain_ids, domain_masks, domain_pairs
from wscrl_jax.mdcrl.mmd import penalty_mmd

Array = jax.Array

LOSS_TRANSFORMS = ("mse", "l1", "log_mse", "log_l1")


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
      reference's zero-initialised buffers (md-crl gotcha 9).
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
    pi, pj = domain_pairs(num_domains)
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
    `num_domains` domains has fewer than 2 rows in the batch (md-crl gotcha 27).
    `skip_degenerate=True`: such domains contribute 0.

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
    pi, pj = domain_pairs(num_domains)
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
    (so it is not adversarial, md-crl gotcha 17); how `weight` is trained is the caller's choice.

    Args:
      z: [batch, z_dim]; domains: [batch] or [batch, 1]; weight: [d_inv, num_domains]
      (the transpose of torch's `Linear.weight`).
    Returns:
      (penalty scalar, accuracy scalar).
    """
    batch = z.shape[0]
    dom = domain_ids(domains, batch)
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
    step 0 gets weight 0 (md-crl gotcha 11, reproduced). jit-compatible (`step` may be traced).
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
