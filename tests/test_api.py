"""The Python API (`wscrl_jax.load`, `train`, `get_config`) on tiny trained runs: the loaded
model reproduces the run's evaluation (DCI of its causal codes, intervention accuracy), its
counterfactuals set their target, loading never writes the workdir, two-stage runs take raw
images, and every bad use is one APIError line."""

import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import wscrl_jax
from conftest import ROOT, load_config
from wscrl_jax.api.lcm_model import LCMModel
from wscrl_jax.api.load import Restored
from wscrl_jax.eval.dci import compute_dci_members
from wscrl_jax.eval.interventions import intervention_metrics
from wscrl_jax.methods import get_method
from wscrl_jax.train.state import init_states

sys.path.insert(0, os.path.join(ROOT, "examples"))
import counterfactuals  # noqa: E402  (examples/counterfactuals.py)


@pytest.fixture(scope="module")
def ilcm_run(tmp_path_factory):
    """The example's tiny smoke run (3 variables), trained through `wscrl_jax.train`."""
    workdir = str(tmp_path_factory.mktemp("api_ilcm"))
    rows = wscrl_jax.train(counterfactuals.smoke_config(tiny=True), workdir)
    return workdir, rows


@pytest.fixture(scope="module")
def model(ilcm_run):
    return wscrl_jax.load(ilcm_run[0])


