"""One run from a config: data, members, training with checkpoints, evaluation, metric files.

A run trains every member of the sweep (model seeds x data seeds) as one stacked state;
without sweep fields it is a sweep of one (config.seed, config.data.nature.seed). Rerunning
the same command resumes from the latest checkpoint in WORKDIR/checkpoints.
"""

import logging
import os
import time
from typing import List, Optional

import jax
import ml_collections
import numpy as np

from wscrl_jax.methods import get_method
from wscrl_jax.tracking import TrainMetricsWriter, write_csv_atomic
from wscrl_jax.train import checkpoint
from wscrl_jax.train.loop import train
from wscrl_jax.train.sharding import member_sharding, shard_members
from wscrl_jax.train.state import init_states, member, stack_members
from wscrl_jax.train.sweep import grid_points, sweep_members

log = logging.getLogger("wscrl_jax")


def make_member_data(method, members):
    """{split: {name: [members, N, ...]}}, each member's data from its data seed."""
    per_seed = {s: method.make_data(s) for s in dict.fromkeys(d for _, d in members)}
    return stack_members([per_seed[d] for _, d in members])


def build(config, members):
    """Method, sharded member data and freshly initialised sharded state."""
    method = get_method(config)
    sharding = member_sharding(len(members))
    data = shard_members(make_member_data(method, members), sharding)
    state = shard_members(init_states(method, [s for s, _ in members]), sharding)
    return method, data, state


def run_grid(config, workdir: str, progress: bool = True):
    """`sweep.grid` (e.g. "data.z_dim=8,16;data.num_domains=2,4"): one run per combination of
    values that change shapes (so they cannot share a vmapped state), each in
    WORKDIR/<key>=<value>_.../, run one after the other; every run still vmaps its seeds. The
    combined rows (with one column per grid key) go to WORKDIR/metrics/test_metrics.csv."""
    rows = []
    for point, sub in grid_points(config):
        parts = [f"{key.split('.')[-1]}={value}" for key, value in point.items()]
        log.info("Grid point %s", ", ".join(parts))
        rows.extend({**point, **r} for r in run(sub, os.path.join(workdir, "_".join(parts)),
                                                  progress))
    write_csv_atomic(os.path.join(workdir, "metrics", "test_metrics.csv"), rows)
    return rows


def run(config, workdir: str, progress: bool = True):
    """Trains (resuming if a checkpoint exists) and evaluates; writes
    WORKDIR/metrics/test_metrics.csv. Returns the metric rows. A non-empty `sweep.grid` runs
    the grid (`run_grid`)."""
    if config.get("sweep", {}).get("grid"):
        return run_grid(config, workdir, progress)
    members = sweep_members(config)
    log.info("Members (model seed, data seed): %s on %s", members, jax.devices()[0].platform)
    start = time.time()
    method, data, state = build(config, members)
    initial = start_metrics(method, state.params, data, len(members))
    train_data = {k: data[method.train_split][k] for k in method.train_inputs}
    log.info("Data and model ready in %.1f s", time.time() - start)

    resumed = checkpoint.latest_step(workdir)
    if resumed is not None:
        saved = checkpoint.restore_meta(workdir, resumed)
        if [tuple(m) for m in saved["members"]] != members:
            raise checkpoint.CheckpointError(
                f"{checkpoint.checkpoint_dir(workdir)} holds members {saved['members']}, not "
                f"{members}; use a new --workdir or the same sweep")
        state = checkpoint.restore_state(workdir, state, resumed)
        log.info("Resuming from the checkpoint at step %d", resumed)

    ck = config.checkpoint
    manager = checkpoint.make_manager(workdir, ck.max_to_keep, ck.async_save)
    writer = TrainMetricsWriter(os.path.join(workdir, "metrics", "train_metrics.csv"),
                                resumed or 0)
    last_saved = [resumed or 0]

    def on_call_end(state, info):
        writer.write(info["step"], info["epoch"], info["loss"])
        if ck.every_n_steps and info["step"] - last_saved[0] >= ck.every_n_steps:
            checkpoint.save(manager, info["step"], state, config, members)
            last_saved[0] = info["step"]

    try:
        start = time.time()
        state = train(method, state, train_data, config, progress=progress,
                      on_call_end=on_call_end, eval_data=data)
        jax.block_until_ready(state)
        elapsed = time.time() - start
        final_step = int(np.asarray(state.step)[0])
        trained_steps = final_step - (resumed or 0)
        log.info("Training finished in %.1f s (%d steps, %.1f steps/s)", elapsed, trained_steps,
                 trained_steps / max(elapsed, 1e-9))
        if final_step not in manager.all_steps():
            checkpoint.save(manager, final_step, state, config, members, force=True)
        manager.wait_until_finished()
    finally:
        manager.close()
        writer.close()
    method.write_outputs(workdir, state, data, members)
    return evaluate_members(method, state, data, members, workdir, config,
                            untrained=initial)


