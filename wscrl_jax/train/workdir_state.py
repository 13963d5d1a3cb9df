"""What a workdir holds before a training run starts on it, and whether the run may.

A workdir is
  new           absent, empty, or holding only a log and empty folders;
  restartable   no checkpoint, but `config.json` equal to the new config and no final metrics
                (a run stopped before its first checkpoint): training starts again;
  resumable     committed checkpoints and no final metrics (the checkpoints' own config is
                compared when they are restored);
  finished      committed checkpoints and final metrics;
  inconsistent  anything else: run outputs (`config.json`, metrics, figures) without a
                checkpoint, under another config or with final metrics; rerunning would
                replace them, so the run is refused unless `--overwrite`, which first moves
                them to WORKDIR/replaced_<time>/ (nothing is deleted).
"""

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

log = logging.getLogger("wscrl_jax")

# files and folders a training run writes that a rerun would replace (the run's log, the lock
# and temporaries are not outputs)
OUTPUT_FILES = ("config.json",)
OUTPUT_PREFIXES = ("config_resumed_step",)
OUTPUT_FOLDERS = ("metrics", "figures", "encoded", "tensorboard", "mlartifacts")
NOT_OUTPUTS = (".lock", "output.log")


@dataclass
class WorkdirState:
    kind: str  # new, restartable, resumable, finished, inconsistent
    reason: str = ""
    outputs: List[str] = field(default_factory=list)  # run outputs found (relative paths)


def flat_config(tree, prefix: str = "") -> Dict[str, object]:
    """{"a.b.c": value} of a nested config dict (config comparisons, MLflow parameters)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(old: dict, new: dict) -> List[str]:
    """Flattened keys whose values differ between two config dicts (JSON)."""
    a, b, unset = flat_config(old), flat_config(new), object()
    return sorted(k for k in set(a) | set(b) if a.get(k, unset) != b.get(k, unset))


def _has_files(path: str) -> bool:
    for _, _, files in os.walk(path):
        if any(not f.endswith((".tmp", ".tmp.png", ".tmp.npz")) for f in files):
            return True
    return False


def run_outputs(workdir: str) -> List[str]:
    """The run outputs in `workdir` (relative paths of files and non-empty folders)."""
    found = []
    for name in sorted(os.listdir(workdir)):
        path = os.path.join(workdir, name)
        if name in OUTPUT_FILES or name.startswith(OUTPUT_PREFIXES):
            found.append(name)
        elif name in OUTPUT_FOLDERS and os.path.isdir(path) and _has_files(path):
            found.append(name)
    return found


def committed_steps(workdir: str) -> List[int]:
    """Checkpoint steps Orbax committed (WORKDIR/checkpoints/<step>)."""
    try:
        return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints"))
                      if n.isdigit())
    except OSError:
        return []


def classify(workdir: str, config: dict) -> WorkdirState:
    """The state of `workdir` for a training run of `config` (its JSON dict)."""
    if not os.path.isdir(workdir):
        return WorkdirState("new")
    final = os.path.join(workdir, "metrics", "test_metrics.csv")
    if committed_steps(workdir) or os.path.isdir(os.path.join(workdir, "checkpoints_rejected")):
        # rejected checkpoints only: restoring reports them (nothing trains over the metrics)
        return WorkdirState("finished" if os.path.exists(final) else "resumable")
    outputs = run_outputs(workdir)
    if not outputs:
        return WorkdirState("new")
    saved = _read_json(os.path.join(workdir, "config.json"))
    if saved is None:
        reason = ("config.json is missing or unreadable" if "config.json" not in outputs
                  or not os.path.isfile(os.path.join(workdir, "config.json"))
                  else "config.json cannot be read")
        return WorkdirState("inconsistent", f"it holds {', '.join(outputs)} but no checkpoint, "
                            f"and {reason}", outputs)
    changed = config_differences(saved, config)
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more"
                                          if len(changed) > 5 else "")
        return WorkdirState("inconsistent", f"it holds the outputs of a run with another config "
                            f"(differing in {shown}) and no checkpoint", outputs)
    if os.path.exists(final):
        return WorkdirState("inconsistent", "it holds the final metrics of this config but no "
                            "checkpoint (deleted?); rerunning would train again and replace "
                            "them", outputs)
    return WorkdirState("restartable", "no checkpoint was saved yet", outputs)


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def set_aside(workdir: str, outputs: List[str]) -> str:
    """Moves `outputs` (relative paths) into WORKDIR/replaced_<time>/; returns that folder."""
    target = os.path.join(workdir, time.strftime("replaced_%Y%m%d-%H%M%S"))
    suffix = 0
    while os.path.exists(target + (f"-{suffix}" if suffix else "")):
        suffix += 1
    target += f"-{suffix}" if suffix else ""
    os.makedirs(target)
    for name in outputs:
        shutil.move(os.path.join(workdir, name), os.path.join(target, name))
    return target
