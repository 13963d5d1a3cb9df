"""One run from a config: data, members, training with checkpoints, evaluation, metric files.

A run trains every member of the sweep (model seeds x data seeds) as one stacked state;
without sweep fields it is a sweep of one (config.seed, config.data.nature.seed). Rerunning
the same command resumes from the latest checkpoint in WORKDIR/checkpoints.
"""

import json
import logging
import os
import time
from typing import List, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from wscrl_jax.config_checks import ConfigError
from wscrl_jax.methods import get_method
from wscrl_jax.plots import write_run_figures
from wscrl_jax.tracking import (RunTracker, TrainMetricsWriter, flat_config, read_csv,
                                write_csv_atomic, write_text_atomic)
from wscrl_jax.train import checkpoint
from wscrl_jax.train.distributed import (gather_objects, global_arrays, is_main,
                                         local_block, main_value, mesh_devices, multiprocess,
                                         process_member_range, to_host)
from wscrl_jax.train.loop import steps_per_epoch, train, train_size
from wscrl_jax.train.method import Method
from wscrl_jax.train.preemption import Interrupted
from wscrl_jax.train.prng import rolled_threefry
from wscrl_jax.train.sharding import (member_sharding, pad_members, padded_member_count,
                                      shard_members, unpad_members)
from wscrl_jax.train.state import init_states, member, stack_members
from wscrl_jax.train.sweep import grid_points, sweep_members

log = logging.getLogger("wscrl_jax")


def make_member_data(method, members):
    """{split: {name: [members, N, ...]}}, each member's data from its data seed."""
    with rolled_threefry():  # compiles faster here (train/prng.py)
        per_seed = {s: method.make_data(s) for s in dict.fromkeys(d for _, d in members)}
    return stack_members([per_seed[d] for _, d in members])


def build(config, members):
    """Method, sharded member data and freshly initialised sharded state, padded with inert
    copies of the last member so that the members divide over the devices
    (`sharding.padded_member_count`): the padding trains alongside, and `checkpoint_template`,
    `unpad_members` and `checkpoint.save` keep it out of checkpoints, metrics and evaluation.
    In a multi-process run each process builds only the members on its own devices."""
    method = get_method(config)
    devices = mesh_devices()
    if multiprocess():
        check_multiprocess(method)
    total = padded_member_count(len(members), len(devices), fill=multiprocess())
    if total > len(members):
        log.info("%d members padded with %d inert copies of the last to divide over %d devices",
                 len(members), total - len(members), len(devices))
    padded = list(members) + [members[-1]] * (total - len(members))
    sharding = member_sharding(total)
    if not multiprocess():
        data = shard_members(make_member_data(method, padded), sharding)
        state = shard_members(init_states(method, [s for s, _ in padded]), sharding)
        return method, data, state
    first, stop = process_member_range(sharding, total)
    local = padded[first:stop]
    data = global_arrays(make_member_data(method, local), sharding, total)
    state = global_arrays(init_states(method, [s for s, _ in local]), sharding, total)
    return method, data, state


def check_multiprocess(method):
    """Multi-process runs cover methods whose data live on the devices; a host pipeline or a
    convolutional model is one ConfigError line."""
    if type(method).make_stream is not Method.make_stream or method.convolutional:
        c = method.config
        raise ConfigError(
            f"method={c.method}, data.dataset={c.data.get('dataset')} runs in one process only "
            "(its data come from a host pipeline or its model is convolutional); run without "
            "--num_processes, one sweep per host")


def checkpoint_template(state, num_members: int):
    """The stacked state of the real members (what checkpoints hold), sharded for them (in a
    multi-process run: shapes replicated on every device, since the real members need not
    divide over the processes)."""
    if state.step.shape[0] == num_members:
        return state
    if multiprocess():
        replicated = NamedSharding(state.step.sharding.mesh, PartitionSpec())
        return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(
            (num_members,) + a.shape[1:], a.dtype, sharding=replicated), state)
    return shard_members(unpad_members(state, num_members),
                         member_sharding(num_members, quiet=True))


def repad(restored, like):
    """A restored state of the real members padded back to the shape and sharding of `like`."""
    total = like.step.shape[0]
    if restored.step.shape[0] == total:
        return restored
    if not multiprocess():
        return shard_members(pad_members(restored, total), like.step.sharding)
    # restored replicated over the global mesh (`checkpoint_template`): pad and reshard there
    return jax.jit(lambda tree: pad_members(tree, total),
                   out_shardings=like.step.sharding)(restored)


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
    if is_main():
        write_csv_atomic(os.path.join(workdir, "metrics", "test_metrics.csv"), rows)
    return rows


