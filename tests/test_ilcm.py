"""ILCM numerics against the reference's equations (`ws_crl/lcm/ilcm.py`;
ws-crl gotchas 2, 16, 17, 18, 19).

The model's random draws cannot be replayed by hand, so the closed-form tests record the
decoder's inputs (the projected samples e1', e2') with `flax.linen.intercept_methods` and
recompute every term of the per-sample loss from them in float64 numpy: the encoder
posteriors, the heuristic intervention posterior, the projection, the decoder likelihood, the
SCM prior and the entropy term.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.causal.implicit_scm import ancestor_masks
from wscrl_jax.lcm.ilcm import ILCM
from wscrl_jax.lcm.phases import LossWeights, Phase, eval_loss_weights
from wscrl_jax.nn.gaussian import GaussianMLP

from reference_np import log_normal, log_standard_normal

D = 3
K = D + 1
MASKS = np.concatenate([np.zeros((1, D)), np.eye(D)])  # atomic_or_none
KW = dict(dim_x=D, dim_z=D, encoder_hidden=(8,), decoder_hidden=(8,), scm_hidden=(8,))
NO_REGS = dict(need_regularizers=False, need_inverse_consistency=False)


def _loss_weights(beta=0.3, beta_i=0.7, pretrain_beta=0.05, offset=0.01):
    f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return LossWeights(f(beta), f(beta_i), f(pretrain_beta), f(0.0), f(0.0), f(0.0), f(0.0),
                   f(offset))


def _f64(a):
    return np.asarray(a, np.float64)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(4, D))
    # pairs that differ in one coordinate each (and one identical pair), so that q is spread
    dx = np.array([[0.0, 0, 0], [1.5, 0, 0], [0, -2.0, 0], [0, 0, 2.5]])
    return jnp.asarray(x1, jnp.float32), jnp.asarray(x1 + dx, jnp.float32)


@pytest.fixture(scope="module")
def variables(data):
    x1, x2 = data
    m = ILCM(**KW)
    key = jax.random.PRNGKey(0)
    init = jax.jit(lambda k: m.init({"params": k, "sample": k}, x1, x2, eval_loss_weights(), {},
                                    method="init_all"))
    return init(key)


def _enc(v, x):
    mu, s = ILCM(**KW).apply(v, x, method=lambda mod, x: mod.encoder(x))
    return _f64(mu), _f64(s)


def _dec(v, e):
    m, s = ILCM(**KW).apply(v, jnp.asarray(e, jnp.float32), method=lambda mod, e: mod.decoder(e))
    return _f64(m), _f64(s)


def _scale_shift(v, e, masks):
    sc, sh = ILCM(**KW).apply(v, jnp.asarray(e, jnp.float32), masks,
                              method=lambda mod, e, mk: mod.scm.scale_shift(e, mk))
    return _f64(sc), _f64(sh)


def _run(module, v, *args, key, method=None):
    """module.apply(...) that also returns the decoder's inputs in call order."""
    seen = []

    def interceptor(next_fun, a, kw, ctx):
        if (isinstance(ctx.module, GaussianMLP) and ctx.module.name == "decoder"
                and ctx.method_name == "__call__"):
            seen.append(np.asarray(a[0]))
        return next_fun(*a, **kw)

    with nn.intercept_methods(interceptor):
        out = module.apply(v, *args, rngs={"sample": key}, method=method)
    return out, seen


