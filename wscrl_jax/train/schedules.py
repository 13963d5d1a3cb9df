"""Loss-weight and learning-rate schedules, evaluated inside jit.

* Loss-weight schedules (ws-crl `experiments/experiment_utils.py`) at the fractional epoch
  `f = step / steps_per_epoch`. Hand-written: they keep the reference's `t = s / (T - 1)` ramp,
  which overshoots the final value during the last epoch of a ramp before snapping back
  (ws-crl gotcha 3, reproduced); no optax schedule has that.
* Per-epoch learning rates (torch's schedulers, stepped once an epoch): `constant` and `step`
  are optax schedules of the epoch (`constant_schedule`, staircase `exponential_decay`, the same
  values). The cosine forms are hand-written: torch computes `eta_min + (lr0 - eta_min) (1 +
  cos) / 2`, optax's `cosine_decay_schedule` `lr0 ((1 - alpha) c + alpha)`, which rounds
  differently, and warm restarts with a growing period have no optax equivalent.
* MD-CRL's `transformers` per-step multipliers, hand-written for the same reason (their
  warm-up/decay formulas in transformers' order, hard restarts).
"""

import math

import jax.numpy as jnp
import optax

STEP_SCHEDULE_TYPES = (
    "constant",
    "constant_constant",
    "exponential",
    "exponential_constant",
    "constant_exponential_constant",
    "constant_linear_constant",
)
LR_SCHEDULE_TYPES = ("constant", "cosine", "cosine_restarts", "cosine_restarts_reset", "step")


def _ramp(s, total, initial, final, log_space: bool):
    """Reference `linear_scheduler` / `exponential_scheduler` at (fractional) position s."""
    if total <= 1:
        return jnp.where(s >= total, final, jnp.where(s <= 0, initial, final))
    t = s / (total - 1)
    if log_space:
        mid = jnp.exp((1 - t) * math.log(initial) + t * math.log(final))
    else:
        mid = (1 - t) * initial + t * final
    return jnp.where(s >= total, final, jnp.where(s <= 0, initial, mid))


def step_schedule(sc, epochs: int):
    """Returns f -> value for a schedule ConfigDict `sc` (keys type, initial, final,
    initial_constant_epochs, decay_epochs); `epochs` is training.epochs."""
    kind = sc.type
    initial, final = float(sc.initial), float(sc.final)
    ice = float(sc.get("initial_constant_epochs", 0) or 0)
    decay = float(sc.get("decay_epochs", 0) or 0)
    if kind == "constant":
        return lambda f: jnp.asarray(final, jnp.float32)
    if kind == "constant_constant":
        return lambda f: jnp.where(f < ice, initial, final).astype(jnp.float32)
    if kind == "exponential":
        return lambda f: _ramp(f, epochs, initial, final, True).astype(jnp.float32)
    if kind == "exponential_constant":
        return lambda f: _ramp(f, decay, initial, final, True).astype(jnp.float32)
    if kind == "constant_exponential_constant":
        return lambda f: _ramp(f - ice, decay, initial, final, True).astype(jnp.float32)
    if kind == "constant_linear_constant":
        return lambda f: _ramp(f - ice, decay, initial, final, False).astype(jnp.float32)
    raise ValueError(f"unknown schedule type {kind!r}; expected one of {STEP_SCHEDULE_TYPES}")


def is_identically_zero(sc) -> bool:
    """True when a step schedule is 0 at every step (lets a phase skip a zero-weight term)."""
    if sc.type == "constant":
        return float(sc.final) == 0.0
    return float(sc.initial) == 0.0 and float(sc.final) == 0.0


