"""Verified checkpoints: a garbled, truncated or partly deleted checkpoint is rejected in one
log line, moved to WORKDIR/checkpoints_rejected and the newest intact one restored; with none
intact nothing is overwritten. One tiny finished ILCM run (checkpoints at steps 20, 40, 60)
is shared by the module and copied per test."""

import json
import logging
import os
import shutil
import sys
import time

import jax
import numpy as np
import pytest
import tensorstore as ts

from conftest import one_phase, tiny_scaling_config
from wscrl_jax import experiment
from wscrl_jax.run import evaluation
from wscrl_jax.run import members as run_members
from wscrl_jax.tracking import read_csv
from wscrl_jax.train import checkpoint
from wscrl_jax.train.sweep import sweep_members

STEPS = [20, 40, 60]
LEAF = "params.decoder.MLP_0.TorchLinear_1.kernel"  # Orbax's name of a [1, 16, 16] leaf


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(config, workdir, rows) of a finished 60-step run: 3 epochs of 20 steps, calls of 10."""
    config = one_phase(tiny_scaling_config("ilcm"))
    config.training.steps_per_call = 10
    config.checkpoint.every_n_steps = 20
    config.checkpoint.async_save = True  # as real runs: checksums of asynchronous saves
    workdir = str(tmp_path_factory.mktemp("finished"))
    rows = experiment.run(config, workdir, progress=False)
    assert steps_in(workdir) == STEPS
    return config, workdir, rows


@pytest.fixture(scope="module")
def template(finished):
    config = finished[0]
    return run_members.build(config, sweep_members(config))[2]


@pytest.fixture
def workdir(finished, tmp_path):
    """A copy of the finished run."""
    copy = str(tmp_path / "run")
    shutil.copytree(finished[1], copy)
    return copy


def steps_in(workdir):
    return sorted(int(s) for s in os.listdir(checkpoint.checkpoint_dir(workdir)) if s.isdigit())


def state_dir(workdir, step):
    return os.path.join(checkpoint.checkpoint_dir(workdir), str(step), "state")


def largest_file(directory):
    files = [os.path.join(d, f) for d, _, names in os.walk(directory) for f in names]
    return max(files, key=os.path.getsize)


# ------------------------------------------------------------------ ways to damage a step

def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def meta_path(workdir, step):
    return os.path.join(checkpoint.checkpoint_dir(workdir), str(step), "meta", "metadata")


def garble(path):
    """64 bytes in the middle of the file (XOR 0x5a: every byte changes)."""
    data = bytearray(read_bytes(path))
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0x5A for b in data[middle:middle + 64])
    write_bytes(path, bytes(data))


def garble_largest(workdir, step):
    garble(largest_file(state_dir(workdir, step)))


def garble_ocdbt(workdir, step):
    """The OCDBT data file at the top of state/ (tensorstore reports DATA_LOSS)."""
    [path] = [os.path.join(state_dir(workdir, step), "d", name)
              for name in os.listdir(os.path.join(state_dir(workdir, step), "d"))]
    garble(path)


def truncate_largest(workdir, step):
    path = largest_file(state_dir(workdir, step))
    os.truncate(path, os.path.getsize(path) // 2)


def delete_state(workdir, step):
    shutil.rmtree(state_dir(workdir, step))


def delete_largest(workdir, step):
    os.remove(largest_file(state_dir(workdir, step)))


def leaf_store(workdir, step):
    return ts.open({"driver": "zarr", "kvstore": {
        "driver": "ocdbt", "base": "file://" + state_dir(workdir, step), "path": LEAF + "/"}
    }).result()


def flip_value_bit(workdir, step):
    """One bit of one stored weight changes in a well-formed checkpoint (rewritten through
    tensorstore): Orbax reads it back without complaint; only the checksum sees it."""
    store = leaf_store(workdir, step)
    values = store.read().result()
    values.view(np.uint32).ravel()[5] ^= 1 << 30
    store.write(values).result()


def edit_meta(workdir, step):
    """Valid JSON with another value: the meta's own checksum catches it."""
    meta = json.loads(read_bytes(meta_path(workdir, step)))
    meta["config"]["training"]["epochs"] += 1
    write_bytes(meta_path(workdir, step), json.dumps(meta).encode())


