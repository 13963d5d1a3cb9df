"""Final evaluation of a run's members: `metrics/test_metrics.csv`, figures, the summary line.

`evaluate_members` evaluates the trained members (`Method.evaluate`) and writes their rows;
`evaluate_workdir` restores a checkpoint and does the same without training (read-only: a
damaged checkpoint is skipped, never moved). In a multi-process run each process evaluates the
members on its devices and process 0 writes all rows.
"""

import functools
import json
import logging
import os
import threading
import time
from typing import List, Optional

import jax
import jax.numpy as jnp
import ml_collections

from wscrl_jax.methods import method_class
from wscrl_jax.plots import write_run_figures
from wscrl_jax.run.members import build, checkpoint_template, repad
from wscrl_jax.tracking import read_csv, write_csv_atomic
from wscrl_jax.train import checkpoint, streams
from wscrl_jax.train.distributed import (gather_objects, is_main, local_block, multiprocess,
                                         to_host)
from wscrl_jax.train.import_beside import import_beside
from wscrl_jax.train.method import MemberNotEvaluated
from wscrl_jax.train.preemption import raise_if_stopped
from wscrl_jax.train.sharding import unpad_members

log = logging.getLogger("wscrl_jax")


def copy_params(params):
    """A copy of the (untrained) parameters that survives training's buffer donation."""
    return jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), params)


def evaluation_keys(members, indices, total: int):
    """[total, 2]: each evaluated member's key from its model seed; the padding's, the last's."""
    keys = [jax.random.fold_in(jax.random.PRNGKey(members[i][0]), streams.EVALUATION)
            for i in indices]
    return jnp.stack(keys + keys[-1:] * (total - len(keys)))


def evaluate_members(method, state, data, members, workdir, config, initial_params,
                     only: Optional[int] = None, filename: str = "test_metrics.csv",
                     progress: bool = True) -> List[dict]:
    """Evaluates every member (or member `only`) and writes WORKDIR/metrics/<filename>; returns
    the rows (process 0; the others return []). State and data may carry inert padding members
    after the real ones: a method whose evaluation vectorises over members
    (`options.evaluates_padding`) evaluates them alongside, which keeps every device busy;
    otherwise they are cut off first."""
    nan_counts = to_host(state.nan_count)
    stacked, first = local_block((state.params, state.model_state, data, initial_params))
    size = int(jax.tree_util.tree_leaves(stacked[0])[0].shape[0])
    indices = [i for i in range(first, min(first + size, len(members)))
               if only is None or i == only]
    if only is not None and indices:
        stacked = jax.tree_util.tree_map(lambda a: a[only - first:only - first + 1], stacked)
    elif not method.options.evaluates_padding:
        stacked = unpad_members(stacked, len(indices))
    results = []
    if indices:
        total = int(jax.tree_util.tree_leaves(stacked[0])[0].shape[0])
        start = time.time()
        params, model_state, member_data, initial = stacked
        results = method.evaluate(params, model_state, member_data,
                                  evaluation_keys(members, indices, total), initial,
                                  real=len(indices), progress=progress)[:len(indices)]
        log.info("Evaluated %d member(s) in %.1f s", len(indices), time.time() - start)
    parts = gather_objects((indices, results))  # every process's, in member order
    indices = [i for part, _ in parts for i in part]
    results = [r for _, part in parts for r in part]
    if not is_main():
        return []
    raise_if_stopped()  # a signal whose StopNow library code swallowed: no file written
    rows = metric_rows(method, members, indices, results, nan_counts, config)
    write_csv_atomic(os.path.join(workdir, "metrics", filename), rows)
    if filename == "test_metrics.csv":
        train_path = os.path.join(workdir, "metrics", "train_metrics.csv")
        write_run_figures(workdir, read_csv(train_path) if os.path.exists(train_path) else [],
                          rows)
    evaluated = [m for m in results if not isinstance(m, MemberNotEvaluated)]
    if evaluated:
        log.info("Final evaluation: %s", method.summary(evaluated))
    return rows


def evaluation_ahead_when(config) -> Optional[str]:
    """When `eval.compile_ahead` ("on", "end", "off", or "auto"; absent: off) compiles the
    evaluation's programs in the background: "training" (on: while training runs), "end" (from
    the end of training, beside the evaluation, which compiles its first programs itself while
    the thread compiles its last ones) or None. auto: "training" where the backend is an
    accelerator, whose host cores idle while it trains; "end" on a CPU, where XLA's compiler
    (about two threads a program) and the training steps already fill a small machine's cores
    (on 2 cores, "training" slowed the README smoke run from 23.9 s to 29.7 s; "end" quickened
    its evaluation by about 1.4 s)."""
    setting = config.get("eval", {}).get("compile_ahead", "off")
    if setting == "auto":
        return "training" if jax.default_backend() != "cpu" else "end"
    return {"on": "training", "end": "end"}.get(setting)


