"""NumPy reference formulas shared by the tests (no JAX; pass float64 inputs for float64 results).

Test files import these as `from reference_np import ...`: tests/ has no __init__.py, so pytest's
default "prepend" import mode puts tests/ on sys.path before collecting a test file there.
"""

import math

import numpy as np

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

# torch.nn.functional.gaussian_nll_loss clamps the variance at eps=1e-6 (forward value only).
TORCH_VARIANCE_FLOOR = 1e-6


def log_normal(x, mean, std, full=True, var_floor=TORCH_VARIANCE_FLOOR):
    """Elementwise log N(x; mean, std^2), variance floored: v = max(std^2, var_floor).

    full=False drops the constant -log(2 pi) / 2 (the reference's full_likelihood=False).
    var_floor=0 gives the unfloored density.
    """
    v = np.maximum(np.square(std), var_floor)
    out = -0.5 * (np.log(v) + np.square(x - mean) / v)
    return out - HALF_LOG_2PI if full else out


def log_standard_normal(x):
    """Elementwise log N(x; 0, 1) with its constant."""
    return -0.5 * np.square(x) - HALF_LOG_2PI