def garble_meta(workdir, step):
    data = bytearray(read_bytes(meta_path(workdir, step)))
    data[len(data) // 2:len(data) // 2 + 64] = b"\xff" * 64  # not even UTF-8
    write_bytes(meta_path(workdir, step), bytes(data))


DAMAGE = {"garble_largest": (garble_largest, "unreadable"),
          "truncate_largest": (truncate_largest, "unreadable"),
          "delete_state": (delete_state, "unreadable"),
          "delete_largest": (delete_largest, "unreadable"),
          "flip_value_bit": (flip_value_bit, "checksum"),
          "edit_meta": (edit_meta, "checksum"),
          "garble_meta": (garble_meta, "unreadable"),
          "garble_ocdbt": (garble_ocdbt, "unreadable")}


def rejections(caplog):
    records = [r for r in caplog.records if r.name == "wscrl_jax" and r.levelno == logging.WARNING
               and "rejected" in r.getMessage()]
    for r in records:
        assert "\n" not in r.getMessage()
    return [r.getMessage() for r in records]


def rejected(workdir):
    folder = checkpoint.rejected_dir(workdir)
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def leaves_equal(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


# ------------------------------------------------------------------ restore level (fast)

@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_latest_is_moved_aside_and_previous_restored(kind, workdir, template, caplog):
    damage, reason = DAMAGE[kind]
    previous = checkpoint.restore_state(workdir, template, 40)
    damage(workdir, 60)
    caplog.set_level(logging.WARNING, "wscrl_jax")
    step, state, meta = checkpoint.restore_latest_intact(workdir, template)
    assert step == meta["step"] == 40 and leaves_equal(state, previous)
    assert steps_in(workdir) == [20, 40] and rejected(workdir) == [f"60-{reason}"]
    [line] = rejections(caplog)
    assert "step 60" in line and os.path.join(checkpoint.rejected_dir(workdir), "60-") in line


def test_flipped_bit_restores_silently_without_the_checksum(workdir, template):
    """The damage of `flip_value_bit` is invisible to Orbax: the checksum is what catches it."""
    intact = checkpoint.restore_state(workdir, template, 60)
    flip_value_bit(workdir, 60)
    flipped = checkpoint.restore_state(workdir, template, 60)
    assert not leaves_equal(flipped, intact)


def test_unreadable_state_prints_no_tracebacks(workdir, template, monkeypatch):
    """Reads still in flight when Orbax gives up call back into its closed event loop; each
    would print a `RuntimeError: Event loop is closed` traceback after the one-line warning."""
    printed = []
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    garble_ocdbt(workdir, 60)
    assert checkpoint.restore_latest_intact(workdir, template)[0] == 40
    time.sleep(1.0)  # the stragglers arrive from tensorstore threads
    assert not printed, printed[0].exc_value


def test_checkpoint_without_checksums_is_refused_in_one_line(workdir, template):
    """A checkpoint without checksums (an earlier version's) is neither trusted nor moved."""
    meta = json.loads(read_bytes(meta_path(workdir, 60)))
    del meta[checkpoint.INTEGRITY_KEY]
    write_bytes(meta_path(workdir, 60), json.dumps(meta).encode())
    with pytest.raises(checkpoint.CheckpointError, match="carries no checksums") as error:
        checkpoint.restore_latest_intact(workdir, template)
    assert "\n" not in str(error.value)
    assert steps_in(workdir) == STEPS and not rejected(workdir)


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), MemoryError(),
                                   TypeError("template bug"),
                                   ValueError("RESOURCE_EXHAUSTED: out of memory")])
