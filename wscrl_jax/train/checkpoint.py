"""Orbax checkpoints of the whole stacked train state, with the config and the members.

Layout: WORKDIR/checkpoints/<step>/{state, meta}. Saves are asynchronous; Orbax commits a
step atomically, so a process killed mid-save leaves the previous checkpoints intact and
the partial one is ignored on restore.
"""

import json
import os
from typing import Optional

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint is missing or does not match the run."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.abspath(os.path.join(workdir, "checkpoints"))


def make_manager(workdir: str, max_to_keep: int = 3, async_save: bool = True,
                 create: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create,
                                           enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def save(manager: ocp.CheckpointManager, step: int, state, config, members, force=False):
    """Saves the stacked state plus metadata (config JSON, members) at `step`."""
    meta = {"step": int(step), "members": [list(m) for m in members],
            "config": json.loads(config.to_json_best_effort())}
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               meta=ocp.args.JsonSave(meta)), force=force)


def latest_step(workdir: str) -> Optional[int]:
    if not os.path.isdir(checkpoint_dir(workdir)):
        return None
    manager = make_manager(workdir, create=False)
    try:
        return manager.latest_step()
    finally:
        manager.close()


def restore_meta(workdir: str, step: Optional[int] = None) -> dict:
    manager = make_manager(workdir, create=False)
    try:
        step = manager.latest_step() if step is None else step
        if step is None or step not in manager.all_steps():
            raise CheckpointError(_missing(workdir, step, manager.all_steps()))
        return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    finally:
        manager.close()


def restore_state(workdir: str, template, step: Optional[int] = None):
    """Restores the stacked state at `step` (latest if None) into the structure, shapes and
    shardings of `template`."""
    manager = make_manager(workdir, create=False)
    try:
        step = manager.latest_step() if step is None else step
        if step is None or step not in manager.all_steps():
            raise CheckpointError(_missing(workdir, step, manager.all_steps()))
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract)))
        return restored["state"]
    finally:
        manager.close()


def _missing(workdir, step, steps) -> str:
    if not steps:
        return f"no checkpoint in {checkpoint_dir(workdir)}; train first with scripts/train.py"
    return f"no checkpoint at step {step} in {checkpoint_dir(workdir)}; available: {list(steps)}"
