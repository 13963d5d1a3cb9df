"""What the CLI does around a run (run_guard.py and train/): storage errors recognised in one
place, the workdir's state before training, stop signals in evaluation, library noise kept in
the log. Fast: no training (the slow end-to-end checks are in test_reliability_slow.py)."""

import errno
import json
import logging
import os
import signal
import time
import types

import numpy as np
import pytest

from conftest import ROOT, load_config
from wscrl_jax import cli, experiment
from wscrl_jax.run import evaluation
from wscrl_jax.run import workdir as run_workdir
from wscrl_jax.train import library_noise, storage_errors, workdir_state
from wscrl_jax.train.preemption import StopNow, StopRequest, raise_if_stopped

CONFIG = os.path.join(ROOT, "configs", "scaling.py")
ORBAX_MESSAGE = ('RESOURCE_EXHAUSTED: Error writing "params.x/0" in OCDBT database at local file '
                 '"/w/checkpoints/16.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/ocdbt.'
                 'process_0/": Failed writing: "/w/checkpoints/16.orbax-checkpoint-tmp/d/3bca": '
                 "Failed to write 35781 bytes to file 13: No space left on device "
                 "[os_error_code='28']")


def _wrapped(inner):
    """`inner` as the context of a RuntimeError, itself the cause of a ValueError (as Orbax's
    background threads hand it on)."""
    try:
        try:
            raise inner
        except Exception:
            raise RuntimeError("while finalising")
    except RuntimeError as middle:
        outer = ValueError("save failed")
        outer.__cause__ = middle
        return outer


@pytest.mark.parametrize("exc, code, path", [
    (OSError(errno.ENOSPC, "No space left on device", "/w/metrics/x.csv.tmp"), errno.ENOSPC,
     "/w/metrics/x.csv.tmp"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), errno.EDQUOT, None),
    (OSError(errno.EROFS, "Read-only file system", "/w/config.json"), errno.EROFS,
     "/w/config.json"),
    (OSError(errno.EIO, "Input/output error"), errno.EIO, None),
    (ValueError(ORBAX_MESSAGE), errno.ENOSPC, "/w/checkpoints/16.orbax-checkpoint-tmp/d/3bca"),
    (_wrapped(ValueError(ORBAX_MESSAGE)), errno.ENOSPC,
     "/w/checkpoints/16.orbax-checkpoint-tmp/d/3bca"),
    (_wrapped(OSError(errno.ENOSPC, "No space left on device")), errno.ENOSPC, None),
])
def test_storage_errors_are_recognised_through_wrappers(exc, code, path):
    problem = storage_errors.classify(exc)
    assert problem is not None and problem.errno == code and problem.path == path


@pytest.mark.parametrize("exc", [OSError(errno.ENOENT, "No such file"), ValueError("shape"),
                                 _wrapped(KeyError("a"))])
def test_other_errors_are_not_storage_errors(exc):
    assert storage_errors.classify(exc) is None


def test_message_names_the_path_the_free_space_and_the_checkpoint_kept(tmp_path):
    (tmp_path / "checkpoints" / "32").mkdir(parents=True)
    (tmp_path / "checkpoints" / "48.orbax-checkpoint-tmp").mkdir()
    problem = storage_errors.classify(ValueError(ORBAX_MESSAGE.replace("/w", str(tmp_path))))
    line = storage_errors.message(problem, str(tmp_path))
    assert line.startswith(f"No space left on device writing {tmp_path}/checkpoints/16 (")
    assert "free of" in line and "free space there" in line
    assert "resumes from the checkpoint at step 32" in line and "\n" not in line


def test_remove_temporaries_keeps_committed_checkpoints_and_files(tmp_path):
    keep = ["checkpoints/32/state/x.tmp", "metrics/test_metrics.csv", "config.json",
            "figures/graphs.png"]
    gone = ["metrics/test_metrics.csv.tmp", "config.json.tmp", "figures/graphs.png.tmp.png",
            "encoded/member0.tmp.npz", "checkpoints/48.orbax-checkpoint-tmp/meta/metadata"]
    for name in keep + gone:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    storage_errors.remove_temporaries(str(tmp_path))
    assert all((tmp_path / name).exists() for name in keep)
    assert not any((tmp_path / name).exists() for name in gone)
    assert not (tmp_path / "checkpoints" / "48.orbax-checkpoint-tmp").exists()


def test_atomic_writes_leave_no_temporary_on_failure(tmp_path, monkeypatch):
    """A full disk while writing metrics or config.json: the old file stays, no *.tmp."""
    from wscrl_jax import tracking
    path = tmp_path / "metrics" / "test_metrics.csv"
    tracking.write_csv_atomic(str(path), [{"a": 1.0}])
    before = path.read_text()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tracking.csv, "writer", full_disk)
    with pytest.raises(OSError):
        tracking.write_csv_atomic(str(path), [{"a": 2.0}])
    assert path.read_text() == before and os.listdir(path.parent) == ["test_metrics.csv"]
    monkeypatch.undo()
    config = load_config("scaling", "ilcm,fast")
    (tmp_path / "config.json").write_text("old")
    monkeypatch.setattr(tracking.os, "replace", full_disk)  # after the temporary is written
    with pytest.raises(OSError):
        run_workdir.write_config(str(tmp_path), config, None)
    assert (tmp_path / "config.json").read_text() == "old"
    assert not os.path.exists(tmp_path / "config.json.tmp")