def compile_evaluation_ahead(method, state, data, members, low_priority: bool = False
                             ) -> Optional[threading.Thread]:
    """Starts compiling the programs `evaluate_members` will run on this stack after training
    (`Method.evaluate(..., compile_only=True)`) in a background thread, now (while training
    runs, or beside the evaluation: `evaluation_ahead_when`). Returns the thread (joined before
    the evaluation where started before training), or None where nothing is compiled ahead:
    `eval.compile_ahead` off, several processes, or padding members a method does not
    evaluate. A failure there is logged at debug level: the evaluation then compiles what it
    needs itself (a program both ask for compiles once: the second waits for the first).
    low_priority: the thread at the lowest priority (Linux), beside training's own work."""
    total = int(state.step.shape[0])
    if (evaluation_ahead_when(method.config) is None or multiprocess()
            or not (method.options.evaluates_padding or total == len(members))):
        return None
    specs = jax.tree_util.tree_map(  # shapes only: training donates the arrays
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
        (state.params, state.model_state, state.params))
    keys = evaluation_keys(members, range(len(members)), total)

    def compile_all():
        start = time.time()
        try:  # this thread only
            if low_priority:
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        try:
            params, model_state, initial = specs
            method.evaluate(params, model_state, data, keys, initial, real=len(members),
                            progress=False, compile_only=True)
            log.debug("Evaluation compiled ahead in %.1f s", time.time() - start)
        except Exception as e:  # noqa: BLE001  the evaluation compiles (and reports) itself
            log.debug("Compiling the evaluation ahead failed: %r", e)

    # not a daemon: a run stopped during training exits once the compilation ends, rather than
    # tearing the backend down under it
    thread = threading.Thread(target=compile_all, name="evaluation-ahead")
    thread.start()
    return thread


def metric_rows(method, members, indices, results, nan_counts, config) -> List[dict]:
    """One row a member: seed, data seed, status, metrics. A member that could not be
    evaluated gets NaN for every metric the others have, and says why in its status."""
    columns = dict.fromkeys(k for r in results if isinstance(r, dict) for k in r)
    rows = []
    for index, metrics in zip(indices, results):
        seed, data_seed = members[index]
        status = ("ok" if nan_counts[index] < config.training.nan_limit
                  else f"frozen after {int(nan_counts[index])} non-finite steps")
        if isinstance(metrics, MemberNotEvaluated):
            log.warning("Member %d could not be evaluated: %s", index, metrics)
            metrics, status = {k: float("nan") for k in columns}, f"{status}; not evaluated"
        else:
            log.info("Member %d (seed %d, data seed %d): %s", index, seed, data_seed,
                     method.summary([metrics]))
        rows.append({"seed": seed, "data_seed": data_seed, "status": status, **metrics})
    return rows


def evaluate_workdir(workdir: str, only: Optional[int] = None, step: Optional[int] = None,
                     progress: bool = True) -> List[dict]:
    """Restores a checkpoint (latest intact, or `step`) and evaluates it without training.

    Writes metrics/test_metrics.csv for all members at the latest step, otherwise
    metrics/test_metrics_member<K>[_step<S>].csv, so earlier files are never overwritten.
    Nothing in checkpoints/ is moved: a damaged checkpoint is reported and skipped.
    """
    progress = progress and is_main()
    import_beside()  # what the evaluation needs later, while its data compile
    latest = checkpoint.latest_step(workdir)

    def template(meta):
        members = [tuple(m) for m in meta["members"]]
        if only is not None and not 0 <= only < len(members):
            raise checkpoint.CheckpointError(
                f"--member {only} is out of range: the checkpoint has {len(members)} members")
        _, _, fresh = _build_saved(json.dumps([meta["config"], members]), workdir)
        return checkpoint_template(fresh, len(members))

    try:
        _, state, meta = checkpoint.restore_latest_intact(workdir, template, step,
                                                          required=True, quarantine=False)
        members = [tuple(m) for m in meta["members"]]
        method, data, fresh = _build_saved(json.dumps([meta["config"], members]), workdir)
    finally:
        _build_saved.cache_clear()  # the data and state are held below, not by the cache
    config = saved_config(meta["config"], workdir)
    state = repad(state, fresh)  # on the devices the data were built on
    log.info("Restored the checkpoint at step %d (%d members)", meta["step"], len(members))
    name = "test_metrics"
    if only is not None:
        name += f"_member{only}"
    if meta["step"] != latest:
        name += f"_step{meta['step']}"
    # all members' programs compiled beside the evaluation, last first (`eval.compile_ahead`)
    ahead = compile_evaluation_ahead(method, state, data, members) if only is None else None
    try:
        return evaluate_members(method, state, data, members, workdir, config, fresh.params,
                                only, name + ".csv", progress=progress)
    finally:
        if ahead is not None:
            ahead.join()


@functools.lru_cache(maxsize=1)
def _build_saved(config_and_members: str, workdir: str):
    """`build` of a checkpoint's config and members (JSON), once for the steps that share it."""
    saved, members = json.loads(config_and_members)
    return build(saved_config(saved, workdir), [tuple(m) for m in members])


def saved_config(saved: dict, workdir: str):
    """A checkpoint's config as a ConfigDict, validated by its method; a config this version
    cannot read (written by an earlier version, keys missing) is one CheckpointError line."""
    config = ml_collections.ConfigDict(saved)
    try:
        method_class(config).validate_config(config)
    except (KeyError, AttributeError) as e:
        raise checkpoint.CheckpointError(
            f"the checkpoints in {workdir} were written by an earlier version of wscrl_jax: "
            f"their config lacks {e}; train them again in a new --workdir") from None
    return config
