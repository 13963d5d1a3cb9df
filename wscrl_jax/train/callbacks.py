"""Per-member epoch-end callbacks of the reference's trainer, as pure functions of model state.

Reference (MD-CRL): torch `ReduceLROnPlateau` (`configs/model/scheduler_config/
reduce_on_plateau.yaml`, `monitor: train_loss`) and Lightning's `EarlyStopping` (the
`early_stopping` entry of `configs/callbacks/default.yaml`) with the trainer's `min_epochs`
(`configs/trainer/default.yaml`).

Each callback keeps its counters in a member's model state (a dict of scalars, checkpointed with
the run) and updates them from one epoch's monitored value. The functions see one member's
scalars; vmap them over the member axis. The callback settings (`sc`, `es`) are read by
attribute (a config node or any object with those fields) and are static.
"""

import jax.numpy as jnp


def plateau_state(lr: float) -> dict:
    """Initial `ReduceLROnPlateau` state of one member: the learning rate `lr` (f32 scalar),
    best value `plateau_best` (+inf), bad-epoch count `plateau_bad` and cooldown counter
    `plateau_cooldown` (int32 zeros)."""
    return {"lr": jnp.asarray(lr, jnp.float32), "plateau_best": jnp.asarray(jnp.inf, jnp.float32),
            "plateau_bad": jnp.asarray(0, jnp.int32),
            "plateau_cooldown": jnp.asarray(0, jnp.int32)}


def plateau_update(ms: dict, metric, sc) -> dict:
    """torch `ReduceLROnPlateau.step(metric)`, mode "min", absolute threshold.

    Args:
      ms: one member's model state holding the `plateau_state` keys (other keys pass through).
      metric: scalar, the monitored value of the epoch.
      sc: `factor`, `patience`, `threshold`, `cooldown`, `min_lr`, `eps`, as torch's arguments.
    Returns:
      `ms` with the four plateau keys updated: the learning rate is multiplied by `factor`
      (floored at `min_lr`, and only when that changes it by more than `eps`) once more than
      `patience` epochs in a row failed to beat `best - threshold`; `cooldown` epochs follow
      in which bad epochs are not counted.
    """
    better = metric < ms["plateau_best"] - sc.threshold
    best = jnp.where(better, metric, ms["plateau_best"])
    bad = jnp.where(better, 0, ms["plateau_bad"] + 1)
    in_cooldown = ms["plateau_cooldown"] > 0
    cooldown = jnp.where(in_cooldown, ms["plateau_cooldown"] - 1, ms["plateau_cooldown"])
    bad = jnp.where(in_cooldown, 0, bad)
    reduce = bad > sc.patience
    old = ms["lr"]
    new = jnp.maximum(old * sc.factor, sc.min_lr)
    lr = jnp.where(reduce & (old - new > sc.eps), new, old)
    cooldown = jnp.where(reduce, sc.cooldown, cooldown)
    bad = jnp.where(reduce, 0, bad)
    return {**ms, "lr": lr.astype(jnp.float32), "plateau_best": best.astype(jnp.float32),
            "plateau_bad": bad.astype(jnp.int32), "plateau_cooldown": cooldown.astype(jnp.int32)}


def early_stopping_state() -> dict:
    """Initial `EarlyStopping` state of one member: best value `es_best` (+inf), wait counter
    `es_wait` (0), `active` (True) and `stopped_epoch` (-1: not stopped)."""
    return {"es_best": jnp.asarray(jnp.inf, jnp.float32), "es_wait": jnp.asarray(0, jnp.int32),
            "active": jnp.asarray(True), "stopped_epoch": jnp.asarray(-1, jnp.int32)}


def early_stopping_update(ms: dict, val_loss, epoch, es, min_epochs: int) -> dict:
    """Lightning `EarlyStopping(monitor=val_loss, mode="min")` and the trainer's `min_epochs`.

    An improvement is `val_loss < best - min_delta`; the member stops once `wait >= patience`
    (or the value is not finite) and at least `min_epochs` epochs are done (`epoch + 1 >=
    min_epochs`, `epoch` counted from 0). A stopped member stays stopped.

    Args:
      ms: one member's model state holding the `early_stopping_state` keys.
      val_loss: scalar, the epoch's validation loss; epoch: int scalar.
      es: `enabled`, `patience`, `min_delta`.
    Returns:
      `ms` with `es_best`, `es_wait`, `active` and `stopped_epoch` updated.
    """
    improved = val_loss + es.min_delta < ms["es_best"]
    best = jnp.where(improved, val_loss, ms["es_best"])
    wait = jnp.where(improved, 0, ms["es_wait"] + 1)
    stop = (wait >= es.patience) | ~jnp.isfinite(val_loss)
    stop = stop & (epoch + 1 >= min_epochs) & bool(es.enabled)
    active = ms["active"]
    return {**ms, "es_best": best.astype(jnp.float32), "es_wait": wait.astype(jnp.int32),
            "active": active & ~stop,
            "stopped_epoch": jnp.where(active & stop, epoch, ms["stopped_epoch"]).astype(
                jnp.int32)}