def evaluate_workdir(workdir: str, only: Optional[int] = None, step: Optional[int] = None):
    """Restores a checkpoint (latest, or `step`) and evaluates it without training.

    Writes metrics/test_metrics.csv for all members at the latest step, otherwise
    metrics/test_metrics_member<K>[_step<S>].csv, so earlier files are never overwritten.
    """
    meta = checkpoint.restore_meta(workdir, step)
    config = ml_collections.ConfigDict(meta["config"])
    members = [tuple(m) for m in meta["members"]]
    if only is not None and not 0 <= only < len(members):
        raise checkpoint.CheckpointError(
            f"--member {only} is out of range: the checkpoint has {len(members)} members")
    method, data, template = build(config, members)
    initial = start_metrics(method, template.params, data, len(members))
    state = checkpoint.restore_state(workdir, template, meta["step"])
    log.info("Restored the checkpoint at step %d (%d members)", meta["step"], len(members))
    latest = checkpoint.latest_step(workdir)
    name = "test_metrics"
    if only is not None:
        name += f"_member{only}"
    if meta["step"] != latest:
        name += f"_step{meta['step']}"
    return evaluate_members(method, state, data, members, workdir, config, only, name + ".csv",
                            untrained=initial)


def start_metrics(method, initial_params, data, num_members: int) -> List[dict]:
    """Per member, the method's metrics of the untrained model (hook `start_metrics`, e.g.
    MD-CRL's `*_linreg_start`; none by default). Call before training,
    which donates the parameter buffers."""
    return [method.start_metrics(member(initial_params, i), member(data, i))
            for i in range(num_members)]


def evaluate_members(method, state, data, members, workdir, config,
                     only: Optional[int] = None, filename: str = "test_metrics.csv",
                     untrained: Optional[List[dict]] = None):
    """Evaluates every member (or member `only`), writes WORKDIR/metrics/<filename>.
    untrained: per member, metrics of the untrained model (`start_metrics`) added to its row."""
    rows = []
    headline = method.headline_metrics
    nan_counts = np.asarray(state.nan_count)
    for index, (seed, data_seed) in enumerate(members):
        if only is not None and index != only:
            continue
        start = time.time()
        status = ("ok" if nan_counts[index] < config.training.nan_limit
                  else f"frozen after {int(nan_counts[index])} non-finite steps")
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 2)
        try:
            metrics = method.evaluate(member(state.params, index),
                                      member(state.model_state, index), member(data, index), key)
        except ValueError as e:  # e.g. non-finite codes of a member that never trained
            log.warning("Member %d could not be evaluated: %s", index, e)
            metrics = {k: float("nan") for k in headline}
            status = f"{status}; not evaluated"
        if untrained is not None:
            metrics.update(untrained[index])
        if headline == ("causal_disentanglement",):
            log.info("Member %d (seed %d, data seed %d) evaluated in %.1f s: causal "
                     "disentanglement = %.2f", index, seed, data_seed, time.time() - start,
                     metrics["causal_disentanglement"])
        else:
            log.info("Member %d (seed %d, data seed %d) evaluated in %.1f s: %s", index, seed,
                     data_seed, time.time() - start,
                     ", ".join(f"{k} = {metrics[k]:.4f}" for k in headline))
        rows.append({"seed": seed, "data_seed": data_seed, "status": status, **metrics})
    write_csv_atomic(os.path.join(workdir, "metrics", filename), rows)
    if headline != ("causal_disentanglement",):
        for k in headline:
            values = [r[k] for r in rows]
            log.info("Final evaluation: %s = %s (median %.4f over %d member(s))", k,
                     ", ".join(f"{v:.4f}" for v in values), float(np.nanmedian(values)),
                     len(values))
        return rows
    values = [r["causal_disentanglement"] for r in rows]
    if len(values) == 1:
        log.info("Final evaluation: causal disentanglement = %.2f", values[0])
    else:
        log.info("Final evaluation: causal disentanglement = %.2f (median of %d members)",
                 float(np.nanmedian(values)), len(values))
    return rows


