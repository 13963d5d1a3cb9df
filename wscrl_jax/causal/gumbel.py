"""Differentiable discrete sampling: Gumbel-Bernoulli, SoftSort, Gumbel-perturbed permutations.

Mirrors the reference's `ws_crl/gumbel.py`. Pure JAX with explicit PRNG keys.

Straight-through estimators are written as `hard + (soft - stop_gradient(soft))`, so the forward
value is exactly the hard one (0/1), and the gradient is the soft sample's.
"""

import jax
import jax.numpy as jnp

SAMPLING_MODES = ("hard", "soft", "deterministic")


def check_mode(mode: str) -> None:
    """Raises ValueError unless `mode` is one of SAMPLING_MODES."""
    if mode not in SAMPLING_MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; expected one of {SAMPLING_MODES}")


def straight_through(hard, soft):
    """Value `hard`, gradient of `soft` (same shapes)."""
    return hard + (soft - jax.lax.stop_gradient(soft))


def gumbel_bernoulli(key, logits, tau=1.0, hard=False):
    """Relaxed Bernoulli sample and the log-probability of its rounded outcome.

    The reference applies a two-class Gumbel-softmax to `[logit, 0]` and keeps class 0:
    `softmax([l + g0, g1] / tau)[0] = sigmoid((l + g0 - g1) / tau)`; `g0 - g1` of two independent
    Gumbels is a standard logistic variable, so one logistic draw gives the same distribution.

    Args:
      key: PRNG key.
      logits: [...] Bernoulli logits; the sample has the same shape.
      tau: temperature (> 0), may be traced.
      hard: straight-through: the value is 1.0 where the soft sample >= 0.5 (class 0 wins the
        argmax, ties included), else 0.0; the gradient is the soft sample's.

    Returns:
      sample: [...] in [0, 1] (exactly 0 or 1 if hard).
      log_prob: [...] log-probability of the outcome `sample >= 0.5` under Bernoulli(sigmoid(l)):
        `log_sigmoid(l)` if it is 1, else `log_sigmoid(-l)`. The reference computes
        `log(e^l / (1 + e^l))`, which overflows for large logits (ws-crl gotcha 21, fixed here).
    """
    logits = jnp.asarray(logits)
    noise = jax.random.logistic(key, logits.shape, dtype=logits.dtype)
    soft = jax.nn.sigmoid((logits + noise) / tau)
    outcome = soft >= 0.5
    sample = straight_through(outcome.astype(soft.dtype), soft) if hard else soft
    log_prob = jnp.where(outcome, jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits))
    return sample, log_prob


def soft_sort(scores, tau=1.0, hard=False, power=1.0):
    """SoftSort relaxation of the descending argsort (Prillo & Eisenschlos, ICML 2020).

    `P[..., r, c] = softmax_c(-|s_c - s_(r)|^power / tau)` where `s_(r)` is the r-th largest
    score: row r is a soft one-hot of the element with rank r, so `P @ s` is approximately `s`
    sorted in descending order.

    Args:
      scores: [..., n].
      tau: temperature (> 0).
      hard: straight-through one-hot of each row's argmax (value a permutation matrix when the
        scores are distinct; gradient of the soft matrix).
      power: exponent of the absolute differences (static Python float).

    Returns:
      [..., n, n] row-stochastic matrix.
    """
    scores = jnp.asarray(scores)
    sorted_desc = -jnp.sort(-scores, axis=-1)
    dist = jnp.abs(scores[..., None, :] - sorted_desc[..., :, None])  # [..., rank, element]
    if power != 1.0:
        dist = dist ** power
    soft = jax.nn.softmax(-dist / tau, axis=-1)
    if not hard:
        return soft
    one_hot = jax.nn.one_hot(jnp.argmax(soft, axis=-1), scores.shape[-1], dtype=soft.dtype)
    return straight_through(one_hot, soft)


def sample_permutation(key, logits, tau=1.0, mode="hard", sample_shape=()):
    """Permutation matrices from Gumbel-perturbed scores and SoftSort ("Differentiable DAG
    Sampling", ICLR 2022).

    `hard` / `soft`: `soft_sort(logits + Gumbel noise, tau, hard=(mode == "hard"))`; the rank
    order of the perturbed scores is a Plackett-Luce sample, so row 0 (the top rank) is one-hot at
    element c with probability softmax(logits)[c]. `deterministic`: no noise,
    `soft_sort(logits, tau=1e-9, hard=True)` (the argsort of the logits; `tau` is ignored).

    Args:
      key: PRNG key (unused when deterministic).
      logits: [..., d] scores.
      tau: SoftSort temperature for `hard` / `soft`.
      mode: one of SAMPLING_MODES.
      sample_shape: leading sample dimensions, e.g. `(n,)`.

    Returns:
      [*sample_shape, ..., d, d]; row r selects the element ranked r (descending).
    """
    check_mode(mode)
    logits = jnp.asarray(logits)
    shape = tuple(sample_shape) + logits.shape
    if mode == "deterministic":
        return soft_sort(jnp.broadcast_to(logits, shape), tau=1.0e-9, hard=True)
    gumbels = jax.random.gumbel(key, shape, dtype=logits.dtype)
    return soft_sort(logits + gumbels, tau=tau, hard=mode == "hard")
