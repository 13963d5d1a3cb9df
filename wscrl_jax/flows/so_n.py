"""SO(n) rotation matrices (reference: `ws_crl/encoder/flow.py: SONEncoder._rotation_matrix`).

Kept apart from `flows/rotation.py`'s bijector so that the scaling data do not import distrax
(0.45 s at start-up).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np


@partial(jax.jit, static_argnums=1)
def so_n_rotation(coeffs, dim: int):
    """R = expm(S) [d, d] with S skew-symmetric, S[i, j] = coeffs[k] for the k-th pair i < j in
    row-major order (`SONEncoder._rotation_matrix`); coeffs [d (d - 1) / 2]."""
    skew = jnp.zeros((dim, dim)).at[np.triu_indices(dim, 1)].set(coeffs)
    return jax.scipy.linalg.expm(skew - skew.T)
