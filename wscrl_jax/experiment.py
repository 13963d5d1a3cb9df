"""One run from a config, top to bottom: build, restore or start, train, write, evaluate.

A run trains every member of the sweep (model seeds x data seeds) as one stacked state;
without sweep fields it is a sweep of one (config.seed, config.data.nature.seed). Rerunning
the same command resumes from the newest intact checkpoint in WORKDIR/checkpoints. The pieces
live in `run/`: members.py (data and state on the devices), workdir.py (resume, checkpoints and
training metrics), evaluation.py (the final metrics).
"""

import logging
import os
import time

import jax

from wscrl_jax.run import workdir as run_workdir
from wscrl_jax.run.evaluation import (compile_evaluation_ahead, copy_params, evaluate_members,
                                      evaluation_ahead_when)
from wscrl_jax.run.members import build, padded_data_seeds, repad
from wscrl_jax.run.workdir import Recorder
from wscrl_jax.tracking import read_csv, write_csv_atomic
from wscrl_jax.train.distributed import is_main, main_value, multiprocess, to_host
from wscrl_jax.train.import_beside import import_beside
from wscrl_jax.train.loop import no_member_training, steps_per_epoch, train, train_size
from wscrl_jax.train.preemption import Interrupted
from wscrl_jax.train.sharding import unpad_members
from wscrl_jax.train.sweep import grid_points, sweep_members

log = logging.getLogger("wscrl_jax")


def run(config, workdir: str, progress: bool = True, *, stop_requested=None,
        allow_config_change: bool = False, reevaluate: bool = False):
    """Trains (resuming if a checkpoint exists) and evaluates; writes
    WORKDIR/metrics/test_metrics.csv and returns its rows. A non-empty `sweep.grid` runs the
    grid (`run_grid`). A workdir whose training is finished and whose metrics exist is not
    evaluated again unless `reevaluate`. stop_requested: see `train.loop.train`; on a stop
    request the state is checkpointed and `Interrupted` propagates."""
    if config.sweep.grid:
        return run_grid(config, workdir, progress)
    members = sweep_members(config)
    progress = progress and is_main()
    log.info("Members (model seed, data seed): %s on %s", members, jax.devices()[0].platform)
    start = time.time()
    import_beside()  # what the run needs later, while its data compile (no GIL held)
    method, data, state = build(config, members)
    initial_params = copy_params(state.params)  # training donates the state's buffers
    log.info("Data and model ready in %.1f s", time.time() - start)

    restored = run_workdir.restore(workdir, config, members, state, allow_config_change)
    if is_main():
        run_workdir.write_config(workdir, config, restored)
    start_step = 0 if restored is None else restored.step
    train_data = method.training_data(
        data, padded_data_seeds(members, state.step.shape[0]), start_step,
        None if restored is None else restored.data_iterators)
    stream = None if isinstance(train_data, dict) else train_data
    if restored is not None:
        state = repad(restored.state, state)
        metrics_path = os.path.join(workdir, "metrics", "test_metrics.csv")
        if (not reevaluate and main_value(os.path.exists(metrics_path))
                and trained_out(method, state, train_data, config)):
            log.info("This workdir finished training at step %d and its metrics are in %s; "
                     "pass --reevaluate to evaluate it again", start_step, metrics_path)
            if stream is not None:
                stream.close()
            return read_csv(metrics_path)
        log.info("Resuming from the checkpoint at step %d", start_step)
    recorder = Recorder(workdir, config, members, start_step, is_main(), stream)
    # the evaluation's programs compiled in a background thread (eval.compile_ahead): while
    # training runs (joined before the evaluation), or from the end of training, beside it
    when = evaluation_ahead_when(config)
    ahead = (compile_evaluation_ahead(method, state, data, members, low_priority=True)
             if when == "training" else None)
    try:
        state = train_and_checkpoint(method, state, train_data, data, config, recorder,
                                     start_step, len(members), progress, stop_requested)
        if hasattr(stop_requested, "stop_now_from_here"):  # a signal now stops at once
            stop_requested.stop_now_from_here("evaluation")  # (train/preemption.py)
        if when == "end":
            ahead = compile_evaluation_ahead(method, state, data, members)
        write_outputs(method, workdir, state, data, members)
        if when == "training" and ahead is not None:
            ahead.join()
        rows = evaluate_members(method, state, data, members, workdir, config, initial_params,
                                progress=progress)
        recorder.log_final(int(to_host(state.step)[0]), rows)
        return rows
    finally:
        if ahead is not None:  # done with its programs once the evaluation is
            ahead.join()
        recorder.close()


def train_and_checkpoint(method, state, train_data, data, config, recorder: Recorder,
                         start_step: int, num_members: int, progress: bool, stop_requested):
    """Trains to the end of `training.epochs`, checkpointing on the way and at the end (and,
    on a stop request, where it stopped before `Interrupted` propagates)."""
    start = time.time()
    try:
        state = train(method, state, train_data, config, progress=progress,
                      on_call_end=recorder.after_call, eval_data=data,
                      stop_requested=stop_requested, num_members=num_members)
    except Interrupted as e:
        recorder.save_final(e.step, e.state)
        log.warning("Stopped by %s at step %d; checkpoint saved. Rerun the same command "
                    "to resume.", e.signal_name, e.step)
        raise
    jax.block_until_ready(state)
    elapsed = time.time() - start
    final_step = int(to_host(state.step)[0])
    log.info("Training finished in %.1f s (%d steps, %.1f steps/s)", elapsed,
             final_step - start_step, (final_step - start_step) / max(elapsed, 1e-9))
    recorder.save_final(final_step, state)
    return state


def trained_out(method, state, train_data, config) -> bool:
    """True when training has nothing left to do: the last epoch is done, or no member is
    still training (e.g. every member early-stopped)."""
    total = config.training.epochs * steps_per_epoch(train_size(train_data),
                                                     config.training.batchsize)
    return (int(to_host(state.step)[0]) >= total
            or no_member_training(method, state, int(config.training.nan_limit)))


def write_outputs(method, workdir, state, data, members):
    """The method's files of the real members (`Method.write_outputs`), written by process 0
    from the gathered members in a multi-process run."""
    if not multiprocess():
        method.write_outputs(workdir, *unpad_members((state, data), len(members)), members)
        return
    gathered = unpad_members(to_host((state, data)), len(members))
    if is_main():
        method.write_outputs(workdir, *gathered, members)


def run_grid(config, workdir: str, progress: bool = True):
    """`sweep.grid` (e.g. "data.z_dim=8,16;data.num_domains=2,4"): one run per combination of
    values that change shapes (so they cannot share a vmapped state), each in
    WORKDIR/<key>=<value>_.../, one after the other; every run still vmaps its seeds. The
    combined rows (with one column per grid key) go to WORKDIR/metrics/test_metrics.csv."""
    rows = []
    for point, sub in grid_points(config):
        parts = [f"{key.split('.')[-1]}={value}" for key, value in point.items()]
        log.info("Grid point %s", ", ".join(parts))
        rows.extend({**point, **r} for r in run(sub, os.path.join(workdir, "_".join(parts)),
                                                  progress))
    if is_main():
        write_csv_atomic(os.path.join(workdir, "metrics", "test_metrics.csv"), rows)
    return rows
