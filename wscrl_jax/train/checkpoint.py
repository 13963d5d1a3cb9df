"""Orbax checkpoints of the whole stacked train state, with the config and the members.

Layout: WORKDIR/checkpoints/<step>/{state, meta}. Saves are asynchronous; Orbax commits a
step atomically, so a process killed mid-save leaves the previous checkpoints intact and
the partial one is ignored on restore.

Verified checkpoints: Orbax has no checksum of what it reads back. Only the OCDBT manifest
and b-tree nodes carry a CRC-32C (checked by tensorstore: DATA_LOSS); the array chunks
(zarr, zstd) stored as OCDBT values, the JSON metadata and the meta carry none (zarr3, not
used here, would add one to its shard index only), so garbled chunk bytes can read back as
other numbers without an error. `save` therefore records, in the meta JSON, the sha256 of
every leaf's bytes (with its key path, dtype and shape, in tree order) computed from the very
host arrays it hands to Orbax, plus a sha256 of the rest of the meta.
`restore_latest_intact` recomputes them; a step that fails the check or cannot be read at
all is logged in one line, moved to WORKDIR/checkpoints_rejected/<step>-<reason> (never
deleted) and the next older step is tried.
"""

import hashlib
import json
import logging
import os
import sys
from typing import Callable, List, Optional, Tuple, Union

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp

from wscrl_jax.train.distributed import main_value, to_host
from wscrl_jax.train.optim import TorchAdamState, upgrade_global_count

log = logging.getLogger("wscrl_jax")

INTEGRITY_KEY = "integrity"  # meta field written by `save` since checksums were added