def _hand_q(v, mu1, mu2, offset):
    p = v["params"]["int_encoder"]
    a, b, g = float(p["alpha"]), float(p["beta"]), float(p["gamma"])
    delta = mu2 - mu1
    logits = np.concatenate([np.zeros((len(delta), 1)), a + b * np.abs(delta) + g * delta ** 2], 1)
    q = np.exp(logits - logits.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    return (q + offset) / (1 + K * offset)


def _hand_main(v, x1, x2, e1s, e2s, iterations, loss_weights, lam=0.5, fix=False,
               model_interventions=True):
    """Per-sample loss of 2.10, for the given projected samples e1s[n], e2s[n] and the
    iterations [(I [B,d], w [B]), ...] (averaging weight lam fixed)."""
    x1, x2 = _f64(x1), _f64(x2)
    (mu1, s1), (mu2, s2) = _enc(v, x1), _enc(v, x2)
    mub, sb = lam * mu1 + (1 - lam) * mu2, lam * s1 + (1 - lam) * s2
    ll = kl_e = log_q_int = log_p_int = 0.0
    for (I, w), e1, e2 in zip(iterations, e1s, e2s):
        e1, e2 = _f64(e1), _f64(e2)
        mu1p, s1p = I * mu1 + (1 - I) * mub, I * s1 + (1 - I) * sb
        mu2p, s2p = I * mu2 + (1 - I) * mub, I * s2 + (1 - I) * sb
        log_q = log_normal(e1, mu1p, s1p).sum(-1) + (I * log_normal(e2, mu2p, s2p)).sum(-1)
        (m1, sd1), (m2, sd2) = _dec(v, e1), _dec(v, e2)
        ll_k = log_normal(x1, m1, sd1, False).sum(-1) + log_normal(x2, m2, sd2, False).sum(-1)
        log_p = log_standard_normal(e1).sum(-1)
        if model_interventions:
            scale, shift = _scale_shift(v, e1, ancestor_masks("none", D))
            z = (e2 - shift) / scale
            log_p = log_p + (I * (log_standard_normal(z) - np.log(scale))).sum(-1)
        ll = ll + w * ll_k
        kl_e = kl_e + w * (log_q - log_p)
        # reference: w * (w log w) (ws-crl gotcha 2); fixed: w log w
        log_q_int = log_q_int + (w * np.log(w) if fix else w * w * np.log(w))
        log_p_int = log_p_int + w * (-math.log(K))
    kl_int = log_q_int - log_p_int
    loss = -ll + float(loss_weights.beta) * kl_e + float(loss_weights.beta_intervention) * kl_int
    return loss, {"log_likelihood": ll, "kl_e": kl_e, "kl_intervention_target": kl_int}


# ------------------------------------------------------------------------- projection


def _project(strategy, v, mu1, s1, mu2, s2, interventions, key):
    return ILCM(**KW, averaging_strategy=strategy).apply(
        v, mu1, s1, mu2, s2, interventions, rngs={"sample": key},
        method=lambda mod, *a: mod._project_and_sample(*a))


@pytest.fixture(scope="module")
def posteriors():
    rng = np.random.default_rng(1)
    mu1 = jnp.asarray(rng.normal(size=(4, D)), jnp.float32)
    mu2 = jnp.asarray(rng.normal(size=(4, D)), jnp.float32)
    return mu1, mu2


def test_projection_average_tiny_std(variables, posteriors):
    mu1, mu2 = posteriors
    tiny = jnp.full((4, D), 1e-7)
    e1, e2, log_q = _project("average", variables, mu1, tiny, mu2, tiny,
                             jnp.asarray(MASKS[:, None, :], jnp.float32), jax.random.PRNGKey(1))
    assert e1.shape == e2.shape == (K, 4, D) and log_q.shape == (K, 4)
    e1, e2 = np.asarray(e1), np.asarray(e2)
    mid = 0.5 * (_f64(mu1) + _f64(mu2))
    for k in range(K):
        I = MASKS[k].astype(bool)
        # non-intervened: e2' copies e1' exactly, both at the averaged posterior mean
        np.testing.assert_array_equal(e2[k][:, ~I], e1[k][:, ~I])
        np.testing.assert_allclose(e1[k][:, ~I], mid[:, ~I], atol=1e-5)
        # intervened: each keeps its own posterior
        np.testing.assert_allclose(e1[k][:, I], _f64(mu1)[:, I], atol=1e-5)
        np.testing.assert_allclose(e2[k][:, I], _f64(mu2)[:, I], atol=1e-5)


def test_projection_log_q_closed_form(variables, posteriors):
    mu1, mu2 = posteriors
    s1, s2 = jnp.full((4, D), 0.3), jnp.full((4, D), 0.7)
    e1, e2, log_q = _project("average", variables, mu1, s1, mu2, s2,
                             jnp.asarray(MASKS[:, None, :], jnp.float32), jax.random.PRNGKey(2))
    m1, m2 = _f64(mu1), _f64(mu2)
    for k in range(K):
        I = MASKS[k]
        # averaged non-intervened components: mean 0.5(mu1+mu2), std 0.5(0.3+0.7) = 0.5
        mu1p, s1p = I * m1 + (1 - I) * 0.5 * (m1 + m2), I * 0.3 + (1 - I) * 0.5
        mu2p, s2p = I * m2 + (1 - I) * 0.5 * (m1 + m2), I * 0.7 + (1 - I) * 0.5
        expected = (log_normal(_f64(e1[k]), mu1p, s1p).sum(-1)
                    + (I * log_normal(_f64(e2[k]), mu2p, s2p)).sum(-1))
        np.testing.assert_allclose(np.asarray(log_q[k]), expected, rtol=1e-5, atol=1e-5)


def test_projection_stochastic_weights_are_uniform_per_element(variables, posteriors):
    mu1, mu2 = posteriors
    tiny = jnp.full((4, D), 1e-7)
    e1, e2, _ = _project("stochastic", variables, mu1, tiny, mu2, tiny,
                         jnp.asarray(MASKS[:, None, :], jnp.float32), jax.random.PRNGKey(3))
    m1, m2 = _f64(mu1), _f64(mu2)
    lams = []
    for k in range(K):
        I = MASKS[k].astype(bool)
        np.testing.assert_array_equal(np.asarray(e2[k])[:, ~I], np.asarray(e1[k])[:, ~I])
        lam = (_f64(e1[k]) - m2) / (m1 - m2)  # e1' = lam mu1 + (1 - lam) mu2
        lams.append(lam[:, ~I].ravel())
    lams = np.concatenate(lams)
    assert lams.min() > -1e-3 and lams.max() < 1 + 1e-3
    assert lams.std() > 0.1  # drawn per element and per intervention, not a constant 0.5


def test_projection_z2_strategy_selects_x1_posterior(variables, posteriors):
    # ws-crl gotcha 18: lambda = 1 weights mu1, despite the name
    mu1, mu2 = posteriors
    tiny = jnp.full((4, D), 1e-7)
    e1, e2, _ = _project("z2", variables, mu1, tiny, mu2, tiny,
                         jnp.zeros((1, 1, D)), jax.random.PRNGKey(4))
    np.testing.assert_allclose(np.asarray(e1[0]), _f64(mu1), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(e2), np.asarray(e1))


# ------------------------------------------------------------------------- main-phase loss


@pytest.mark.parametrize("fix", [False, True])
def test_main_loss_closed_form(variables, data, fix):
    x1, x2 = data
    loss_weights = _loss_weights()
    module = ILCM(**KW, averaging_strategy="average", fix_entropy_weighting=fix)
    (loss, out), seen = _run(module, variables, x1, x2, loss_weights, Phase(**NO_REGS), {},
                             key=jax.random.PRNGKey(5))
    assert len(seen) == 2 and seen[0].shape == (K, 4, D)  # decoder on e1', then on e2'
    mu1, _ = _enc(variables, x1)
    mu2, _ = _enc(variables, x2)
    q = _hand_q(variables, mu1, mu2, 0.01)
    np.testing.assert_allclose(np.asarray(out["intervention_posterior"]), q, rtol=1e-4,
                               atol=1e-6)
    assert q.min() > 0.01 / 1.04 * 0.99 and q[:, 0].max() > 0.5 and q[:, 1:].max() > 0.5
    iters = [(MASKS[k][None, :], q[:, k]) for k in range(K)]
    expected, parts = _hand_main(variables, x1, x2, seen[0], seen[1], iters, loss_weights, fix=fix)
    np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-4, atol=1e-3)
    for name, val in parts.items():
        np.testing.assert_allclose(np.asarray(out[name]), val, rtol=1e-4, atol=1e-3)
    # bookkeeping of the outputs
    np.testing.assert_allclose(np.asarray(out["kl"]),
                               parts["kl_e"] + parts["kl_intervention_target"], rtol=1e-4,
                               atol=1e-3)
    np.testing.assert_allclose(np.asarray(out["elbo"]), parts["log_likelihood"] - np.asarray(
        out["kl"]), rtol=1e-4, atol=1e-3)
    assert out["solution_std"].shape == (4, K, D)


