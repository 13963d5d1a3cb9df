"""MD-CRL method on the shared loop: schedules, optimiser, autoencoders, loss, and tiny
end-to-end runs (linear min-max learns; stage 1 -> stage 2 pipeline; clear stage-2 errors)."""

import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import ROOT, load_config
from wscrl_jax import experiment
from wscrl_jax.run import members as run_members
from wscrl_jax.train.sweep import sweep_members
from wscrl_jax.config_checks import ConfigError
from wscrl_jax.data.encoded import Stage1OutputMissing, load_encoded_splits
from wscrl_jax.mdcrl import method as mm
from wscrl_jax.mdcrl.autoencoders import LinearAE, PolyAE
from wscrl_jax.methods import validate_config
from wscrl_jax.tracking import read_csv
from wscrl_jax.train.callbacks import early_stopping_update, plateau_update
from wscrl_jax.train.optim import torch_adam
from wscrl_jax.train.schedules import transformers_lr_multiplier
from wscrl_jax.train.state import member
from wscrl_jax.train.loop import train, whole_epochs
from wscrl_jax.train.step import make_run_steps
from wscrl_jax.train.sweep import parse_grid


def tiny_md_config(arg="linear,minmax,fast"):
    c = load_config("md_mixing", arg)
    c.training.batchsize = 256
    c.checkpoint.async_save = False
    c.eval.domain_accuracy = False
    return c


# ------------------------------------------------------------------------------ schedules


def _ms(lr=1.0):
    return {"lr": jnp.float32(lr), "plateau_best": jnp.float32(jnp.inf),
            "plateau_bad": jnp.int32(0), "plateau_cooldown": jnp.int32(0)}


def test_reduce_on_plateau_matches_torch_semantics():
    sc = ml_collections.ConfigDict(dict(factor=0.5, patience=2, threshold=1e-3, cooldown=1,
                                        min_lr=0.3, eps=1e-8))
    ms = _ms()
    lrs = []
    # improvement, then flat: bad = 1, 2, 3 -> reduce on the 4th call (bad > patience);
    # the next call is the cooldown epoch (bad reset to 0), then bad 1, 2, 3 -> reduce to the
    # floor 0.3 on the 8th call; afterwards 0.3 * 0.5 < min_lr, a change of 0 < eps: stays.
    for metric in [5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 4.9995, 5.0, 5.0, 5.0, 5.0, 5.0]:
        ms = plateau_update(ms, jnp.float32(metric), sc)
        lrs.append(float(ms["lr"]))
    assert lrs[:4] == [1.0, 1.0, 1.0, 0.5]
    assert lrs[4:7] == [0.5, 0.5, 0.5]
    assert lrs[7] == pytest.approx(0.3)
    assert lrs[-1] == pytest.approx(0.3)


def test_early_stopping_waits_for_patience_and_min_epochs():
    es = ml_collections.ConfigDict(dict(enabled=True, patience=2, min_delta=1e-4))
    ms = {"es_best": jnp.float32(jnp.inf), "es_wait": jnp.int32(0), "active": jnp.asarray(True),
          "stopped_epoch": jnp.int32(-1)}
    vals = [1.0, 0.99995, 0.9999, 0.9, 0.9, 0.9]  # 0.99995 is not an improvement (min_delta)
    active = []
    for epoch, v in enumerate(vals):
        ms = early_stopping_update(ms, jnp.float32(v), epoch, es, min_epochs=5)
        active.append(bool(ms["active"]))
    # wait reaches 2 at epoch 4 but min_epochs=5 is only met at epoch 4 (epoch + 1 >= 5)
    assert active == [True, True, True, True, True, False]
    assert int(ms["stopped_epoch"]) == 5
    ms2 = early_stopping_update(ms, jnp.float32(0.1), 6, es, min_epochs=0)
    assert not bool(ms2["active"])  # stays stopped


