"""The ground-truth latent causal model of the scaling data as a flow model
(`ws_crl/lcm/flow_lcm.py: FlowLCM`, ws-crl.md 1.5 and 7.2): an additive-noise SCM on the causal
variables z, atomic-or-none perfect interventions, and an invertible mixing x = F(z).

* Mechanisms (`MECHANISMS`): `linear`, the reference's z_i = sum_j w_ji z_j + eps_i; or
  `nonlinear` (not in the reference), z_i = g_i(sum_j w_ji z_j) + eps_i with g_i a random monotone
  rational-quadratic spline on [-MECHANISM_BOUND, MECHANISM_BOUND] (identity outside).
* Mixing (`MIXINGS`): `so_n`, the reference's rotation x = R^T z; or `flow` (not in the
  reference), a random affine coupling flow after the rotation, x = F(R^T z). (Random
  rational-quadratic couplings invert badly in float32: distrax's spline with O(1) random
  parameters loses up to O(1) in x on some inputs; affine couplings invert to ~1e-5.)
* Sampling pairs (before / after an intervention) is `data/scaling.py: sample_pairs`.
* `log_prob_pairs`: the exact log p(x1, x2), marginalised over the intervention targets, which
  the reference declares but never implemented. With e = the noise of z (e_i = z_i - g_i(pa_i);
  the map z -> e has a unit-triangular Jacobian), targets I uniform over {none, 1, .., d}:

      log p(x1, x2) = sum_i log N(e1_i) + log sum_I p(I) [ sum_{i in I} log N(z2_i)
                      + sum_{i not in I} log N(e2_i; e1_i, t^2) ] + log|det dz/dx| (x1) + (x2)

  (an intervened variable is redrawn from N(0, 1); the others keep their noise up to the
  counterfactual noise of std t, `data.nature.manifold_thickness`).

Shapes: n samples, d causal variables; effects [d, d] = adjacency * weights, [parent, child].
"""

from typing import Optional

import distrax
import jax
import jax.numpy as jnp

from wscrl_jax.causal.interventions import intervention_masks
from wscrl_jax.flows.stack import CouplingStack

MECHANISMS = ("linear", "nonlinear")
MIXINGS = ("so_n", "flow")
MECHANISM_BINS = 8
MECHANISM_BOUND = 3.0
MECHANISM_PARAM_STD = 1.5  # spread of the random spline parameters (bends of the mechanisms)
MIXING_PARAM_STD = 0.3  # spread added to the mixing flow's initial parameters


def random_mechanisms(key, dim: int):
    """Spline parameters [d, 3 bins + 1] of d random monotone mechanisms."""
    return MECHANISM_PARAM_STD * jax.random.normal(key, (dim, 3 * MECHANISM_BINS + 1))


def _mechanism(pre, spline_params):
    """g(pre) for one variable: pre [n], spline_params [3 bins + 1] or None (linear)."""
    if spline_params is None:
        return pre
    return distrax.RationalQuadraticSpline(spline_params, -MECHANISM_BOUND, MECHANISM_BOUND,
                                           boundary_slopes="identity").forward(pre)


def causal_value(i: int, eps_i, z, effects, mechanisms: Optional[jax.Array]):
    """z_i = g_i(z @ effects[:, i]) + eps_i [n] (z [n, d] holds the parents' values)."""
    spline = None if mechanisms is None else mechanisms[i]
    return eps_i + _mechanism(z @ effects[:, i], spline)


def noise_of(z, effects, mechanisms: Optional[jax.Array]):
    """The noise e [n, d] of causal variables z [n, d] (exact inverse of solving the SCM)."""
    return jnp.stack([z[:, i] - causal_value(i, 0.0, z, effects, mechanisms)
                      for i in range(z.shape[1])], axis=1)


def mixing_flow_module(dim: int) -> CouplingStack:
    """The mixing flow's architecture: the reference's `make_scalar_transform` defaults (3 affine
    couplings, 10 hidden units; permutations from seed 0, the parameters carry the seed)."""
    return CouplingStack(dim, transform="affine")


def random_mixing_flow(key, dim: int):
    """Parameters of a random invertible mixing flow: the initial ones plus N(0, 0.3^2) noise,
    so that the flow is farther from the identity (more and the scales reach their 1e-3 floor)."""
    k_init, k_noise = jax.random.split(key)
    params = mixing_flow_module(dim).init(k_init, jnp.zeros((1, dim)))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(k_noise, len(leaves))
    return jax.tree_util.tree_unflatten(tree, [
        p + MIXING_PARAM_STD * jax.random.normal(k, p.shape, p.dtype)
        for p, k in zip(leaves, keys)])


def mix(z, rotation, mixing_flow=None):
    """x [n, d] = F(R^T z) per sample (F the identity without a mixing flow)."""
    x = z @ rotation
    if mixing_flow is None:
        return x
    return mixing_flow_module(z.shape[1]).apply(mixing_flow, x)[0]


def unmix(x, rotation, mixing_flow=None):
    """(z [n, d], log|det dz/dx| [n]): the inverse of `mix`."""
    log_det = jnp.zeros(x.shape[:1], x.dtype)
    if mixing_flow is not None:
        x, log_det = mixing_flow_module(x.shape[1]).apply(mixing_flow, x,
                                                           method="inverse_and_log_det")
    return x @ rotation.T, log_det  # R^T's inverse is R


def _log_normal(x, std=1.0):
    return -0.5 * (x / std) ** 2 - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi)


def log_prob_pairs(x1, x2, effects, rotation, mechanisms=None, mixing_flow=None,
                   manifold_thickness: float = 1e-9):
    """The exact log p(x1, x2) [n] of pairs x1, x2 [n, d] under the ground truth (see the module
    docstring); `manifold_thickness` > 0."""
    d = x1.shape[1]
    z1, log_det1 = unmix(x1, rotation, mixing_flow)
    z2, log_det2 = unmix(x2, rotation, mixing_flow)
    e1, e2 = noise_of(z1, effects, mechanisms), noise_of(z2, effects, mechanisms)
    masks = jnp.asarray(intervention_masks(d), x1.dtype)  # [d + 1, d]: targets of each label
    intervened = _log_normal(z2)  # [n, d]
    kept = _log_normal(e2 - e1, manifold_thickness)
    per_target = intervened @ masks.T + kept @ (1.0 - masks).T  # [n, d + 1]
    log_prior = (jnp.sum(_log_normal(e1), axis=1)
                 + jax.scipy.special.logsumexp(per_target, axis=1) - jnp.log(d + 1.0))
    return log_prior + log_det1 + log_det2
