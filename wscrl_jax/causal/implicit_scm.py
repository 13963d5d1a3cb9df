"""Implicit SCM: one affine "solution function" per causal variable.

Mirrors `ws_crl/causal/implicit_scm.py: MLPImplicitSCM` and
`ws_crl/transforms.py: ConditionalAffineScalarTransform, make_mlp_structure_transform`.
The d solution networks are evaluated together as one stacked MLP with weights
[d, in, out], so a whole SCM is a few batched matmuls.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from wscrl_jax.nn.gaussian import standard_normal_log_prob
from wscrl_jax.nn.init import constant, normal, torch_uniform

CAUSAL_STRUCTURES = ("none", "trivial", "fixed_order")
# Last-layer inits of `make_mlp_structure_transform`:
# (log-std bias mean, log-std bias std, log-std weight std, mean bias std, mean weight std)
LAST_LAYER_INITS = {
    "default": (0.0, 1e-6, 1e-3, 1e-3, 0.1),
    "strong_effects": (0.0, 1e-6, 0.1, 0.2, 1.5),
    "broad": (2.3, 1e-6, 1e-3, 1e-3, 0.1),
}
CLAMP = 1e12


def clean_and_clamp(x):
    """NaN -> 0, +-inf -> +-max float, then clip to +-1e12 (`ws_crl/utils.py: clean_and_clamp`)."""
    return jnp.clip(jnp.nan_to_num(x), -CLAMP, CLAMP)


def ancestor_masks(structure: str, dim_z: int, order=None):
    """Context masks [d, d]: row i marks the noise variables solution function i may read.

    none: every other variable; trivial: nothing (dVAE); fixed_order: the variables before i in
    `order` (an int array [d], e.g. from the model state).
    """
    if structure == "none":
        return 1.0 - jnp.eye(dim_z)
    if structure == "trivial":
        return jnp.zeros((dim_z, dim_z))
    if structure == "fixed_order":
        position = jnp.argsort(jnp.asarray(order))  # position[v] = rank of variable v
        return (position[None, :] < position[:, None]).astype(jnp.float32)
    raise ValueError(f"unknown causal structure {structure!r}; expected one of {CAUSAL_STRUCTURES}")


class StackedLinear(nn.Module):
    """d independent dense layers: [d, B, in] -> [d, B, out], torch-default init per layer;
    with `index` (a traced int) only layer `index`: [B, in] -> [B, out].

    The variable axis leads so that the batched matmul has leading batch dimensions, which
    XLA runs several times faster than a variable axis between batch and features (and far
    faster again once a member axis is vmapped in front).
    """

    features: int
    kernel_init: object = None
    bias_init: object = None

    num_layers: int = None  # d; needed only when the first call uses `index`

    @nn.compact
    def __call__(self, x, index=None):
        d, fan_in = self.num_layers or x.shape[0], x.shape[-1]
        kernel = self.param("kernel", self.kernel_init or torch_uniform(fan_in),
                            (d, fan_in, self.features))
        bias = self.param("bias", self.bias_init or torch_uniform(fan_in), (d, self.features))
        if index is not None:
            return x @ kernel[index] + bias[index]
        return jnp.einsum("dbi,dio->dbo", x, kernel) + bias[:, None, :]


def _last_layer_init(scheme: str, homoskedastic: bool):
    lb_mean, lb_std, lw_std, mb_std, mw_std = LAST_LAYER_INITS[scheme]
    if homoskedastic:  # single output row: the shift, with the "mean" init
        return normal(0.0, mw_std), normal(0.0, mb_std)

    def kernel_init(key, shape, dtype=jnp.float32):  # [d, in, 2]: column 0 log-std, 1 mean
        k1, k2 = jax.random.split(key)
        return jnp.stack([lw_std * jax.random.normal(k1, shape[:-1], dtype),
                          mw_std * jax.random.normal(k2, shape[:-1], dtype)], -1)

    def bias_init(key, shape, dtype=jnp.float32):  # [d, 2]
        k1, k2 = jax.random.split(key)
        return jnp.stack([lb_mean + lb_std * jax.random.normal(k1, shape[:-1], dtype),
                          mb_std * jax.random.normal(k2, shape[:-1], dtype)], -1)

    return kernel_init, bias_init


SOLUTION_TRANSFORMS = ("affine", "rq_spline")


class ImplicitSCM(nn.Module):
    """Solution functions `eps_i = z_i * s_i(c_i) + m_i(c_i)` with contexts c_i from noise.

    `s = exp(log_s) + min_std`. The context of variable i is `[a_i * e + (1 - a_i) * dummy, a_i]`
    with `a_i` the ancestor mask row and dummy values zero (the reference's dummies become
    zero after its in-place write, ws-crl gotcha 6).

    `transform="rq_spline"` (not in the reference) follows the affine map by a monotone
    rational-quadratic spline of the same context: `eps_i = g_i(z_i * s_i + m_i; c_i)`, distrax's
    `RationalQuadraticSpline` with `spline_bins` bins on [-spline_bound, spline_bound] and identity
    tails. Its parameters come from a second output layer of the same MLP, initialised at
    N(0, 1e-3^2) weights and zero biases, so that g starts as (almost) the identity and the
    model as the affine one.
    """

    dim_z: int
    hidden: Sequence[int]
    homoskedastic: bool = False
    min_std: float = 0.2
    init_scheme: str = "broad"
    transform: str = "affine"
    spline_bins: int = 8
    spline_bound: float = 5.0

    def setup(self):
        kinit, binit = _last_layer_init(self.init_scheme, self.homoskedastic)
        d = self.dim_z
        self.hidden_layers = [StackedLinear(w, num_layers=d) for w in self.hidden]
        self.out_layer = StackedLinear(1 if self.homoskedastic else 2, kernel_init=kinit,
                                       bias_init=binit, num_layers=d)
        if self.homoskedastic:
            self.log_scale = self.param("log_scale", normal(0.0, 1.0), (self.dim_z,))
        if self.transform not in SOLUTION_TRANSFORMS:
            raise ValueError(f"transform={self.transform!r} must be one of {SOLUTION_TRANSFORMS}")
        if self.transform == "rq_spline":
            self.spline_layer = StackedLinear(3 * self.spline_bins + 1,
                                              kernel_init=normal(0.0, 1e-3),
                                              bias_init=constant(0.0), num_layers=d)

    def scale_shift(self, conditioning_eps, masks):
        """conditioning_eps [B, d], masks [d, d] (or per sample [B, d, d]) -> (scale [B, d],
        shift [B, d])."""
        return self._solution_params(conditioning_eps, masks)[:2]

    def _solution_params(self, conditioning_eps, masks):
        """(scale [B, d], shift [B, d], spline parameters [B, d, 3 bins + 1] or None)."""
        batch = conditioning_eps.shape[0]
        masks = masks[:, None, :] if masks.ndim == 2 else jnp.swapaxes(masks, 0, 1)  # [d, B|1, d]
        context = jnp.concatenate(  # [d, B, 2d]: row i is variable i's masked noise and mask
            [masks * conditioning_eps[None, :, :],
             jnp.broadcast_to(masks, (self.dim_z, batch, self.dim_z))], axis=-1)
        scale, shift, spline = self._mlp(context)  # [d, B], [d, B], [d, B, 3 bins + 1]
        return scale.T, shift.T, None if spline is None else jnp.swapaxes(spline, 0, 1)

    def _mlp(self, context, index=None):
        """Solution networks on contexts [d, B, 2d] (or network `index` alone on [B, 2d]):
        (scale, shift, spline parameters or None), with the context's leading axes."""
        h = context
        for layer in self.hidden_layers:
            h = nn.relu(layer(h, index))
        out = self.out_layer(h, index)
        if self.homoskedastic:
            shift = out[..., 0]
            log_scale = self.log_scale if index is None else self.log_scale[index]
            log_scale = jnp.broadcast_to(log_scale[..., None] if index is None else log_scale,
                                         shift.shape)
        else:
            log_scale, shift = out[..., 0], out[..., 1]
        spline = self.spline_layer(h, index) if self.transform == "rq_spline" else None
        return jnp.exp(log_scale) + self.min_std, shift, spline

    def _spline(self, params):
        import distrax  # here: 0.45 s to import, for `rq_spline` only
        return distrax.RationalQuadraticSpline(params, -self.spline_bound, self.spline_bound,
                                               boundary_slopes="identity")

    def solution_component(self, index, inputs, conditioning_eps, mask_row, inverse: bool):
        """Solution function of one variable (`index`, may be traced), for the graph
        evaluations (`eval/implicit_graph.py`).

        inputs [B]; conditioning_eps [B, d]; mask_row [d]: the variables its context reads.
        inverse=True: noise -> causal value, `(g^-1(inputs) - m) / s` (the `solve` direction);
        False: the z -> noise formula `g(inputs * s + m)`. Returns [B].
        """
        context = jnp.concatenate(
            [mask_row * conditioning_eps, jnp.broadcast_to(mask_row, conditioning_eps.shape)], -1)
        scale, shift, spline = self._mlp(context, index)
        if inverse:
            u = inputs if spline is None else self._spline(spline).inverse(inputs)
            return (u - shift) / scale
        u = inputs * scale + shift
        return u if spline is None else self._spline(spline).forward(u)

    def solve(self, eps, conditioning_eps, masks):
        """Noise -> causal variables: z = (g^-1(eps) - m(c)) / s(c) (g the identity for the
        affine transform). Returns (z, deps/dz), each [B, d] (for the affine transform the
        slope is s)."""
        scale, shift, spline = self._solution_params(conditioning_eps, masks)
        if spline is None:
            return (eps - shift) / scale, scale
        u, log_du = self._spline(spline).inverse_and_log_det(eps)
        return (u - shift) / scale, scale * jnp.exp(-log_du)

    def noise_to_causal(self, eps, masks):
        return self.solve(eps, eps, masks)[0]

    def log_prob_noise(self, e1, e2, interventions, masks, include_intervened: bool):
        """Weakly supervised noise prior (`log_prob_noise_weakly_supervised`).

        e1, e2, interventions: [B, d]. Returns dict of `log_prior_observed` [B],
        `log_prior_intervened` [B] and `solution_std` [B, d] (ones when not included).
        """
        observed = jnp.sum(clean_and_clamp(standard_normal_log_prob(e1)), axis=-1)
        if include_intervened:
            z, scale = self.solve(e2, e1, masks)
            per_var = interventions * (standard_normal_log_prob(z) - jnp.log(scale))
            intervened = jnp.sum(clean_and_clamp(per_var), axis=-1)
        else:
            intervened = jnp.zeros_like(observed)
            scale = jnp.ones_like(e1)
        return {"log_prior_observed": observed, "log_prior_intervened": intervened,
                "log_prior_nonintervened": jnp.zeros_like(observed), "solution_std": scale}
