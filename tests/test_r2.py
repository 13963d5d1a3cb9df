"""R^2 metrics against scikit-learn's LinearRegression / r2_score."""

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_squared_error, r2_score

from wscrl_jax.eval import r2 as R
from wscrl_jax.eval.domain_accuracy import domain_accuracies


def sk_r2(x, y, fit_intercept=True):
    return LinearRegression(fit_intercept=fit_intercept).fit(x, y).score(x, y)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    n = 64
    z = rng.uniform(size=(n, 4))
    z_hat = z @ rng.normal(size=(4, 6)) + 0.3 * rng.normal(size=(n, 6))
    z_hat[:, 4:] += np.tanh(3 * z[:, 2:])  # some non-linearity
    x = z @ rng.uniform(size=(4, 8))
    return z, z_hat, x


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_linear_r2_matches_sklearn(data, fit_intercept):
    z, z_hat, _ = data
    assert R.linear_r2(z, z_hat, fit_intercept) == pytest.approx(
        sk_r2(z, z_hat, fit_intercept), abs=1e-10
    )
    assert R.linear_r2(z_hat, z[:, 0], fit_intercept) == pytest.approx(
        sk_r2(z_hat, z[:, 0], fit_intercept), abs=1e-10
    )
    r2, mse = R.linear_r2_mse(z_hat, z, fit_intercept)
    reg = LinearRegression(fit_intercept=fit_intercept).fit(z_hat, z)
    assert mse == pytest.approx(mean_squared_error(z, reg.predict(z_hat)), rel=1e-8)


def test_r2_edge_cases(data):
    z, z_hat, _ = data
    y = np.concatenate([z[:, :1], np.full((len(z), 1), 3.0)], axis=1)  # one constant target column
    assert R.linear_r2(z_hat, y) == pytest.approx(sk_r2(z_hat, y), abs=1e-10)
    x_def = np.concatenate([z, z[:, :2] + z[:, 2:]], axis=1)  # rank-deficient regressors
    assert R.linear_r2(x_def, z_hat) == pytest.approx(sk_r2(x_def, z_hat), abs=1e-8)
    p = z_hat[:, :2] + 0.1
    assert R.r2_score_np(z_hat[:, :2], p) == pytest.approx(r2_score(z_hat[:, :2], p))
    assert R.r2_score_np(np.ones((5, 1)), np.ones((5, 1))) == r2_score(
        np.ones((5, 1)), np.ones((5, 1))
    )


def test_heldout(data):
    z, z_hat, _ = data
    reg = LinearRegression().fit(z_hat[:40], z[:40])
    want = r2_score(z[40:], reg.predict(z_hat[40:]))
    assert R.heldout_linear_r2(z_hat[:40], z[:40], z_hat[40:], z[40:]) == pytest.approx(
        want, abs=1e-10
    )
    out = R.mixing_r2_metrics_heldout(z[:40], z_hat[:40], z[40:], z_hat[40:], 2, 3)
    reg = LinearRegression().fit(z_hat[:40, :3], z[:40, 2:])
    assert out["hz_~z_~r2"] == pytest.approx(
        r2_score(z[40:, 2:], reg.predict(z_hat[40:, :3])), abs=1e-10
    )


def test_mixing_metrics_stage1(data):
    z, z_hat, x = data
    d, dm = 2, 3
    out = R.mixing_r2_metrics(z, z_hat, d, dm, stage=1, x=x)
    zi, zs, hi, hs = z[:, :d], z[:, d:], z_hat[:, :dm], z_hat[:, dm:]
    want = {
        "r2": sk_r2(z, z_hat),
        "~r2": sk_r2(z_hat, z),
        "hz_z_r2": sk_r2(zi, hi),
        "hz_z_~r2": sk_r2(hi, zi),
        "~hz_z_r2": sk_r2(zi, hs),
        "~hz_z_~r2": sk_r2(hs, zi),
        "hz_~z_r2": sk_r2(zs, hi),
        "hz_~z_~r2": sk_r2(hi, zs),
        "~hz_~z_r2": sk_r2(zs, hs),
        "~hz_~z_~r2": sk_r2(hs, zs),
    }
    for k, v in want.items():
        assert out[k] == pytest.approx(v, abs=1e-10), k
    assert out["z_norm"] == pytest.approx(np.linalg.norm(hi, axis=1).mean())
    x_norm = np.linalg.norm(x, axis=1).mean()
    assert out["~z_var/x_norm"] == pytest.approx(np.var(hs, axis=1, ddof=1).mean() / x_norm)


def test_mixing_metrics_stage2_name_swap(data):
    z, z_hat, _ = data
    d = 2
    out = R.mixing_r2_metrics(z, z_hat[:, :4], d, d, stage=2)
    zi, zs, hi, hs = z[:, :d], z[:, d:], z_hat[:, :d], z_hat[:, d:4]
    assert out["hz_~z_~r2"] == pytest.approx(sk_r2(hs, zi), abs=1e-10)  # swapped meaning
    assert out["~hz_z_~r2"] == pytest.approx(sk_r2(hi, zs), abs=1e-10)
    assert out["hz_~z_r2"] == pytest.approx(sk_r2(zs, hi), abs=1e-10)
    assert "z_var/x_norm" not in out
    fixed = R.mixing_r2_metrics(z, z_hat[:, :4], d, d, stage=2, consistent_names=True)
    assert fixed["hz_~z_~r2"] == pytest.approx(sk_r2(hi, zs), abs=1e-10)


def test_start_and_balls_metrics(data):
    z, z_hat, _ = data
    start = R.start_r2_metrics(z, z_hat, 2)
    assert start["hz_~z_~r2_linreg_start"] == pytest.approx(
        sk_r2(z_hat[:, :2], z[:, 2:]), abs=1e-10
    )
    b1 = R.balls_stage1_r2_metrics(z, z_hat, z[:, :2], z[:, 2:], z[:, :1])
    assert b1["hz_colors_~r2"] == pytest.approx(sk_r2(z_hat, z[:, :1]), abs=1e-10)
    b2 = R.balls_stage2_r2_metrics(z, z_hat, z[:, :2], z[:, 2:], 3)
    reg = LinearRegression().fit(z_hat[:, :3], z[:, 2:])
    assert b2["hz_~z_~r2_linreg"] == pytest.approx(reg.score(z_hat[:, :3], z[:, 2:]), abs=1e-10)
    assert b2["hz_~z_~mse_loss_linreg"] == pytest.approx(
        mean_squared_error(z[:, 2:], reg.predict(z_hat[:, :3]))
    )
    assert set(b2) >= {"r2_linreg", "mse_loss_linreg", "~r2_linreg", "~mse_loss_linreg"}


def test_domain_accuracies(data):
    z, z_hat, _ = data
    dom = (z[:, 2] > 0.5).astype(int)
    acc = domain_accuracies(z_hat, dom, 3)
    assert set(acc) == {"domain_acc", "hz_domain_acc", "~hz_domain_acc"}
    assert all(0.0 <= v <= 1.0 for v in acc.values())