def test_entropy_weighting_flag_difference(variables, data):
    # kl_int(reference) - kl_int(fixed) = sum_k w_k^2 log w_k - sum_k w_k log w_k
    x1, x2 = data
    loss_weights = _loss_weights()
    outs = []
    for fix in (False, True):
        _, out = ILCM(**KW, fix_entropy_weighting=fix).apply(
            variables, x1, x2, loss_weights, Phase(), {}, rngs={"sample": jax.random.PRNGKey(6)})
        outs.append(out)
    w = _f64(outs[0]["intervention_posterior"])
    diff = _f64(outs[0]["kl_intervention_target"]) - _f64(outs[1]["kl_intervention_target"])
    np.testing.assert_allclose(diff, ((w ** 2 - w) * np.log(w)).sum(-1), rtol=1e-4, atol=1e-6)
    assert np.abs(diff).max() > 1e-2  # the two variants really differ here
    # closed forms of both: sum w^2 log w + log K and sum w log w + log K
    np.testing.assert_allclose(_f64(outs[0]["kl_intervention_target"]),
                               (w ** 2 * np.log(w)).sum(-1) + math.log(K), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_f64(outs[1]["kl_intervention_target"]),
                               (w * np.log(w)).sum(-1) + math.log(K), rtol=1e-4, atol=1e-5)
    # same key -> same samples: everything else is identical
    np.testing.assert_array_equal(np.asarray(outs[0]["kl_e"]), np.asarray(outs[1]["kl_e"]))


