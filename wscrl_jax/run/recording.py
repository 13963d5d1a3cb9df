"""What a run records while it trains: checkpoints, `metrics/train_metrics.csv`, tracking.

`Recorder.after_call` is the loop's `on_call_end`: it appends the call's losses (process 0) and
saves a checkpoint every `checkpoint.every_n_steps` steps; `save` writes one at any step (the
last, or where a stop was requested), with the data pipeline's position where there is one.
"""

import os
from typing import List, Optional, Tuple

from wscrl_jax.tracking import RunTracker, TrainMetricsWriter
from wscrl_jax.train import checkpoint


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
        """info: {"step", "epoch", "loss" [members]} of the call that just ended."""
        if self.writer is not None:
            self.writer.write(info["step"], info["epoch"], info["loss"])
            self.tracker.log_train(info["step"], info["epoch"], info["loss"])
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
