"""Final evaluation of one MD-CRL member (reference:
`MixingAutoencoderPL.validation_step` / `on_train_start` and the stage-2
`MixingMDEncodedAutoencoderPL`; balls: `evaluate_balls_member`).

Metrics of a member, in this order: the headline metrics (`MDCRLMethod.headline_metrics`); the
reference's in-sample R^2 keys, computed per validation batch and averaged weighted by batch
size as Lightning logs them (plus in-sample domain accuracies with `eval.domain_accuracy`);
`full_*`, the same R^2 on the whole validation split at once; `heldout_*`, regressions (and
domain classifiers) fitted on the training codes and scored on the test codes; the final
`val_loss`, `learning_rate` and `stopped_epoch`. `start_metrics` gives the `*_linreg_start`
keys of the untrained model. Own data without true latents z (`data/own_domains.py`) keep the
metrics of the codes alone: the code norms (`z_norm`, ...) and the domain accuracies.
"""

import logging
from typing import Dict, Optional

import numpy as np

from wscrl_jax.eval.domain_accuracy import domain_accuracies, heldout_domain_accuracies
from wscrl_jax.eval.r2 import (balls_stage1_r2_metrics, balls_stage2_r2_metrics, code_norms,
                               heldout_linear_r2, mixing_r2_metrics, mixing_r2_metrics_heldout,
                               start_r2_metrics)
from wscrl_jax.train.method import MemberNotEvaluated

log = logging.getLogger("wscrl_jax")


def batch_mean_metrics(z, codes, x: Optional[np.ndarray], domains, *, d_data: int, d_inv: int,
                       batch_size: int, stage: int, consistent_names: bool,
                       domain_accuracy: bool) -> Dict[str, float]:
    """The in-sample keys of `mixing_r2_metrics` (and `domain_accuracies`) on consecutive
    batches of `batch_size` rows, averaged with the batches' sizes as weights.

    Args:
      z: [n, z_dim] true latents, or None (unknown: the code norms only); codes: [n, latent];
      x: [n, x_dim] observations (stage 1, adds the `z_var/x_norm` keys) or None; domains: [n].
    """
    n = codes.shape[0]
    sums: Dict[str, float] = {}
    for start in range(0, n, batch_size):
        sl = slice(start, min(n, start + batch_size))
        rows = sl.stop - sl.start
        x_batch = None if x is None else x[sl]
        if z is None:
            batch_metrics = code_norms(codes[sl], d_inv, x_batch if stage == 1 else None)
        else:
            batch_metrics = mixing_r2_metrics(z[sl], codes[sl], d_data, d_inv, stage=stage,
                                              x=x_batch, consistent_names=consistent_names)
        if domain_accuracy:
            batch_metrics.update(domain_accuracies(codes[sl], domains[sl], d_inv))
        for k, v in batch_metrics.items():
            sums[k] = sums.get(k, 0.0) + rows * v
    return {k: v / n for k, v in sums.items()}


def evaluate_member(method, params, model_state, data) -> Dict[str, float]:
    """All final metrics of one member (see the module docstring), headline metrics first.

    Args:
      method: the `MDCRLMethod`; params, model_state: one member's (no member axis);
      data: that member's {split: {"x" [N, x_dim], "z" [N, z_dim] (optional), "domain" [N]}}.
    Raises `MemberNotEvaluated` when a split's codes are not finite.
    """
    ev = method.config.eval
    stage = 2 if method.stage2 else 1
    consistent = not bool(ev.stage2_reference_names)
    codes = _finite_codes(method, params, model_state, data)
    valid = data["valid"]
    truth = "z" in valid
    z_v = np.asarray(valid["z"]) if truth else None
    metrics = batch_mean_metrics(
        z_v, codes["valid"], None if method.stage2 else np.asarray(valid["x"]),
        np.asarray(valid["domain"]), d_data=method.d_data, d_inv=method.d_inv,
        batch_size=method.batch_size, stage=stage, consistent_names=consistent,
        domain_accuracy=bool(ev.domain_accuracy))
    if truth:
        full = mixing_r2_metrics(z_v, codes["valid"], method.d_data, method.d_inv, stage=stage,
                                 consistent_names=consistent)
        metrics.update({f"full_{k}": v for k, v in full.items() if "norm" not in k})
    if "test" in data and truth:
        held = mixing_r2_metrics_heldout(
            np.asarray(data["train"]["z"]), codes["train"], np.asarray(data["test"]["z"]),
            codes["test"], method.d_data, method.d_inv, stage=stage, consistent_names=consistent)
        metrics.update({f"heldout_{k}": v for k, v in held.items()})
    if "test" in data and ev.domain_accuracy:
        metrics.update(heldout_domain_accuracies(
            codes["train"], np.asarray(data["train"]["domain"]), codes["test"],
            np.asarray(data["test"]["domain"]), method.d_inv))
    return _with_training_state(method, metrics, model_state)


