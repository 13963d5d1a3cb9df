"""Explicit SCM with MLP mechanisms, evaluated on given (learned) adjacency matrices.

Mirrors `ws_crl/causal/scm.py` (`FixedOrderSCM` / `MLPFixedOrderSCM` and `VariableOrderSCM` /
`MLPVariableOrderCausalModel`) and `ws_crl/transforms.py` (`ConditionalAffineScalarTransform`,
`make_mlp_structure_transform`, `make_intervention_transform`).
The graph is not part of the module: every method takes per-sample adjacency matrices
`adjacency` [B, d, d] (A[b, i, j] = edge i -> j; float, possibly soft or straight-through), e.g.
from `causal/learned_graphs.py: sample_adjacency`.

Directions (as the reference, and the opposite of the implicit SCM's solution functions):

* structure transform i maps noise -> causal: `z_i = eps_i * s_i(c_i) + m_i(c_i)` with
  log-det `+log s_i`; its inverse `eps_i = (z_i - m_i) / s_i` has log-det `-log s_i`. The context
  of variable i is `c_i = [A[:, :, i] * z, A[:, :, i]]` (parents' values and the mask
  concatenated, `concatenate_mask_in_context=True`).
* intervention transform i is unconditional: `z_i = eps'_i * s'_i + m'_i`.
* `s = exp(log s) + min_std` for both kinds (`min_std=None`: nothing added).

Init (2.7): the d structure networks are ReLU MLPs `2d -> hidden... -> 1 or 2` with PyTorch's
default init, whose last layer is re-initialised with the `make_mlp_structure_transform` scheme
`"strong_effects"` if `enhance_causal_effects_at_init` else `"default"` (the reference's
`create_scm` always passes False, so the scripts use `"default"`; `"broad"` is the implicit
SCM's). Heteroskedastic: output column 0 = log scale, column 1 = shift. Homoskedastic: the single
output is the shift and each variable has an unconditional `log_scale ~ N(0, 1)` (the transform
class's own init, which the scheme does not touch). Intervention transforms: `shift ~ N(0, 1 if
enhance else 1e-3^2)`, `log_scale ~ N(0, 1e-3^2)`, both learned whatever `homoskedastic` says.

Orderings (`ordering`):

* "fixed" (`fixed_order` graph, strictly upper triangular, topological order 0..d-1): `solve`
  and the counterfactual fill go along the index order, each step reading parents from the
  vector being built, as the reference does.
* "variable" (`enco` / `dds` graphs): the reference solves sample by sample in a per-sample
  topological order and never terminates on a cyclic sample (ws-crl gotcha 10). Here `solve` runs
  d parallel fixed-point sweeps `z <- f(eps; c(z))` from zeros instead: exact whenever the
  nonzero pattern of A is a DAG (a node at depth k is exact after k + 1 sweeps), never hangs,
  and reports per sample whether A (binarised at 0.5) is acyclic. The counterfactual evaluates
  all variables at once with parents taken from the query `z2` itself.

The reference asserts finiteness at every stage; here non-finite values flow on and are
handled by the train step's per-member skip.
"""

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from wscrl_jax.causal.implicit_scm import StackedLinear, _last_layer_init, clean_and_clamp
from wscrl_jax.nn.gaussian import standard_normal_log_prob
from wscrl_jax.nn.init import normal

ORDERINGS = ("fixed", "variable")


def is_acyclic(adjacency):
    """[..., d, d] -> [...] bool: the graph of entries >= 0.5 has no cycle (A^d == 0)."""
    binary = (adjacency >= 0.5).astype(jnp.float32)
    reach = binary
    for _ in range(1, adjacency.shape[-1]):
        # clip to 0/1 so that path counts cannot grow: only reachability matters
        reach = jnp.minimum(reach @ binary, 1.0)
    return ~jnp.any(reach > 0, axis=(-2, -1))