def test_an_error_that_is_not_damage_moves_nothing(error, workdir, template, monkeypatch):
    """A transient I/O error, out of memory or a bug while reading is one CheckpointError line
    naming it; the checkpoint stays where it is (only damage quarantines)."""
    def failing(*args):
        raise error
    monkeypatch.setattr(checkpoint, "_read_state", failing)
    with pytest.raises(checkpoint.CheckpointError, match="nothing was moved") as raised:
        checkpoint.restore_latest_intact(workdir, template)
    assert "\n" not in str(raised.value) and type(error).__name__ in str(raised.value)
    assert steps_in(workdir) == STEPS and not rejected(workdir)


def test_known_damage_errors_are_recognised():
    assert checkpoint.is_corruption(json.JSONDecodeError("bad", "{", 0))
    assert checkpoint.is_corruption(ValueError("DATA_LOSS: checksum mismatch in b-tree node"))
    wrapped = RuntimeError("restore failed")
    wrapped.__cause__ = FileNotFoundError("manifest.ocdbt")
    assert checkpoint.is_corruption(wrapped)
    assert not checkpoint.is_corruption(OSError(28, "No space left on device"))
    assert not checkpoint.is_corruption(ValueError("RESOURCE_EXHAUSTED: NOT_FOUND in message"))


def test_checkpoint_of_another_model_is_an_error_not_damage(workdir, template):
    """A template of other shapes (another config) must not move good checkpoints aside."""
    other = jax.tree_util.tree_map(lambda x: np.zeros(x.shape + (1,), x.dtype), template)
    with pytest.raises(checkpoint.CheckpointError, match="does not fit this run") as error:
        checkpoint.restore_latest_intact(workdir, other)
    assert "\n" not in str(error.value)
    assert steps_in(workdir) == STEPS and not rejected(workdir)


def test_every_step_damaged_is_one_line_error_and_stays_one(workdir, template, caplog):
    for step, damage in zip(STEPS, (flip_value_bit, truncate_largest, garble_largest)):
        damage(workdir, step)
    caplog.set_level(logging.WARNING, "wscrl_jax")
    with pytest.raises(checkpoint.CheckpointError, match="no intact checkpoint") as error:
        checkpoint.restore_latest_intact(workdir, template)
    assert "\n" not in str(error.value) and checkpoint.rejected_dir(workdir) in str(error.value)
    assert len(rejections(caplog)) == 3
    assert rejected(workdir) == ["20-checksum", "40-unreadable", "60-unreadable"]
    # checkpoints/ is now empty: a rerun must not quietly train from scratch either
    with pytest.raises(checkpoint.CheckpointError, match="no intact checkpoint"):
        checkpoint.restore_latest_intact(workdir, template)


def test_rejecting_the_same_step_twice_keeps_both(workdir, template):
    """A step saved again after its rejection and damaged again: the first is not replaced."""
    flip_value_bit(workdir, 60)
    checkpoint.restore_latest_intact(workdir, template)
    shutil.copytree(os.path.join(checkpoint.checkpoint_dir(workdir), "40"),
                    os.path.join(checkpoint.checkpoint_dir(workdir), "60"))
    edit_meta(workdir, 60)
    assert checkpoint.restore_latest_intact(workdir, template)[0] == 40
    assert rejected(workdir) == ["60-checksum", "60-checksum-2"]


# ------------------------------------------------------------------ reruns (end to end)

def assert_reran_to_same_result(finished, template, workdir, rows, caplog,
                                expected_rejected):
    _, original, original_rows = finished
    assert rows == original_rows
    for name in ("test_metrics.csv", "train_metrics.csv"):
        assert (read_csv(os.path.join(workdir, "metrics", name))
                == read_csv(os.path.join(original, "metrics", name))), name
    assert rejected(workdir) == expected_rejected
    assert len(rejections(caplog)) == len(expected_rejected)
    # step 60 was saved again under the number of the rejected one, and it is intact
    assert steps_in(workdir) == STEPS
    caplog.clear()
    restored = checkpoint.restore_latest_intact(workdir, template)
    assert restored[0] == 60 and not rejections(caplog)


