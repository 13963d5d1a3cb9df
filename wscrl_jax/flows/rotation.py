"""SO(n) rotations as bijectors (reference: `ws_crl/encoder/flow.py: SONEncoder`).

distrax's `UnconstrainedAffine` would also rotate, but computes a log-determinant (LU) and an
inverse (a solve) that for a rotation are exactly 0 and the transpose; `Rotation` says so.
"""

from functools import partial

import distrax
import jax
import jax.numpy as jnp
import numpy as np


@partial(jax.jit, static_argnums=1)
def so_n_rotation(coeffs, dim: int):
    """R = expm(S) [d, d] with S skew-symmetric, S[i, j] = coeffs[k] for the k-th pair i < j in
    row-major order (`SONEncoder._rotation_matrix`); coeffs [d (d - 1) / 2]."""
    skew = jnp.zeros((dim, dim)).at[np.triu_indices(dim, 1)].set(coeffs)
    return jax.scipy.linalg.expm(skew - skew.T)


class Rotation(distrax.Bijector):
    """y = R x for a rotation matrix R [d, d] (x [..., d]); log-determinant 0, inverse R^T y."""

    def __init__(self, matrix):
        super().__init__(event_ndims_in=1, is_constant_jacobian=True)
        self.matrix = matrix

    def forward_and_log_det(self, x):
        return x @ self.matrix.T, jnp.zeros(x.shape[:-1], x.dtype)

    def inverse_and_log_det(self, y):
        return y @ self.matrix, jnp.zeros(y.shape[:-1], y.dtype)