def test_transformers_schedules():
    lam = lambda kind, s, **kw: float(  # noqa: E731
        transformers_lr_multiplier(kind, s, 10, 30, lr_init=1e-3, **kw))
    assert lam("linear", 0) == 0.0 and lam("linear", 5) == pytest.approx(0.5)
    assert lam("linear", 20) == pytest.approx(0.5) and lam("linear", 40) == 0.0
    assert lam("polynomial", 20, lr_end=1e-4) == pytest.approx((0.9e-3 * 0.5 + 1e-4) / 1e-3)
    assert lam("polynomial", 31, lr_end=1e-4) == pytest.approx(0.1)
    # 2 cycles over 20 decay steps: half-way down at step 15, restart at step 20
    assert lam("cosine_hard_restarts", 15, num_cycles=2) == pytest.approx(0.5)
    assert lam("cosine_hard_restarts", 20, num_cycles=2) == pytest.approx(1.0)
    assert lam("cosine_hard_restarts", 25, num_cycles=2) == pytest.approx(0.5)
    assert lam("cosine_hard_restarts", 30, num_cycles=2) == 0.0


def test_adam_and_adamw_weight_decay_first_step():
    p = {"w": jnp.array([1.0, -2.0])}
    g = {"w": jnp.array([0.5, 0.5])}
    adamw = torch_adam(weight_decay=0.01, decoupled=True)
    u, _ = adamw.update(g, adamw.init(p), p)
    # first Adam step: m_hat / (sqrt(v_hat) + eps) = g / (|g| + eps) ~ 1; AdamW adds wd * p
    np.testing.assert_allclose(u["w"], 1.0 + 0.01 * np.array([1.0, -2.0]), rtol=1e-4)
    adam_l2 = torch_adam(weight_decay=0.1, decoupled=False)
    u, _ = adam_l2.update(g, adam_l2.init(p), p)
    np.testing.assert_allclose(u["w"], [1.0, 1.0], rtol=1e-4)  # g + wd p = 0.6, 0.3 (> 0)


# ------------------------------------------------------------------------------ modules, loss


def test_autoencoder_inits_and_shapes():
    key = jax.random.PRNGKey(0)
    lin = LinearAE(x_dim=40, latent=20)
    p = lin.init(key, jnp.zeros((1, 40)))["params"]
    assert np.all(p["encoder"]["bias"] == 0) and np.all(p["decoder"]["bias"] == 0)
    std = float(np.std(np.concatenate([p["encoder"]["kernel"].ravel(),
                                       p["decoder"]["kernel"].ravel()])))
    assert std == pytest.approx(np.sqrt(2 / 60), rel=0.15)  # xavier normal
    poly = PolyAE(x_dim=8, latent=3, decoder_latent=3, poly_degree=2)
    p = poly.init(key, jnp.zeros((1, 8)))["params"]
    assert "bias" not in p["encoder_0"] and p["encoder_0"]["kernel"].shape == (8, 4)
    assert p["decoder"]["kernel"].shape == (1 + 3 + 9, 8)
    assert np.max(np.abs(p["decoder"]["kernel"])) <= 1 / np.sqrt(13)  # torch default init
    z, xh = poly.apply({"params": p}, jnp.ones((5, 8)))
    assert z.shape == (5, 3) and xh.shape == (5, 8)


def test_loss_ignores_padding_rows():
    c = tiny_md_config("linear,minmax_mmd,fast")
    method = mm.MDCRLMethod(c)
    params, _ = method.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(40, method.x_dim)), jnp.float32)
    dom = jnp.asarray(np.arange(40) % 4, jnp.int32)
    loss_weights = {"penalty_weight": jnp.float32(1.0)}
    loss = jax.jit(lambda b, w: method.loss(params, None, b, w, None, loss_weights, None))
    real, _ = loss({"x": x[:32], "domain": dom[:32]}, jnp.ones(32))
    w = jnp.concatenate([jnp.ones(32), jnp.zeros(8)])
    padded, aux = loss({"x": x, "domain": dom}, w)
    np.testing.assert_allclose(padded, real, rtol=1e-5)
    assert float(aux["penalty_loss"]) > 0