# What a resumed run may change without --allow_config_change: keys that do not change what
# the checkpoint's members have learned. `training.epochs` trains longer (or stops earlier);
# schedules defined over training.epochs are then evaluated for the new length.
RESUME_SAFE_KEYS = ("training.epochs", "training.steps_per_call", "training.nan_limit")
RESUME_SAFE_SECTIONS = ("eval.", "checkpoint.", "tracking.")
# Per method family (`config.method`), keys added after runs were written, with the value that
# reproduces those runs: a checkpoint whose config lacks such a key builds, evaluates and resumes
# under that value (any other value is a change).
_CONSTANT_ZERO = {"type": "constant", "initial": 0.0, "final": 0.0,
                  "initial_constant_epochs": 0, "decay_epochs": 0}
_GRAPH_SAMPLING = {"mode": "deterministic", "temperature": 1.0, "samples": 1}
_TRACKING = {"mlflow": False, "mlflow_uri": None, "tensorboard": False}
ADDED_KEYS = {"lcm": {"data.nature.rng": "jax", "data.mixing": "so_n",
                      "data.nature.mechanisms": "linear", "model.scm.transform": "affine",
                      "model.scm.spline_bins": 8, "model.scm.spline_bound": 5.0,
                      "eval.graphs": True, "eval.enco_lambda": 0.01,
                      "eval.enco_reference_quirks": True,
                      "eval.implicit_graph_fix_direction": False,
                      "eval.implicit_graph_threshold": 0.1,
                      "training.edge_regularization_schedule": _CONSTANT_ZERO,
                      "training.cyclicity_regularization_schedule": _CONSTANT_ZERO,
                      "training.graph_sampling": dict(
                          _GRAPH_SAMPLING, initial={"unfreeze_epoch": 0},
                          final=dict(_GRAPH_SAMPLING, freeze_epoch=None)),
                      "eval.graph_sampling": _GRAPH_SAMPLING, "tracking": _TRACKING,
                      "training.member_loop": "vmap"},
              "mdcrl": {"tracking": _TRACKING, "data.code_range": "symmetric",
                        "model.mlp_width": 200}}


def with_added_keys(saved: dict) -> dict:
    """A saved config (JSON dict) with the `ADDED_KEYS` of its method family it lacks set to
    their old behaviour (only where their section exists), so that older checkpoints build,
    evaluate and resume."""
    saved = json.loads(json.dumps(saved))
    for key, value in ADDED_KEYS.get(saved.get("method"), {}).items():
        *path, leaf = key.split(".")
        node = saved
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.setdefault(leaf, value)
    return saved


def config_changes(saved: dict, config) -> Tuple[List[str], List[str]]:
    """Keys whose values differ between a checkpoint's config (its JSON dict) and `config`:
    (keys that change training, keys in RESUME_SAFE_KEYS / RESUME_SAFE_SECTIONS)."""
    old, new = flat_config(with_added_keys(saved)), flat_config(
        json.loads(config.to_json_best_effort()))
    unset = object()
    changed = sorted(k for k in set(old) | set(new) if old.get(k, unset) != new.get(k, unset))
    safe = [k for k in changed if k in RESUME_SAFE_KEYS or k.startswith(RESUME_SAFE_SECTIONS)]
    return [k for k in changed if k not in safe], safe


def check_resume_config(saved: dict, config, workdir: str, step: int,
                        allow_config_change: bool) -> bool:
    """Refuses (CheckpointError, one line) to resume a checkpoint under a config that differs in
    keys that change training, unless allowed (then logged). Returns True if anything differs."""
    unsafe, safe = config_changes(saved, config)
    if safe:
        log.info("Resuming at step %d with changed %s", step, ", ".join(safe))
    if unsafe and not allow_config_change:
        shown = ", ".join(unsafe[:6]) + (f" and {len(unsafe) - 6} more" if len(unsafe) > 6 else "")
        raise checkpoint.CheckpointError(
            f"the config differs from the one the checkpoints in {workdir} were trained with, in "
            f"{shown}; rerun with that config (WORKDIR/config.json), use a new --workdir, or pass "
            "--allow_config_change")
    if unsafe:
        log.warning("Resuming at step %d with a changed config (--allow_config_change): %s", step,
                    ", ".join(unsafe))
    return bool(unsafe or safe)


