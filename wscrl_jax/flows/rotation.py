"""SO(n) rotations as bijectors (reference: `ws_crl/encoder/flow.py: SONEncoder`); their
matrices come from `flows/so_n.py: so_n_rotation`.

distrax's `UnconstrainedAffine` would also rotate, but computes a log-determinant (LU) and an
inverse (a solve) that for a rotation are exactly 0 and the transpose; `Rotation` says so.
"""

import distrax
import jax.numpy as jnp


class Rotation(distrax.Bijector):
    """y = R x for a rotation matrix R [d, d] (x [..., d]); log-determinant 0, inverse R^T y."""

    def __init__(self, matrix):
        super().__init__(event_ndims_in=1, is_constant_jacobian=True)
        self.matrix = matrix

    def forward_and_log_det(self, x):
        return x @ self.matrix.T, jnp.zeros(x.shape[:-1], x.dtype)

    def inverse_and_log_det(self, y):
        return y @ self.matrix, jnp.zeros(y.shape[:-1], y.dtype)
