"""The boosted trees of ``gbrt.py`` as compiled loops on the CPU (``_gbrt_native.c``).

Same algorithm, same rules, same outputs as :func:`wscrl_jax.eval.gbrt.fit` /
:func:`~wscrl_jax.eval.gbrt.predict`, as numpy arrays. It exists because XLA's CPU backend runs
the array program of ``gbrt.py`` several times more slowly than these loops
(``docs/performance.md``). The library is built by ``pip install`` (see
``setup.py``); where it was not (no C compiler), :func:`available` is False and the DCI falls back
to the JAX trees. The running sums are added one by one in sorted order, as scikit-learn adds
them, so results agree with ``gbrt.py`` to float64 rounding, not bit for bit.

Shapes: n training samples, m evaluated samples, p features, T trees of depth D.
"""

import ctypes
import functools
import importlib.machinery
from pathlib import Path
from typing import Optional

import numpy as np

from wscrl_jax.eval.gbrt import LEARNING_RATE, Trees


@functools.lru_cache(maxsize=None)
def _library() -> Optional[ctypes.CDLL]:
    """The compiled library next to this file, or None where it was not built."""
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = here / f"_gbrt_native{suffix}"
        if path.exists():
            lib = ctypes.CDLL(str(path))
            ptr, i64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
            lib.wscrl_gbrt_fit.argtypes = [ptr, ptr, ptr, i64, i64, i64, f64, i64, f64,
                                           ptr, ptr, ptr, ptr, ptr]
            lib.wscrl_gbrt_fit.restype = ctypes.c_int
            lib.wscrl_gbrt_predict.argtypes = [ptr, i64, i64, i64, i64, ptr, ptr, ptr, f64,
                                               f64, ptr]
            lib.wscrl_gbrt_predict.restype = None
            return lib
    return None


def available() -> bool:
    """Whether the compiled trees were built with this install."""
    return _library() is not None


def _require():
    lib = _library()
    if lib is None:
        raise RuntimeError("the compiled DCI trees (wscrl_jax/eval/_gbrt_native.c) were not built "
                           "with this install: reinstall with `pip install -e .` where a C "
                           "compiler is present, or set eval.dci_backend=jax")
    return lib


def sort_features(x) -> np.ndarray:
    """x [n, p] -> order [p, n] int32: per feature, the samples in ascending (stable) order of
    the float32 values, as :func:`wscrl_jax.eval.gbrt.sort_features`."""
    values = np.asarray(x, np.float32).T
    return np.ascontiguousarray(np.argsort(values, axis=1, kind="stable"), dtype=np.int32)


def fit(x, y, order=None, *, n_estimators: int = 100, learning_rate: float = LEARNING_RATE,
        max_depth: int = 3):
    """Boosted trees on (x [n, p] -> y [n]); `order`: :func:`sort_features` of x (computed
    here when None). The ctypes call releases the GIL, so fits run in parallel in threads.

    Returns (init float, Trees of numpy arrays, importances [p] float64 summing to 1 (zeros when
    no tree splits), training prediction [n] float64), as :func:`wscrl_jax.eval.gbrt.fit`.
    """
    lib = _require()
    x = np.ascontiguousarray(x, np.float32)
    y = np.ascontiguousarray(y, np.float64)
    n, p = x.shape
    order = sort_features(x) if order is None else np.ascontiguousarray(order, np.int32)
    if y.shape != (n,) or order.shape != (p, n):
        raise ValueError(f"gbrt_native.fit: x {x.shape}, y {y.shape}, order {order.shape} "
                         "do not match [n, p], [n], [p, n]")
    init = float(np.mean(y))
    feature = np.zeros((n_estimators, 2 ** max_depth - 1), np.int32)
    threshold = np.zeros((n_estimators, 2 ** max_depth - 1), np.float64)
    value = np.zeros((n_estimators, 2 ** max_depth), np.float64)
    gains = np.zeros(p, np.float64)
    prediction = np.zeros(n, np.float64)
    status = lib.wscrl_gbrt_fit(x.ctypes.data, y.ctypes.data, order.ctypes.data, n, p,
                                n_estimators, learning_rate, max_depth, init,
                                feature.ctypes.data, threshold.ctypes.data, value.ctypes.data,
                                gains.ctypes.data, prediction.ctypes.data)
    if status != 0:
        raise MemoryError(f"gbrt_native.fit could not allocate its buffers for {n} x {p} samples")
    total = gains.sum()
    if total > 0:
        importances = gains / total
    else:  # as gbrt.fit: zeros without any split, nan where splits gained nothing in total
        importances = np.full(p, np.nan if np.isfinite(threshold).any() else 0.0)
    return init, Trees(feature, threshold, value), importances, prediction


def predict(init, trees: Trees, x, learning_rate: float = LEARNING_RATE) -> np.ndarray:
    """Boosted prediction [m] float64 of x [m, p], stages added in order (`learning_rate`: the
    one the trees were fitted with)."""
    lib = _require()
    x = np.ascontiguousarray(x, np.float32)
    feature = np.ascontiguousarray(trees.feature, np.int32)
    threshold = np.ascontiguousarray(trees.threshold, np.float64)
    value = np.ascontiguousarray(trees.value, np.float64)
    if feature.size and feature.max() >= x.shape[1]:
        raise ValueError(f"gbrt_native.predict: the trees split feature {feature.max()}, x has "
                         f"{x.shape[1]} features")
    out = np.zeros(x.shape[0], np.float64)
    lib.wscrl_gbrt_predict(x.ctypes.data, x.shape[0], x.shape[1], value.shape[0],
                           value.shape[1].bit_length() - 1, feature.ctypes.data,
                           threshold.ctypes.data, value.ctypes.data, float(init),
                           learning_rate, out.ctypes.data)
    return out
