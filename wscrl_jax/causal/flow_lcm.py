"""The ground-truth latent causal model of the scaling data as a flow model (reference:
`ws_crl/lcm/flow_lcm.py: FlowLCM`, sampling in `ws_crl/lcm/base.py`): an SCM on the causal
variables z (additive noise in the reference), atomic-or-none perfect interventions, and an
invertible mixing x = F(z).

* Mechanisms (`MECHANISMS`): `linear`, the reference's z_i = pre_i + eps_i with
  pre_i = sum_j w_ji z_j; or, not in the reference, with g_i random monotone rational-quadratic
  splines on [-MECHANISM_BOUND, MECHANISM_BOUND] (identity outside):
  - `nonlinear`: z_i = g_i(pre_i) + eps_i;
  - `post_nonlinear`: z_i = g_i(pre_i + eps_i);
  - `noise_spline`: z_i = pre_i + g_i(eps_i; pre_i), a spline of the noise whose knots move with
    the parents (parameters a + tanh(pre_i) b).
  In the first two the noise is additive in some coordinate of z_i (z_i itself, or
  g_i^-1(z_i)), so an affine solution function z_i = a(ctx) e_i + b(ctx) is exact up to the
  elementwise reparametrisation that identifiability allows anyway; in `noise_spline` the shape
  of p(z_i | parents) changes with the parents, which no such affine family represents.
* Mixing (`MIXINGS`): `so_n`, the reference's rotation x = R^T z; or `flow` (not in the
  reference), a random affine coupling flow after the rotation, x = F(R^T z). (Random
  rational-quadratic couplings invert badly in float32: distrax's spline with O(1) random
  parameters loses up to O(1) in x on some inputs; affine couplings invert to ~1e-5.)
* Sampling pairs (before / after an intervention) is `data/scaling.py: sample_pairs`.
* `log_prob_pairs`: the exact log p(x1, x2), marginalised over the intervention targets, which
  the reference declares but never implemented. With e = the noise of z (the map z -> e is
  triangular with diagonal J_i = de_i/dz_i: 1 for additive noise, the inverse spline's slope
  otherwise), targets I uniform over {none, 1, .., d}:

      log p(x1, x2) = sum_i [log N(e1_i) + log J1_i] + log sum_I p(I) [ sum_{i in I} log N(z2_i)
                      + sum_{i not in I} (log N(e2_i; e1_i, t^2) + log J2_i) ]
                      + log|det dz/dx| (x1) + (x2)

  (an intervened variable is redrawn from N(0, 1); the others keep their noise up to the
  counterfactual noise of std t, `data.nature.manifold_thickness`).

Shapes: n samples, d causal variables; effects [d, d] = adjacency * weights, [parent, child].
"""

from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp

from wscrl_jax.causal.interventions import intervention_masks

MECHANISMS = ("linear", "nonlinear", "post_nonlinear", "noise_spline")
MIXINGS = ("so_n", "flow")
MECHANISM_BINS = 8
MECHANISM_BOUND = 3.0
MECHANISM_PARAM_STD = 1.5  # spread of the random spline parameters (bends of the mechanisms)
# where the noise passes through the splines (post_nonlinear, noise_spline): milder; at 1.5 they
# flatten whole ranges of the noise to slopes below 0.03 (z_i nearly discrete), at 0.5 the
# slopes of a spline span about 0.2 to 3.6 (medians over random draws)
NOISE_SPLINE_PARAM_STD = 0.5
MIXING_PARAM_STD = 0.3  # spread added to the mixing flow's initial parameters


@flax.struct.dataclass
class Mechanisms:
    """Random monotone spline mechanisms of d variables (see the module docstring).

    params: [d, 3 bins + 1] the splines' parameters, or for `noise_spline` [d, 2, 3 bins + 1]
    (a and b of a + tanh(pre_i) b); kind (static): one of `MECHANISMS` other than `linear`.
    """
    params: jax.Array
    kind: str = flax.struct.field(pytree_node=False, default="nonlinear")