def tree_snapshot(path):
    """{relative path: (size, mtime)} of every file and folder under path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.stat(full)
            out[os.path.relpath(full, path)] = (st.st_size, st.st_mtime_ns)
    return out


def test_import_is_cheap_and_exports_the_api():
    code = ("import sys, wscrl_jax; assert 'jax' not in sys.modules; "
            "assert callable(wscrl_jax.load) and 'jax' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": ROOT})
    assert issubclass(wscrl_jax.APIError, wscrl_jax.api.errors.ConfigError)


def test_causal_codes_give_the_runs_dci_and_intervention_accuracy(ilcm_run, model):
    _, rows = ilcm_run
    cfg = model.config
    train = model.dataset("dci_train")
    test = model.dataset(cfg.eval.eval_partition)
    codes_train = model.encode_to_causal(train["x1"])
    codes_test = model.encode_to_causal(test["x1"])
    dci, = compute_dci_members(jnp.asarray(codes_train[None]), jnp.asarray(train["z1"][None]),
                               jnp.asarray(codes_test[None]), jnp.asarray(test["z1"][None]),
                               backend=cfg.eval.dci_backend,
                               random_state=cfg.eval.dci_random_state)
    assert dci["disentanglement"] == pytest.approx(rows[0]["causal_disentanglement"], abs=1e-5)
    inferred = model.infer_intervention(test["x1"], test["x2"])
    assert inferred.label.shape == (len(test["x1"]),)
    assert inferred.posterior.shape == (len(test["x1"]), 4)
    accuracy = intervention_metrics(inferred.posterior, test["intervention_labels"], 3)
    assert accuracy["intervention_accuracy"] == pytest.approx(rows[0]["intervention_accuracy"],
                                                              abs=1e-9)


def test_chunks_inputs_and_member_axes_agree(ilcm_run, model):
    x = model.dataset("test")["x1"][:50]
    whole = model.encode_to_causal(x)
    small = wscrl_jax.load(ilcm_run[0], chunk=16)  # 4 chunks, the last one padded
    assert np.allclose(small.encode_to_causal(jnp.asarray(x)), whole, atol=1e-6)
    assert isinstance(whole, np.ndarray) and whole.shape == (50, 3)
    one = wscrl_jax.load(ilcm_run[0], member=0)
    assert np.array_equal(one.encode_to_causal(x), whole)
    stochastic = [model.encode_to_causal(x, deterministic=False, seed=s) for s in (1, 1, 2)]
    assert np.array_equal(stochastic[0], stochastic[1])
    assert not np.allclose(stochastic[0], stochastic[2])
    assert model.decode_noise(model.encode_to_noise(x)).shape == (50, 3)
    assert np.allclose(model.decode_noise(model.encode_to_noise(x)), model.encode_decode(x))
    pair = model.encode_decode_pair(x, x)
    assert pair["e1_proj"].shape == (50, 3) and pair["x2_reco"].shape == (50, 3)
    assert np.all(np.isfinite(model.log_likelihood(x, x)))


def test_intervention_sets_the_target_and_the_identity_intervention_changes_nothing(model):
    x = model.dataset("test")["x1"][:64]
    z = model.encode_to_causal(x)
    for target in range(3):
        x_cf, z_cf = model.intervene(x, target, 0.7, return_causal=True)
        assert x_cf.shape == x.shape and np.allclose(z_cf[:, target], 0.7, atol=1e-4)
        same = model.intervene(x, target, z[:, target])  # do(z_i = its own value)
        assert np.allclose(same, model.encode_decode(x), atol=1e-4)


def test_sample_gives_pairs_that_differ_only_at_their_target_noise(model):
    s = model.sample(300, seed=3)
    assert s["x1"].shape == (300, 3) and s["z2"].shape == (300, 3)
    assert set(np.unique(s["intervention"])) <= {0, 1, 2, 3}
    untouched = np.arange(3)[None, :] != (s["intervention"][:, None] - 1)
    assert np.array_equal(s["e1"][untouched], s["e2"][untouched])
    assert np.array_equal(model.sample(300, seed=3)["x1"], s["x1"])


def test_load_writes_nothing_and_graph_needs_an_evaluated_graph(ilcm_run, model):
    workdir = ilcm_run[0]
    before = tree_snapshot(workdir)
    again = wscrl_jax.load(workdir)
    again.encode_to_causal(np.zeros((3, 3)))
    with pytest.raises(wscrl_jax.APIError, match="no implicit graph"):
        again.graph("implicit")  # eval.graphs was off in this run
    graph = again.graph("implicit", x1=model.dataset("test")["x1"][:128])
    assert graph.adjacency.shape == (3, 3) and graph.strength.shape == (3, 3)
    assert tree_snapshot(workdir) == before


def test_damaged_checkpoint_falls_back_and_leaves_the_files(ilcm_run, tmp_path):
    workdir = str(tmp_path / "copy")
    shutil.copytree(ilcm_run[0], workdir)
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints"))
                   if s.isdigit())
    assert len(steps) >= 2
    meta = os.path.join(workdir, "checkpoints", str(steps[-1]), "meta", "metadata")
    with open(meta, "r+b") as f:  # the meta JSON no longer parses
        f.write(b"\x00garbled")
    before = tree_snapshot(workdir)
    with pytest.warns(wscrl_jax.LoadWarning, match=f"loaded step {steps[-2]}"):
        older = wscrl_jax.load(workdir)
    assert older.step == steps[-2]
    assert tree_snapshot(workdir) == before  # nothing moved aside


def test_bad_use_is_one_api_error(ilcm_run, model, tmp_path):
    workdir = ilcm_run[0]
    x = model.dataset("test")["x1"][:8]
    cases = [
        (lambda: wscrl_jax.load(str(tmp_path)), "no checkpoint in"),
        (lambda: wscrl_jax.load(str(tmp_path / "missing")), "does not exist"),
        (lambda: wscrl_jax.load(workdir, member=1), "member=1 is out of range"),
        (lambda: wscrl_jax.load(workdir, step=7), "no checkpoint at step 7"),
        (lambda: model.encode_to_causal(np.zeros((4, 5))), r"expects \[N, 3\]"),
        (lambda: model.encode_to_causal(np.where(np.eye(8, 3) > 0, np.nan, x)),
         "holds 3 NaN"),
        (lambda: model.intervene(x, 3, 0.0), "target=3 is out of range"),
        (lambda: model.intervene(x, 0, np.ones(5)), "value has shape"),
        (lambda: model.graph("learned"), "without a learned graph"),
        (lambda: model.sample(0), "positive integer"),
    ]
    for call, message in cases:
        with pytest.raises(wscrl_jax.APIError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


def untrained(variant):
    """An untrained model of configs/scaling.py:<variant>,fast (3 variables), not from disk."""
    config = load_config("scaling", f"{variant},fast")
    config.data.dim_z = 3
    method = get_method(config)
    state = init_states(method, [0])
    restored = Restored("unused", method, {"params": state.params,
                                           "model_state": state.model_state},
                        [(0, 0)], [0], 0, config, single=True)
    return LCMModel(restored)


def test_elcm_intervenes_through_its_explicit_scm():
    elcm = untrained("elcm")
    assert elcm.kind == "elcm"
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    x_cf, z_cf = elcm.intervene(x, 1, -0.3, return_causal=True)
    assert x_cf.shape == (20, 3) and np.allclose(z_cf[:, 1], -0.3)
    assert elcm.infer_intervention(x, x_cf).posterior.shape == (20, 4)
    assert elcm.graph("learned").adjacency.shape == (3, 3)
    assert elcm.sample(10)["z2"].shape == (10, 3)


def test_a_model_without_a_causal_model_refuses_intervene():
    betavae = untrained("betavae")
    x = np.zeros((4, 3), np.float32)
    assert betavae.encode_to_causal(x).shape == (4, 3)
    with pytest.raises(wscrl_jax.APIError, match="beta-VAE has none"):
        betavae.intervene(x, 0, 1.0)
    with pytest.raises(wscrl_jax.APIError, match="no intervention posterior"):
        betavae.infer_intervention(x, x)


def test_get_config_and_train_errors_match_the_cli(tmp_path):
    c = wscrl_jax.get_config("scaling.py:ilcm,fast", {"data.dim_z": 3})
    assert c.data.dim_z == 3 and c.data.dim_x == 3  # dim_x follows dim_z as on the CLI
    path = os.path.join(ROOT, "configs", "scaling.py")
    assert wscrl_jax.get_config(path + ":dvae").model.scm.adjacency_matrix == "none_trivial"
    with pytest.raises(wscrl_jax.APIError, match="unknown config key 'data.nope'"):
        wscrl_jax.get_config("scaling.py:ilcm", {"data.nope": 1})
    with pytest.raises(wscrl_jax.APIError, match="not found"):
        wscrl_jax.get_config("nothing.py:ilcm")
    with pytest.raises(wscrl_jax.APIError, match="could not load the config"):
        wscrl_jax.get_config("scaling.py:nomethod")
    bad = wscrl_jax.get_config("scaling.py:ilcm,fast", {"training.batchsize": 0})
    with pytest.raises(wscrl_jax.APIError) as info:
        wscrl_jax.train(bad, str(tmp_path / "api"))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"),
                          f"--config={path}:ilcm,fast", "--config.training.batchsize=0",
                          f"--workdir={tmp_path / 'cli'}"], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: {info.value}"


def test_example_draws_counterfactuals(ilcm_run, tmp_path):
    workdir = str(tmp_path / "example")
    shutil.copytree(ilcm_run[0], workdir)  # the example's tiny run, finished: not retrained
    path, errors = counterfactuals.main(["--tiny", "--workdir", workdir, "--n", "200"])
    assert os.path.getsize(path) > 10000
    assert errors["target"].shape == (1, 3) and np.all(np.isfinite(errors["target"]))
    assert np.all(errors["roundtrip"] >= 0)


# ---------------------------------------------------------------- acceptance on the smoke model


@pytest.fixture(scope="module")
def smoke_model(tmp_path_factory):
    """The README's smoke run (configs/scaling.py:ilcm,fast, 3 variables, seeds 42)."""
    workdir = str(tmp_path_factory.mktemp("api_smoke"))
    wscrl_jax.train(counterfactuals.smoke_config(), workdir)
    return wscrl_jax.load(workdir)


