"""Training from Python: `get_config` (a shipped config file with overrides, no command line)
and `train` (the run `wscrl-train` makes, returning its metric rows)."""

import os
from typing import Dict, List, Optional, Union

import jax
import ml_collections

from wscrl_jax import cli
from wscrl_jax.api.errors import APIError
from wscrl_jax.config_checks import ConfigError

# configs/ of the repository (it sits beside the package, not inside it)
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")


def config_path(path: str) -> str:
    """A config file given as a path, or by its name in the repository's configs/ ("scaling.py"
    or "scaling")."""
    candidates = [path, os.path.join(CONFIGS_DIR, path)]
    if not path.endswith(".py"):
        candidates.append(os.path.join(CONFIGS_DIR, path + ".py"))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise APIError(f"config file {path!r} not found (neither as a path nor in {CONFIGS_DIR}); "
                   "pass e.g. 'scaling.py:ilcm,fast' or a path to a config file")


def get_config(spec: str, overrides: Optional[Dict[str, object]] = None):
    """The config of `spec` ("scaling.py:ilcm,fast", "configs/md_balls.py:stage1,fast" or a path
    with ":VARIANT"; the `--config` spelling of wscrl-train) with `overrides` ({"data.dim_z": 3,
    ...}, the `--config.KEY=VALUE` flags) applied. Raises APIError (one line) for a missing
    file, a variant the file refuses, an unknown key or a value of the wrong type."""
    path, _, arg = str(spec).partition(":")
    path = config_path(path)
    try:
        config = cli.load_config(f"{path}:{arg}" if arg else path)
    except Exception as e:  # the config file's own errors (unknown variant, ...)
        raise APIError(f"could not load the config: {e}") from None
    for key, value in (overrides or {}).items():
        set_key(config, key, value)
    return config


def set_key(config, key: str, value):
    """config[key] = value for a dotted key that must exist (as `--config.KEY=VALUE`)."""
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise APIError(f"unknown config key {key!r}; check the overrides")
        node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        raise APIError(f"unknown config key {key!r}; check the overrides")
    try:
        with node.unlocked():
            node[leaf] = value
    except (TypeError, ValueError) as e:
        raise APIError(f"cannot set {key}={value!r}: {e}") from None


def train(config: Union[str, ml_collections.ConfigDict], workdir: str,
          allow_config_change: bool = False, reevaluate: bool = False,
          progress: bool = False) -> List[dict]:
    """Trains and evaluates `config` (a ConfigDict, or a spec for `get_config`) in `workdir`
    as `wscrl-train --config ... --workdir WORKDIR` does: the config validated first, the log
    in WORKDIR/output.log, a rerun resuming from the checkpoints, Ctrl-C saving a checkpoint
    first. Returns the metric rows (one dict per member, as WORKDIR/metrics/test_metrics.csv).

    Runs on the devices JAX already has (the command line splits the CPU into one device a
    core before JAX starts; here JAX may already be running). Every error is an APIError
    whose message is the line wscrl-train prints after `error: `."""
    from wscrl_jax import experiment
    from wscrl_jax.methods import validate_config
    from wscrl_jax.tracking import TrackingError, setup_logging
    from wscrl_jax.train.checkpoint import CheckpointError
    from wscrl_jax.train.loop import NonFiniteError
    from wscrl_jax.train.preemption import Interrupted, StopRequest

    if isinstance(config, str):
        config = get_config(config)
    if not workdir:
        raise APIError("workdir is required")
    try:
        validate_config(config)
    except ConfigError as e:
        raise APIError(f"invalid config: {e}") from None
    try:
        os.makedirs(os.path.join(workdir, "metrics"), exist_ok=True)
        setup_logging(workdir, jax.process_index(), jax.process_count())
    except OSError as e:
        raise APIError(f"cannot use workdir {workdir}: {e.strerror or e} "
                       f"({e.filename or workdir})") from None
    cli.enable_compilation_cache()
    with StopRequest() as stop:
        try:
            return experiment.run(config, workdir, progress, stop_requested=stop,
                                  allow_config_change=allow_config_change,
                                  reevaluate=reevaluate)
        except Interrupted as e:
            raise APIError(f"stopped by {e.signal_name} at step {e.step}; the checkpoint is "
                           "saved, rerun the same call to resume") from None
        except (NonFiniteError, CheckpointError, TrackingError) as e:
            raise APIError(str(e)) from None
        except ConfigError as e:
            raise APIError(f"invalid config: {e}") from None
        except OSError as e:
            raise APIError(f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")) from None
