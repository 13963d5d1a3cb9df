"""Linear-regression R^2 metrics of MD-CRL (reference: the `validation_step`s of
`models/mixing_autoencoder_pl.py`, `mixing_md_encoded_autoencoder_pl.py` and the balls models).

The reference fits `sklearn.linear_model.LinearRegression()` (with intercept) predicting `B` from
`A` and reports its **in-sample** `score` (R^2 averaged uniformly over output columns; sklearn's
rules for constant columns: 1.0 if predicted exactly, else 0.0). `linear_r2` reproduces that in
numpy float64 (no sklearn needed); `heldout_linear_r2` fits on one set and scores on another
(not in the reference, recommended alongside it: in-sample R^2 is inflated for wide codes,
md-crl gotcha 15).

Named metric sets reproduce the reference's log keys:
`mixing_r2_metrics` (stage 1 and stage 2, including the stage-2 name swap of md-crl gotcha 16),
`start_r2_metrics` (`*_linreg_start`), `balls_stage1_r2_metrics`, `balls_stage2_r2_metrics`.
Domain accuracies (logistic regression) are in `domain_accuracy.py`.
"""

from __future__ import annotations

import numpy as np

# ----------------------------------------------------------------------------------------------
# Core regressions


def r2_score_np(y_true, y_pred) -> float:
    """sklearn `r2_score(y_true, y_pred)` with `multioutput="uniform_average"`.

    Args: y_true, y_pred: [n] or [n, k]. Returns a float (NaN for n < 2, like sklearn).
    """
    y = np.asarray(y_true, np.float64)
    p = np.asarray(y_pred, np.float64)
    if y.ndim == 1:
        y, p = y[:, None], p[:, None]
    if y.shape[0] < 2:
        return float("nan")
    num = np.sum((y - p) ** 2, axis=0)
    den = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    scores = np.ones(y.shape[1])
    ok = (den != 0) & (num != 0)
    scores[ok] = 1.0 - num[ok] / den[ok]
    scores[(num != 0) & (den == 0)] = 0.0
    return float(np.mean(scores))


def fit_linear(x, y, fit_intercept: bool = True):
    """Least-squares fit of `y ~ x` (minimum-norm solution, like sklearn's `LinearRegression`).

    Args: x: [n, p]; y: [n, k]. Returns (coef [p, k], intercept [k]) in float64.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if fit_intercept:
        xm, ym = x.mean(axis=0), y.mean(axis=0)
    else:
        xm, ym = np.zeros(x.shape[1]), np.zeros(y.shape[1])
    if x.shape[1] == 0:
        return np.zeros((0, y.shape[1])), ym
    coef = np.linalg.lstsq(x - xm, y - ym, rcond=None)[0]
    return coef, ym - xm @ coef


def linear_r2(x, y, fit_intercept: bool = True) -> float:
    """In-sample R^2 of OLS `y ~ x` = `LinearRegression(fit_intercept).fit(x, y).score(x, y)`.

    Args: x: [n, p]; y: [n, k] (or [n]). numpy or jax arrays. Returns a float.
    """
    return linear_r2_mse(x, y, fit_intercept)[0]


def linear_r2_mse(x, y, fit_intercept: bool = True) -> tuple[float, float]:
    """`BasePl.compute_r2`: (in-sample R^2, mean squared error of the in-sample prediction)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    coef, b = fit_linear(x, y, fit_intercept)
    pred = x @ coef + b
    return r2_score_np(y, pred), float(np.mean((pred - y) ** 2))


def heldout_linear_r2(x_train, y_train, x_test, y_test, fit_intercept: bool = True) -> float:
    """Fit OLS `y ~ x` on the train arrays ([n_tr, p], [n_tr, k]), R^2 on the test arrays."""
    coef, b = fit_linear(x_train, y_train, fit_intercept)
    x_test = np.asarray(x_test, np.float64)
    return r2_score_np(y_test, x_test @ coef + b)


def mixing_r2_spec(stage: int = 1, consistent_names: bool = False) -> dict:
    """Regressions of `MixingAutoencoderPL` (stage 1) / `MixingMDEncodedAutoencoderPL` (stage 2).

    Returns {name: (source, target)} with source/target one of
    "z", "zh", "z_inv", "z_sp" (true, split at `d_data` by the caller), "h_inv", "h_sp"
    (learned, split at `d_model`). Stage 2 uses `d_data = d_model` in the reference and swaps the
    meaning of `hz_~z_~r2` (h_sp -> z_inv) and `~hz_z_~r2` (h_inv -> z_sp) (md-crl gotcha 16,
    reproduced); `consistent_names=True` keeps the stage-1 meanings.
    """
    spec = {
        "r2": ("z", "zh"),
        "~r2": ("zh", "z"),
        "hz_z_r2": ("z_inv", "h_inv"),
        "hz_z_~r2": ("h_inv", "z_inv"),
        "~hz_z_r2": ("z_inv", "h_sp"),
        "~hz_z_~r2": ("h_sp", "z_inv"),
        "hz_~z_r2": ("z_sp", "h_inv"),
        "hz_~z_~r2": ("h_inv", "z_sp"),
        "~hz_~z_r2": ("z_sp", "h_sp"),
        "~hz_~z_~r2": ("h_sp", "z_sp"),
    }
    if stage == 2 and not consistent_names:
        spec["hz_~z_~r2"] = ("h_sp", "z_inv")
        spec["~hz_z_~r2"] = ("h_inv", "z_sp")
    elif stage not in (1, 2):
        raise ValueError("stage must be 1 or 2")
    return spec