def write_config(workdir: str, config, resumed_step: Optional[int], changed: bool):
    """WORKDIR/config.json for a new run (or an unchanged resume); a changed resume writes
    config_resumed_step<S>.json and keeps the config the checkpoints belong to."""
    name = f"config_resumed_step{resumed_step}.json" if changed else "config.json"
    os.makedirs(workdir, exist_ok=True)
    write_text_atomic(os.path.join(workdir, name), config.to_json_best_effort(indent=2))


def _trained_out(method, state, train_data, config) -> bool:
    """True when training has nothing left to do: the last epoch is done, or the method says so
    (e.g. every member early-stopped)."""
    n = train_size(train_data)
    total = config.training.epochs * steps_per_epoch(n, config.training.batchsize)
    return int(to_host(state.step)[0]) >= total or method.finished(state)


def run(config, workdir: str, progress: bool = True, *, stop_requested=None,
        allow_config_change: bool = False, reevaluate: bool = False):
    """Trains (resuming if a checkpoint exists) and evaluates; writes
    WORKDIR/metrics/test_metrics.csv. Returns the metric rows. A non-empty `sweep.grid` runs
    the grid (`run_grid`).

    Resuming checks the config against the checkpoint's (`check_resume_config`). A workdir
    whose training is finished and whose metrics exist is not evaluated again unless
    `reevaluate`. stop_requested: see `train.loop.train`; on a stop request the state is
    checkpointed and `Interrupted` propagates.
    """
    if config.get("sweep", {}).get("grid"):
        return run_grid(config, workdir, progress)
    members = sweep_members(config)
    progress = progress and is_main()
    log.info("Members (model seed, data seed): %s on %s", members, jax.devices()[0].platform)
    start = time.time()
    method, data, state = build(config, members)
    initial = start_metrics(method, state.params, data, len(members))
    log.info("Data and model ready in %.1f s", time.time() - start)

    changed = [False]

    def check_members_and_config(meta):
        if [tuple(m) for m in meta["members"]] != members:
            raise checkpoint.CheckpointError(
                f"{checkpoint.checkpoint_dir(workdir)} holds members {meta['members']}, not "
                f"{members}; use a new --workdir or the same sweep")
        changed[0] = check_resume_config(meta["config"], config, workdir, meta["step"],
                                         allow_config_change)
        return checkpoint_template(state, len(members))

    # the newest checkpoint that passes its checksums; corrupt ones are moved aside
    restored = checkpoint.restore_latest_intact(workdir, check_members_and_config)
    resumed = None if restored is None else restored[0]
    if is_main():
        write_config(workdir, config, resumed, changed[0])
    padded_seeds = [d for _, d in members] + [members[-1][1]] * (state.step.shape[0]
                                                                  - len(members))
    stream = method.make_stream(padded_seeds, resumed or 0,
                                None if restored is None else restored[2].get("data_iterators"))
    train_data = stream if stream is not None else {
        k: data[method.train_split][k] for k in method.train_inputs}
    if restored is not None:
        state = repad(restored[1], state)
        metrics_path = os.path.join(workdir, "metrics", "test_metrics.csv")
        if not reevaluate and main_value(os.path.exists(metrics_path)) and _trained_out(
                method, state, train_data, config):
            log.info("This workdir finished training at step %d and its metrics are in %s; "
                     "pass --reevaluate to evaluate it again", resumed, metrics_path)
            if stream is not None:
                stream.close()
            return read_csv(metrics_path)
        log.info("Resuming from the checkpoint at step %d", resumed)

    main = is_main()  # the process that writes files
    tracker = RunTracker(workdir, config, members) if main else None
    ck = config.checkpoint
    manager = checkpoint.make_manager(workdir, ck.max_to_keep, ck.async_save)
    writer = (TrainMetricsWriter(os.path.join(workdir, "metrics", "train_metrics.csv"),
                                 resumed or 0) if main else None)
    last_saved = [resumed or 0]

    def save(step, state, force=False):
        extra = None if stream is None else {"data_iterators": stream.state()}
        checkpoint.save(manager, step, state, config, members, force=force, extra=extra)

    def on_call_end(state, info):
        if main:
            writer.write(info["step"], info["epoch"], info["loss"])
            tracker.log_train(info["step"], info["epoch"], info["loss"])
        if ck.every_n_steps and info["step"] - last_saved[0] >= ck.every_n_steps:
            save(info["step"], state)
            last_saved[0] = info["step"]

    try:
        start = time.time()
        try:
            state = train(method, state, train_data, config, progress=progress,
                          on_call_end=on_call_end, eval_data=data, stop_requested=stop_requested,
                          num_members=len(members))
        except Interrupted as e:
            if e.step not in manager.all_steps():
                save(e.step, e.state, force=True)
            manager.wait_until_finished()
            log.warning("Stopped by %s at step %d; checkpoint saved. Rerun the same command "
                        "to resume.", e.signal_name, e.step)
            raise
        jax.block_until_ready(state)
        elapsed = time.time() - start
        final_step = int(to_host(state.step)[0])
        trained_steps = final_step - (resumed or 0)
        log.info("Training finished in %.1f s (%d steps, %.1f steps/s)", elapsed, trained_steps,
                 trained_steps / max(elapsed, 1e-9))
        if final_step not in manager.all_steps():
            save(final_step, state, force=True)
        manager.wait_until_finished()
        if hasattr(stop_requested, "stop_now_from_here"):  # reliability hook: signals now
            stop_requested.stop_now_from_here("evaluation")  # stop at once (preemption.py)
        write_outputs(method, workdir, state, data, members)
        rows = evaluate_members(method, state, data, members, workdir, config,
                                untrained=initial, progress=progress)
        if main:
            tracker.log_final(final_step, rows)
        return rows
    finally:
        if stream is not None:
            stream.close()
        manager.close()
        if main:
            writer.close()
            tracker.close()


