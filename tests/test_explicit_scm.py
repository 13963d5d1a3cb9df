"""wscrl_jax.causal.explicit_scm vs the reference's MLP explicit SCMs
(`ws_crl/causal/scm.py`, `ws_crl/transforms.py`; ws-crl gotchas 10, 32)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.causal.explicit_scm import ExplicitSCM, is_acyclic
from wscrl_jax.causal.graphs import topological_sort

from reference_np import log_standard_normal

D, B = 4, 6  # solve tests
D3 = 3  # hand computation of the weakly supervised prior


def _clean(x):
    return np.clip(np.nan_to_num(x), -1e12, 1e12)


def _np(x):
    return np.asarray(x, np.float64)


# ------------------------------------------------------------------------- fixtures


def _models(dim, **kw):
    kw = dict(hidden=(8,), homoskedastic=False, min_std=0.2, **kw)
    return {o: ExplicitSCM(dim, ordering=o, **kw) for o in ("fixed", "variable")}


@pytest.fixture(scope="module")
def solve_kit():
    """Two orderings sharing one parameter set (the ordering has no parameters), with
    strong-effect init so that parents matter; jitted solve / inverse / scale_shift."""
    models = _models(D, enhance_causal_effects_at_init=True)
    z = jnp.zeros((B, D))
    params = models["fixed"].init(jax.random.PRNGKey(1), z, jnp.zeros((B, D, D)))
    solve = {o: jax.jit(lambda p, *a, m=m: m.apply(p, *a, method="solve"))
             for o, m in models.items()}
    m = models["variable"]
    inverse = jax.jit(lambda p, z, a, i: m.apply(p, z, a, i, method="inverse"))
    scale_shift = jax.jit(lambda p, z, a: m.apply(p, z, a, method="scale_shift"))
    s_int, m_int = m.apply(params, method="intervention_scale_shift")
    return dict(models=models, params=params, solve=solve, inverse=inverse,
                scale_shift=scale_shift, s_int=_np(s_int), m_int=_np(m_int))


def _random_dags(rng, permute: bool, soft: bool):
    """[B, D, D] DAGs: sample 0 a full chain (depth D - 1), the others random upper-triangular
    graphs; optionally relabelled by a random permutation per sample and with soft edge values
    in (0.3, 1) on the same support."""
    graphs = []
    for b in range(B):
        if b == 0:
            a = np.diag(np.ones(D - 1), 1)
        else:
            a = np.triu(rng.random((D, D)) < 0.6, 1).astype(float)
        if soft:
            a = a * rng.uniform(0.3, 1.0, (D, D))
        if permute:
            p = rng.permutation(D)
            a = a[np.ix_(p, p)]
        graphs.append(a)
    return np.stack(graphs).astype(np.float32)


def _sequential_solve(kit, eps, adjacency, interventions, eps_int, cf, orders):
    """Reference-style solve: per sample, visit the variables one at a time in `orders` [B, D],
    each reading its parents from the z built so far (one module call per step)."""
    z, logdet = np.zeros((B, D)), np.zeros((B, D))
    rows = np.arange(B)
    for k in range(D):
        idx = orders[:, k]
        scale, shift = map(_np, kit["scale_shift"](kit["params"], jnp.asarray(z, jnp.float32),
                                                   adjacency))
        i = interventions[rows, idx]
        z_int = eps_int[rows, idx] * kit["s_int"][idx] + kit["m_int"][idx]
        z_obs = eps[rows, idx] * scale[rows, idx] + shift[rows, idx] + cf[rows, idx]
        z[rows, idx] = i * z_int + (1 - i) * z_obs
        logdet[rows, idx] = i * np.log(kit["s_int"][idx]) + (1 - i) * np.log(scale[rows, idx])
    return z, logdet


def _noise(seed, with_interventions: bool):
    rng = np.random.default_rng(seed)
    eps, eps_int = rng.normal(size=(2, B, D)).astype(np.float32)
    cf = (0.1 * rng.normal(size=(B, D))).astype(np.float32)
    interventions = (rng.random((B, D)) < 0.4).astype(np.float32)
    if not with_interventions:
        interventions[:] = 0.0
        cf[:] = 0.0
    return rng, eps, eps_int, cf, interventions


# ------------------------------------------------------------------------- solve


@pytest.mark.parametrize("with_interventions", [False, True])
def test_variable_solve_equals_sequential_topological_solve(solve_kit, with_interventions):
    rng, eps, eps_int, cf, interventions = _noise(0, with_interventions)
    for soft in (False, True):
        adjacency = _random_dags(rng, permute=True, soft=soft)
        orders = np.array([topological_sort(a > 0) for a in adjacency])
        z, logdet, acyclic = solve_kit["solve"]["variable"](
            solve_kit["params"], eps, adjacency, interventions, eps_int, cf)
        z_ref, logdet_ref = _sequential_solve(solve_kit, eps, adjacency, interventions, eps_int,
                                              cf, orders)
        assert np.all(np.asarray(acyclic))
        np.testing.assert_allclose(_np(z), z_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_np(logdet), logdet_ref, rtol=1e-5, atol=1e-6)
        # the parents matter: a solve that ignores the graph is far off
        z_empty = solve_kit["solve"]["variable"](solve_kit["params"], eps, 0 * adjacency,
                                                 interventions, eps_int, cf)[0]
        assert np.abs(_np(z_empty) - z_ref).max() > 0.1


@pytest.mark.parametrize("with_interventions", [False, True])
def test_fixed_solve_equals_sequential_index_order_solve(solve_kit, with_interventions):
    rng, eps, eps_int, cf, interventions = _noise(1, with_interventions)
    adjacency = _random_dags(rng, permute=False, soft=True)  # like U(sigmoid(logits))
    orders = np.tile(np.arange(D), (B, 1))
    z, logdet, acyclic = solve_kit["solve"]["fixed"](
        solve_kit["params"], eps, adjacency, interventions, eps_int, cf)
    z_ref, logdet_ref = _sequential_solve(solve_kit, eps, adjacency, interventions, eps_int, cf,
                                          orders)
    assert np.all(np.asarray(acyclic))
    np.testing.assert_allclose(_np(z), z_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(logdet), logdet_ref, rtol=1e-5, atol=1e-6)
    # on an index-ordered DAG both orderings solve the same system
    z_var = solve_kit["solve"]["variable"](solve_kit["params"], eps, adjacency, interventions,
                                           eps_int, cf)[0]
    np.testing.assert_allclose(_np(z_var), z_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ordering", ["fixed", "variable"])
def test_inverse_of_solve_recovers_the_noise(solve_kit, ordering):
    rng, eps, eps_int, _, interventions = _noise(2, True)
    adjacency = _random_dags(rng, permute=ordering == "variable", soft=False)
    zeros = np.zeros_like(eps)
    z, logdet, _ = solve_kit["solve"][ordering](solve_kit["params"], eps, adjacency,
                                                interventions, eps_int, zeros)
    eps_back, logdet_inv = solve_kit["inverse"](solve_kit["params"], z, adjacency, interventions)
    expected = interventions * eps_int + (1 - interventions) * eps
    np.testing.assert_allclose(_np(eps_back), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_np(logdet_inv), -_np(logdet), rtol=1e-5, atol=1e-6)


def test_cyclic_sample_is_flagged_and_does_not_spoil_the_batch(solve_kit):
    rng, eps, eps_int, cf, interventions = _noise(3, True)
    adjacency = _random_dags(rng, permute=True, soft=False)
    adjacency[0] = 0.0
    adjacency[0, 0, 1] = adjacency[0, 1, 2] = adjacency[0, 2, 0] = 1.0  # 0 -> 1 -> 2 -> 0
    adjacency[0, 2, 3] = 1.0
    z, logdet, acyclic = solve_kit["solve"]["variable"](
        solve_kit["params"], eps, adjacency, interventions, eps_int, cf)
    np.testing.assert_array_equal(np.asarray(acyclic), [False] + [True] * (B - 1))
    assert np.all(np.isfinite(_np(z))) and np.all(np.isfinite(_np(logdet)))
    orders = np.array([np.arange(D)] + [topological_sort(a > 0) for a in adjacency[1:]])
    z_ref, _ = _sequential_solve(solve_kit, eps, adjacency, interventions, eps_int, cf, orders)
    np.testing.assert_allclose(_np(z)[1:], z_ref[1:], rtol=1e-5, atol=1e-5)


def test_is_acyclic_binarises_at_one_half():
    chain = np.diag(np.ones(2), 1)
    cycle = chain.copy()
    cycle[2, 0] = 1.0
    weak_cycle = chain.copy()
    weak_cycle[2, 0] = 0.4  # below 0.5: not an edge
    self_loop = np.diag([0.0, 0.9, 0.0])
    flags = is_acyclic(jnp.asarray(np.stack([chain, cycle, weak_cycle, self_loop]), jnp.float32))
    np.testing.assert_array_equal(np.asarray(flags), [True, False, True, False])


# ------------------------------------------------------------------------- weakly supervised prior


@pytest.fixture(scope="module")
def prior_kit():
    models = _models(D3)
    rng = np.random.default_rng(5)
    z1, z2 = rng.normal(size=(2, 4, D3)).astype(np.float32)
    chain = np.array([[0, 1, 1], [0, 0, 1], [0, 0, 0]], np.float32)
    adjacency = np.stack([chain, chain * 0.7, chain, np.triu(np.full((D3, D3), 0.6), 1)])
    interventions = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 1]], np.float32)
    params = models["fixed"].init(jax.random.PRNGKey(2), z1, adjacency)
    log_prob = {o: jax.jit(lambda p, *a, m=m: m.apply(p, *a,
                                                      method="log_prob_weakly_supervised"))
                for o, m in models.items()}
    solve = {o: jax.jit(lambda p, *a, m=m: m.apply(p, *a, method="solve"))
             for o, m in models.items()}
    scale_shift = jax.jit(lambda p, z, a: models["fixed"].apply(p, z, a, method="scale_shift"))
    return dict(models=models, params=params, z1=z1, z2=z2, adjacency=adjacency,
                interventions=interventions, log_prob=log_prob, solve=solve,
                scale_shift=scale_shift)


def _np_scale_shift(params, z, adjacency):
    """Numpy evaluation of the d structure networks: context_i = [A[:, :, i] z, A[:, :, i]],
    ReLU hidden layer, last layer column 0 = log scale, column 1 = shift; s = exp + 0.2."""
    p = jax.tree_util.tree_map(_np, params["params"])
    scale, shift = np.zeros(z.shape), np.zeros(z.shape)
    for i in range(z.shape[1]):
        mask = adjacency[:, :, i]
        ctx = np.concatenate([mask * z, mask], -1)
        h = np.maximum(ctx @ p["hidden_layers_0"]["kernel"][i] + p["hidden_layers_0"]["bias"][i], 0)
        out = h @ p["out_layer"]["kernel"][i] + p["out_layer"]["bias"][i]
        scale[:, i], shift[:, i] = np.exp(out[:, 0]) + 0.2, out[:, 1]
    return scale, shift


def test_scale_shift_matches_numpy_networks(prior_kit):
    k = prior_kit
    scale, shift = k["scale_shift"](k["params"], k["z1"], k["adjacency"])
    s_ref, m_ref = _np_scale_shift(k["params"], _np(k["z1"]), _np(k["adjacency"]))
    np.testing.assert_allclose(_np(scale), s_ref, rtol=1e-5)
    np.testing.assert_allclose(_np(shift), m_ref, rtol=1e-5, atol=1e-6)


def _hand_log_prob(k, ordering, thickness):
    """Equations of `FixedOrderSCM.log_prob_weakly_supervised` in numpy, from the module's
    scale / shift outputs; the counterfactual per ordering."""
    z1, z2, a, i = (_np(k[n]) for n in ("z1", "z2", "adjacency", "interventions"))
    scale_shift = lambda z: map(_np, k["scale_shift"](k["params"], jnp.asarray(z, jnp.float32),
                                                      k["adjacency"]))  # noqa: E731
    s_int, m_int = map(_np, k["models"]["fixed"].apply(k["params"],
                                                       method="intervention_scale_shift"))
    s1, m1 = scale_shift(z1)
    eps1 = (z1 - m1) / s1
    observed = _clean(log_standard_normal(eps1) - np.log(s1)).sum(1)
    s2, m2 = scale_shift(z2)
    eps2 = i * (z2 - m_int) / s_int + (1 - i) * (z2 - m2) / s2
    logdet2 = -(i * np.log(s_int) + (1 - i) * np.log(s2))
    intervened = (i * _clean(log_standard_normal(eps2) + logdet2)).sum(1)
    if ordering == "variable":  # all at once, parents from z2
        z_cf = i * z2 + (1 - i) * (eps1 * s2 + m2)
    else:  # index order, parents from the counterfactual being built
        z_cf = i * z2
        for j in range(D3):
            s, m = scale_shift(z_cf)
            z_cf[:, j] = i[:, j] * z2[:, j] + (1 - i[:, j]) * (eps1[:, j] * s[:, j] + m[:, j])
    cf = (z2 - z_cf) / thickness
    nonintervened = ((1 - i) * _clean(log_standard_normal(cf) - math.log(thickness))).sum(1)
    return observed, intervened, nonintervened


@pytest.mark.parametrize("ordering", ["fixed", "variable"])
def test_log_prob_weakly_supervised_matches_hand_computation(prior_kit, ordering):
    k, t = prior_kit, 0.5
    out = k["log_prob"][ordering](k["params"], k["z1"], k["z2"], k["interventions"],
                                  k["adjacency"], t)
    observed, intervened, nonintervened = _hand_log_prob(k, ordering, t)
    np.testing.assert_allclose(_np(out["log_prior_observed"]), observed, rtol=1e-5)
    np.testing.assert_allclose(_np(out["log_prior_intervened"]), intervened, rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(_np(out["log_prior_nonintervened"]), nonintervened, rtol=1e-5)
    np.testing.assert_allclose(_np(out["scm_log_prior"]),
                               observed + intervened + nonintervened, rtol=1e-5)
    assert np.all(_np(out["log_prior_intervened"])[2] == 0.0)  # no targets in sample 2


def test_orderings_differ_only_in_the_counterfactual(prior_kit):
    k = prior_kit
    args = (k["params"], k["z1"], k["z2"], k["interventions"], k["adjacency"], 0.5)
    fixed, variable = k["log_prob"]["fixed"](*args), k["log_prob"]["variable"](*args)
    for key in ("log_prior_observed", "log_prior_intervened"):
        np.testing.assert_array_equal(_np(fixed[key]), _np(variable[key]))
    # sample 0: root 0 intervened; fixed propagates it to 1 and 2 through the counterfactual,
    # variable reads the observed z2 parents: different non-intervened terms
    assert abs(float(fixed["log_prior_nonintervened"][0])
               - float(variable["log_prior_nonintervened"][0])) > 1e-3
    assert np.all(np.isfinite(_np(fixed["scm_log_prior"])))


@pytest.mark.parametrize("ordering", ["fixed", "variable"])
def test_pairs_on_the_counterfactual_manifold(prior_kit, ordering):
    """z2 sampled exactly as the reference's sampler (no cf noise): the counterfactual recovers
    it, so the non-intervened term is (d - |I|) (log N(0) - log t) and eps2 = the intervention
    noise, for both orderings."""
    k, t = prior_kit, 0.1
    m = k["models"][ordering]
    rng = np.random.default_rng(6)
    eps, eps_int = rng.normal(size=(2, 4, D3)).astype(np.float32)
    i = k["interventions"]
    z1 = k["solve"][ordering](k["params"], eps, k["adjacency"], 0 * i, eps_int)[0]
    z2 = k["solve"][ordering](k["params"], eps, k["adjacency"], i, eps_int)[0]
    out = k["log_prob"][ordering](k["params"], z1, z2, i, k["adjacency"], t)
    n_free = (1 - i).sum(1)
    np.testing.assert_allclose(_np(out["log_prior_nonintervened"]),
                               n_free * (log_standard_normal(0.0) - math.log(t)), atol=2e-3)
    eps2, logdet2 = m.apply(k["params"], z2, k["adjacency"], i, method="inverse")
    np.testing.assert_allclose(_np(eps2), i * eps_int + (1 - i) * eps, atol=1e-4)
    expected = (i * (log_standard_normal(_np(eps2)) + _np(logdet2))).sum(1)
    np.testing.assert_allclose(_np(out["log_prior_intervened"]), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(m.apply(k["params"], z1, k["adjacency"],
                                           method="causal_to_noise")), eps, atol=1e-4)


def test_log_prob_gradients_are_finite(prior_kit):
    k = prior_kit
    m = k["models"]["fixed"]

    def loss(p, a):
        return -jnp.mean(m.apply(p, k["z1"], k["z2"], k["interventions"], a, 0.5,
                                 method="log_prob_weakly_supervised")["scm_log_prior"])

    g_params, g_adj = jax.jit(jax.grad(loss, argnums=(0, 1)))(k["params"], k["adjacency"])
    leaves = jax.tree_util.tree_leaves(g_params) + [g_adj]
    assert all(np.all(np.isfinite(_np(x))) for x in leaves)
    assert np.abs(_np(g_adj)).max() > 0 and np.abs(_np(g_params["params"]["out_layer"]
                                                          ["kernel"])).max() > 0


# ------------------------------------------------------------------------- init, vmap


@pytest.mark.parametrize("homoskedastic", [False, True])
@pytest.mark.parametrize("enhance", [False, True])
def test_init_statistics(homoskedastic, enhance):
    d = 128
    m = ExplicitSCM(d, hidden=(4,), homoskedastic=homoskedastic, min_std=None,
                    enhance_causal_effects_at_init=enhance)
    p = m.init(jax.random.PRNGKey(3), jnp.zeros((1, d)), jnp.zeros((1, d, d)))["params"]
    p = jax.tree_util.tree_map(_np, p)

    def close_std(x, std):
        assert 0.75 * std < x.std() < 1.3 * std, (x.std(), std)
        assert abs(x.mean()) < 4 * std / math.sqrt(x.size)

    # intervention transforms (make_intervention_transform)
    close_std(p["intervention_shift"], 1.0 if enhance else 1e-3)
    close_std(p["intervention_log_scale"], 1e-3)
    # structure transforms: hidden layers torch default, last layer 'default' / 'strong_effects'
    assert np.abs(p["hidden_layers_0"]["kernel"]).max() <= 1 / math.sqrt(2 * d)
    kernel, bias = p["out_layer"]["kernel"], p["out_layer"]["bias"]
    mean_w, mean_b, log_w = (1.5, 0.2, 0.1) if enhance else (0.1, 1e-3, 1e-3)
    if homoskedastic:
        assert kernel.shape == (d, 4, 1)
        close_std(kernel[..., 0], mean_w)
        close_std(bias[:, 0], mean_b)
        close_std(p["log_scale"], 1.0)  # the transform's own N(0, 1), not re-initialised
    else:
        assert "log_scale" not in p and kernel.shape == (d, 4, 2)
        close_std(kernel[..., 0], log_w)
        close_std(bias[:, 0], 1e-6)
        close_std(kernel[..., 1], mean_w)
        close_std(bias[:, 1], mean_b)
    scale, _ = m.apply({"params": p}, jnp.zeros((2, d)), jnp.zeros((2, d, d)),
                       method="scale_shift")
    if homoskedastic:  # one unconditional scale per variable, broadcast over the batch
        np.testing.assert_allclose(_np(scale), np.exp(p["log_scale"])[None].repeat(2, 0),
                                   rtol=1e-6)
    else:  # log std ~ 0 at init
        np.testing.assert_allclose(_np(scale), 1.0, atol=0.05 if enhance else 1e-2)
    s_int, m_int = m.apply({"params": p}, method="intervention_scale_shift")
    np.testing.assert_allclose(_np(s_int), 1.0, atol=5e-3)  # min_std=None: nothing added


def test_vmap_over_members(prior_kit):
    k = prior_kit
    m = k["models"]["variable"]
    keys = jax.random.split(jax.random.PRNGKey(7), 2)
    stacked = jax.jit(jax.vmap(lambda key: m.init(key, k["z1"], k["adjacency"])))(keys)

    def both(p, z1, z2, i, a):
        out = m.apply(p, z1, z2, i, a, 0.5, method="log_prob_weakly_supervised")
        return out["scm_log_prior"], m.apply(p, z1, a, method="noise_to_causal")

    args = (k["z1"], k["z2"], k["interventions"], k["adjacency"])
    lp, z = jax.jit(jax.vmap(both, in_axes=(0, None, None, None, None)))(stacked, *args)
    assert lp.shape == (2, 4) and z.shape == (2, 4, D3)
    for member in range(2):
        p = jax.tree_util.tree_map(lambda x: x[member], stacked)
        lp_one = k["log_prob"]["variable"](p, *args, 0.5)["scm_log_prior"]
        np.testing.assert_allclose(_np(lp[member]), _np(lp_one), rtol=1e-5)
        z_one = k["solve"]["variable"](p, k["z1"], k["adjacency"], 0 * k["interventions"],
                                       k["z1"])[0]
        np.testing.assert_allclose(_np(z[member]), _np(z_one), rtol=1e-5, atol=1e-6)
    assert not np.allclose(_np(lp[0]), _np(lp[1]))
