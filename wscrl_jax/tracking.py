"""Run logging, metric files and optional experiment tracking (MLflow, TensorBoard)."""

import contextlib
import csv
import json
import logging
import math
import os
import sys
import time
from typing import Dict, List

from wscrl_jax.train.workdir_state import flat_config

LOG_FORMAT = "[%(asctime)-19.19s %(levelname)-1.1s] %(message)s"


def setup_logging(workdir: str, process: int = 0, processes: int = 1) -> logging.Logger:
    """Logger 'wscrl_jax' writing to stderr and WORKDIR/output.log (appending); in a
    multi-process run, process 0 does so and the others write warnings to stderr only, each
    line marked with the process."""
    logger = logging.getLogger("wscrl_jax")
    logger.setLevel(logging.INFO if process == 0 else logging.WARNING)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = LOG_FORMAT if processes == 1 else LOG_FORMAT.replace(
        "] ", f" process {process}/{processes}] ", 1)
    formatter = logging.Formatter(fmt, datefmt="%Y-%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if process == 0:
        handlers.append(logging.FileHandler(os.path.join(workdir, "output.log")))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


def write_csv_atomic(path: str, rows: List[Dict[str, object]]):
    """Writes rows (dicts; columns in first-seen order) to path via a temporary file, so an
    interrupted write never leaves a truncated file behind. An unnamed index column leads,
    as pandas writes it in the reference."""
    columns: List[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    os.makedirs(os.path.dirname(path), exist_ok=True)

    def write(f):
        writer = csv.writer(f)
        writer.writerow([""] + columns)
        for index, row in enumerate(rows):
            writer.writerow([index] + [_fmt(row.get(c, "")) for c in columns])
    _replace_atomic(path, write)


def _replace_atomic(path: str, write):
    """Calls write(file) on PATH.tmp, then renames it to path; on any failure (a full disk, a
    signal) the temporary file is removed and path is left as it was."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", newline="") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_text_atomic(path: str, text: str):
    """Writes text to path atomically (`_replace_atomic`)."""
    _replace_atomic(path, lambda f: f.write(text))


def read_csv(path: str) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _fmt(value):
    return repr(float(value)) if isinstance(value, float) else value


def _complete_row(row) -> bool:
    try:
        int(row["step"]), int(row["epoch"]), int(row["member"]), float(row["loss"])
    except (KeyError, TypeError, ValueError):
        return False
    return True


class TrainMetricsWriter:
    """Appends per-call training metrics (step, epoch, member, loss) to a CSV file.

    start_step: the step training resumes from. Rows of an earlier process beyond it (written
    after its last checkpoint, the last one possibly cut short) are dropped first, atomically,
    since those steps are trained and written again; the rows up to it are kept.
    """

    COLUMNS = ["step", "epoch", "member", "loss"]

    def __init__(self, path: str, start_step: int = 0):
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            rows = read_csv(path)
            kept = []
            for row in rows:  # rows are in step order: keep the complete ones up to start_step
                if not _complete_row(row) or int(row["step"]) > start_step:
                    break
                kept.append(row)
            if len(kept) < len(rows):
                def write(f):
                    writer = csv.DictWriter(f, self.COLUMNS)
                    writer.writeheader()
                    writer.writerows(kept)
                _replace_atomic(path, write)
        new = not os.path.exists(path)
        self._file = open(path, "a", newline="")
        self._writer = csv.writer(self._file)
        if new:
            self._writer.writerow(self.COLUMNS)

    def write(self, step: int, epoch: int, losses):
        for member, loss in enumerate(losses):
            self._writer.writerow([step, epoch, member, repr(float(loss))])
        self._file.flush()

    def close(self):
        self._file.close()


class TrackingError(RuntimeError):
    """The tracking backend could not start (one line for the user)."""


class RunTracker:
    """Optional tracking of a run next to its CSV files (`config.tracking`): one MLflow run per
    member (experiment = the workdir's name; SQLite in WORKDIR/mlruns.db unless
    `tracking.mlflow_uri`; artifacts in WORKDIR/mlartifacts) with the reference's layout:
    params = the flattened config, `train.loss` and `train.epoch` per compiled call, `eval.<k>`
    at the end, the run's figures as artifacts; and TensorBoard event files in
    WORKDIR/tensorboard/member_<k>. A resumed run continues its members' MLflow runs. Does
    nothing when both are off."""

    def __init__(self, workdir: str, config, members):
        tracking = config.get("tracking") or {}
        self.workdir = os.path.abspath(workdir)
        self.client, self.run_ids, self.writers = None, [], []
        if tracking.get("mlflow"):
            uri = tracking.get("mlflow_uri")
            try:
                self._start_mlflow(uri, config, members)
            except Exception as e:  # noqa: BLE001 (MLflow raises many kinds): one line
                reason = (str(e).strip().splitlines() or [""])[0][:200]
                raise TrackingError(
                    f"tracking.mlflow_uri={uri!r}: MLflow could not start ({type(e).__name__}: "
                    f"{reason}); fix the URI or set tracking.mlflow=False") from e
        if tracking.get("tensorboard"):
            from tensorboardX import SummaryWriter
            self.writers = [SummaryWriter(os.path.join(self.workdir, "tensorboard", f"member_{k}"))
                            for k in range(len(members))]

    def _start_mlflow(self, uri, config, members):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        uri = uri or f"sqlite:///{os.path.join(self.workdir, 'mlruns.db')}"
        self.client = MlflowClient(tracking_uri=uri)
        name = os.path.basename(self.workdir)
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = (experiment.experiment_id if experiment is not None else
                         self.client.create_experiment(
                             name, artifact_location=os.path.join(self.workdir, "mlartifacts")))
        params = flat_config(json.loads(config.to_json_best_effort()))
        for k, (seed, data_seed) in enumerate(members):
            found = self.client.search_runs([experiment_id], f"tags.member = '{k}'")
            if found:
                self.run_ids.append(found[0].info.run_id)
                continue
            run = self.client.create_run(experiment_id, run_name=f"seed{seed}_data{data_seed}",
                                         tags={"member": str(k)})
            self.run_ids.append(run.info.run_id)
            items = sorted((k_, str(v)) for k_, v in dict(params, seed=seed,
                                                            data_seed=data_seed).items())
            for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
                self.client.log_batch(run.info.run_id, params=[
                    Param(k_, v[:6000]) for k_, v in items[start:start + 100]])

    def log_train(self, step: int, epoch: int, losses):
        """losses: [members] mean training loss of the call that ended at `step`."""
        stamp = int(time.time() * 1000)
        for k, loss in enumerate(losses):
            if self.client is not None:
                from mlflow.entities import Metric
                self.client.log_batch(self.run_ids[k], metrics=[
                    Metric("train.loss", float(loss), stamp, step),
                    Metric("train.epoch", float(epoch), stamp, step)])
            if self.writers:
                self.writers[k].add_scalar("train/loss", float(loss), step)

    def log_final(self, step: int, rows: List[Dict[str, object]]):
        """Each member's evaluation row as `eval.<key>` (numeric values), and the figures."""
        stamp = int(time.time() * 1000)
        figures = os.path.join(self.workdir, "figures")
        for k, row in enumerate(rows):
            values = {key: float(v) for key, v in row.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if self.client is not None:
                from mlflow.entities import Metric
                metrics = [Metric(f"eval.{key}", v, stamp, step) for key, v in values.items()
                           if math.isfinite(v)]
                for start in range(0, len(metrics), 1000):
                    self.client.log_batch(self.run_ids[k], metrics=metrics[start:start + 1000])
                if os.path.isdir(figures):
                    self.client.log_artifacts(self.run_ids[k], figures, "figures")
            if self.writers:
                for key, v in values.items():
                    self.writers[k].add_scalar(f"eval/{key}", v, step)

    def close(self):
        for run_id in self.run_ids:
            self.client.set_terminated(run_id)
        for writer in self.writers:
            writer.close()

