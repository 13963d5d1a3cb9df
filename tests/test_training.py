"""End-to-end: a tiny ILCM run learns, is deterministic, checkpoints, resumes and evaluates."""

import json
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import tiny_scaling_config
from wscrl_jax import experiment
from wscrl_jax.run import evaluation, workdir as run_workdir
from wscrl_jax.run import members as run_members
from wscrl_jax.train.sweep import sweep_members
from wscrl_jax.cli import load_config
from wscrl_jax.lcm import evaluate as lcm_evaluate
from wscrl_jax.tracking import read_csv
from wscrl_jax.train import checkpoint, loop
from wscrl_jax.train.preemption import Interrupted, StopRequest


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny 6-epoch ILCM run (2 variables, 3 phases of 2 epochs, 3 calls an epoch), shared
    by the tests of this module; also returns {"traces": the traces of each phase's compiled
    call, "orders": the step of each epoch permutation made}."""
    config = tiny_scaling_config("ilcm")
    config.training.epochs = 6
    config.training.pretrain_epochs = 2
    config.training.model_interventions_after_epoch = 2
    config.training.deterministic_intervention_encoder_after_epoch = 4
    config.data.samples.train = 12800  # 200 steps per epoch
    config.training.steps_per_call = 70  # calls of 70, 70 and 60 steps
    # Six tiny epochs disentangle some 2-variable ground truths and not others (reference
    # ground truth, model seed 42: data seed 302 0.58, 1 0.53, 42 0.15, 3 0.01).
    config.data.nature.seed = 302
    workdir = str(tmp_path_factory.mktemp("run"))
    compiled = []

    orders = []

    def make_run_steps(*args, **kwargs):
        compiled.append(loop_make_run_steps(*args, **kwargs))
        epoch_orders = compiled[-1].epoch_orders

        def counted(state, data):
            orders.append(int(state.step[0]))
            return epoch_orders(state, data)

        compiled[-1].epoch_orders = counted
        return compiled[-1]

    loop_make_run_steps = loop.make_run_steps
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "make_run_steps", make_run_steps)
        rows = experiment.run(config, workdir, progress=False)
    assert len(compiled) == 1
    return config, workdir, rows, {"traces": dict(compiled[0].traces), "orders": orders,
                                   "used_ahead": set(compiled[0].used_ahead),
                                   "rolled_hash": dict(compiled[0].rolled_hash)}


def untrained_disentanglement(config):
    method, data, state = run_members.build(config, sweep_members(config))
    first = lambda tree: jax.tree_util.tree_map(lambda x: x[:1], tree)  # noqa: E731
    metrics, = method.evaluate(first(state.params), first(state.model_state), first(data),
                               jax.random.PRNGKey(0)[None], first(state.params), real=1,
                               progress=False)
    return metrics["causal_disentanglement"]


def test_run_learns_and_writes_metrics(trained):
    config, workdir, rows, _ = trained
    train_rows = read_csv(os.path.join(workdir, "metrics", "train_metrics.csv"))
    losses = [float(r["loss"]) for r in train_rows]
    assert losses[-1] < losses[0] - 10.0  # the ELBO-based loss falls a lot from init
    test_rows = read_csv(os.path.join(workdir, "metrics", "test_metrics.csv"))
    assert len(test_rows) == 1 and test_rows[0]["status"] == "ok"
    columns = list(test_rows[0])
    assert columns[:8] == ["", "seed", "data_seed", "status", "causal_informativeness_train",
                           "causal_informativeness_test", "causal_disentanglement",
                           "causal_completeness"]
    assert columns[-1] == "nll" and "intervention_accuracy" in columns and "kl_e" in columns
    assert np.isfinite(float(test_rows[0]["nll"]))
    assert sorted(os.listdir(os.path.join(workdir, "figures"))) == ["dci_importance.png",
                                                                    "training_curves.png"]
    before = untrained_disentanglement(config)
    assert rows[0]["causal_disentanglement"] > before + 0.2, (before, rows[0])


def test_each_epoch_is_shuffled_once(trained):
    """The epoch's permutation is made at its first call and reused by its other two."""
    assert trained[3]["orders"] == [0, 200, 400, 600, 800, 1000]


