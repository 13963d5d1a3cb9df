"""What a run reads from and writes to its workdir while it trains.

Resuming: a rerun of a command on the same workdir restores the newest checkpoint that passes
its checksums (`checkpoint.restore_latest_intact`) if it holds the same members and was trained
with the same config. Keys that do not change what the members have learned
(`RESUME_SAFE_KEYS`, `RESUME_SAFE_SECTIONS`) may differ; any other difference is refused in one
line unless allowed (`--allow_config_change`, logged). A checkpoint whose config lacks keys this
version has (written by an earlier version) is refused in one line naming them.

Recording: `Recorder.after_call` is the loop's `on_call_end`: it appends the call's losses to
`metrics/train_metrics.csv` (process 0) and saves a checkpoint every `checkpoint.every_n_steps`
steps; `save_final` writes one at the last step (or where a stop was requested), with the data
pipeline's position where there is one.
"""

import dataclasses
import json
import logging
import os
from typing import Any, List, Optional, Tuple

from wscrl_jax.run.members import checkpoint_template
from wscrl_jax.tracking import RunTracker, TrainMetricsWriter, write_text_atomic
from wscrl_jax.train.workdir_state import flat_config
from wscrl_jax.train import checkpoint

log = logging.getLogger("wscrl_jax")

RESUME_SAFE_KEYS = ("training.epochs", "training.steps_per_call", "training.nan_limit",
                    "training.cpu_devices")
RESUME_SAFE_SECTIONS = ("eval.", "checkpoint.", "tracking.")


@dataclasses.dataclass
class Restored:
    """A restored checkpoint: its step, state of the real members, the data pipeline's saved
    position (None for on-device data) and whether the config differs from the checkpoint's."""

    step: int
    state: Any
    data_iterators: Optional[dict]
    config_changed: bool


def config_changes(saved: dict, config) -> Tuple[List[str], List[str], List[str]]:
    """Keys of `config` that differ from a checkpoint's config (its JSON dict): (keys missing
    from the checkpoint's config, keys that change training, keys that do not)."""
    old, new = flat_config(saved), flat_config(json.loads(config.to_json_best_effort()))
    missing = sorted(k for k in new if k not in old)
    unset = object()
    changed = sorted(k for k in set(old) | set(new)
                     if k not in missing and old.get(k, unset) != new.get(k, unset))
    safe = [k for k in changed if k in RESUME_SAFE_KEYS or k.startswith(RESUME_SAFE_SECTIONS)]
    return missing, [k for k in changed if k not in safe], safe


def _shown(keys: List[str]) -> str:
    return ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")


def check_resume_config(saved: dict, config, workdir: str, step: int,
                        allow_config_change: bool):
    """Refuses (CheckpointError, one line) a checkpoint whose config lacks keys of `config` or
    differs from it in keys that change training (unless allowed; then logged)."""
    missing, unsafe, safe = config_changes(saved, config)
    if missing:
        raise checkpoint.CheckpointError(
            f"the checkpoints in {workdir} were written by an earlier version of wscrl_jax: "
            f"their config lacks {_shown(missing)}; train them again in a new --workdir")
    if safe:
        log.info("Resuming at step %d with changed %s", step, ", ".join(safe))
    if unsafe and not allow_config_change:
        raise checkpoint.CheckpointError(
            f"the config differs from the one the checkpoints in {workdir} were trained with, in "
            f"{_shown(unsafe)}; rerun with that config (WORKDIR/config.json), use a new "
            "--workdir, or pass --allow_config_change")
    if unsafe:
        log.warning("Resuming at step %d with a changed config (--allow_config_change): %s", step,
                    ", ".join(unsafe))


def restore(workdir: str, config, members, state, allow_config_change: bool
            ) -> Optional[Restored]:
    """The newest intact checkpoint of `workdir` for these members and this config (None for a
    fresh run); damaged checkpoints are moved aside. state: the run's freshly built state,
    whose structure and shardings the checkpoint is read into."""
    def template(meta):
        if [tuple(m) for m in meta["members"]] != members:
            raise checkpoint.CheckpointError(
                f"{checkpoint.checkpoint_dir(workdir)} holds members {meta['members']}, not "
                f"{members}; use a new --workdir or the same sweep")
        check_resume_config(meta["config"], config, workdir, meta["step"], allow_config_change)
        return checkpoint_template(state, len(members))

    found = checkpoint.restore_latest_intact(workdir, template)
    if found is None:
        return None
    step, restored, meta = found
    _, unsafe, safe = config_changes(meta["config"], config)
    return Restored(step, restored, meta.get("data_iterators"), bool(unsafe or safe))


def write_config(workdir: str, config, restored: Optional[Restored]):
    """WORKDIR/config.json for a new run (or an unchanged resume); a changed resume writes
    config_resumed_step<S>.json and keeps the config the checkpoints belong to."""
    changed = restored is not None and restored.config_changed
    name = f"config_resumed_step{restored.step}.json" if changed else "config.json"
    os.makedirs(workdir, exist_ok=True)
    write_text_atomic(os.path.join(workdir, name), config.to_json_best_effort(indent=2))


class Recorder:
    """Checkpoints and training metrics of one run. main: this process writes files."""

    def __init__(self, workdir: str, config, members: List[Tuple[int, int]], start_step: int,
                 main: bool, stream=None):
        self.config, self.members, self.stream = config, members, stream
        ck = config.checkpoint
        self.every = int(ck.every_n_steps or 0)
        self.last_saved = start_step
        self.manager = checkpoint.make_manager(workdir, ck.max_to_keep, ck.async_save)
        self.writer = self.tracker = None
        if main:
            self.tracker = RunTracker(workdir, config, members)
            self.writer = TrainMetricsWriter(
                os.path.join(workdir, "metrics", "train_metrics.csv"), start_step)

    def save(self, step: int, state, force: bool = False):
        """A checkpoint of the real members at `step` (asynchronous)."""
        extra = None if self.stream is None else {"data_iterators": self.stream.state()}
        checkpoint.save(self.manager, step, state, self.config, self.members, force=force,
                        extra=extra)
        self.last_saved = step

    def save_final(self, step: int, state):
        """A checkpoint at `step` unless one exists; waits until every save is on disk."""
        if step not in self.manager.all_steps():
            self.save(step, state, force=True)
        self.manager.wait_until_finished()

    def after_call(self, state, info: dict):
        """info: {"step", "epoch", "loss" [members]} of the call that just ended, and "rows"
        to write, (step, epoch, loss [members]) of each epoch of a call of whole epochs."""
        if self.writer is not None:
            for step, epoch, loss in info.get("rows", [(info["step"], info["epoch"],
                                                        info["loss"])]):
                self.writer.write(step, epoch, loss)
                self.tracker.log_train(step, epoch, loss)
        if self.every and info["step"] - self.last_saved >= self.every:
            self.save(info["step"], state)

    def log_final(self, step: int, rows: Optional[list]):
        if self.tracker is not None:
            self.tracker.log_final(step, rows)

    def close(self):
        if self.stream is not None:
            self.stream.close()
        self.manager.close()
        if self.writer is not None:
            self.writer.close()
            self.tracker.close()
