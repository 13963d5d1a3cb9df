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
`restore_latest_intact` recomputes them; a step that fails the check, or whose files read
back as corrupt (`is_corruption`), is logged in one line, moved to
WORKDIR/checkpoints_rejected/<step>-<reason> (never deleted; read-only callers skip it
instead) and the next older step is tried. Any other error while reading (a transient I/O
error, out of memory, a bug) moves nothing and propagates as one CheckpointError line.
"""

import functools
import hashlib
import json
import logging
import os
import sys
from typing import Callable, List, Optional, Tuple, Union

import jax
import numpy as np

from wscrl_jax.train.distributed import main_value, to_host

log = logging.getLogger("wscrl_jax")

INTEGRITY_KEY = "integrity"  # the meta field of the checksums written by `save`
# What the storage layers say when the bytes on disk are damaged: tensorstore status codes in
# the message of what Orbax raises; a state whose files no longer match the tree its checksums
# record (the tree itself was checked against the run's first, `_check_fits`).
CORRUPTION_CODES = ("DATA_LOSS", "NOT_FOUND", "OUT_OF_RANGE", "FAILED_PRECONDITION",
                    "pytree structure error", "was not found in the checkpoint")
# ... and what says the opposite: resources, not bytes.
TRANSIENT_CODES = ("RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED")


class CheckpointError(RuntimeError):
    """A checkpoint is missing or does not match the run."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.abspath(os.path.join(workdir, "checkpoints"))


def rejected_dir(workdir: str) -> str:
    """Where checkpoints that failed the integrity check are moved (never deleted)."""
    return os.path.abspath(os.path.join(workdir, "checkpoints_rejected"))


def orbax_checkpoint():
    """The `orbax.checkpoint` module, imported on first use: 0.2 s, which a training run spends
    beside its data generation instead (`train/import_beside.py`)."""
    import orbax.checkpoint
    return orbax.checkpoint


def make_manager(workdir: str, max_to_keep: int = 3, async_save: bool = True,
                 create: bool = True):
    """An `orbax.checkpoint.CheckpointManager` of WORKDIR/checkpoints."""
    ocp = orbax_checkpoint()
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create,
                                           enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager, step: int, state, config, members, force=False,
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
    ocp = orbax_checkpoint()
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


def is_corruption(error: BaseException) -> bool:
    """True for an error that says a checkpoint's files are damaged: unparseable JSON or text,
    a missing file, or a tensorstore status of damaged data (`CORRUPTION_CODES`), in the error
    or its causes. Anything else (an I/O error, out of memory, a bug) is not."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError, FileNotFoundError)):
            return True
        text = str(error)
        if isinstance(error, (MemoryError, OSError, TypeError, AttributeError)) or any(
                code in text for code in TRANSIENT_CODES):
            return False
        if any(code in text for code in CORRUPTION_CODES):
            return True
        error = error.__cause__ or error.__context__
    return False


def restore_latest_intact(workdir: str, template: Union[Callable[[dict], object], object],
                          step: Optional[int] = None, required: bool = False,
                          quarantine: bool = True) -> Optional[Tuple[int, object, dict]]:
    """(step, state, meta) of the newest checkpoint that reads back and passes its checksums;
    None when the workdir has no checkpoint at all and none was ever rejected (with
    `required`, a CheckpointError instead).

    template: the state whose structure, shapes and shardings to restore into, or a function
    meta -> template (called once per step tried, after its meta was read and verified); a
    CheckpointError it raises (e.g. other members) propagates and moves nothing.
    A step whose files read back as damaged (`is_corruption`) or whose checksums differ is
    logged in one line, moved to `rejected_dir(workdir)` (with `quarantine=False`, as
    read-only callers use it: left in place) and the next older step is tried. With `step`
    given only that step is tried: missing or rejected, it is a CheckpointError. Raises
    CheckpointError when no step is intact, when a step cannot be read for another reason
    (nothing is moved), when a checkpoint carries no checksums, or when a readable checkpoint
    does not fit `template` (another model or config: not corruption, nothing is moved)."""
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
        reject = functools.partial(_reject if quarantine else _skip, workdir)
        for candidate in steps:
            try:
                meta = _read_meta(manager, candidate)
            except Exception as e:  # noqa: BLE001  classified: damage, or one error line
                _raise_unless_corruption(e, workdir, candidate, "meta")
                rejected.append(reject(candidate, "unreadable",
                                       f"its meta cannot be read ({_one_line(e)})"))
                continue
            problem = _check_meta(meta, candidate)
            if problem:
                rejected.append(reject(candidate, "checksum", problem))
                continue
            if INTEGRITY_KEY not in meta:
                raise CheckpointError(
                    f"the checkpoint at step {candidate} in {directory} carries no checksums "
                    "(written by an earlier version of wscrl_jax); train again in a new "
                    "--workdir")
            target = template(meta) if callable(template) else template
            _check_fits(workdir, candidate, meta, target)
            try:
                state = _read_state(manager, candidate, target)
            except Exception as e:  # noqa: BLE001  classified: damage, or one error line
                _raise_unless_corruption(e, workdir, candidate, "state")
                rejected.append(reject(candidate, "unreadable",
                                       f"its state cannot be read ({_one_line(e)})"))
                continue
            problem = _compare(meta[INTEGRITY_KEY]["leaves"], _leaf_digests(
                to_host(state)))
            if problem:
                rejected.append(reject(candidate, "checksum", problem))
                continue
            return candidate, state, meta
    finally:
        manager.close()
    where = f"was moved to {rejected[0]}" if quarantine else "was left in place"
    if step is not None:
        raise CheckpointError(f"checkpoint at step {step} in {directory} failed the integrity "
                              f"check and {where}")
    where = (f"were moved to {rejected_dir(workdir)}" if quarantine else "were left in place")
    raise CheckpointError(f"no intact checkpoint in {directory}: step(s) "
                          f"{', '.join(str(s) for s in steps)} failed the integrity check and "
                          f"{where}")


def _raise_unless_corruption(error, workdir, step, part):
    """A read error that is not damage (`is_corruption`) is one CheckpointError line; nothing
    is moved."""
    if not is_corruption(error):
        raise CheckpointError(
            f"could not read the {part} of the checkpoint at step {step} in "
            f"{checkpoint_dir(workdir)} ({_one_line(error)}); nothing was moved, try again"
        ) from None


def _read_meta(manager, step) -> dict:
    args = orbax_checkpoint().args
    return manager.restore(step, args=args.Composite(meta=args.JsonRestore()))["meta"]


def _read_state(manager, step, template):
    ocp = orbax_checkpoint()
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


def _check_fits(workdir, step, meta, template):
    """A checkpoint whose recorded leaves differ from the template's belongs to another model
    or config: an error of the run, not of the checkpoint (nothing is moved)."""
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


def _reject(workdir, step, reason, problem) -> str:
    """Moves step's directory out of checkpoints/ (so Orbax neither lists it nor refuses to
    save that step again), logs one line, returns where it went."""
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


def _skip(workdir, step, reason, problem) -> str:
    """Read-only callers: logs one line and leaves the step where it is."""
    del reason
    log.warning("Checkpoint at step %d in %s skipped: %s (left in place)", step,
                checkpoint_dir(workdir), problem)
    return os.path.join(checkpoint_dir(workdir), str(step))


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