@pytest.mark.parametrize("shuffle", [False, True])
def test_online_codes_hold_each_batch_encoded_before_its_update(shuffle):
    """md-crl gotcha 12: stage 1's saved training codes are the last epoch's, each batch encoded
    with the weights before its own update; here only the epoch's last batch saw the weights of
    the step before the end."""
    c = tiny_md_config("poly_stage1,fast")
    c.data.z_dim, c.data.x_dim, c.data.num_domains, c.data.polynomial_degree = 4, 16, 4, 2
    c.training.shuffle = shuffle
    method, data, state = run_members.build(c, [(0, 0)])
    n, spe, b = method.n_train, method.steps_per_epoch, c.training.batchsize
    run_steps = make_run_steps(method, spe, b, 0.1, 10)
    train = {k: data["train"][k] for k in method.options.train_inputs}
    state, _ = run_steps(state, train, jnp.asarray(spe - 1, jnp.int32), "stage1")
    before = jax.tree_util.tree_map(np.array, member(state.params, 0))
    state, _ = run_steps(state, train, jnp.asarray(1, jnp.int32), "stage1")
    codes = np.asarray(state.model_state["online_codes"][0])
    x = data["train"]["x"][0]
    by_before = np.all(np.isclose(codes, np.asarray(method.encode(before, {}, x)), atol=1e-6), 1)
    assert codes.shape == (n, 4) and np.isfinite(codes).all()
    assert by_before.sum() == n - (spe - 1) * b
    if not shuffle:
        assert by_before[(spe - 1) * b:].all()
    final = np.asarray(method.encode(member(state.params, 0), {}, x))
    assert not np.allclose(codes, final, atol=1e-6)


def test_per_dispatch_steps_match_the_multi_step_call():
    """`Method.convolutional` on CPU: one compiled step per dispatch, the same steps and stats
    as the multi-step call (here on the linear autoencoder, marked convolutional)."""
    c = tiny_md_config("linear,minmax,fast")
    c.sweep.seeds = "1,2"
    out = {}
    for per_dispatch in (False, True):
        method, data, state = run_members.build(c, sweep_members(c))
        method.convolutional = per_dispatch
        run_steps = make_run_steps(method, method.steps_per_epoch, c.training.batchsize, 0.1, 10)
        train = {k: data["train"][k] for k in method.options.train_inputs}
        state, stats = run_steps(state, train, jnp.asarray(5, jnp.int32), "stage1")
        out[per_dispatch] = (state, stats, dict(run_steps.traces))
    (a, sa, ta), (b, sb, tb) = out[False], out[True]
    assert ta == tb == {"stage1": 1}
    np.testing.assert_array_equal(a.step, b.step)
    for x, y in zip(jax.tree_util.tree_leaves((a.params, sa)),
                    jax.tree_util.tree_leaves((b.params, sb))):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_a_phase_compiled_ahead_takes_the_same_steps():
    """`run_steps.compile_ahead`: a later phase compiled in the background while the first
    runs gives the steps that compiling it at its first call gives, bit for bit (MD-CRL's
    loss ignores the phase's name, so "later" is the same program under another key)."""
    c = tiny_md_config()
    out = []
    for ahead in (False, True):
        method, data, state = run_members.build(c, sweep_members(c))
        run_steps = make_run_steps(method, method.steps_per_epoch, c.training.batchsize, 0.1, 10)
        if ahead:
            run_steps.compile_ahead(["stage1", "later"])
        train = {k: data["train"][k] for k in method.options.train_inputs}
        state, _ = run_steps(state, train, np.int32(3), "stage1")
        state, stats = run_steps(state, train, np.int32(4), "later")
        out.append((state, stats, dict(run_steps.traces), set(run_steps.used_ahead)))
    (a, sa, ta, ua), (b, sb, tb, ub) = out
    assert ta == tb == {"stage1": 1, "later": 1}
    assert ua == set() and ub == {"later"}
    for x, y in zip(jax.tree_util.tree_leaves((a, sa)), jax.tree_util.tree_leaves((b, sb))):
        np.testing.assert_array_equal(x, y)