def test_figure_on_a_full_disk_leaves_no_temporary(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from wscrl_jax import plots
    fig = plots._figure(1, 1)

    def full_disk(path, **kwargs):
        with open(path, "w") as f:
            f.write("half")
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(fig, "savefig", full_disk)
    with pytest.raises(OSError):
        plots._save(fig, str(tmp_path / "x.png"))
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- workdir state

def _config_json(**changes):
    config = load_config("scaling", "ilcm,fast")
    for key, value in changes.items():
        node = config
        *path, leaf = key.split(".")
        for part in path:
            node = node[part]
        node[leaf] = value
    return json.loads(config.to_json_best_effort())


def _write(workdir, files):
    for name, text in files.items():
        path = os.path.join(workdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


@pytest.mark.parametrize("files, kind", [
    ({}, "new"),
    ({"output.log": "x", ".lock": "", "metrics/.keep.tmp": ""}, "new"),
    ({"config.json": "SAME", "metrics/train_metrics.csv": "step\n"}, "restartable"),
    ({"config.json": "OTHER", "metrics/train_metrics.csv": "step\n"}, "inconsistent"),
    ({"metrics/train_metrics.csv": "step\n"}, "inconsistent"),
    ({"config.json": "SAME", "metrics/test_metrics.csv": "x"}, "inconsistent"),
    ({"config.json": "{broken"}, "inconsistent"),
    ({"checkpoints/16/x": "", "config.json": "OTHER"}, "resumable"),
    ({"checkpoints/16/x": "", "metrics/test_metrics.csv": "x"}, "finished"),
    ({"checkpoints_rejected/16-checksum/x": ""}, "resumable"),
])
def test_workdir_states(tmp_path, files, kind):
    same, other = _config_json(), _config_json(**{"training.lr_schedule.initial": 1e-3})
    texts = {"SAME": json.dumps(same), "OTHER": json.dumps(other)}
    _write(str(tmp_path), {k: texts.get(v, v) for k, v in files.items()})
    state = workdir_state.classify(str(tmp_path), same)
    assert state.kind == kind, state
    if files.get("config.json") == "OTHER" and kind == "inconsistent":
        assert "training.lr_schedule.initial" in state.reason


def _train(argv, monkeypatch, capsys, run=None):
    """cli.train_main in this process with `experiment.run` replaced: (exit code, error lines,
    whether run was called)."""
    called = []
    monkeypatch.setenv("WSCRL_JAX_CACHE", "")
    monkeypatch.setattr(experiment, "run",
                        run or (lambda *a, **k: called.append(1) or []))
    code = 0
    try:
        cli.train_main(["wscrl-train", f"--config={CONFIG}:ilcm,fast"] + argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error:")], err, called


def test_checkpointless_workdir_of_another_config_is_refused_then_set_aside(
        tmp_path, monkeypatch, capsys):
    workdir = tmp_path / "w"
    files = {"config.json": json.dumps(_config_json(**{"training.lr_schedule.initial": 1e-3})),
             "metrics/train_metrics.csv": "step,epoch,member,loss\n8,0,0,1.0\n",
             "figures/training_curves.png": "png"}
    _write(str(workdir), files)
    code, errors, err, called = _train([f"--workdir={workdir}"], monkeypatch, capsys)
    assert code == 2 and len(errors) == 1 and not called and "Traceback" not in err
    assert "another config" in errors[0] and "--overwrite" in errors[0]
    for name, text in files.items():  # nothing replaced
        assert (workdir / name).read_text() == text
    code, errors, _, called = _train([f"--workdir={workdir}", "--overwrite"], monkeypatch, capsys)
    assert code == 0 and called
    aside = [d for d in os.listdir(workdir) if d.startswith("replaced_")]
    assert len(aside) == 1
    for name, text in files.items():  # moved, not deleted
        assert (workdir / aside[0] / name).read_text() == text


def test_workdir_locked_by_another_process_is_one_line(tmp_path, monkeypatch, capsys):
    from test_workdir_lock import hold_in_subprocess
    proc = hold_in_subprocess(tmp_path)
    try:
        code, errors, err, called = _train([f"--workdir={tmp_path}"], monkeypatch, capsys)
        assert code == 2 and len(errors) == 1 and not called
        assert f"pid {proc.pid}" in errors[0] and "in use by another run" in errors[0]
        assert sorted(os.listdir(tmp_path)) == [".lock"]  # nothing else written
        monkeypatch.setattr(evaluation, "evaluate_workdir", lambda *a, **k: 1 / 0)
        with pytest.raises(SystemExit) as info:
            cli.evaluate_main(["wscrl-evaluate", f"--workdir={tmp_path}"])
        assert info.value.code == 2 and f"pid {proc.pid}" in capsys.readouterr().err
    finally:
        proc.terminate()
        proc.wait()


# ---------------------------------------------------------------- signals

def test_signal_after_stop_now_from_here_raises_at_once():
    with StopRequest() as stop:
        stop.stop_now_from_here("evaluation")
        with pytest.raises(StopNow) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs here
        assert info.value.signal_name == "SIGTERM" and info.value.phase == "evaluation"


def test_pending_signal_stops_when_evaluation_begins():
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(StopNow):
            stop.stop_now_from_here("evaluation")


def test_a_swallowed_stop_is_raised_again_before_metrics_are_written(tmp_path):
    """A signal's StopNow that library code swallowed (JAX has bare `except:` blocks) does not
    let the evaluation finish: it is raised again before the metrics file is written."""
    class Stub:
        options = types.SimpleNamespace(evaluates_padding=True)

        def evaluate(self, *args, **kwargs):
            try:  # the signal lands inside library code with a bare `except:`
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(1)
            except BaseException:  # noqa: B036
                pass
            return [{"metric": 1.0}]

    state = types.SimpleNamespace(nan_count=np.zeros(1, np.int32), params={"w": np.zeros((1, 2))},
                                  model_state={})
    config = load_config("md_mixing", "linear,fast")
    with StopRequest() as stop:
        stop.stop_now_from_here("evaluation")
        with pytest.raises(StopNow) as info:
            evaluation.evaluate_members(Stub(), state, {}, [(1, 1)], str(tmp_path), config,
                                        state.params, progress=False)
    assert info.value.signal_name == "SIGTERM"
    assert not os.path.exists(tmp_path / "metrics")
    raise_if_stopped()  # outside a StopRequest: nothing to raise


def test_second_ctrl_c_in_training_is_one_line_exit_130(tmp_path, monkeypatch, capsys):
    def two_ctrl_c(config, workdir, stop_requested=None, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        assert stop_requested() == "SIGINT"  # the first only asks to stop at a boundary
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
        raise AssertionError("the second Ctrl-C did not stop")

    code, errors, err, _ = _train([f"--workdir={tmp_path}"], monkeypatch, capsys, two_ctrl_c)
    assert code == 130 and len(errors) == 1 and "second Ctrl-C" in errors[0]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_evaluation_of_a_training_run(tmp_path, monkeypatch, capsys, sig, code):
    def evaluation_interrupted(config, workdir, stop_requested=None, **kwargs):
        stop_requested.stop_now_from_here("evaluation")  # what experiment.run does
        (tmp_path / "metrics").mkdir(exist_ok=True)
        (tmp_path / "metrics" / "test_metrics.csv.tmp").write_text("half")
        os.kill(os.getpid(), sig)
        time.sleep(1)
        raise AssertionError("not stopped")

    code_, errors, err, _ = _train([f"--workdir={tmp_path}"], monkeypatch, capsys,
                                   evaluation_interrupted)
    assert code_ == code and len(errors) == 1 and "Traceback" not in err
    assert f"stopped by {sig.name} during evaluation" in errors[0]
    assert os.listdir(tmp_path / "metrics") == []  # the half-written file was removed
    assert errors[0][len("error: "):] in (tmp_path / "output.log").read_text()


def test_signal_during_wscrl_evaluate(tmp_path, monkeypatch, capsys):
    def evaluate(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
        raise AssertionError("not stopped")

    monkeypatch.setenv("WSCRL_JAX_CACHE", "")
    monkeypatch.setattr(evaluation, "evaluate_workdir", evaluate)
    with pytest.raises(SystemExit) as info:
        cli.evaluate_main(["wscrl-evaluate", f"--workdir={tmp_path}"])
    err = capsys.readouterr().err
    assert info.value.code == 143 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: stopped by SIGTERM during evaluation; no metrics were half-written and the "
        "checkpoint is kept, rerun the same command to evaluate"]


# ---------------------------------------------------------------- library noise

def test_library_errors_go_to_the_log_file_not_the_terminal(tmp_path, capsys):
    import threading
    from wscrl_jax.tracking import setup_logging
    logger = setup_logging(str(tmp_path))
    with library_noise.to_log_file(logger):
        try:
            raise ValueError("RESOURCE_EXHAUSTED: inner")
        except ValueError:
            logging.getLogger("absl").exception("orbax background save failed")
        logging.getLogger("asyncio").error("Task exception was never retrieved")
        thread = threading.Thread(target=lambda: 1 / 0)
        thread.start()
        thread.join()
        logger.info("the run's own line")
    err = capsys.readouterr().err
    assert "Traceback" not in err and "orbax background" not in err and "Task exception" \
        not in err and "ZeroDivisionError" not in err
    assert "the run's own line" in err
    text = (tmp_path / "output.log").read_text()
    assert "orbax background save failed" in text and "RESOURCE_EXHAUSTED" in text
    assert "Task exception" in text and "ZeroDivisionError" in text
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