def write_outputs(method, workdir, state, data, members):
    """The method's files of the real members (`Method.write_outputs`), written by process 0
    from the gathered members in a multi-process run."""
    if not multiprocess():
        method.write_outputs(workdir, *unpad_members((state, data), len(members)), members)
        return
    gathered = unpad_members(to_host((state, data)), len(members))
    if is_main():
        method.write_outputs(workdir, *gathered, members)


def evaluate_workdir(workdir: str, only: Optional[int] = None, step: Optional[int] = None,
                     progress: bool = True):
    """Restores a checkpoint (latest, or `step`) and evaluates it without training.

    Writes metrics/test_metrics.csv for all members at the latest step, otherwise
    metrics/test_metrics_member<K>[_step<S>].csv, so earlier files are never overwritten.
    """
    progress = progress and is_main()
    latest = checkpoint.latest_step(workdir)  # before corrupt steps are moved aside
    built = {}  # method, data and template for the config of the step being tried

    def template(meta):
        members = [tuple(m) for m in meta["members"]]
        if only is not None and not 0 <= only < len(members):
            raise checkpoint.CheckpointError(
                f"--member {only} is out of range: the checkpoint has {len(members)} members")
        key = json.dumps([meta["config"], members], sort_keys=True)
        if built.get("key") != key:
            config = ml_collections.ConfigDict(with_added_keys(meta["config"]))
            built.update(key=key, config=config, members=members, run=build(config, members))
        return checkpoint_template(built["run"][2], len(members))

    _, state, meta = checkpoint.restore_latest_intact(workdir, template, step, required=True)
    config, members, (method, data, template_state) = (built["config"], built["members"],
                                                       built["run"])
    initial = start_metrics(method, template_state.params, data, len(members))
    state = repad(state, template_state)  # on the devices the data were built on
    log.info("Restored the checkpoint at step %d (%d members)", meta["step"], len(members))
    name = "test_metrics"
    if only is not None:
        name += f"_member{only}"
    if meta["step"] != latest:
        name += f"_step{meta['step']}"
    return evaluate_members(method, state, data, members, workdir, config, only, name + ".csv",
                            untrained=initial, progress=progress)


def start_metrics(method, initial_params, data, num_members: int) -> List[dict]:
    """Per member, the method's metrics of the untrained model (hook `start_metrics`, e.g.
    MD-CRL's `*_linreg_start`; none by default). Call before training,
    which donates the parameter buffers. Each process computes its own members'."""
    (params, data), first = local_block((initial_params, data))
    size = jax.tree_util.tree_leaves(params)[0].shape[0]
    local = [method.start_metrics(member(params, i - first), member(data, i - first))
             for i in range(first, min(first + size, num_members))]
    return [row for rows in gather_objects(local) for row in rows]