def test_deterministic_encoder_phase(variables, data):
    x1, x2 = data
    loss_weights = _loss_weights()
    module = ILCM(**KW, averaging_strategy="average")
    (loss, out), seen = _run(module, variables, x1, x2, loss_weights,
                             Phase(deterministic_encoder=True, **NO_REGS), {},
                             key=jax.random.PRNGKey(7))
    # w = 1 for the argmax target only: kl_int = 1 * log 1 + log K = log 4
    np.testing.assert_allclose(np.asarray(out["kl_intervention_target"]), math.log(K), rtol=1e-6)
    q = _f64(out["intervention_posterior"])  # straight-through one-hot (value)
    np.testing.assert_allclose(q, np.eye(K)[q.argmax(-1)], atol=1e-6)
    mu1, _ = _enc(variables, x1)
    mu2, _ = _enc(variables, x2)
    target = _hand_q(variables, mu1, mu2, 0.01).argmax(-1)
    np.testing.assert_array_equal(q.argmax(-1), target)
    assert len(set(target.tolist())) > 1  # several targets are exercised
    assert seen[0].shape == (1, 4, D)
    I = MASKS[target]  # [B, d]
    np.testing.assert_array_equal(seen[1][0][I == 0], seen[0][0][I == 0])
    expected, parts = _hand_main(variables, x1, x2, seen[0], seen[1], [(I, np.ones(4))],
                                 loss_weights)
    np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(np.asarray(out["kl_e"]), parts["kl_e"], rtol=1e-4, atol=1e-3)


def test_without_modelled_interventions(variables, data):
    x1, x2 = data
    loss_weights = _loss_weights()
    module = ILCM(**KW, averaging_strategy="average")
    (loss, out), seen = _run(module, variables, x1, x2, loss_weights,
                             Phase(model_interventions=False, **NO_REGS), {},
                             key=jax.random.PRNGKey(8))
    np.testing.assert_array_equal(np.asarray(out["log_prior_intervened"]), 0.0)
    np.testing.assert_array_equal(np.asarray(out["solution_std"]), 1.0)
    q = _f64(out["intervention_posterior"])
    iters = [(MASKS[k][None, :], q[:, k]) for k in range(K)]
    expected, _ = _hand_main(variables, x1, x2, seen[0], seen[1], iters, loss_weights,
                             model_interventions=False)
    np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-4, atol=1e-3)