def lr_schedule(lr_cfg, epochs: int):
    """Returns epoch -> learning rate, the value PyTorch's per-epoch scheduler gives in that epoch.

    constant; cosine (CosineAnnealingLR, T_max = epochs); cosine_restarts(_reset)
    (CosineAnnealingWarmRestarts with T_0 = restart_every_epochs, T_mult =
    increase_period_by_factor); step (StepLR).
    """
    kind = lr_cfg.type
    lr0 = float(lr_cfg.initial)
    lr_min = float(lr_cfg.get("minimal", 0.0) or 0.0)
    if kind == "constant":
        return optax.constant_schedule(jnp.float32(lr0))
    if kind == "cosine":
        return lambda e: (lr_min + (lr0 - lr_min) * (1 + jnp.cos(jnp.pi * e / epochs)) / 2).astype(
            jnp.float32)
    if kind in ("cosine_restarts", "cosine_restarts_reset"):
        t0 = int(lr_cfg.restart_every_epochs)
        mult = float(lr_cfg.get("increase_period_by_factor", 1.0) or 1.0)
        if mult == 1.0:
            def lr(e):
                t_cur = jnp.mod(e, t0)
                return (lr_min + (lr0 - lr_min) * (1 + jnp.cos(jnp.pi * t_cur / t0)) / 2).astype(
                    jnp.float32)
            return lr
        def lr(e):  # T_i = t0 * mult^i; find the cycle containing e (PyTorch's closed form)
            e = jnp.asarray(e, jnp.float32)
            n = jnp.floor(jnp.log(e / t0 * (mult - 1) + 1) / math.log(mult))
            t_cur = e - t0 * (mult ** n - 1) / (mult - 1)
            t_i = t0 * mult ** n
            return (lr_min + (lr0 - lr_min) * (1 + jnp.cos(jnp.pi * t_cur / t_i)) / 2).astype(
                jnp.float32)
        return lr
    if kind == "step":
        every = int(lr_cfg.step_every_epochs)
        gamma = float(lr_cfg.step_gamma)
        if every <= 0:
            raise ValueError("lr_schedule.step_every_epochs must be positive for type 'step'")
        return optax.exponential_decay(jnp.float32(lr0), every, gamma, staircase=True)
    raise ValueError(f"unknown lr schedule {kind!r}; expected one of {LR_SCHEDULE_TYPES}")


def optimizer_reset_epochs(lr_cfg, epochs: int):
    """Epochs at whose start the Adam state is re-initialised (`cosine_restarts_reset`,
    ws-crl gotcha 29)."""
    if lr_cfg.type != "cosine_restarts_reset":
        return frozenset()
    t0 = int(lr_cfg.restart_every_epochs)
    mult = float(lr_cfg.get("increase_period_by_factor", 1.0) or 1.0)
    if mult != 1.0:
        raise ValueError("cosine_restarts_reset supports increase_period_by_factor = 1 only "
                         "(the reference resets every restart_every_epochs)")
    return frozenset(e for e in range(1, epochs) if e % t0 == 0)


TRANSFORMERS_SCHEDULE_TYPES = ("linear", "polynomial", "cosine_hard_restarts")


def transformers_lr_multiplier(kind: str, step, warmup: int, total: int, *, lr_init: float,
                               lr_end: float = 0.0, power: float = 1.0, num_cycles: float = 1.0):
    """Multiplier of the initial learning rate at optimizer step `step` (scalar, may be traced)
    under the `transformers` per-step schedules MD-CRL offers (`models/base_pl.py:
    configure_optimizers`): `get_linear_schedule_with_warmup`,
    `get_polynomial_decay_schedule_with_warmup` (`lr_end`, `power`) and
    `get_cosine_with_hard_restarts_schedule_with_warmup` (`num_cycles`).

    All rise linearly from 0 over `warmup` steps; afterwards, with `total` training steps,
    linear decays to 0 at `total`, polynomial decays `lr_init -> lr_end` (then holds `lr_end`),
    cosine restarts `num_cycles` times and is 0 from `total` on. Returns a float32 scalar.
    """
    s = jnp.asarray(step, jnp.float32)
    warm = s / max(1, warmup)
    if kind == "linear":
        after = jnp.maximum(0.0, (total - s) / max(1, total - warmup))
    elif kind == "polynomial":
        pct = 1.0 - (s - warmup) / max(1, total - warmup)
        decayed = (lr_init - lr_end) * jnp.maximum(pct, 0.0) ** power + lr_end
        after = jnp.where(s > total, lr_end, decayed) / lr_init
    elif kind == "cosine_hard_restarts":
        progress = (s - warmup) / max(1, total - warmup)
        after = jnp.where(progress >= 1.0, 0.0,
                          0.5 * (1.0 + jnp.cos(jnp.pi * jnp.mod(num_cycles * progress, 1.0))))
    else:
        raise ValueError(f"unknown transformers schedule {kind!r}; expected one of "
                         f"{TRANSFORMERS_SCHEDULE_TYPES}")
    return jnp.where(s < warmup, warm, after).astype(jnp.float32)
