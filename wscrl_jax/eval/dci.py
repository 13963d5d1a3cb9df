"""DCI scores (disentanglement, completeness, informativeness) with gradient-boosted trees.

Mirrors ``ws_crl/metrics.py: compute_dci`` of the PyTorch reference (Eastwood & Williams, ICLR
2018, https://openreview.net/pdf?id=By-7dz-AZ) (called by
``experiments/scaling.py: eval_dci_scores``):

* one ``sklearn.ensemble.GradientBoostingRegressor`` with default hyper-parameters per true factor
  j, fit on (model codes -> factor j); column j of the importance matrix ``R`` (shape
  ``[d_model, d_true]``) is ``|feature_importances_|``;
* informativeness = mean over factors of the raw (unnormalised) MSE on train / test codes;
* disentanglement / completeness = importance-weighted ``1 - entropy`` of the rows / columns of
  ``R``, entropies in base ``d_true`` / ``d_model``.

Backends that fit the regressors (``eval.dci_backend``):

* ``jax``: ``wscrl_jax/eval/gbrt.py``, scikit-learn's trees written in JAX, every member and
  factor of a sweep in one compiled call (:func:`compute_dci_members`);
* ``native``: the same trees as compiled loops on the CPU (``wscrl_jax/eval/gbrt_native.py``),
  every (member, factor) fit shared out over one thread per core;
* ``auto`` (default): ``native`` where JAX runs on the CPU and the loops were built, else ``jax``
  (on an accelerator the JAX trees run on the device);
* ``sklearn``: scikit-learn itself, member by member.

Differences of the scikit-learn backend from the reference, none of which change the numbers'
meaning:

* ``random_state`` defaults to 0 instead of None (see :func:`compute_dci`);
* the per-factor regressors are fit concurrently in a thread pool (scikit-learn's tree building
  runs without the GIL), which changes nothing about each individual fit;
* the model codes are handed to scikit-learn as float32, which is the dtype scikit-learn casts
  them to internally anyway (fit and predict), so this only avoids a copy.

Validation is expensive (ws-crl gotcha 24: the reference fits these regressors on 100k samples
every 10000 steps and at step 1), hence the parallel fitting.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from wscrl_jax.eval import gbrt, gbrt_native

_EPS = 1.0e-12
DCI_BACKENDS = ("auto", "native", "jax", "sklearn")


def resolve_dci_backend(backend: str) -> str:
    """The backend that `backend` ("auto" included) runs: "native" where JAX runs on the CPU
    and the compiled trees were built, "jax" elsewhere."""
    if backend not in DCI_BACKENDS:
        raise ValueError(f"eval.dci_backend={backend!r} must be one of {DCI_BACKENDS}")
    if backend != "auto":
        return backend
    native = jax.default_backend() == "cpu" and gbrt_native.available()
    return "native" if native else "jax"


def _importance_weighted_score(importance: np.ndarray, axis: int) -> float:
    """Shared body of :func:`disentanglement` (axis=1) and :func:`completeness` (axis=0).

    For each slice along the *other* axis, the distribution over ``axis`` is ``(R + eps)``
    renormalised (``scipy.stats.entropy`` normalises its input); its entropy is taken in base
    ``importance.shape[axis]``. Scores ``1 - H`` are averaged with weights equal to the slice's
    share of the total importance (all-ones matrix when the total is below ``eps``).
    """
    importance = np.asarray(importance, dtype=np.float64)
    if importance.ndim != 2:
        raise ValueError(f"importance must be 2-d [d_model, d_true], got shape {importance.shape}")
    base = importance.shape[axis]

    # Base 1 (a single code / a single factor): scipy divides the entropy by log(1) = 0, so the
    # reference produces 0/0 = nan there. We keep that behaviour (silently) for parity.
    with np.errstate(divide="ignore", invalid="ignore"):
        per_slice = 1.0 - _entropy(importance + _EPS, base=base, axis=axis)

    weights_src = importance
    if np.abs(importance.sum()) < _EPS:
        weights_src = np.ones_like(importance)
    weights = weights_src.sum(axis=axis) / weights_src.sum()
    return float(np.sum(per_slice * weights))


def _entropy(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    """`scipy.stats.entropy(p, base=base, axis=axis)` in its own operations (normalise, `entr`,
    sum, divide by log(base)): the same values, without importing `scipy.stats` (half a
    second of every run's start)."""
    import scipy.special  # here: 0.08 s to import
    p = p / np.sum(p, axis=axis, keepdims=True)
    return np.sum(scipy.special.entr(p), axis=axis) / np.log(base)


def disentanglement(importance) -> float:
    """Disentanglement score of an importance matrix.

    Args:
        importance: array ``[d_model, d_true]``, ``R[i, j]`` = importance of model code i for
            predicting true factor j (non-negative).

    Returns:
        ``sum_i rho_i * (1 - H_{base d_true}(P_i))`` with ``P_i = (R[i] + 1e-12) / sum(R[i] +
        1e-12)`` and ``rho_i = sum_j R[i, j] / sum(R)`` (``R`` replaced by all ones for the weights
        when ``sum(R) < 1e-12``). As in the reference (scipy entropy with base 1), the result is
        nan when ``d_true == 1``.
    """
    # Entropy over the true-factor axis (axis 1) of each row; weight = row sum.
    return _importance_weighted_score(importance, axis=1)


def completeness(importance) -> float:
    """Completeness score of an importance matrix.

    Args:
        importance: array ``[d_model, d_true]`` (see :func:`disentanglement`).

    Returns:
        ``sum_j w_j * (1 - H_{base d_model}(P_j))`` with ``P_j = (R[:, j] + 1e-12)`` normalised over
        codes and ``w_j = sum_i R[i, j] / sum(R)`` (all-ones fallback as in
        :func:`disentanglement`). nan when ``d_model == 1`` (reference behaviour).
    """
    # Entropy over the model-code axis (axis 0) of each column; weight = column sum.
    return _importance_weighted_score(importance, axis=0)


def _fit_one_factor(x_train, y_train, x_test, y_test, random_state):
    """Fit the default GBRT on (codes -> one factor); return (|importances|, train MSE,
    test MSE)."""
    from sklearn.ensemble import GradientBoostingRegressor  # the sklearn backend only
    from sklearn.metrics import mean_squared_error
    reg = GradientBoostingRegressor(random_state=random_state)
    reg.fit(x_train, y_train)
    imp = np.abs(reg.feature_importances_)
    mse_train = float(mean_squared_error(y_train, reg.predict(x_train)))
    mse_test = float(mean_squared_error(y_test, reg.predict(x_test)))
    return imp, mse_train, mse_test


def compute_dci(
    train_codes,
    train_factors,
    test_codes,
    test_factors,
    *,
    random_state: Optional[int] = 0,
    n_jobs: Optional[int] = None,
) -> dict:
    """DCI scores of model codes w.r.t. true factors (mirrors ``ws_crl/metrics.py: compute_dci``).

    Args:
        train_codes: ``[n_train, d_model]`` model codes used to fit the regressors (numpy or jax).
        train_factors: ``[n_train, d_true]`` true factors matching ``train_codes``.
        test_codes: ``[n_test, d_model]`` model codes for the test informativeness.
        test_factors: ``[n_test, d_true]`` true factors matching ``test_codes``.
        random_state: passed to every ``GradientBoostingRegressor``. The reference leaves it at
            None; with the default ``subsample=1.0`` and ``max_features=None`` the only randomness
            is the splitter's feature order, i.e. tie-breaking between equally good splits, so
            fixing it (default 0) only makes CPU results reproducible. None restores the reference.
        n_jobs: number of threads fitting the per-factor regressors concurrently; None or -1 =
            all CPU cores, 1 = sequential. Does not affect the results.

    Returns:
        dict of Python floats, keys in this order: ``informativeness_train``,
        ``informativeness_test`` (mean over factors of the MSE, lower is better),
        ``disentanglement``, ``completeness``, then ``importance_matrix_{i}_{j}`` for
        ``i in range(d_model)`` (model code), ``j in range(d_true)`` (true factor), row-major.
    """
    # scikit-learn casts X to float32 (C order) in fit and predict; doing it once here is exact.
    x_train = np.ascontiguousarray(np.asarray(train_codes), dtype=np.float32)
    x_test = np.ascontiguousarray(np.asarray(test_codes), dtype=np.float32)
    # Targets: float64 (lossless from any float input; scikit-learn uses float64 targets).
    y_train = np.asarray(train_factors, dtype=np.float64)
    y_test = np.asarray(test_factors, dtype=np.float64)

    if not (x_train.ndim == x_test.ndim == y_train.ndim == y_test.ndim == 2):
        raise ValueError("compute_dci expects 2-d arrays [n_samples, dim]")
    n_train, d_model = x_train.shape
    n_test, d_true = y_test.shape
    if y_train.shape != (n_train, d_true) or x_test.shape != (n_test, d_model):
        raise ValueError(
            f"Inconsistent shapes: train codes {x_train.shape}, train factors {y_train.shape}, "
            f"test codes {x_test.shape}, test factors {y_test.shape}"
        )

    if n_jobs is None or n_jobs < 1:
        n_jobs = os.cpu_count() or 1
    n_jobs = min(n_jobs, d_true)

    args = [
        (x_train, np.ascontiguousarray(y_train[:, j]), x_test, np.ascontiguousarray(y_test[:, j]),
         random_state)
        for j in range(d_true)
    ]
    if n_jobs <= 1:
        results = [_fit_one_factor(*a) for a in args]
    else:
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            results = list(pool.map(lambda a: _fit_one_factor(*a), args))

    importance = np.stack([r[0] for r in results], axis=1)
    return dci_metrics(importance, [r[1] for r in results], [r[2] for r in results])


def dci_metrics(importance, mse_train, mse_test) -> dict:
    """The DCI metric dict (see :func:`compute_dci`) of an importance matrix [d_model, d_true]
    and the per-factor train / test MSEs [d_true]."""
    importance = np.asarray(importance, np.float64)
    metrics = {
        "informativeness_train": float(np.mean(mse_train)),
        "informativeness_test": float(np.mean(mse_test)),
        "disentanglement": disentanglement(importance),
        "completeness": completeness(importance),
    }
    d_model, d_true = importance.shape
    for i in range(d_model):
        for j in range(d_true):
            metrics[f"importance_matrix_{i}_{j}"] = float(importance[i, j])
    return metrics


def _fit_factor(x_train, sorted_features, x_test, y_train, y_test):
    """The default GBRT on one factor: (|importances| [d_model], train MSE, test MSE)."""
    init, trees, importances, prediction = gbrt.fit(x_train, y_train, sorted_features)
    test_prediction = gbrt.predict(init, trees, x_test)
    return (jnp.abs(importances), jnp.mean((y_train - prediction) ** 2),
            jnp.mean((y_test - test_prediction) ** 2))


@jax.jit
def _sort_members(x_train):
    """Every member's training codes [M, n, d_model] sorted once per feature."""
    return jax.vmap(gbrt.sort_features)(x_train)


@partial(jax.jit, static_argnames="sequential")
def _fit_factors(x_train, sorted_features, x_test, y_train, y_test, member, sequential: bool):
    """F regressors, fit i on the codes of member `member[i]`.

    x_train [M, n, d_model], sorted_features of x_train, x_test [M, m, d_model]; y_train [F, n],
    y_test [F, m], member [F] int32 -> (|importances| [F, d_model], train MSE [F], test MSE [F]).
    `sequential`: one fit after the other (a lax.map: on CPU one fit's arrays stay in cache)
    instead of vmapped."""
    def one(args):
        i, y, y_test_i = args
        return _fit_factor(x_train[i], jax.tree_util.tree_map(lambda a: a[i], sorted_features),
                           x_test[i], y, y_test_i)
    return (jax.lax.map if sequential else lambda f, xs: jax.vmap(f)(xs))(
        one, (member, y_train, y_test))


def compute_dci_members(train_codes, train_factors, test_codes, test_factors, *,
                        backend: str = "auto", random_state: Optional[int] = 0) -> List[dict]:
    """DCI of every member of a sweep (:func:`compute_dci` per member).

    Args:
        train_codes: [M, n_train, d_model]; train_factors: [M, n_train, d_true];
        test_codes: [M, n_test, d_model]; test_factors: [M, n_test, d_true] (numpy or jax).
        backend: "jax" (every member and factor in one compiled function, float64 as
            scikit-learn; see `_fit_all`), "native" (the same trees compiled for the CPU, see
            `_fit_all_native`), "auto" (:func:`resolve_dci_backend`) or "sklearn"
            (:func:`compute_dci` member by member; `random_state` applies there).

    Returns:
        one metric dict per member, as :func:`compute_dci` returns.
    """
    backend = resolve_dci_backend(backend)
    if backend == "sklearn":
        return [compute_dci(*(np.asarray(a)[i] for a in (train_codes, train_factors,
                                                         test_codes, test_factors)),
                            random_state=random_state)
                for i in range(np.shape(train_codes)[0])]
    if backend == "native":
        importance, mse_train, mse_test = _fit_all_native(train_codes, train_factors,
                                                          test_codes, test_factors)
    else:
        with jax.enable_x64(True):
            importance, mse_train, mse_test = _fit_all(train_codes, train_factors, test_codes,
                                                       test_factors)
    return [dci_metrics(importance[i].T, mse_train[i], mse_test[i])
            for i in range(importance.shape[0])]


def _fit_all(train_codes, train_factors, test_codes, test_factors):
    """All (member, factor) regressors: importances [M, d_true, d_model], MSEs [M, d_true].

    On CPU the fits are shared out over one concurrent call per core (XLA's CPU backend runs
    these arrays' operations on one thread); elsewhere one vmapped call."""
    x_train = jnp.asarray(train_codes, jnp.float32)
    x_test = jnp.asarray(test_codes, jnp.float32)
    num_members, _, d_true = np.shape(train_factors)
    y_train = jnp.asarray(train_factors, jnp.float64).transpose(0, 2, 1).reshape(
        num_members * d_true, -1)
    y_test = jnp.asarray(test_factors, jnp.float64).transpose(0, 2, 1).reshape(
        num_members * d_true, -1)
    member = jnp.repeat(jnp.arange(num_members, dtype=jnp.int32), d_true)
    sorted_features = _sort_members(x_train)
    cpu = jax.default_backend() == "cpu"
    fits = num_members * d_true
    workers = min(os.cpu_count() or 1, fits) if cpu else 1
    # equal shares (one compilation): the last share is padded with repeats of the first fits
    order = np.arange(-(-fits // workers) * workers) % fits

    devices = jax.local_devices()

    def run(worker, share):
        # one device each where the CPU is split into host devices (inputs sharded over
        # several would make every worker's call a multi-device one)
        device = devices[worker % len(devices)]
        with jax.enable_x64(True):  # the flag is per thread
            inputs = jax.device_put((x_train, sorted_features, x_test, y_train[share],
                                     y_test[share], member[share]), device)
            return jax.device_get(_fit_factors(*inputs, sequential=cpu))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(run, range(workers), np.split(order, workers)))
    importance, mse_train, mse_test = (np.concatenate(a)[:fits] for a in zip(*parts))
    return (importance.reshape(num_members, d_true, -1), mse_train.reshape(num_members, d_true),
            mse_test.reshape(num_members, d_true))


def _fit_all_native(train_codes, train_factors, test_codes, test_factors):
    """`_fit_all` with the compiled trees: the (member, factor) fits shared out over one thread
    per core (each fit releases the GIL). Same returns: importances [M, d_true, d_model], MSEs
    [M, d_true]."""
    x_train = np.asarray(train_codes, np.float32)
    x_test = np.asarray(test_codes, np.float32)
    y_train = np.asarray(train_factors, np.float64)
    y_test = np.asarray(test_factors, np.float64)
    num_members, _, d_true = y_train.shape
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        orders = list(pool.map(gbrt_native.sort_features, x_train))

        def one(fit):
            i, j = divmod(fit, d_true)
            init, trees, importances, prediction = gbrt_native.fit(x_train[i], y_train[i, :, j],
                                                                   orders[i])
            test_prediction = gbrt_native.predict(init, trees, x_test[i])
            return (np.abs(importances), np.mean((y_train[i, :, j] - prediction) ** 2),
                    np.mean((y_test[i, :, j] - test_prediction) ** 2))

        results = list(pool.map(one, range(num_members * d_true)))
    importance, mse_train, mse_test = (np.stack(a) for a in zip(*results))
    return (importance.reshape(num_members, d_true, -1), mse_train.reshape(num_members, d_true),
            mse_test.reshape(num_members, d_true))
