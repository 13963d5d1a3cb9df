"""The command-line tools fail on bad input with one clear line and a non-zero exit."""

import errno
import os
import subprocess
import sys

import pytest

from conftest import ROOT

TRAIN = os.path.join(ROOT, "scripts", "train.py")
EVALUATE = os.path.join(ROOT, "scripts", "evaluate.py")
CONFIG = os.path.join(ROOT, "configs", "scaling.py")


def run(args, tmp_path):
    return subprocess.run([sys.executable] + args, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)


@pytest.mark.parametrize("args, message", [
    ([f"--config={CONFIG}:ilcm,fast", "--config.data.dim_z=0"], "data.dim_z=0"),
    ([f"--config={CONFIG}:nonsense"], "unknown scaling variant 'nonsense'"),
    ([f"--config={CONFIG}:ilcm", "--config.model.type=vae"], "model.type='vae'"),
    ([f"--config={CONFIG}:ilcm", "--config.data.no_such_key=1"], "unknown config key"),
])
def test_bad_config_is_one_line_and_exit_2(args, message, tmp_path):
    workdir = tmp_path / "w"
    out = run([TRAIN, f"--workdir={workdir}"] + args, tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], out.stderr
    assert not (workdir / "checkpoints").exists()  # nothing was started


def test_evaluate_without_checkpoint_is_one_line(tmp_path):
    out = run([EVALUATE, f"--workdir={tmp_path}"], tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no checkpoint" in lines[0], out.stderr


def test_plot_metrics_without_metrics_file_is_one_line(tmp_path):
    script = os.path.join(ROOT, "scripts", "plot_metrics.py")
    out = run([script, "--out", str(tmp_path / "r2.png"), f"a={tmp_path}"], tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "test_metrics.csv does not exist" in lines[0], out.stderr


@pytest.mark.parametrize("script", [TRAIN, EVALUATE])
def test_help_lists_the_flags_and_exits_0(script, tmp_path):
    out = run([script, "--help"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and "--workdir" in out.stdout


def _one_error_line(out, code):
    assert out.returncode == code, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    return errors[0]


def test_missing_config_file_is_one_line(tmp_path):
    out = run([TRAIN, f"--workdir={tmp_path / 'w'}", f"--config={tmp_path}/nope.py:ilcm"],
              tmp_path)
    assert "No such file" in _one_error_line(out, 2)


def test_workdir_that_is_a_file_is_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    out = run([TRAIN, f"--workdir={afile}", f"--config={CONFIG}:ilcm,fast"], tmp_path)
    assert "cannot use --workdir" in _one_error_line(out, 2)
    assert afile.read_text() == "keep me"


def test_disk_full_is_one_line_and_logged(tmp_path, monkeypatch, capsys):
    """A file-system error during the run (simulated ENOSPC): one `error:` line with the path,
    exit 1, and the same line in output.log."""
    from wscrl_jax import cli, experiment

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "w" / "x.csv"))

    monkeypatch.setenv("WSCRL_JAX_CACHE", "")
    monkeypatch.setattr(experiment, "run", full_disk)
    with pytest.raises(SystemExit) as exit_info:
        cli.train_main(["wscrl-train", f"--config={CONFIG}:ilcm,fast",
                        f"--workdir={tmp_path / 'w'}"])
    assert exit_info.value.code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "x.csv" in errors[0]
    assert "No space left on device" in (tmp_path / "w" / "output.log").read_text()


def test_cpu_devices_below_one_is_one_line(capsys):
    from wscrl_jax import cli
    with pytest.raises(SystemExit) as info:
        cli.use_cpu_devices(0)
    assert info.value.code == 2
    message = "error: --cpu_devices=0 must be >= 1 (1: one CPU device)"
    assert capsys.readouterr().err.strip() == message


@pytest.mark.parametrize("spec, override, expected", [
    ("md_mixing.py:linear,mmd", None, 1),  # adaptive MMD: members in turn on one device
    ("md_mixing.py:poly_stage2,mmd", None, 1),  # fixed-bandwidth MMD
    ("md_mixing.py:linear,mmd", 3, 3),
    ("md_mixing.py:linear,minmax", None, None),
    ("scaling.py:ilcm,fast", None, None),
    ("scaling.py:ilcm,fast", 1, 1),
])
def test_default_cpu_devices_follow_the_config(spec, override, expected, monkeypatch):
    """Without --cpu_devices, a single-process training run's CPU device count is the config's
    `training.cpu_devices`: one device for MD-CRL's MMD penalties, else one a core (None)."""
    from wscrl_jax import cli
    config = cli.load_config(os.path.join(ROOT, "configs", spec))
    if override:
        config.training.cpu_devices = override
    assert cli.default_cpu_devices(config) == expected

    counts = []
    monkeypatch.setattr(cli, "use_cpu_devices", counts.append)
    monkeypatch.setattr("wscrl_jax.train.distributed.initialize", lambda *a, **k: None)
    # the flag wins over the preference; a multi-process run keeps one device a core
    for flag, distributed in ((None, False), (2, False), (None, True)):
        values = type("Flags", (), dict(cpu_devices=flag, num_processes=None, process_id=None,
                                        coordinator_address=None, distributed=distributed))()
        cli.start_processes(values, config)
    assert counts == [expected, 2, None]


_COMMAND = """
import logging, sys, threading, time
from wscrl_jax import cli
log = logging.getLogger("wscrl_jax.test")
log.addHandler(logging.FileHandler(sys.argv[1]))
def main(argv):
    if sys.argv[2] == "thread":  # a thread still writing when the command returns
        threading.Thread(target=lambda: (time.sleep(1), log.warning("thread done"))).start()
    log.warning("main done")
    print("stdout line", end="")  # no newline: flushed by the exit, not by the line
cli._as_command(main, None)
log.warning("after the command")  # reached only where the command did not end the process
"""


@pytest.mark.parametrize("mode", ["alone", "thread"])
def test_a_finished_command_exits_at_once_with_its_output_flushed(mode, tmp_path):
    """After a run that finished, the command ends the process without the interpreter's
    shutdown (exit 0, logs and stdout flushed), unless a thread that is not a daemon runs: then
    the process ends as usual, once it is done."""
    path = tmp_path / "log.txt"
    out = subprocess.run([sys.executable, "-c", _COMMAND, str(path), mode],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "stdout line"
    lines = path.read_text().splitlines()
    if mode == "alone":
        assert lines == ["main done"]
    else:
        assert lines == ["main done", "after the command", "thread done"]
