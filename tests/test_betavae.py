"""beta-VAE baseline (reference: `ws_crl/lcm/elcm.py` with an unstructured prior): loss = -ll +
beta * (log q - log N(z1) - log N(z2)), with pretrain_beta during pretraining. Decoder inputs (the
posterior samples) are recorded with `flax.linen.intercept_methods` and every term is recomputed by
hand."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.lcm.betavae import BetaVAE
from wscrl_jax.lcm.phases import LossWeights, Phase, eval_loss_weights
from wscrl_jax.nn.gaussian import GaussianMLP

from reference_np import log_normal, log_standard_normal

D = 3
KW = dict(dim_x=D, dim_z=D, encoder_hidden=(8,), decoder_hidden=(8,))


def _f64(a):
    return np.asarray(a, np.float64)


def _loss_weights(beta, pretrain_beta):
    f = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
    return LossWeights(f(beta), f(beta), f(pretrain_beta), f(0.0), f(0.0), f(0.0), f(0.0), f(1e-4))


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    x1 = jnp.asarray(rng.normal(size=(4, D)), jnp.float32)
    x2 = jnp.asarray(rng.normal(size=(4, D)), jnp.float32)
    model = BetaVAE(**KW)
    key = jax.random.PRNGKey(0)
    v = jax.jit(lambda k: model.init({"params": k, "sample": k}, x1, x2, eval_loss_weights(), {},
                                     method="init_all"))(key)
    return model, v, x1, x2


def _run(model, v, *args, key):
    seen = []

    def interceptor(next_fun, a, kw, ctx):
        if (isinstance(ctx.module, GaussianMLP) and ctx.module.name == "decoder"
                and ctx.method_name == "__call__"):
            seen.append(_f64(a[0]))
        return next_fun(*a, **kw)

    with nn.intercept_methods(interceptor):
        out = model.apply(v, *args, rngs={"sample": key})
    return out, seen


def _hand(model, v, x1, x2, z1, z2, full=False):
    """(ll, log q, log p) by hand from the recorded samples z1, z2."""
    enc = lambda x: model.apply(v, x, method=lambda m, x: m.encoder(x))  # noqa: E731
    dec = lambda z: model.apply(v, jnp.asarray(z, jnp.float32),  # noqa: E731
                                method=lambda m, z: m.decoder(z))
    (mu1, s1), (mu2, s2) = enc(x1), enc(x2)
    (m1, d1), (m2, d2) = dec(z1), dec(z2)
    ll = (log_normal(_f64(x1), _f64(m1), _f64(d1), full).sum(-1)
          + log_normal(_f64(x2), _f64(m2), _f64(d2), full).sum(-1))
    log_q = (log_normal(z1, _f64(mu1), _f64(s1)).sum(-1)
             + log_normal(z2, _f64(mu2), _f64(s2)).sum(-1))
    log_p = log_standard_normal(z1).sum(-1) + log_standard_normal(z2).sum(-1)
    return ll, log_q, log_p


def test_main_loss_is_minus_ll_plus_beta_kl(setup):
    model, v, x1, x2 = setup
    (loss, out), seen = _run(model, v, x1, x2, _loss_weights(0.7, 0.001),
                             Phase(need_inverse_consistency=False), {}, key=jax.random.PRNGKey(1))
    assert len(seen) == 2
    ll, log_q, log_p = _hand(model, v, x1, x2, seen[0], seen[1])
    np.testing.assert_allclose(_f64(loss), -ll + 0.7 * (log_q - log_p), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(_f64(out["kl"]), log_q - log_p, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(_f64(out["log_likelihood"]), ll, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(_f64(out["elbo"]), ll - (log_q - log_p), rtol=1e-4, atol=1e-3)
    assert "intervention_posterior" not in out  # no entropy regulariser for the beta-VAE


def test_full_likelihood_adds_the_constant(setup):
    model, v, x1, x2 = setup
    (loss, out), seen = _run(model, v, x1, x2, _loss_weights(1.0, 0.001),
                             Phase(full_likelihood=True, need_inverse_consistency=False), {},
                             key=jax.random.PRNGKey(2))
    ll, log_q, log_p = _hand(model, v, x1, x2, seen[0], seen[1], full=True)
    np.testing.assert_allclose(_f64(out["log_likelihood"]), ll, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(_f64(loss), -ll + (log_q - log_p), rtol=1e-4, atol=1e-3)


def test_pretrain_uses_pretrain_beta(setup):
    model, v, x1, x2 = setup
    loss_weights = _loss_weights(0.7, 0.05)
    key = jax.random.PRNGKey(3)
    (loss_pre, out_pre), seen = _run(model, v, x1, x2, loss_weights, Phase(pretrain=True), {},
                                     key=key)
    ll, log_q, log_p = _hand(model, v, x1, x2, seen[0], seen[1])
    kl = log_q - log_p
    np.testing.assert_allclose(_f64(loss_pre), -ll + 0.05 * kl, rtol=1e-4, atol=1e-3)
    assert set(out_pre) == {"z_regularization", "consistency_mse", "encoder_std"}
    # same key, main phase: same samples, so the losses differ by exactly (beta - pb) * kl
    loss_main, _ = model.apply(v, x1, x2, loss_weights, Phase(), {}, rngs={"sample": key})
    np.testing.assert_allclose(_f64(loss_main) - _f64(loss_pre), (0.7 - 0.05) * kl, rtol=1e-4,
                               atol=1e-3)
    assert np.abs(kl).min() > 1.0  # the comparison is not vacuous


def test_outputs_by_hand(setup):
    model, v, x1, x2 = setup
    (_, out), seen = _run(model, v, x1, x2, _loss_weights(1.0, 0.001), Phase(), {},
                          key=jax.random.PRNGKey(4))
    z1, z2 = seen[0], seen[1]
    np.testing.assert_allclose(_f64(out["z_regularization"]), (z1 ** 2).sum(-1) + (z2 ** 2).sum(-1),
                               rtol=1e-5)
    dec = lambda z: _f64(model.apply(v, jnp.asarray(z, jnp.float32),  # noqa: E731
                                     method=lambda m, z: m.decoder(z))[0])
    mse = ((dec(z1) - _f64(x1)) ** 2).sum(-1) + ((dec(z2) - _f64(x2)) ** 2).sum(-1)
    np.testing.assert_allclose(_f64(out["mse"]), mse, rtol=1e-4)
    np.testing.assert_allclose(_f64(out["consistency_mse"]), mse, rtol=1e-4)
    assert out["inverse_consistency_mse"].shape == (4,)
    # causal codes of the beta-VAE are the encoder means
    mu = model.apply(v, x1, method=lambda m, x: m.encoder(x))[0]
    np.testing.assert_array_equal(np.asarray(model.apply(v, x1, {}, method="encode_to_causal")),
                                  np.asarray(mu))