class CheckpointError(RuntimeError):
    """A checkpoint is missing or does not match the run."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.abspath(os.path.join(workdir, "checkpoints"))


def rejected_dir(workdir: str) -> str:
    """Where checkpoints that failed the integrity check are moved (never deleted)."""
    return os.path.abspath(os.path.join(workdir, "checkpoints_rejected"))


def make_manager(workdir: str, max_to_keep: int = 3, async_save: bool = True,
                 create: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create,
                                           enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state, config, members, force=False,
         extra: Optional[dict] = None):
    """Saves the stacked state plus metadata (config JSON, members, checksums and `extra`, e.g.
    a disk pipeline's iterator state, JSON-serialisable) at `step`.

    The state is copied to host first; the checksums are computed from those host arrays and
    the same arrays are handed to Orbax, so an asynchronous save writes exactly what was
    hashed (and later buffer donation cannot touch it). Only the first len(members) members
    are saved: inert padding members (`sharding.padded_member_count`) are not."""
    host = jax.tree_util.tree_map(lambda a: a[:len(members)], to_host(state))
    meta = {"step": int(step), "members": [list(m) for m in members],
            "config": json.loads(config.to_json_best_effort()), **(extra or {})}
    meta[INTEGRITY_KEY] = {"algorithm": "sha256", "leaves": _leaf_digests(host),
                           "meta": _meta_digest(meta)}
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(host),
                                               meta=ocp.args.JsonSave(meta)), force=force)


def latest_step(workdir: str) -> Optional[int]:
    if not main_value(os.path.isdir(checkpoint_dir(workdir))):
        return None
    manager = make_manager(workdir, create=False)
    try:
        return manager.latest_step()
    finally:
        manager.close()


def restore_meta(workdir: str, step: Optional[int] = None) -> dict:
    """The meta JSON of `step` (latest if None), unverified."""
    manager = make_manager(workdir, create=False)
    try:
        step = manager.latest_step() if step is None else step
        if step is None or step not in manager.all_steps():
            raise CheckpointError(_missing(workdir, step, manager.all_steps()))
        return _read_meta(manager, step)
    finally:
        manager.close()


def restore_state(workdir: str, template, step: Optional[int] = None):
    """Restores the stacked state at `step` (latest if None) into the structure, shapes and
    shardings of `template`, unverified (see `restore_latest_intact`)."""
    manager = make_manager(workdir, create=False)
    try:
        step = manager.latest_step() if step is None else step
        if step is None or step not in manager.all_steps():
            raise CheckpointError(_missing(workdir, step, manager.all_steps()))
        return _read_state(manager, step, template)
    finally:
        manager.close()


def restore_latest_intact(workdir: str, template: Union[Callable[[dict], object], object],
                          step: Optional[int] = None, required: bool = False,
                          read_only: bool = False) -> Optional[Tuple[int, object, dict]]:
    """(step, state, meta) of the newest checkpoint that reads back and passes its checksums;
    None when the workdir has no checkpoint at all and none was ever rejected (with
    `required`, a CheckpointError instead).

    template: the state whose structure, shapes and shardings to restore into, or a function
    meta -> template (called once per step tried, after its meta was read and verified); a
    CheckpointError it raises (e.g. other members) propagates and moves nothing.
    A step that cannot be read (any exception from Orbax, tensorstore or json while
    restoring it) or whose checksums differ is logged in one line, moved to
    `rejected_dir(workdir)` and the next older step is tried. With `step` given only that
    step is tried: missing or rejected, it is a CheckpointError. Checkpoints written before
    checksums existed are accepted with a warning. Raises CheckpointError when no step is
    intact, or when a readable checkpoint does not fit `template` (another model or config:
    that is not corruption, so nothing is moved). `read_only`: a rejected step is logged and
    skipped but left where it is (readers such as `wscrl_jax.load` never write the workdir)."""
    directory = checkpoint_dir(workdir)
    # one view of the disk for all processes: process 0 may create the directory right after
    if not main_value(os.path.isdir(directory)):
        if step is not None or required:
            raise CheckpointError(_missing(workdir, step, []))
        _refuse_if_all_rejected(workdir)
        return None
    manager = make_manager(workdir, create=False)
    rejected = []
    _silence_closed_loop_callbacks()  # before any read: stragglers of a failed one come late
    try:
        steps = sorted(manager.all_steps(), reverse=True)
        if step is not None:
            if step not in steps:
                raise CheckpointError(_missing(workdir, step, sorted(steps)))
            steps = [step]
        if not steps:
            _refuse_if_all_rejected(workdir)
            if required:
                raise CheckpointError(_missing(workdir, step, []))
            return None
        for candidate in steps:
            try:
                meta = _read_meta(manager, candidate)
            except Exception as e:  # anything Orbax or json raise: unreadable
                rejected.append(_reject(workdir, candidate, "unreadable",
                                        f"its meta cannot be read ({_one_line(e)})", read_only))
                continue
            problem = _check_meta(meta, candidate)
            if problem:
                rejected.append(_reject(workdir, candidate, "checksum", problem, read_only))
                continue
            target = template(meta) if callable(template) else template
            target, upgrade = _saved_form(meta, target)
            _check_fits(workdir, candidate, meta, target)
            try:
                state = _read_state(manager, candidate, target)
            except Exception as e:  # anything Orbax or tensorstore raise
                rejected.append(_reject(workdir, candidate, "unreadable",
                                        f"its state cannot be read ({_one_line(e)})", read_only))
                continue
            if INTEGRITY_KEY not in meta:
                log.warning("Checkpoint at step %d in %s is not verifiable (written before "
                            "checksums were recorded); restoring it unchecked", candidate,
                            directory)
                return candidate, upgrade(state), meta
            problem = _compare(meta[INTEGRITY_KEY]["leaves"], _leaf_digests(
                to_host(state)))
            if problem:
                rejected.append(_reject(workdir, candidate, "checksum", problem, read_only))
                continue
            return candidate, upgrade(state), meta
    finally:
        manager.close()
    if step is not None:
        where = "left in place" if read_only else f"was moved to {rejected[0]}"
        raise CheckpointError(f"checkpoint at step {step} in {directory} failed the integrity "
                              f"check and {where}")
    where = "were left in place" if read_only else f"were moved to {rejected_dir(workdir)}"
    raise CheckpointError(f"no intact checkpoint in {directory}: step(s) "
                          f"{', '.join(str(s) for s in steps)} failed the integrity check and "
                          f"{where}")


def _read_meta(manager, step) -> dict:
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def _read_state(manager, step, template):
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
    return restored["state"]


def _leaf_signatures(tree) -> List[list]:
    """[[key path, dtype, shape], ...] in tree order."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [[jax.tree_util.keystr(path), str(np.dtype(x.dtype)), list(x.shape)]
            for path, x in leaves]


def _leaf_digests(host_tree) -> List[list]:
    """[[key path, dtype, shape, sha256 of the C-order bytes], ...] in tree order."""
    leaves = jax.tree_util.tree_leaves(host_tree)
    return [sig + [hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()]
            for sig, x in zip(_leaf_signatures(host_tree), leaves)]


def _meta_digest(meta: dict) -> str:
    rest = {k: v for k, v in meta.items() if k != INTEGRITY_KEY}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def _check_meta(meta, step) -> Optional[str]:
    """What is wrong with a meta that parsed as JSON, or None."""
    if not isinstance(meta, dict) or not {"step", "members", "config"} <= set(meta):
        return "its meta lacks step, members or config"
    if meta["step"] != step:
        return f"its meta is that of step {meta['step']}"
    integrity = meta.get(INTEGRITY_KEY)
    if integrity is None:
        return None  # written before checksums: accepted with a warning after the restore
    try:
        recorded = integrity["meta"]
        leaves = integrity["leaves"]
        assert all(len(leaf) == 4 for leaf in leaves)
    except (TypeError, KeyError, AssertionError):
        return "its checksum record is malformed"
    if recorded != _meta_digest(meta):
        return "its meta does not match its checksum"
    return None