def test_each_phase_compiles_once(trained):
    """Pretraining, main phase and deterministic encoder: 3 phases, each traced once over
    its 6 calls of two different lengths; the two later phases compiled in the background
    (`compile_ahead`) while pretraining ran, and their calls ran those compilations."""
    traces = trained[3]["traces"]
    assert sorted(traces.values()) == [1, 1, 1], traces
    assert sorted(phase.pretrain for phase in traces) == [False, False, True]
    assert trained[3]["used_ahead"] == {phase for phase in traces if not phase.pretrain}


def test_the_main_phases_lower_the_hash_rolled(trained):
    """The LCM method's `RunOptions.rolled_hash`: the ILCM phases after pretraining trace (in
    the background thread) inside `rolled_threefry`, pretraining (in the calling thread)
    outside it."""
    forms = sorted((phase.pretrain, rolled) for phase, rolled in trained[3]["rolled_hash"].items())
    assert forms == [(False, True), (False, True), (True, False)], forms


def test_adam_starts_the_scm_when_pretraining_ends(trained):
    """torch skips the parameters pretraining does not reach (gradient None): the SCM's and
    the intervention encoder's Adam counts start at the main phase (800 of the 1200 steps),
    the autoencoder's at the first step."""
    config, workdir, _, _ = trained
    template = run_members.build(config, sweep_members(config))[2]
    step, state, _ = checkpoint.restore_latest_intact(workdir, template)
    counts = {jax.tree_util.keystr(path)[2:].split("'")[0]: int(c[0]) for path, c in
              jax.tree_util.tree_flatten_with_path(state.opt_state.count)[0]}
    assert step == 1200 and int(state.nan_count[0]) == 0
    assert counts == {"encoder": 1200, "decoder": 1200, "scm": 800, "int_encoder": 800}, counts


@pytest.mark.slow
def test_same_config_gives_same_numbers(trained, tmp_path):
    config, workdir, rows, _ = trained
    again = experiment.run(config, str(tmp_path), progress=False)
    assert again == rows


def test_evaluate_from_checkpoint_reproduces_metrics(trained):
    _, workdir, rows, _ = trained
    original = read_csv(os.path.join(workdir, "metrics", "test_metrics.csv"))
    os.remove(os.path.join(workdir, "metrics", "test_metrics.csv"))
    evaluation.evaluate_workdir(workdir)
    assert read_csv(os.path.join(workdir, "metrics", "test_metrics.csv")) == original


def test_resume_after_interruption_matches(trained, tmp_path):
    """Drop the last checkpoints as if the process had been killed, rerun: same metrics."""
    config, workdir, rows, _ = trained
    resumed_dir = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed_dir)
    steps = sorted(int(s) for s in os.listdir(checkpoint.checkpoint_dir(resumed_dir))
                   if s.isdigit())
    assert len(steps) >= 2
    shutil.rmtree(os.path.join(checkpoint.checkpoint_dir(resumed_dir), str(steps[-1])))
    os.remove(os.path.join(resumed_dir, "metrics", "test_metrics.csv"))
    assert checkpoint.latest_step(resumed_dir) == steps[-2] < steps[-1]
    again = experiment.run(config, resumed_dir, progress=False)
    assert again == rows
    # the steps trained twice are written once: same training log as the uninterrupted run
    metrics = [os.path.join(d, "metrics", "train_metrics.csv") for d in (workdir, resumed_dir)]
    assert read_csv(metrics[1]) == read_csv(metrics[0])