def _blocks(z, z_hat, d_data: int, d_model: int) -> dict:
    z = np.asarray(z, np.float64)
    zh = np.asarray(z_hat, np.float64)
    return {
        "z": z,
        "zh": zh,
        "z_inv": z[:, :d_data],
        "z_sp": z[:, d_data:],
        "h_inv": zh[:, :d_model],
        "h_sp": zh[:, d_model:],
    }


def code_norms(z_hat, d_model: int, x=None) -> dict:
    """Metrics of the learned codes alone (no truth): the mean norms of the invariant block
    (`z_norm`) and of the rest (`~z_norm`) of z_hat [n, latent]; with observations x [n, x_dim],
    their mean per-row variances over x's mean norm (`z_var/x_norm`, `~z_var/x_norm`)."""
    zh = np.asarray(z_hat, np.float64)
    out = {
        "z_norm": float(np.mean(np.linalg.norm(zh[:, :d_model], axis=1))),
        "~z_norm": float(np.mean(np.linalg.norm(zh[:, d_model:], axis=1))),
    }
    if x is not None:
        x_norm = float(np.mean(np.linalg.norm(np.asarray(x, np.float64), axis=1)))
        with np.errstate(invalid="ignore", divide="ignore"):
            # variance across the coordinates of each sample (unbiased), averaged over samples
            out["z_var/x_norm"] = float(np.mean(np.var(zh[:, :d_model], axis=1, ddof=1)) / x_norm)
            out["~z_var/x_norm"] = float(np.mean(np.var(zh[:, d_model:], axis=1, ddof=1)) / x_norm)
    return out


def mixing_r2_metrics(
    z,
    z_hat,
    d_data: int,
    d_model: int,
    stage: int = 1,
    x=None,
    fit_intercept: bool = True,
    consistent_names: bool = False,
) -> dict:
    """In-sample R^2 keys of the mixing validation step (one batch, or any set of rows).

    Args:
      z: [n, z_dim] true latents; z_hat: [n, latent] learned; d_data / d_model: invariant sizes
      of the true / learned split (stage 2: both the model's); x: [n, x_dim] observations, stage 1
      only, adds `z_var/x_norm` and `~z_var/x_norm`.
    Returns:
      {key: float} with the ten R^2 keys of `mixing_r2_spec` plus `z_norm`, `~z_norm`.
    """
    blocks = _blocks(z, z_hat, d_data, d_model)
    spec = mixing_r2_spec(stage, consistent_names)
    out = {k: linear_r2(blocks[s], blocks[t], fit_intercept) for k, (s, t) in spec.items()}
    out.update(code_norms(z_hat, d_model, x if stage == 1 else None))
    return out


def mixing_r2_metrics_heldout(
    z_train,
    z_hat_train,
    z_test,
    z_hat_test,
    d_data: int,
    d_model: int,
    stage: int = 1,
    fit_intercept: bool = True,
    consistent_names: bool = False,
) -> dict:
    """Same keys as `mixing_r2_metrics` (R^2 only), fitted on train rows and scored on test rows."""
    tr = _blocks(z_train, z_hat_train, d_data, d_model)
    te = _blocks(z_test, z_hat_test, d_data, d_model)
    spec = mixing_r2_spec(stage, consistent_names)
    return {
        k: heldout_linear_r2(tr[s], tr[t], te[s], te[t], fit_intercept)
        for k, (s, t) in spec.items()
    }


def start_r2_metrics(z, z_hat, d: int, fit_intercept: bool = True) -> dict:
    """`*_linreg_start` keys logged at train start (true and learned split both at `d`)."""
    b = _blocks(z, z_hat, d, d)
    spec = mixing_r2_spec(stage=1)
    keys = ("r2", "~r2", "hz_z_r2", "hz_z_~r2", "hz_~z_r2", "hz_~z_~r2")
    return {f"{k}_linreg_start": linear_r2(b[spec[k][0]], b[spec[k][1]], fit_intercept)
            for k in keys}


def balls_stage1_r2_metrics(
    z, z_hat, z_invariant, z_spurious, colors=None, fit_intercept: bool = True
) -> dict:
    """`BallsAutoencoderPL.validation_step` keys (here "hz" is the whole code).

    Args: z [n, 4]; z_hat [n, latent]; z_invariant [n, 2]; z_spurious [n, 2]; colors [n, c]
    or None (the `hz_colors_*` keys left out).
    """
    pairs = {
        "r2": (z, z_hat),
        "~r2": (z_hat, z),
        "hz_z_r2": (z_invariant, z_hat),
        "hz_z_~r2": (z_hat, z_invariant),
        "hz_~z_r2": (z_spurious, z_hat),
        "hz_~z_~r2": (z_hat, z_spurious),
    }
    if colors is not None:
        pairs.update({"hz_colors_r2": (colors, z_hat), "hz_colors_~r2": (z_hat, colors)})
    return {k: linear_r2(s, t, fit_intercept) for k, (s, t) in pairs.items()}


def balls_stage2_r2_metrics(
    z, z_hat, z_invariant, z_spurious, d_model: int, fit_intercept: bool = True
) -> dict:
    """`BallsMDEncodedAutoencoderPL.on_validation_epoch_end` keys (whole validation set):
    `*_r2_linreg` and the matching `*_mse_loss_linreg` of `compute_r2`."""
    zh = np.asarray(z_hat)
    h_inv = zh[:, :d_model]
    pairs = {
        "": (z, zh),
        "~": (zh, z),
        "hz_z_": (z_invariant, h_inv),
        "hz_z_~": (h_inv, z_invariant),
        "hz_~z_": (z_spurious, h_inv),
        "hz_~z_~": (h_inv, z_spurious),
    }
    out = {}
    for prefix, (s, t) in pairs.items():
        r2, mse = linear_r2_mse(s, t, fit_intercept)
        out[f"{prefix}r2_linreg"] = r2
        out[f"{prefix}mse_loss_linreg"] = mse
    return out