def _implicit_adjacency(model, x):
    try:
        return model.graph("implicit").adjacency
    except wscrl_jax.APIError:
        return model.graph("implicit", x1=x).adjacency


@pytest.mark.slow
def test_smoke_model_counterfactuals_are_causal(smoke_model):
    """Medians over 1,000 test observations, in units of each variable's test std (2-core CPU,
    jax 0.10): targets 0.036 / 0.013 / 0.017 from their values; non-descendants of z_0 and z_1
    move 0.039 / 0.045, within 0.1; do(z_2) moves a non-descendant 0.118 (a dependence of the
    learned solution functions below the implicit graph's 0.1 threshold), so its bound here is
    0.15 (docs/python_api.md states it)."""
    x = smoke_model.dataset("test")["x1"][:1000]
    errors = counterfactual_summary(smoke_model, x)
    assert np.all(errors["target"] <= 0.2)
    bound = np.maximum([0.1, 0.1, 0.15], errors["roundtrip"])
    assert np.all(errors["non_descendants"] <= bound), errors


@pytest.mark.slow
def test_smoke_model_samples_match_the_test_split(smoke_model):
    test = smoke_model.dataset("test")
    samples = smoke_model.sample(len(test["x1"]), seed=0)
    for name in ("x1", "z1"):
        if name == "z1":  # the model's causal variables, against those of the test split
            reference = smoke_model.encode_to_causal(test["x1"])
        else:
            reference = test["x1"]
        mean_error = np.abs(samples[name].mean(0) - reference.mean(0)) / reference.std(0)
        cov_s, cov_t = np.cov(samples[name].T), np.cov(reference.T)
        cov_error = np.linalg.norm(cov_s - cov_t) / np.linalg.norm(cov_t)
        print(f"sample {name}: mean error {mean_error.max():.3f} std, covariance "
              f"relative Frobenius error {cov_error:.3f}")
        assert mean_error.max() < 0.1 and cov_error < 0.1


@pytest.mark.slow
def test_sweep_counterfactuals_all_members_at_once(tmp_path_factory):
    """A 3 x 3 sweep (model seeds x data seeds) of the smoke run, every member at once."""
    workdir = str(tmp_path_factory.mktemp("api_sweep"))
    config = counterfactuals.smoke_config()
    config.sweep.seeds = "42,43,44"
    config.sweep.data_seeds = "42,43,44"
    wscrl_jax.train(config, workdir)
    model = wscrl_jax.load(workdir)
    assert model.num_members == 9
    x = model.dataset("test")["x1"][:, :1000]  # each member its own test split
    errors = counterfactual_summary(model, x)
    assert np.median(errors["target"]) <= 0.2
    assert np.median(errors["non_descendants"] - np.maximum(0.1, errors["roundtrip"])) <= 0


def counterfactual_summary(model, x):
    errors = counterfactuals.counterfactual_errors(model, x, _implicit_adjacency(model, x))
    for name, values in errors.items():
        print(f"{name} (members x targets): {np.round(values, 3).tolist()}")
    return errors