def test_whole_epochs_in_one_call_match_one_epoch_a_call():
    """`RunOptions.traced_epoch_end`: epochs with their validation, plateau and early-stopping
    ends inside one compiled call train exactly as one call an epoch with the epoch end on the
    host: the same loss rows, steps, stopping epochs and parameters, in fewer calls. Member 1
    stops early (patience 1), member 2 later; the call stops after the epoch where both have."""
    c = tiny_md_config()
    c.sweep.seeds = "1,2"
    c.training.epochs = 40
    c.training.min_epochs = 2
    c.training.early_stopping.patience = 1
    c.training.early_stopping.min_delta = 0.2
    out = {}
    for epochs_a_call in (1, 1000):
        method, data, state = run_members.build(c, sweep_members(c))
        c.training.steps_per_call = epochs_a_call * method.steps_per_epoch
        calls = []
        state = train(method, state, {k: data["train"][k] for k in method.options.train_inputs},
                      c, progress=False, eval_data=data,
                      on_call_end=lambda s, info: calls.append(info["rows"]))
        out[epochs_a_call] = state, [row for rows in calls for row in rows], len(calls)
    (a, rows_a, calls_a), (b, rows_b, calls_b) = out[1], out[1000]
    assert calls_b < calls_a // 4
    assert [(s, e) for s, e, _ in rows_a] == [(s, e) for s, e, _ in rows_b]
    np.testing.assert_array_equal(np.stack([r for _, _, r in rows_a]),
                                  np.stack([r for _, _, r in rows_b]))
    assert int(a.step[0]) == int(b.step[0]) < 40 * method.steps_per_epoch
    stopped = np.asarray(a.model_state["stopped_epoch"])
    assert stopped[0] != stopped[1]
    np.testing.assert_array_equal(stopped, b.model_state["stopped_epoch"])
    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(a.model_state["val_loss"], b.model_state["val_loss"], rtol=1e-5)


def test_whole_epochs_end_before_a_phase_change_or_reset():
    phases = ["a"] * 5 + ["b"] * 5
    assert whole_epochs(0, 10, 100, phases, frozenset()) == 5
    assert whole_epochs(50, 10, 3, phases, frozenset()) == 3
    assert whole_epochs(80, 10, 100, phases, frozenset()) == 2
    assert whole_epochs(10, 10, 100, phases, frozenset({3})) == 2
    assert whole_epochs(15, 10, 100, phases, frozenset()) == 0  # mid-epoch
    assert whole_epochs(0, 10, 1, phases, frozenset()) == 0


def test_sequential_members_match_vmapped_members():
    """`training.member_loop`: members one after the other give the vmapped members' numbers;
    "auto" picks sequential only for an MMD penalty on one CPU device."""
    c = tiny_md_config("linear,mmd,fast")
    c.sweep.seeds = "3,5"
    params = {}
    for loop in ("vmap", "sequential"):
        c.training.member_loop = loop
        method, data, state = run_members.build(c, sweep_members(c))
        assert method.options.member_loop == loop
        run_steps = make_run_steps(method, method.steps_per_epoch, c.training.batchsize, 0.1,
                                   10)
        train = {k: data["train"][k] for k in method.options.train_inputs}
        state, _ = run_steps(state, train, jnp.asarray(method.steps_per_epoch, jnp.int32),
                             "stage1")
        params[loop] = state.params
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                           params["vmap"], params["sequential"])
    single_cpu = jax.default_backend() == "cpu" and jax.local_device_count() == 1
    assert mm.resolve_member_loop("auto", True) == ("sequential" if single_cpu else "vmap")
    assert mm.resolve_member_loop("auto", False) == "vmap"