def _saved_form(meta, template):
    """(the template to read the checkpoint into, a function turning what is read into the
    template's form): a checkpoint saved before Adam counted steps per parameter array
    (`optax.ScaleByAdamState`, one count) is read as such and upgraded
    (`optim.upgrade_global_count`); any other is read as it is."""
    same = (template, lambda state: state)
    is_adam = lambda node: isinstance(node, TorchAdamState)  # noqa: E731
    if INTEGRITY_KEY not in meta or not any(
            is_adam(n) for n in jax.tree_util.tree_leaves(template, is_leaf=is_adam)):
        return same
    old = jax.tree_util.tree_map(
        lambda n: optax.ScaleByAdamState(jax.tree_util.tree_leaves(n.count)[0], n.mu, n.nu)
        if is_adam(n) else n, template, is_leaf=is_adam)
    saved = [leaf[:3] for leaf in meta[INTEGRITY_KEY]["leaves"]]
    if saved == _leaf_signatures(template) or saved != _leaf_signatures(old):
        return same
    log.info("Checkpoint saved with one Adam step count: each parameter array continues it")
    was_adam = lambda node: isinstance(node, optax.ScaleByAdamState)  # noqa: E731
    return old, lambda state: jax.tree_util.tree_map(
        lambda n: upgrade_global_count(n) if was_adam(n) else n, state, is_leaf=was_adam)


def _check_fits(workdir, step, meta, template):
    """A checkpoint whose recorded leaves differ from the template's belongs to another model
    or config: an error of the run, not of the checkpoint (nothing is moved)."""
    if INTEGRITY_KEY not in meta:
        return
    saved = [leaf[:3] for leaf in meta[INTEGRITY_KEY]["leaves"]]
    wanted = _leaf_signatures(template)
    if saved == wanted:
        return
    if len(saved) != len(wanted):
        what = f"it has {len(saved)} state leaves, this run {len(wanted)}"
    else:
        s, w = next((s, w) for s, w in zip(saved, wanted) if s != w)
        what = (f"leaf {s[0]} is {s[1]}{s[2]} in it, {w[0]} is {w[1]}{w[2]} in this run")
    raise CheckpointError(f"the checkpoint at step {step} in {checkpoint_dir(workdir)} does "
                          f"not fit this run ({what}); use a new --workdir or the same config")


def _compare(recorded, actual) -> Optional[str]:
    bad = [r[0] for r, a in zip(recorded, actual) if r != a]
    if len(recorded) != len(actual):
        return f"it has {len(actual)} state leaves but recorded {len(recorded)}"
    if not bad:
        return None
    return (f"checksum mismatch in {len(bad)} of {len(recorded)} state leaves "
            f"(first: {bad[0]})")


def _reject(workdir, step, reason, problem, read_only: bool = False) -> str:
    """Moves step's directory out of checkpoints/ (so Orbax neither lists it nor refuses to
    save that step again), logs one line, returns where it went; `read_only`: logs it and
    leaves it in place."""
    if read_only:
        log.warning("Checkpoint at step %d rejected: %s; left in place", step, problem)
        return os.path.join(checkpoint_dir(workdir), str(step))
    target = os.path.join(rejected_dir(workdir), f"{step}-{reason}")
    n = 1
    while os.path.exists(target):
        n += 1
        target = os.path.join(rejected_dir(workdir), f"{step}-{reason}-{n}")
    target = main_value(target)  # the name process 0 moves it to
    if jax.process_index() == 0:
        os.makedirs(rejected_dir(workdir), exist_ok=True)
        os.rename(os.path.join(checkpoint_dir(workdir), str(step)), target)
    if jax.process_count() > 1:  # the others must not list the step once this returns
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(f"checkpoint {step} rejected")
    log.warning("Checkpoint at step %d rejected: %s; moved to %s", step, problem, target)
    return target


def _refuse_if_all_rejected(workdir):
    """No checkpoint left but some were rejected: training from scratch would silently
    overwrite the metrics of the run they came from, so refuse."""
    rejected = rejected_dir(workdir)
    if os.path.isdir(rejected) and os.listdir(rejected):
        raise CheckpointError(f"no intact checkpoint in {checkpoint_dir(workdir)}; the rejected "
                              f"ones are in {rejected} (move that folder away, or use a new "
                              f"--workdir, to train from scratch)")


def _silence_closed_loop_callbacks():
    """After a failed restore, the tensorstore reads Orbax still had in flight finish and call
    back into Orbax's event loop, already closed: Python prints each as an unraisable
    `RuntimeError: Event loop is closed` traceback (hundreds of lines for one bad file, after
    our one-line warning). Drops those (a RuntimeError "Event loop is closed" raised where
    nothing can catch it); anything else goes to the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "drops_closed_loop_callbacks", False):
        return

    def hook(unraisable):
        if (unraisable.exc_type is RuntimeError
                and str(unraisable.exc_value) == "Event loop is closed"):
            return
        previous(unraisable)

    hook.drops_closed_loop_callbacks = True
    sys.unraisablehook = hook


def _one_line(e: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _missing(workdir, step, steps) -> str:
    if not steps:
        return f"no checkpoint in {checkpoint_dir(workdir)}; train first with scripts/train.py"
    return f"no checkpoint at step {step} in {checkpoint_dir(workdir)}; available: {list(steps)}"