def test_rerun_after_garbled_bytes_falls_back(finished, template, workdir, caplog):
    """60: 64 garbled bytes in its largest state file; 40: one flipped bit in a weight (read
    back silently by Orbax). The rerun resumes from 20 and ends as the uninterrupted run."""
    garble_largest(workdir, 60)
    flip_value_bit(workdir, 40)
    caplog.set_level(logging.INFO, "wscrl_jax")
    rows = experiment.run(finished[0], workdir, progress=False)
    assert "Resuming from the checkpoint at step 20" in caplog.text
    assert_reran_to_same_result(finished, template, workdir, rows, caplog,
                                ["40-checksum", "60-unreadable"])


@pytest.mark.slow  # the garbled-bytes rerun above covers the default run
@pytest.mark.parametrize("damage", [truncate_largest, delete_state],
                         ids=["truncation", "partial_deletion"])
def test_rerun_after_damage_falls_back(damage, finished, template, workdir, caplog):
    damage(workdir, 60)
    caplog.set_level(logging.INFO, "wscrl_jax")
    rows = experiment.run(finished[0], workdir, progress=False)
    assert "Resuming from the checkpoint at step 40" in caplog.text
    assert_reran_to_same_result(finished, template, workdir, rows, caplog, ["60-unreadable"])


def test_rerun_with_every_checkpoint_damaged_overwrites_nothing(finished, workdir):
    for step, damage in zip(STEPS, (flip_value_bit, delete_state, garble_largest)):
        damage(workdir, step)
    metrics = os.path.join(workdir, "metrics")
    before = {name: read_bytes(os.path.join(metrics, name)) for name in os.listdir(metrics)}
    with pytest.raises(checkpoint.CheckpointError, match="no intact checkpoint") as error:
        experiment.run(finished[0], workdir, progress=False)
    assert "\n" not in str(error.value)
    after = {name: read_bytes(os.path.join(metrics, name)) for name in os.listdir(metrics)}
    assert after == before
    assert steps_in(workdir) == [] and len(rejected(workdir)) == 3


def test_evaluate_falls_back_and_moves_nothing(workdir, caplog):
    """Read-only evaluation skips a damaged step (one line), evaluates the previous one into its
    own file and leaves the final metrics and every checkpoint where they were."""
    final = read_bytes(os.path.join(workdir, "metrics", "test_metrics.csv"))
    flip_value_bit(workdir, 60)
    caplog.set_level(logging.WARNING, "wscrl_jax")
    rows = evaluation.evaluate_workdir(workdir)
    assert len(rows) == 1 and rows[0]["status"] == "ok"
    assert read_csv(os.path.join(workdir, "metrics", "test_metrics_step40.csv"))
    assert read_bytes(os.path.join(workdir, "metrics", "test_metrics.csv")) == final
    assert steps_in(workdir) == STEPS and not rejected(workdir)
    assert "Checkpoint at step 60" in caplog.text and "skipped" in caplog.text


def test_evaluate_of_a_damaged_explicit_step_is_an_error(workdir):
    metrics = sorted(os.listdir(os.path.join(workdir, "metrics")))
    flip_value_bit(workdir, 60)
    with pytest.raises(checkpoint.CheckpointError, match="step 60") as error:
        evaluation.evaluate_workdir(workdir, step=60)
    assert "\n" not in str(error.value) and "left in place" in str(error.value)
    assert steps_in(workdir) == STEPS  # no fallback: 40 is neither tried nor evaluated
    assert sorted(os.listdir(os.path.join(workdir, "metrics"))) == metrics