def random_mechanisms(key, dim: int, kind: str = "nonlinear") -> Mechanisms:
    """d random monotone mechanisms of `kind` (for one key the same normal draws, each kind
    scaled by its own spread; `noise_spline` draws b from the key folded with 1)."""
    if kind not in MECHANISMS[1:]:
        raise ValueError(f"random mechanisms of kind {kind!r}: expected one of {MECHANISMS[1:]}")
    shape = (dim, 3 * MECHANISM_BINS + 1)
    if kind == "nonlinear":
        return Mechanisms(MECHANISM_PARAM_STD * jax.random.normal(key, shape), kind)
    params = NOISE_SPLINE_PARAM_STD * jax.random.normal(key, shape)
    if kind == "noise_spline":
        slopes = NOISE_SPLINE_PARAM_STD * jax.random.normal(jax.random.fold_in(key, 1), shape)
        params = jnp.stack([params, slopes], axis=1)
    return Mechanisms(params, kind)


def _spline(mechanisms: Mechanisms, i: int, pre=None):
    """g_i; for `noise_spline` the batch of splines g_i(.; pre) of pre [n]."""
    params = mechanisms.params[i]
    if mechanisms.kind == "noise_spline":
        params = params[0] + jnp.tanh(pre)[:, None] * params[1]  # [n, 3 bins + 1]
    import distrax  # here: 0.45 s to import, for nonlinear mechanisms only
    return distrax.RationalQuadraticSpline(params, -MECHANISM_BOUND, MECHANISM_BOUND,
                                           boundary_slopes="identity")


def causal_value(i: int, eps_i, z, effects, mechanisms: Optional[Mechanisms],
                 counterfactual=0.0):
    """z_i [n] from its noise eps_i [n] and its parents' values in z [n, d] (pre_i =
    z @ effects[:, i]; the formula of `mechanisms.kind`). `counterfactual` [n] (the
    counterfactual noise) is added to the noise."""
    pre = z @ effects[:, i]
    if mechanisms is None:
        return eps_i + pre + counterfactual
    if mechanisms.kind == "post_nonlinear":
        return _spline(mechanisms, i).forward(pre + (eps_i + counterfactual))
    if mechanisms.kind == "noise_spline":
        return pre + _spline(mechanisms, i, pre).forward(eps_i + counterfactual)
    return eps_i + _spline(mechanisms, i).forward(pre) + counterfactual


def noise_and_log_jacobian(z, effects, mechanisms: Optional[Mechanisms]):
    """The noise e [n, d] of causal variables z [n, d] (exact inverse of solving the SCM) and
    log|de_i/dz_i| [n, d] (zeros for additive noise)."""
    if mechanisms is None or mechanisms.kind == "nonlinear":
        noise = jnp.stack([z[:, i] - causal_value(i, 0.0, z, effects, mechanisms)
                           for i in range(z.shape[1])], axis=1)
        return noise, jnp.zeros_like(noise)
    pre = z @ effects  # [n, d]
    if mechanisms.kind == "post_nonlinear":
        inverse = [_spline(mechanisms, i).inverse_and_log_det(z[:, i])
                   for i in range(z.shape[1])]
        noise = jnp.stack([u for u, _ in inverse], axis=1) - pre
    else:  # noise_spline
        inverse = [_spline(mechanisms, i, pre[:, i]).inverse_and_log_det(z[:, i] - pre[:, i])
                   for i in range(z.shape[1])]
        noise = jnp.stack([u for u, _ in inverse], axis=1)
    return noise, jnp.stack([log_det for _, log_det in inverse], axis=1)


def noise_of(z, effects, mechanisms: Optional[Mechanisms]):
    """The noise e [n, d] of causal variables z [n, d]."""
    return noise_and_log_jacobian(z, effects, mechanisms)[0]


def mixing_flow_module(dim: int):
    """The mixing flow's architecture, a `flows.stack.CouplingStack`: the reference's
    `make_scalar_transform` defaults (3 affine couplings, 10 hidden units; permutations from
    seed 0, the parameters carry the seed)."""
    from wscrl_jax.flows.stack import CouplingStack  # here: it imports distrax
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
    e1, log_jacobian1 = noise_and_log_jacobian(z1, effects, mechanisms)
    e2, log_jacobian2 = noise_and_log_jacobian(z2, effects, mechanisms)
    masks = jnp.asarray(intervention_masks(d), x1.dtype)  # [d + 1, d]: targets of each label
    intervened = _log_normal(z2)  # [n, d]
    kept = _log_normal(e2 - e1, manifold_thickness) + log_jacobian2
    per_target = intervened @ masks.T + kept @ (1.0 - masks).T  # [n, d + 1]
    log_prior = (jnp.sum(_log_normal(e1) + log_jacobian1, axis=1)
                 + jax.scipy.special.logsumexp(per_target, axis=1) - jnp.log(d + 1.0))
    return log_prior + log_det1 + log_det2
