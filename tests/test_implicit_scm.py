"""wscrl_jax.causal.implicit_scm vs the reference's MLPImplicitSCM
(`ws_crl/causal/implicit_scm.py`, `ws_crl/transforms.py`, `ws_crl/utils.py: clean_and_clamp`)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.causal.implicit_scm import ImplicitSCM, ancestor_masks, clean_and_clamp

from reference_np import log_standard_normal

D = 3


def _init(scm, *args, **kwargs):
    return scm.init(*args, **kwargs)


# ------------------------------------------------------------------------- masks


def test_ancestor_masks_none_and_trivial():
    np.testing.assert_array_equal(np.asarray(ancestor_masks("none", D)), 1 - np.eye(D))
    np.testing.assert_array_equal(np.asarray(ancestor_masks("trivial", D)), np.zeros((D, D)))


def test_ancestor_masks_fixed_order():
    # order [2, 0, 1]: 2 has no ancestors, 0 sees {2}, 1 sees {2, 0}; row i = context of var i
    m = np.asarray(ancestor_masks("fixed_order", D, np.array([2, 0, 1])))
    np.testing.assert_array_equal(m, [[0, 0, 1], [1, 0, 1], [0, 0, 0]])
    # identity order -> strictly lower triangle (row i sees 0..i-1)
    m = np.asarray(ancestor_masks("fixed_order", D, np.arange(D)))
    np.testing.assert_array_equal(m, np.tril(np.ones((D, D)), -1))


def test_ancestor_masks_unknown_raises():
    with pytest.raises(ValueError):
        ancestor_masks("enco", D)


# ------------------------------------------------------------------------- clean_and_clamp


def test_clean_and_clamp():
    x = jnp.array([jnp.nan, jnp.inf, -jnp.inf, 2e12, -3e12, 1.5])
    np.testing.assert_array_equal(np.asarray(clean_and_clamp(x)),
                                  np.array([0.0, 1e12, -1e12, 1e12, -1e12, 1.5], np.float32))


# ------------------------------------------------------------------------- the SCM


@pytest.fixture(scope="module")
def eps_pair():
    rng = np.random.default_rng(0)
    return (jnp.asarray(rng.normal(size=(4, D)), jnp.float32),
            jnp.asarray(rng.normal(size=(4, D)), jnp.float32))


@pytest.fixture(scope="module")
def scm_and_params(eps_pair):
    scm = ImplicitSCM(dim_z=D, hidden=(8,))
    e1, _ = eps_pair
    params = _init(scm, jax.random.PRNGKey(0), e1, ancestor_masks("none", D),
                   method="scale_shift")["params"]
    return scm, params


def _np_scale_shift(params, e, masks):
    """Hand evaluation of the d solution networks: context_i = [a_i * e, a_i] (dummies 0),
    ReLU hidden layer, last layer column 0 = log scale, column 1 = shift; s = exp + 0.2."""
    e, masks = np.asarray(e, np.float64), np.asarray(masks, np.float64)
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    scale, shift = np.zeros_like(e), np.zeros_like(e)
    for i in range(D):
        ctx = np.concatenate([masks[i] * e, np.broadcast_to(masks[i], e.shape)], -1)
        h = np.maximum(ctx @ p["hidden_layers_0"]["kernel"][i] + p["hidden_layers_0"]["bias"][i], 0)
        out = h @ p["out_layer"]["kernel"][i] + p["out_layer"]["bias"][i]
        scale[:, i] = np.exp(out[:, 0]) + 0.2
        shift[:, i] = out[:, 1]
    return scale, shift


def _scale_shift(scm, params, e, masks):
    return scm.apply({"params": params}, e, masks, method="scale_shift")


def test_param_shapes_and_broad_last_layer_init(scm_and_params):
    _, p = scm_and_params
    assert p["hidden_layers_0"]["kernel"].shape == (D, 2 * D, 8)  # mask concatenated: 2d inputs
    assert p["out_layer"]["kernel"].shape == (D, 8, 2)
    # hidden layer: torch default U(+-1/sqrt(2d))
    assert np.abs(np.asarray(p["hidden_layers_0"]["kernel"])).max() <= 1 / math.sqrt(2 * D)
    # 'broad': log-std bias N(2.3, 1e-6^2), log-std weight N(0, 1e-3^2), mean bias N(0, 1e-3^2),
    # mean weight N(0, 0.1^2)  (column 0 = log std, column 1 = mean)
    kernel, bias = np.asarray(p["out_layer"]["kernel"]), np.asarray(p["out_layer"]["bias"])
    np.testing.assert_allclose(bias[:, 0], 2.3, atol=1e-5)
    assert np.abs(bias[:, 1]).max() < 5e-3 and np.abs(bias[:, 1]).max() > 0
    assert 3e-4 < kernel[..., 0].std() < 3e-3
    assert 0.05 < kernel[..., 1].std() < 0.2


def test_broad_init_scale_at_init(scm_and_params, eps_pair):
    scm, params = scm_and_params
    scale, _ = _scale_shift(scm, params, eps_pair[0], ancestor_masks("none", D))
    # exp(2.3 + O(1e-3)) + 0.2 = 9.974 + 0.2 = 10.174 ("broad" prior)
    np.testing.assert_allclose(np.asarray(scale), math.exp(2.3) + 0.2, rtol=1e-2)


@pytest.mark.parametrize("structure,order", [("none", None), ("trivial", None),
                                             ("fixed_order", (2, 0, 1))])
def test_scale_shift_matches_hand_evaluation(scm_and_params, eps_pair, structure, order):
    scm, params = scm_and_params
    masks = ancestor_masks(structure, D, None if order is None else np.array(order))
    scale, shift = _scale_shift(scm, params, eps_pair[0], masks)
    es, eh = _np_scale_shift(params, eps_pair[0], masks)
    np.testing.assert_allclose(np.asarray(scale), es, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(shift), eh, rtol=1e-5, atol=1e-6)


def test_context_masking_controls_dependence(scm_and_params, eps_pair):
    """Solution function i must not read e_i ('none'), nothing ('trivial'), or only its
    predecessors ('fixed_order')."""
    scm, params = scm_and_params
    e = eps_pair[0]

    def changed(masks, j):
        a = _scale_shift(scm, params, e, masks)
        b = _scale_shift(scm, params, e.at[:, j].add(3.0), masks)
        return [bool(np.any(np.abs(np.asarray(x) - np.asarray(y)) > 1e-6))
                for x, y in zip(a[1].T, b[1].T)]  # per variable: did the shift change?

    none = ancestor_masks("none", D)
    for j in range(D):
        assert changed(none, j) == [i != j for i in range(D)]
    assert changed(ancestor_masks("trivial", D), 0) == [False] * D
    fo = ancestor_masks("fixed_order", D, np.array([2, 0, 1]))
    assert changed(fo, 2) == [True, True, False]
    assert changed(fo, 0) == [False, True, False]
    assert changed(fo, 1) == [False, False, False]


def test_solve_and_noise_to_causal(scm_and_params, eps_pair):
    scm, params = scm_and_params
    e1, e2 = eps_pair
    masks = ancestor_masks("none", D)
    z, s = scm.apply({"params": params}, e2, e1, masks, method="solve")
    scale, shift = _np_scale_shift(params, e1, masks)  # context from conditioning_eps = e1
    np.testing.assert_allclose(np.asarray(z), (np.asarray(e2) - shift) / scale, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(s), scale, rtol=1e-5)
    zz = scm.apply({"params": params}, e1, masks, method="noise_to_causal")
    scale, shift = _np_scale_shift(params, e1, masks)
    np.testing.assert_allclose(np.asarray(zz), (np.asarray(e1) - shift) / scale, rtol=1e-5,
                               atol=1e-6)


def test_log_prob_noise_by_hand(scm_and_params, eps_pair):
    scm, params = scm_and_params
    e1, e2 = eps_pair
    e1 = e1 * 3.0  # make the terms differ clearly from a unit normal
    interventions = jnp.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]])
    masks = ancestor_masks("none", D)
    out = scm.apply({"params": params}, e1, e2, interventions, masks, True,
                    method="log_prob_noise")
    # log p(e1) = sum_j log N(e1_j); log p(e2_I | e1) = sum_j I_j (log N(z_j) - log s_j) with
    # z = (e2 - m(c(e1))) / s(c(e1))
    scale, shift = _np_scale_shift(params, e1, masks)
    z = (np.asarray(e2) - shift) / scale
    observed = log_standard_normal(np.asarray(e1, np.float64)).sum(-1)
    intervened = (np.asarray(interventions) * (log_standard_normal(z) - np.log(scale))).sum(-1)
    np.testing.assert_allclose(np.asarray(out["log_prior_observed"]), observed, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out["log_prior_intervened"]), intervened, rtol=1e-5,
                               atol=1e-5)
    assert float(out["log_prior_intervened"][0]) == 0.0  # empty intervention
    # an intervened term is about -log(10.17) - 0.92 = -3.24 at init (broad prior)
    assert -3.5 < float(out["log_prior_intervened"][1]) < -3.1
    np.testing.assert_allclose(np.asarray(out["solution_std"]), scale, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out["log_prior_nonintervened"]), 0.0)
    # without modelled interventions: zeros and unit solution std
    out = scm.apply({"params": params}, e1, e2, interventions, masks, False,
                    method="log_prob_noise")
    np.testing.assert_allclose(np.asarray(out["log_prior_observed"]), observed, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out["log_prior_intervened"]), 0.0)
    np.testing.assert_array_equal(np.asarray(out["solution_std"]), 1.0)


def test_log_prob_noise_clamps_each_term(scm_and_params, eps_pair):
    # e1_0 = 3e6: log N = -4.5e12 -> clamped to -1e12 *before* the sum (per component)
    scm, params = scm_and_params
    e1, e2 = eps_pair
    e1 = e1.at[0, 0].set(3e6)
    out = scm.apply({"params": params}, e1, e2, jnp.zeros((4, D)), ancestor_masks("trivial", D),
                    False, method="log_prob_noise")
    rest = log_standard_normal(np.asarray(e1[0, 1:], np.float64)).sum()
    assert float(out["log_prior_observed"][0]) == pytest.approx(-1e12 + rest, rel=1e-6)


def test_homoskedastic_scale_is_constant(eps_pair):
    scm = ImplicitSCM(dim_z=D, hidden=(8,), homoskedastic=True)
    e = eps_pair[0]
    masks = ancestor_masks("none", D)
    params = _init(scm, jax.random.PRNGKey(1), e, masks, method="scale_shift")["params"]
    assert params["out_layer"]["kernel"].shape == (D, 8, 1)
    scale, shift = scm.apply({"params": params}, e, masks, method="scale_shift")
    # s_i = exp(log_scale_i) + 0.2, the same for every sample; shift = param_net(context)
    expected = np.exp(np.asarray(params["log_scale"])) + 0.2
    np.testing.assert_allclose(np.asarray(scale), np.broadcast_to(expected, (4, D)), rtol=1e-6)
    assert np.asarray(shift).std(0).min() > 0  # the shift is context dependent


# ------------------------------------------------------------------------- rq_spline solutions


def _spline_scm_and_params(key=0, perturb=0.0):
    scm = ImplicitSCM(D, (8,), transform="rq_spline", spline_bins=4, spline_bound=3.0)
    e = jnp.zeros((2, D))
    params = scm.init(jax.random.PRNGKey(key), e, e, ancestor_masks("none", D),
                      method=ImplicitSCM.solve)
    spline = params["params"]["spline_layer"]
    spline = jax.tree_util.tree_map(
        lambda p: p + perturb * jax.random.normal(jax.random.PRNGKey(7), p.shape), spline)
    return scm, {"params": {**params["params"], "spline_layer": spline}}


def test_rq_spline_solutions_start_as_the_affine_ones(eps_pair):
    scm, params = _spline_scm_and_params()
    affine = ImplicitSCM(D, (8,))
    affine_params = {"params": {k: v for k, v in params["params"].items() if k != "spline_layer"}}
    masks = ancestor_masks("none", D)
    z, slope = scm.apply(params, eps_pair[1], eps_pair[0], masks, method=ImplicitSCM.solve)
    z_affine, scale = affine.apply(affine_params, eps_pair[1], eps_pair[0], masks,
                                   method=ImplicitSCM.solve)
    np.testing.assert_allclose(z, z_affine, atol=2e-3)
    np.testing.assert_allclose(slope, scale, rtol=1e-2)


def test_rq_spline_density_is_the_change_of_variables(eps_pair):
    """log_prior_intervened = sum_i I_i (log N(z_i) - log |d eps2_i / d z_i|), the slope taken
    by autodiff of the solve (e1, the context, held fixed)."""
    scm, params = _spline_scm_and_params(perturb=1.0)
    masks = ancestor_masks("none", D)
    e1, e2 = eps_pair
    interventions = jnp.array([[1.0, 0.0, 1.0]] * e1.shape[0])

    def z_of(eps2_row, e1_row):
        return scm.apply(params, eps2_row[None], e1_row[None], masks,
                         method=ImplicitSCM.solve)[0][0]

    dz_de2 = jax.vmap(lambda a, b: jnp.diag(jax.jacfwd(z_of)(a, b)))(e2, e1)  # [B, d]
    z, slope = scm.apply(params, e2, e1, masks, method=ImplicitSCM.solve)
    np.testing.assert_allclose(slope, 1.0 / dz_de2, rtol=1e-4)
    assert np.abs(np.asarray(z) - np.asarray(scm.apply(  # the spline is not the identity now
        {"params": {**params["params"], "spline_layer": jax.tree_util.tree_map(
            jnp.zeros_like, params["params"]["spline_layer"])}},
        e2, e1, masks, method=ImplicitSCM.solve)[0])).max() > 1e-3
    out = scm.apply(params, e1, e2, interventions, masks, True, method=ImplicitSCM.log_prob_noise)
    expected = jnp.sum(interventions * (log_standard_normal(np.asarray(z))
                                        - jnp.log(dz_de2 ** -1)), axis=-1)
    np.testing.assert_allclose(out["log_prior_intervened"], expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["solution_std"], slope, rtol=1e-6)


def test_unknown_solution_transform_raises():
    with pytest.raises(ValueError, match="transform='spline' must be one of"):
        e = jnp.zeros((2, D))
        ImplicitSCM(D, (8,), transform="spline").init(
            jax.random.PRNGKey(0), e, e, ancestor_masks("none", D), method=ImplicitSCM.solve)
