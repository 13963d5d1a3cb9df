"""Step and LR schedules (reference: `experiments/experiment_utils.py`,
`config/training/scaling*.yaml`; ws-crl gotchas 3 and 29)."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import load_config
from wscrl_jax.train.schedules import (is_identically_zero, lr_schedule, optimizer_reset_epochs,
                                       step_schedule)


def _load_config(arg):
    return load_config("scaling", arg)


@pytest.fixture(scope="module")
def training():
    return _load_config("ilcm").training


def _sc(kind, initial, final, ice=0, decay=0):
    return ml_collections.ConfigDict(dict(type=kind, initial=initial, final=final,
                                          initial_constant_epochs=ice, decay_epochs=decay))


def _lr(kind, **kw):
    return ml_collections.ConfigDict(dict(type=kind, initial=1.0, minimal=0.1, **kw))


# ------------------------------------------------------------------------- step schedules


def test_beta_schedule_with_overshoot(training):
    # constant_linear_constant 0 -> 1, ice 10, decay 10: s = f - 10, t = s / 9.
    beta = step_schedule(training.beta_schedule, training.epochs)
    cases = {0.0: 0.0, 5.0: 0.0, 10.0: 0.0, 10.5: 0.5 / 9, 15.0: 5 / 9, 19.0: 1.0,
             # 1.0556: extrapolation in the last epoch of the ramp (ws-crl gotcha 3)
             19.5: 9.5 / 9,
             19.99: 9.99 / 9, 20.0: 1.0, 50.0: 1.0}
    for f, expected in cases.items():
        assert float(beta(f)) == pytest.approx(expected, rel=1e-6, abs=1e-7), f


def test_z_regularization_schedule_goes_negative(training):
    z = step_schedule(training.z_regularization_schedule, training.epochs)
    assert float(z(3.0)) == pytest.approx(0.01)
    assert float(z(14.5)) == pytest.approx(0.01 * (1 - 4.5 / 9), rel=1e-6)
    assert float(z(19.0)) == pytest.approx(0.0, abs=1e-9)
    # 0.01 * (1 - 9.5/9) = -0.01/18 = -5.556e-4
    assert float(z(19.5)) == pytest.approx(-0.01 / 18, rel=1e-5)
    assert float(z(20.0)) == 0.0


def test_offset_schedule_log_linear(training):
    off = step_schedule(training.intervention_encoder_offset_schedule, training.epochs)
    assert float(off(10.0)) == pytest.approx(0.025, rel=1e-6)
    # midpoint of the log-linear ramp (t = 0.5 at f = 14.5): sqrt(0.025 * 1e-4) = 1.5811e-3
    assert float(off(14.5)) == pytest.approx(math.sqrt(0.025 * 1e-4), rel=1e-5)
    assert float(off(19.0)) == pytest.approx(1e-4, rel=1e-5)
    # overshoot below 1e-4: exp(log .025 + (9.5/9) (log 1e-4 - log .025)) = 7.4e-5
    below = math.exp(math.log(0.025) + 9.5 / 9 * (math.log(1e-4) - math.log(0.025)))
    assert float(off(19.5)) == pytest.approx(below, rel=1e-5)
    assert float(off(19.5)) < 1e-4
    assert float(off(20.0)) == pytest.approx(1e-4, rel=1e-6)


def test_constant_returns_final():
    s = step_schedule(_sc("constant", 5.0, 2.0, 3, 4), 10)
    for f in (0.0, 2.5, 100.0):
        assert float(s(f)) == 2.0


def test_constant_constant():
    s = step_schedule(_sc("constant_constant", 5.0, 2.0, ice=3), 10)
    assert float(s(2.99)) == 5.0 and float(s(3.0)) == 2.0


def test_exponential_uses_training_epochs():
    # T = epochs = 11, t = f / 10: at f = 5, exp(0.5 log 1 + 0.5 log 1e-2) = 0.1
    s = step_schedule(_sc("exponential", 1.0, 1e-2, ice=7, decay=3), 11)
    assert float(s(5.0)) == pytest.approx(0.1, rel=1e-5)
    assert float(s(0.0)) == 1.0 and float(s(11.0)) == pytest.approx(1e-2)


def test_exponential_constant_uses_decay_epochs():
    # T = decay = 5, t = f / 4: at f = 2, sqrt(1 * 1e-2) = 0.1
    s = step_schedule(_sc("exponential_constant", 1.0, 1e-2, ice=7, decay=5), 100)
    assert float(s(2.0)) == pytest.approx(0.1, rel=1e-5)
    assert float(s(5.0)) == pytest.approx(1e-2)


def test_step_schedule_traced_matches_python(training):
    beta = step_schedule(training.beta_schedule, training.epochs)
    fs = jnp.array([0.0, 10.5, 19.5, 20.0, 31.0])
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(beta))(fs)),
                               [0.0, 0.5 / 9, 9.5 / 9, 1.0, 1.0], rtol=1e-6, atol=1e-7)


def test_zero_length_ramp_at_its_start_returns_final():
    # reference: `if step >= total_steps: return final` comes first, so with decay_epochs 0 the
    # value at f = ice (s = 0 >= 0) is already `final`
    s = step_schedule(_sc("constant_linear_constant", 5.0, 2.0, ice=3, decay=0), 10)
    assert float(s(3.0)) == 2.0


def test_zero_length_ramp_away_from_its_start():
    s = step_schedule(_sc("constant_linear_constant", 5.0, 2.0, ice=3, decay=0), 10)
    assert float(s(2.5)) == 5.0 and float(s(3.5)) == 2.0


def test_unknown_step_schedule_raises():
    with pytest.raises(ValueError):
        step_schedule(_sc("cosine", 1.0, 0.0), 10)


def test_is_identically_zero():
    assert is_identically_zero(_sc("constant", 1.0, 0.0))  # constant uses final only
    assert not is_identically_zero(_sc("constant", 0.0, 0.1))
    assert not is_identically_zero(_sc("constant_linear_constant", 0.01, 0.0, 10, 10))
    assert is_identically_zero(_sc("constant_linear_constant", 0.0, 0.0, 10, 10))


# ------------------------------------------------------------------------- LR schedules


def test_lr_constant():
    f = lr_schedule(_lr("constant"), 10)
    assert float(f(0)) == 1.0 and float(f(7)) == 1.0


def test_lr_cosine():
    # CosineAnnealingLR(T_max = epochs = 10, eta_min = 0.1): 0.1 + 0.9 (1 + cos(pi e / 10)) / 2
    f = lr_schedule(_lr("cosine"), 10)
    for e in range(11):
        assert float(f(e)) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * e / 10)) / 2,
                                            rel=1e-6), e
    assert float(f(5)) == pytest.approx(0.55, rel=1e-6)


def _torch_warm_restarts(t0, mult, lr0, lr_min, n):
    """PyTorch CosineAnnealingWarmRestarts stepped once per epoch (its incremental form)."""
    out, t_cur, t_i = [], 0, t0
    for _ in range(n):
        out.append(lr_min + (lr0 - lr_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2)
        t_cur += 1
        if t_cur >= t_i:
            t_cur -= t_i
            t_i *= mult
    return out


@pytest.mark.parametrize("kind", ["cosine_restarts", "cosine_restarts_reset"])
def test_lr_cosine_restarts(kind):
    f = lr_schedule(_lr(kind, restart_every_epochs=3, increase_period_by_factor=1.0), 12)
    expected = _torch_warm_restarts(3, 1, 1.0, 0.1, 12)
    np.testing.assert_allclose([float(f(e)) for e in range(12)], expected, rtol=1e-6)
    assert float(f(3)) == 1.0 and float(f(6)) == 1.0  # restarts
    # traced epochs (as inside the jitted step) give the same values
    np.testing.assert_allclose(np.asarray(jax.vmap(f)(jnp.arange(12))), expected, rtol=1e-6)


@pytest.mark.parametrize("t0,mult", [(2, 2), (3, 3)])
def test_lr_cosine_restarts_growing_period(t0, mult):
    f = lr_schedule(_lr("cosine_restarts", restart_every_epochs=t0,
                        increase_period_by_factor=float(mult)), 60)
    n = 40
    expected = _torch_warm_restarts(t0, mult, 1.0, 0.1, n)
    np.testing.assert_allclose([float(f(e)) for e in range(n)], expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.vmap(f)(jnp.arange(n))), expected, rtol=1e-5)


def test_lr_step():
    f = lr_schedule(_lr("step", step_every_epochs=3, step_gamma=0.1), 10)
    got = [float(f(e)) for e in range(8)]
    np.testing.assert_allclose(got, [1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)
    with pytest.raises(ValueError):
        lr_schedule(_lr("step", step_every_epochs=0, step_gamma=0.1), 10)


def test_scaling_config_lr(training):
    # cosine_restarts_reset, 3e-4 -> 1e-8, T0 = 30: restarts at 30 and 60
    f = lr_schedule(training.lr_schedule, training.epochs)
    assert float(f(0)) == pytest.approx(3e-4) and float(f(30)) == pytest.approx(3e-4)
    assert float(f(15)) == pytest.approx(1e-8 + (3e-4 - 1e-8) / 2, rel=1e-5)
    assert float(f(29)) < 1e-6


def test_optimizer_reset_epochs(training):
    # Adam state cleared after epochs e with (e+1) % 30 == 0 and e+1 < epochs: at 30 and 60
    assert optimizer_reset_epochs(training.lr_schedule, 90) == {30, 60}
    assert optimizer_reset_epochs(training.lr_schedule, 91) == {30, 60, 90}
    assert optimizer_reset_epochs(_lr("cosine_restarts", restart_every_epochs=30), 90) == set()
    assert optimizer_reset_epochs(_load_config("ilcm,fast").training.lr_schedule, 3) == set()