class ExplicitSCM(nn.Module):
    """MLP explicit SCM (`MLPFixedOrderSCM` / `MLPVariableOrderCausalModel`), graph passed in.

    Shapes: z, eps, interventions [B, d]; adjacency [B, d, d]. Interventions may be bool or
    float (cast to float, ws-crl gotcha 32), as may the adjacency.
    """

    dim_z: int
    hidden: Sequence[int] = (100,)  # reference: hidden_units x hidden_layers
    homoskedastic: bool = True
    min_std: Optional[float] = None
    enhance_causal_effects_at_init: bool = False
    ordering: str = "variable"

    def setup(self):
        if self.ordering not in ORDERINGS:
            raise ValueError(f"ordering={self.ordering!r} must be one of {ORDERINGS}")
        scheme = "strong_effects" if self.enhance_causal_effects_at_init else "default"
        kinit, binit = _last_layer_init(scheme, self.homoskedastic)
        self.hidden_layers = [StackedLinear(w) for w in self.hidden]
        self.out_layer = StackedLinear(1 if self.homoskedastic else 2, kernel_init=kinit,
                                       bias_init=binit)
        if self.homoskedastic:
            self.log_scale = self.param("log_scale", normal(0.0, 1.0), (self.dim_z,))
        shift_std = 1.0 if self.enhance_causal_effects_at_init else 1e-3
        self.intervention_shift = self.param("intervention_shift", normal(0.0, shift_std),
                                             (self.dim_z,))
        self.intervention_log_scale = self.param("intervention_log_scale", normal(0.0, 1e-3),
                                                 (self.dim_z,))

    def __call__(self, z, adjacency, interventions=None):
        """Creates every parameter (for `init`); same as `inverse`."""
        return self.inverse(z, adjacency, interventions)

    # ------------------------------------------------------------------ transforms

    def _scale(self, log_scale):
        scale = jnp.exp(log_scale)
        return scale if self.min_std is None else scale + self.min_std

    def scale_shift(self, parents, adjacency):
        """Structure transforms' (scale [B, d], shift [B, d]) with context of variable i
        `[A[:, :, i] * parents, A[:, :, i]]`; parents [B, d], adjacency [B, d, d]."""
        masks = jnp.transpose(jnp.asarray(adjacency, jnp.float32), (2, 0, 1))  # [i, B, k]
        context = jnp.concatenate([masks * parents[None], masks], axis=-1)  # [d, B, 2d]
        h = context
        for layer in self.hidden_layers:
            h = nn.relu(layer(h))
        out = self.out_layer(h)  # [d, B, 1 or 2]
        if self.homoskedastic:
            shift = out[..., 0].T
            log_scale = jnp.broadcast_to(self.log_scale, shift.shape)
        else:
            log_scale, shift = out[..., 0].T, out[..., 1].T
        return self._scale(log_scale), shift

    def intervention_scale_shift(self):
        """Intervention transforms' (scale [d], shift [d])."""
        return self._scale(self.intervention_log_scale), self.intervention_shift

    def _structure_forward(self, eps, parents, adjacency):
        """noise -> causal for all variables: (z [B, d], log-det +log s [B, d])."""
        scale, shift = self.scale_shift(parents, adjacency)
        return eps * scale + shift, jnp.log(scale)

    # ------------------------------------------------------------------ causal -> noise

    def inverse(self, z, adjacency, interventions=None):
        """Causal -> noise (`_inverse`): `eps_i = (z_i - m_i(c_i(z))) / s_i(c_i(z))`, or the
        intervention transform's inverse for targets. Returns (eps [B, d], logdet [B, d]),
        logdet = -log s of the transform used. Parallel: every context is read from z."""
        scale, shift = self.scale_shift(z, adjacency)
        eps, logdet = (z - shift) / scale, -jnp.log(scale)
        if interventions is not None:
            i = jnp.asarray(interventions, jnp.float32)
            s_int, m_int = self.intervention_scale_shift()
            eps = i * (z - m_int) / s_int + (1.0 - i) * eps
            logdet = i * (-jnp.log(s_int)) + (1.0 - i) * logdet
        return eps, logdet

    def causal_to_noise(self, z, adjacency):
        """[B, d] -> [B, d]."""
        return self.inverse(z, adjacency)[0]

    # ------------------------------------------------------------------ noise -> causal

    def solve(self, eps, adjacency, interventions=None, eps_intervened=None, cf_noise=None):
        """Noise -> causal (`_solve`), optionally under interventions.

        Target i takes `g_i(eps_intervened_i)`; the others `f_i(eps_i; parents) + cf_noise_i`
        (`cf_noise`: the deviation from the counterfactual manifold in the reference's
        weakly supervised sampler). Returns (z [B, d], logdet [B, d] = log s of the transform
        used, acyclic [B] bool). On a cyclic sample ("variable") z is the d-th sweep, finite
        but not a solution; the flag says so.
        """
        adjacency = jnp.asarray(adjacency, jnp.float32)
        i, base, base_logdet, extra = self._intervention_terms(eps, interventions,
                                                               eps_intervened, cf_noise)
        acyclic = is_acyclic(adjacency)
        if self.ordering == "fixed":
            z, logdet = self._fill_in_order(jnp.zeros_like(eps), base, eps, adjacency, i, extra,
                                            base_logdet)
            return z, logdet, acyclic

        def sweep(z):
            value, logs = self._structure_forward(eps, z, adjacency)
            return base + (1.0 - i) * (value + extra), base_logdet + (1.0 - i) * logs

        # The first sweep runs outside the loop so that `init` can create the parameters there.
        z, logdet = sweep(jnp.zeros_like(eps))
        z, logdet = jax.lax.fori_loop(1, self.dim_z, lambda _, c: sweep(c[0]), (z, logdet))
        return z, logdet, acyclic

    def noise_to_causal(self, eps, adjacency):
        """[B, d] -> [B, d] (see `solve` for cyclic samples)."""
        return self.solve(eps, adjacency)[0]

    def _intervention_terms(self, eps, interventions, eps_intervened, cf_noise):
        """(mask I, I * g(eps'), I * log s', cf noise or 0), each [B, d] (or scalar 0)."""
        extra = 0.0 if cf_noise is None else cf_noise
        if interventions is None:
            zeros = jnp.zeros_like(eps)
            return zeros, zeros, zeros, extra
        if eps_intervened is None:
            raise ValueError("solve with interventions needs eps_intervened")
        i = jnp.asarray(interventions, jnp.float32)
        s_int, m_int = self.intervention_scale_shift()
        return i, i * (eps_intervened * s_int + m_int), i * jnp.log(s_int), extra

    def _fill_in_order(self, start, base, eps, adjacency, i, extra, base_logdet=None):
        """Reference's fixed-order loop over variables k = 0..d-1: set `z_k = base_k`, build the
        contexts from the current z, then `z_k = base_k + (1 - I_k) (f_k(eps_k) + extra_k)`.
        Each step evaluates all d networks and keeps column k (same cost as a sweep).
        Returns (z [B, d], logdet [B, d] or None)."""
        columns = jnp.arange(self.dim_z)
        logdet0 = jnp.zeros_like(eps) if base_logdet is None else base_logdet

        def step(k, carry):
            z, logdet = carry
            here = columns == k  # [d]
            z = jnp.where(here, base, z)
            value, logs = self._structure_forward(eps, z, adjacency)
            z = jnp.where(here, base + (1.0 - i) * (value + extra), z)
            logdet = jnp.where(here, logdet0 + (1.0 - i) * logs, logdet)
            return z, logdet

        carry = step(0, (start, logdet0))  # outside the loop: `init` may create params here
        z, logdet = jax.lax.fori_loop(1, self.dim_z, step, carry)
        return z, (None if base_logdet is None else logdet)

    # ------------------------------------------------------------------ weakly supervised prior

    def solve_counterfactual(self, z_query, adjacency, interventions, noise):
        """Counterfactual of `noise` [B, d] under the query `z_query` [B, d]
        (`_solve_counterfactual`): targets keep `z_query`, the others get
        `f_i(noise_i; parents)` with parents from the counterfactual being built ("fixed") or
        from `z_query` itself ("variable"). Returns [B, d]."""
        adjacency = jnp.asarray(adjacency, jnp.float32)
        i = jnp.asarray(interventions, jnp.float32)
        base = i * z_query
        if self.ordering == "fixed":
            return self._fill_in_order(base, base, noise, adjacency, i, 0.0)[0]
        value, _ = self._structure_forward(noise, z_query, adjacency)
        return base + (1.0 - i) * value

    def log_prob_weakly_supervised(self, z1, z2, interventions, adjacency, manifold_thickness):
        """log p(z1, z2 | I, A) (`log_prob_weakly_supervised`, reference 3.5).

        observed: `sum_i clean(log N(eps1_i) + logdet1_i)`, eps1 = inverse(z1);
        intervened: `sum_i I_i clean(log N(eps2_i) + logdet2_i)`, eps2 = inverse(z2, I);
        non-intervened: `sum_i (1 - I_i) clean(log N(cf_i) - log t)`,
        cf = (z2 - counterfactual(z2, I, eps1)) / t, t = manifold_thickness (may be traced).

        z1, z2, interventions [B, d]; adjacency [B, d, d]. Returns a dict of `scm_log_prior`,
        `log_prior_observed`, `log_prior_intervened`, `log_prior_nonintervened`, each [B].
        """
        i = jnp.asarray(interventions, jnp.float32)
        eps1, logdet1 = self.inverse(z1, adjacency)
        observed = jnp.sum(clean_and_clamp(standard_normal_log_prob(eps1) + logdet1), axis=-1)

        eps2, logdet2 = self.inverse(z2, adjacency, i)
        intervened = jnp.sum(
            i * clean_and_clamp(standard_normal_log_prob(eps2) + logdet2), axis=-1)

        z_cf = self.solve_counterfactual(z2, adjacency, i, eps1)
        t = jnp.asarray(manifold_thickness, jnp.float32)
        cf = (z2 - z_cf) / t
        nonintervened = jnp.sum(
            (1.0 - i) * clean_and_clamp(standard_normal_log_prob(cf) - jnp.log(t)), axis=-1)
        return {"scm_log_prior": observed + intervened + nonintervened,
                "log_prior_observed": observed, "log_prior_intervened": intervened,
                "log_prior_nonintervened": nonintervened}