def evaluate_members(method, state, data, members, workdir, config,
                     only: Optional[int] = None, filename: str = "test_metrics.csv",
                     untrained: Optional[List[dict]] = None, progress: bool = True):
    """Evaluates every member (or member `only`) together (`Method.evaluate_members`), writes
    WORKDIR/metrics/<filename>. untrained: per member, metrics of the untrained model
    (`start_metrics`) added to its row. State and data may carry inert padding members after
    the real ones (`build`): a method whose evaluation is vectorised evaluates them alongside,
    which keeps every device busy, and their rows are dropped (`Method.evaluates_padding`);
    otherwise they are cut off first. In a multi-process run each process evaluates the
    members on its devices and process 0 writes all rows (and returns them; the others
    return [])."""
    nan_counts = to_host(state.nan_count)
    stacked, first = local_block((state.params, state.model_state, data))
    size = int(jax.tree_util.tree_leaves(stacked[0])[0].shape[0])
    indices = [i for i in range(first, min(first + size, len(members)))
               if only is None or i == only]
    if only is not None and indices:
        stacked = jax.tree_util.tree_map(lambda a: a[only - first:only - first + 1], stacked)
    elif not method.evaluates_padding:
        stacked = unpad_members(stacked, len(indices))
    results = []
    if indices:
        keys = [jax.random.fold_in(jax.random.PRNGKey(members[i][0]), 2) for i in indices]
        total = int(jax.tree_util.tree_leaves(stacked[0])[0].shape[0])
        keys = jnp.stack(keys + keys[-1:] * (total - len(keys)))  # the padding's: the last's
        start = time.time()
        with tqdm(total=len(indices), disable=not progress, unit="stage", dynamic_ncols=True,
                  leave=False) as bar:
            results = method.evaluate_members(*stacked, keys, bar,
                                              real=len(indices))[:len(indices)]
        log.info("Evaluated %d member(s) in %.1f s", len(indices), time.time() - start)
    parts = gather_objects((indices, results))  # every process's, in member order
    indices = [i for part, _ in parts for i in part]
    results = [r for _, part in parts for r in part]
    if not is_main():
        return []
    rows = []
    headline = method.headline_metrics
    for index, metrics in zip(indices, results):
        seed, data_seed = members[index]
        status = ("ok" if nan_counts[index] < config.training.nan_limit
                  else f"frozen after {int(nan_counts[index])} non-finite steps")
        if isinstance(metrics, str):
            log.warning("Member %d could not be evaluated: %s", index, metrics)
            metrics = {k: float("nan") for k in headline}
            status = f"{status}; not evaluated"
        if untrained is not None:
            metrics.update(untrained[index])
        if headline == ("causal_disentanglement",):
            log.info("Member %d (seed %d, data seed %d): causal disentanglement = %.2f%s", index,
                     seed, data_seed, metrics["causal_disentanglement"], _noise_part(metrics))
        else:
            log.info("Member %d (seed %d, data seed %d): %s", index, seed, data_seed,
                     ", ".join(f"{k} = {metrics[k]:.4f}" for k in headline))
        rows.append({"seed": seed, "data_seed": data_seed, "status": status, **metrics})
    write_csv_atomic(os.path.join(workdir, "metrics", filename), rows)
    if filename == "test_metrics.csv":
        train_path = os.path.join(workdir, "metrics", "train_metrics.csv")
        write_run_figures(workdir, read_csv(train_path) if os.path.exists(train_path) else [],
                          rows)
    if headline != ("causal_disentanglement",):
        for k in headline:
            values = [r[k] for r in rows]
            log.info("Final evaluation: %s = %s (median %.4f over %d member(s))", k,
                     ", ".join(f"{v:.4f}" for v in values), float(np.nanmedian(values)),
                     len(values))
        return rows
    values = [r["causal_disentanglement"] for r in rows]
    if len(values) == 1:
        log.info("Final evaluation: causal disentanglement = %.2f%s", values[0],
                 _noise_part(rows[0]))
    else:
        noise = ({"noise_disentanglement": float(np.nanmedian(
            [r["noise_disentanglement"] for r in rows]))} if "noise_disentanglement" in rows[0]
            else {})
        log.info("Final evaluation: causal disentanglement = %.2f%s (median%s of %d members)",
                 float(np.nanmedian(values)), _noise_part(noise), "s" if noise else "",
                 len(values))
    return rows


def _noise_part(metrics: dict) -> str:
    """", noise disentanglement = x.xx" where the run knows the true noise (CausalCircuit, the
    reference's log line), else ""."""
    if "noise_disentanglement" not in metrics:
        return ""
    return f", noise disentanglement = {metrics['noise_disentanglement']:.2f}"