def test_regularizers_use_fresh_unprojected_samples(variables, data):
    # ws-crl gotcha 19: z-regularisation and consistency MSE come from separate posterior samples
    x1, x2 = data
    (_, out), seen = _run(ILCM(**KW), variables, x1, x2, _loss_weights(), Phase(), {},
                          key=jax.random.PRNGKey(9))
    assert [s.shape for s in seen[:2]] == [(4, D), (4, D)]
    e1, e2 = _f64(seen[0]), _f64(seen[1])
    (mu1, s1), (mu2, s2) = _enc(variables, x1), _enc(variables, x2)
    assert np.abs((e1 - mu1) / s1).max() < 6 and np.abs((e2 - mu2) / s2).max() < 6
    assert np.abs(e1 - mu1).max() > 0  # sampled, not the mean
    np.testing.assert_allclose(_f64(out["z_regularization"]),
                               (e1 ** 2).sum(-1) + (e2 ** 2).sum(-1), rtol=1e-5)
    cons = ((_dec(variables, e1)[0] - _f64(x1)) ** 2).sum(-1) + (
        (_dec(variables, e2)[0] - _f64(x2)) ** 2).sum(-1)
    np.testing.assert_allclose(_f64(out["consistency_mse"]), cons, rtol=1e-4)
    np.testing.assert_allclose(_f64(out["encoder_std"]), 0.5 * (s1 + s2).mean(-1), rtol=1e-5)
    # the projected samples are different draws
    assert not np.allclose(seen[2][0], e1)


# ------------------------------------------------------------------------- pretraining


def test_pretrain_loss_closed_form(variables, data):
    x1, x2 = data
    loss_weights = _loss_weights(beta=0.5, pretrain_beta=0.05)
    (loss, out), seen = _run(ILCM(**KW), variables, x1, x2, loss_weights, Phase(pretrain=True), {},
                             key=jax.random.PRNGKey(10))
    assert len(seen) == 2
    e1, e2 = _f64(seen[0]), _f64(seen[1])
    X1, X2 = _f64(x1), _f64(x2)
    (mu1, s1), (mu2, s2) = _enc(variables, x1), _enc(variables, x2)
    (m1, d1), (m2, d2) = _dec(variables, e1), _dec(variables, e2)
    ll1 = log_normal(X1, m1, d1, False).sum(-1)  # full_likelihood False
    ll2 = log_normal(X2, m2, d2, False).sum(-1)
    log_q = log_normal(e1, mu1, s1).sum(-1) + log_normal(e2, mu2, s2).sum(-1)  # full constant
    log_p = log_standard_normal(e1).sum(-1) + log_standard_normal(e2).sum(-1)
    expected = -ll1 - ll2 + 0.05 * (log_q - log_p)
    np.testing.assert_allclose(np.asarray(loss), expected, rtol=1e-4, atol=1e-3)
    # pretrain_beta, not beta, weights the KL (the KL is large: encoder std 0.01)
    assert np.abs(-ll1 - ll2 + 0.5 * (log_q - log_p) - expected).min() > 1.0
    np.testing.assert_allclose(_f64(out["z_regularization"]),
                               (e1 ** 2).sum(-1) + (e2 ** 2).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(_f64(out["consistency_mse"]),
                               ((m1 - X1) ** 2).sum(-1) + ((m2 - X2) ** 2).sum(-1), rtol=1e-4)
    assert "intervention_posterior" not in out


def test_encode_to_causal_is_solution_of_encoder_mean(variables, data):
    x1, _ = data
    z = ILCM(**KW).apply(variables, x1, {}, method="encode_to_causal")
    mu, _ = _enc(variables, x1)
    scale, shift = _scale_shift(variables, mu, ancestor_masks("none", D))
    np.testing.assert_allclose(_f64(z), (mu - shift) / scale, rtol=1e-5, atol=1e-6)