def test_adaptive_mmd_counts_and_reports_rows_beyond_capacity(caplog):
    """A row budget below the domain counts leaves rows out: counted per step in the model state
    and logged at the epoch's end; the automatic budget leaves none out on balanced data."""
    counts = {}
    for capacity in (8, None):
        c = tiny_md_config("linear,mmd,fast")
        c.model.mmd.capacity = capacity
        method, data, state = run_members.build(c, sweep_members(c))
        assert method.count_mmd_overflow
        run_steps = make_run_steps(method, method.steps_per_epoch, c.training.batchsize, 0.1,
                                   10)
        train = {k: data["train"][k] for k in method.options.train_inputs}
        state, stats = run_steps(state, train, jnp.asarray(method.steps_per_epoch, jnp.int32),
                                 "stage1")
        with caplog.at_level("WARNING", logger="wscrl_jax"):
            method.end_epoch(state, 0, stats, data)
        counts[capacity] = int(state.model_state["mmd_rows_beyond_capacity"][0])
    # the loader reads the training split in order: batches of 256 consecutive rows
    domains = np.asarray(data["train"]["domain"][0]).reshape(-1)
    expected = 0
    for start in range(0, len(domains), 256):
        n = np.bincount(domains[start:start + 256], minlength=4)
        expected += sum(2 * max(min(n[i], n[j]) - 8, 0) for i in range(4) for j in range(i + 1, 4))
    assert counts[8] == expected > 0
    assert counts[None] == 0
    assert sum("left out" in r.message for r in caplog.records) == 1


def test_warmup_gives_zero_weight_at_step_zero():
    method = mm.MDCRLMethod(tiny_md_config())
    spe = method.steps_per_epoch
    assert float(method.loss_weights(0.0)["penalty_weight"]) == 0.0
    assert float(method.loss_weights(1 / spe)["penalty_weight"]) == 1.0


# ------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def linear_runs(tmp_path_factory):
    """Linear min-max, 2 seeds as one vmapped run, and the same without penalty (a larger
    constant learning rate than the reference's so 960 steps suffice)."""
    out = {}
    for name, weight in (("minmax", 1.0), ("none", 0.0)):
        c = tiny_md_config()
        c.training.epochs = 120
        c.optimizer.lr = 1e-2
        c.scheduler.type = "none"
        c.model.penalty_weight = weight
        c.sweep.seeds = "3,5"
        wd = str(tmp_path_factory.mktemp(name))
        out[name] = (c, wd, experiment.run(c, wd, progress=False))
    return out


def test_linear_minmax_recovers_invariant_block(linear_runs):
    _, wd, rows = linear_runs["minmax"]
    _, _, base = linear_runs["none"]
    assert [(r["seed"], r["data_seed"]) for r in rows] == [(3, 3), (5, 5)]
    pen = np.median([r["hz_z_~r2"] for r in rows])
    unpen = np.median([r["hz_z_~r2"] for r in base])
    assert pen > 0.9 and pen > unpen + 0.3, (pen, unpen)
    assert np.median([r["heldout_hz_z_~r2"] for r in rows]) > 0.9
    assert np.median([r["hz_~z_~r2"] for r in rows]) < 0.2
    file_rows = read_csv(os.path.join(wd, "metrics", "test_metrics.csv"))
    assert list(file_rows[0])[:6] == ["", "seed", "data_seed", "status", "hz_z_~r2", "hz_~z_~r2"]
    assert "heldout_hz_z_~r2" in file_rows[0] and "full_~r2" in file_rows[0]
    # `*_linreg_start`: the untrained linear encoder is already a generic linear map of z, so
    # all of z is recoverable from all of z_hat, but not the invariant part from the first block.
    for r in rows:
        assert r["~r2_linreg_start"] > 0.99
        assert r["hz_z_~r2_linreg_start"] < r["hz_z_~r2"] - 0.3
    assert sorted(os.listdir(os.path.join(wd, "figures"))) == ["invariant_scatter.png",
                                                               "training_curves.png"]


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    c1 = tiny_md_config("poly_stage1,fast")
    c1.data.z_dim, c1.data.x_dim, c1.data.num_domains, c1.data.polynomial_degree = 4, 16, 4, 2
    c1.training.epochs = 30
    w1 = str(tmp_path_factory.mktemp("stage1"))
    rows1 = experiment.run(c1, w1, progress=False)
    c2 = tiny_md_config("poly_stage2,fast")
    c2.data.stage1_workdir = w1
    c2.training.epochs = 40
    c2.training.min_epochs = 40
    validate_config(c2)
    w2 = str(tmp_path_factory.mktemp("stage2"))
    rows2 = experiment.run(c2, w2, progress=False)
    return w1, rows1, rows2