def _finite_codes(method, params, model_state, data) -> Dict[str, np.ndarray]:
    """{split: codes [N, latent]}; raises `MemberNotEvaluated` when a split's codes are not finite."""
    codes = {s: np.asarray(method.encode(params, model_state, d["x"])) for s, d in data.items()}
    for s, c in codes.items():
        if not np.all(np.isfinite(c)):
            raise MemberNotEvaluated(f"non-finite codes on the {s} split")
    return codes


def _with_training_state(method, metrics, model_state) -> Dict[str, float]:
    """metrics + the final `val_loss`, `learning_rate`, `stopped_epoch`, headline first."""
    metrics["val_loss"] = float(model_state["val_loss"])
    metrics["learning_rate"] = float(model_state["lr"])
    metrics["stopped_epoch"] = int(model_state["stopped_epoch"])
    first = {k: metrics.pop(k) for k in method.headline_metrics}
    return {**first, **metrics}


def evaluate_balls_member(method, params, model_state, data) -> Dict[str, float]:
    """Final metrics of one balls member (md-crl 8.3), headline metrics first.

    Stage 1 (images): the `BallsAutoencoderPL.validation_step` R^2 keys (in-sample, "hz" = the
    whole code) per validation batch, averaged weighted by batch size, then `full_*` on the
    whole validation split. The `hz_colors_*` keys are left out: the colour targets are
    constant (md-crl gotcha 21), so their R^2 is 0/0. Stage 2 (codes): the
    `on_validation_epoch_end` keys `*_r2_linreg` / `*_mse_loss_linreg` on the whole validation
    split, plus `heldout_hz_z_~r2` / `heldout_hz_~z_~r2` (fitted on the training codes, scored
    on the test codes).

    data: one member's {split: {"x", "z" [N, 2 n_balls], "domain" [N]}}; z's first
    `method.d_data` columns are the invariant balls' coordinates.
    """
    codes = _finite_codes(method, params, model_state, data)
    d = method.d_data
    z = {s: np.asarray(v["z"], np.float64) for s, v in data.items()}
    zv, cv = z["valid"], codes["valid"]
    if not method.stage2:
        n, b = len(zv), method.batch_size
        sums: Dict[str, float] = {}
        for start in range(0, n, b):
            sl = slice(start, min(n, start + b))
            for k, v in balls_stage1_r2_metrics(zv[sl], cv[sl], zv[sl, :d], zv[sl, d:]).items():
                sums[k] = sums.get(k, 0.0) + (sl.stop - sl.start) * v
        metrics = {k: v / n for k, v in sums.items()}
        full = balls_stage1_r2_metrics(zv, cv, zv[:, :d], zv[:, d:])
        metrics.update({f"full_{k}": v for k, v in full.items()})
    else:
        metrics = balls_stage2_r2_metrics(zv, cv, zv[:, :d], zv[:, d:], method.d_inv)
        if "test" in data:
            h_tr, h_te = codes["train"][:, :method.d_inv], codes["test"][:, :method.d_inv]
            metrics["heldout_hz_z_~r2"] = heldout_linear_r2(
                h_tr, z["train"][:, :d], h_te, z["test"][:, :d])
            metrics["heldout_hz_~z_~r2"] = heldout_linear_r2(
                h_tr, z["train"][:, d:], h_te, z["test"][:, d:])
    return _with_training_state(method, metrics, model_state)


def log_skipped_metrics(data):
    """One log line where the data ({split: {name: [members, N, ...]}}) lack the true
    latents z: the R^2 metrics are left out."""
    if "z" not in data["valid"]:
        log.info("Metrics skipped, the data lack their ground truth: the R^2 metrics (*r2*, "
                 "full_*, heldout_*r2, *_linreg_start) need the true latents z and invariant")


def start_metrics(method, initial_params, initial_state, data) -> Dict[str, float]:
    """`*_linreg_start` (reference `on_train_start`): in-sample R^2 on the whole validation
    split before training, both splits at the model's d_inv. Stage 1: true z [N, z_dim]
    against the untrained model's codes; stage 2: against its input (the stage-1 codes).
    Empty when the untrained codes are not finite or the true latents unknown."""
    valid = data["valid"]
    if "z" not in valid:
        return {}
    codes = (valid["x"] if method.stage2
             else method.encode(initial_params, initial_state, valid["x"]))
    codes = np.asarray(codes)
    if not np.all(np.isfinite(codes)):
        return {}
    return start_r2_metrics(np.asarray(valid["z"]), codes, method.d_inv)