def test_evaluate_without_checkpoint_fails_clearly(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        evaluation.evaluate_workdir(str(tmp_path))




def _unfinished_copy(workdir, destination):
    """A copy of a finished workdir as if killed before its last checkpoint and evaluation."""
    shutil.copytree(workdir, destination)
    steps = sorted(int(s) for s in os.listdir(checkpoint.checkpoint_dir(destination))
                   if s.isdigit())
    shutil.rmtree(os.path.join(checkpoint.checkpoint_dir(destination), str(steps[-1])))
    os.remove(os.path.join(destination, "metrics", "test_metrics.csv"))
    return steps[-2]


def test_changed_config_on_resume_is_refused(trained, tmp_path):
    config, workdir, _, _ = trained
    copy = str(tmp_path / "w")
    _unfinished_copy(workdir, copy)
    before = {name: open(os.path.join(copy, name), "rb").read()
              for name in ("config.json", "metrics/train_metrics.csv")}
    checkpoints = sorted(os.listdir(checkpoint.checkpoint_dir(copy)))
    changed = ml_collections.ConfigDict(config.to_dict())
    changed.training.lr_schedule.initial = 1e-3
    with pytest.raises(checkpoint.CheckpointError) as error:
        experiment.run(changed, copy, progress=False)
    message = str(error.value)
    assert "training.lr_schedule.initial" in message and "\n" not in message
    assert sorted(os.listdir(checkpoint.checkpoint_dir(copy))) == checkpoints
    for name, content in before.items():
        assert open(os.path.join(copy, name), "rb").read() == content


@pytest.mark.slow
def test_allowed_config_change_resumes_and_keeps_the_original_config(trained, tmp_path, caplog):
    config, workdir, _, _ = trained
    copy = str(tmp_path / "w")
    step = _unfinished_copy(workdir, copy)
    original = open(os.path.join(copy, "config.json"), "rb").read()
    changed = ml_collections.ConfigDict(config.to_dict())
    changed.training.lr_schedule.initial = 1e-3
    changed.eval.beta = 0.5  # a safe key: logged, not refused
    with caplog.at_level("INFO", logger="wscrl_jax"):
        rows = experiment.run(changed, copy, progress=False, allow_config_change=True)
    assert len(rows) == 1 and np.isfinite(rows[0]["nll"])
    assert open(os.path.join(copy, "config.json"), "rb").read() == original
    saved = json.load(open(os.path.join(copy, f"config_resumed_step{step}.json")))
    assert saved["training"]["lr_schedule"]["initial"] == 1e-3
    text = caplog.text
    assert "--allow_config_change" in text and "eval.beta" in text


def test_finished_workdir_is_not_evaluated_again(trained, tmp_path, caplog):
    config, workdir, rows, _ = trained
    copy = str(tmp_path / "w")
    shutil.copytree(workdir, copy)
    metrics = os.path.join(copy, "metrics", "test_metrics.csv")
    before = open(metrics, "rb").read()
    with caplog.at_level("INFO", logger="wscrl_jax"):
        again = experiment.run(config, copy, progress=False)
    assert "finished training" in caplog.text and "Member 0" not in caplog.text
    assert again == read_csv(metrics) and open(metrics, "rb").read() == before
    assert experiment.run(config, copy, progress=False, reevaluate=True) == rows


@pytest.mark.slow  # test_resume_after_interruption_matches covers resuming by default
def test_stop_request_saves_a_checkpoint_and_resume_matches(trained, tmp_path):
    """A stop request (what SIGTERM/SIGINT set) after the second call: a checkpoint at that
    call boundary, `Interrupted`; the rerun resumes there and ends with the same metrics."""
    config, _, rows, _ = trained
    workdir = str(tmp_path / "w")
    calls = []

    def stop_after_two_calls():
        calls.append(1)
        return "SIGTERM" if len(calls) == 2 else None

    with pytest.raises(Interrupted) as stopped:
        experiment.run(config, workdir, progress=False, stop_requested=stop_after_two_calls)
    assert stopped.value.step == 140 and checkpoint.latest_step(workdir) == 140
    assert not os.path.exists(os.path.join(workdir, "metrics", "test_metrics.csv"))
    assert experiment.run(config, workdir, progress=False) == rows


def test_stop_request_records_the_first_signal_and_restores_handlers():
    previous = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert stop() is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is previous


def test_other_sweep_on_the_same_workdir_is_refused(trained, tmp_path):
    config, workdir, _, _ = trained
    copy = str(tmp_path / "w")
    shutil.copytree(workdir, copy)
    other = ml_collections.ConfigDict(config.to_dict())
    other.sweep.seeds = "42,43"
    with pytest.raises(checkpoint.CheckpointError, match="holds members"):
        experiment.run(other, copy, progress=False)
    assert sorted(os.listdir(checkpoint.checkpoint_dir(copy))) == sorted(
        os.listdir(checkpoint.checkpoint_dir(workdir)))


def test_members_are_evaluated_together_and_a_non_finite_member_is_reported(trained, tmp_path):
    """Two untrained members in one evaluation: the first scores as on its own; the second,
    with non-finite parameters, gets NaN metrics and a status saying so, not a crash."""
    config, *_ = trained
    members = [(config.seed, config.data.nature.seed)] * 2
    method, data, state = run_members.build(config, members)
    state = state.replace(params=jax.tree_util.tree_map(lambda a: a.at[1].set(jnp.nan),
                                                        state.params))
    rows = evaluation.evaluate_members(method, state, data, members, str(tmp_path), config,
                                       state.params, progress=False)
    assert rows[0]["status"] == "ok"
    assert rows[0]["causal_disentanglement"] == pytest.approx(untrained_disentanglement(config),
                                                              abs=1e-12)
    assert rows[1]["status"] == "ok; not evaluated"
    assert np.isnan(rows[1]["causal_disentanglement"])
    assert read_csv(os.path.join(str(tmp_path), "metrics", "test_metrics.csv"))[1]["status"] == (
        "ok; not evaluated")


def test_padding_members_are_left_out_of_the_dci(trained, tmp_path, monkeypatch):
    """A sweep padded with an inert copy of its last member (`build` for more devices than
    members): its DCI regressors are fit for the real member only, and its row is the real
    member's untrained score."""
    config, *_ = trained
    member = (config.seed, config.data.nature.seed)
    method, data, state = run_members.build(config, [member] * 2)  # 1 real + 1 padding
    fitted = []
    compute = lcm_evaluate.compute_dci_members

    def counted(train_codes, *args, **kwargs):
        fitted.append(train_codes.shape[0])
        return compute(train_codes, *args, **kwargs)

    monkeypatch.setattr(lcm_evaluate, "compute_dci_members", counted)
    rows = evaluation.evaluate_members(method, state, data, [member], str(tmp_path), config,
                                       state.params, progress=False)
    assert fitted == [1] and len(rows) == 1
    assert rows[0]["causal_disentanglement"] == pytest.approx(untrained_disentanglement(config),
                                                              abs=1e-12)


def test_a_checkpoint_config_without_newer_keys_is_refused_by_name():
    """A checkpoint whose config lacks keys this version has (an earlier version wrote it) is one
    CheckpointError naming them, never a silent default; safe keys may differ, others not."""
    config = tiny_scaling_config("ilcm")
    saved = json.loads(config.to_json_best_effort())
    assert run_workdir.config_changes(saved, config) == ([], [], [])
    del saved["model"]["scm"]["transform"], saved["data"]["mixing"]
    assert run_workdir.config_changes(saved, config)[0] == ["data.mixing", "model.scm.transform"]
    with pytest.raises(checkpoint.CheckpointError, match="lacks data.mixing, model.scm.transform"):
        run_workdir.check_resume_config(saved, config, "W", 5, allow_config_change=True)
    saved = json.loads(config.to_json_best_effort())
    config.training.epochs += 1
    config.model.scm.transform = "rq_spline"
    assert run_workdir.config_changes(saved, config) == ([], ["model.scm.transform"],
                                                    ["training.epochs"])
    for variant in ("md_mixing.py:linear,minmax", "md_mixing.py:poly_stage2"):
        md = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", variant))
        assert run_workdir.config_changes(json.loads(md.to_json_best_effort()), md) == ([], [], [])

