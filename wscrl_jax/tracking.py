"""Run logging and metric files."""

import csv
import logging
import os
import sys
from typing import Dict, List

LOG_FORMAT = "[%(asctime)-19.19s %(levelname)-1.1s] %(message)s"


def setup_logging(workdir: str) -> logging.Logger:
    """Logger 'wscrl_jax' writing to stderr and WORKDIR/output.log (appending)."""
    logger = logging.getLogger("wscrl_jax")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S")
    for handler in (logging.StreamHandler(sys.stderr),
                    logging.FileHandler(os.path.join(workdir, "output.log"))):
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
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([""] + columns)
        for index, row in enumerate(rows):
            writer.writerow([index] + [_fmt(row.get(c, "")) for c in columns])
    os.replace(tmp, path)


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
                tmp = f"{path}.tmp"
                with open(tmp, "w", newline="") as f:
                    writer = csv.DictWriter(f, self.COLUMNS)
                    writer.writeheader()
                    writer.writerows(kept)
                os.replace(tmp, path)
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