def test_stage1_writes_codes_and_stage2_trains_on_them(two_stage):
    w1, rows1, rows2 = two_stage
    with open(os.path.join(w1, "encoded", "meta.json")) as f:
        meta = json.load(f)
    assert meta["latent_dim"] == 4 and meta["num_domains"] == 4 and meta["z_dim"] == 4
    data = load_encoded_splits(w1, 0)
    assert set(data) == {"train", "valid", "test"}
    for name in ("train", "valid"):  # scaled to [-1, 1] with the split's own extrema
        assert float(jnp.min(data[name]["x"])) == pytest.approx(-1.0)
        assert float(jnp.max(data[name]["x"])) == pytest.approx(1.0)
    # the test split (held-out R^2 only) is scaled with the training extrema
    with np.load(os.path.join(w1, "encoded", "member0.npz")) as f:
        lo, hi = f["z_hat_train"].min(), f["z_hat_train"].max()
        want = 2.0 * (f["z_hat_test"] - lo) / (hi - lo) - 1.0
    np.testing.assert_allclose(data["test"]["x"], want, rtol=1e-5, atol=1e-6)
    assert np.isfinite(rows2[0]["hz_z_~r2"]) and np.isfinite(rows1[0]["hz_z_~r2"])
    assert rows2[0]["hz_z_~r2"] > rows1[0]["hz_z_~r2"]
    # stage 2's start metrics read its input, the stage-1 codes: the same in-sample fit as
    # stage 1's whole-validation-set R^2 from all codes to all of z.
    assert rows2[0]["~r2_linreg_start"] == pytest.approx(rows1[0]["full_~r2"], abs=1e-4)


def test_stage2_without_stage1_output_fails_in_one_line(tmp_path):
    c = load_config("md_mixing", "poly_stage2")
    c.data.stage1_workdir = str(tmp_path)
    with pytest.raises(ConfigError, match="holds no stage-1 output"):
        validate_config(c)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"),
         "--config", os.path.join(ROOT, "configs", "md_mixing.py") + ":poly_stage2",
         "--workdir", str(tmp_path / "w2"), f"--config.data.stage1_workdir={tmp_path}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "stage-1 output" in lines[0], proc.stderr


def test_config_variants_and_validation():
    for arg in ("linear,minmax", "linear,mmd", "linear,minmax_mmd,dynamic", "linear,none",
                "poly_stage1"):
        validate_config(load_config("md_mixing", arg))
    c = load_config("md_mixing", "linear,mmd,dynamic")
    assert c.model.mmd.fix_sigma is None and c.data.correlated_z and c.data.corr_prob == 0.5
    assert c.model.penalty_criterion.minmax == 0.0
    c = load_config("md_mixing", "linear")
    c.scheduler.type = "exponential"
    with pytest.raises(ConfigError, match="scheduler.type"):
        validate_config(c)
    with pytest.raises(ValueError, match="unknown .*option"):
        load_config("md_mixing", "linear,bogus")


def test_grid_sweep_parsing_and_validation():
    assert parse_grid("data.z_dim=8,16; data.num_domains=2") == [
        ("data.z_dim", [8, 16]), ("data.num_domains", [2])]
    assert parse_grid("") == []
    c = load_config("md_mixing", "linear")
    c.sweep.grid = "data.z_dim=4,8;model.penalty_weight=0.0,1.0"
    validate_config(c)
    c.sweep.grid = "data.zdim=4"
    with pytest.raises(ConfigError, match="unknown key"):
        validate_config(c)


def test_truncated_stage1_codes_are_one_clear_error(two_stage, tmp_path):
    w1, _, _ = two_stage
    copy = tmp_path / "w1"
    shutil.copytree(w1, copy)
    codes = copy / "encoded" / "member0.npz"
    codes.write_bytes(codes.read_bytes()[: codes.stat().st_size // 2])
    with pytest.raises(Stage1OutputMissing, match="cannot be read.*rerun stage 1"):
        load_encoded_splits(str(copy), 0)
