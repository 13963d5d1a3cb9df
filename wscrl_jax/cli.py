"""Command-line plumbing shared by the scripts: config flags, validation, one-line errors."""

import os
import sys

from absl import flags
from ml_collections import config_flags

from wscrl_jax.config_validation import ConfigError, validate_config


def _fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _last_line(message: str) -> str:
    """The informative last line of an absl/config_flags error (drops embedded tracebacks)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) > 1 and any(line.startswith("Traceback") for line in lines):
        return f"{lines[0].split(':')[0]}: {lines[-1]}"
    return " ".join(lines)


def _define_flags():
    try:
        config_flags.DEFINE_config_file("config", None, "Config file, e.g. "
                                        "configs/scaling.py:ilcm,fast", lock_config=True)
        flags.DEFINE_string("workdir", None, "Directory for logs, metrics and checkpoints.")
    except flags.DuplicateFlagError:
        pass


def enable_compilation_cache():
    """Persists compiled XLA programs across runs (directory from $WSCRL_JAX_CACHE, default
    ~/.cache/wscrl_jax/xla; set it empty to disable): a rerun skips most compile time."""
    path = os.environ.get("WSCRL_JAX_CACHE", os.path.expanduser("~/.cache/wscrl_jax/xla"))
    if path:
        import jax
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def main_with_config(command: str):
    _define_flags()
    try:
        argv = flags.FLAGS(sys.argv)
    except flags.Error as e:
        _fail(_last_line(str(e)) + " (see --help)")
    except (KeyError, AttributeError) as e:  # an override names a key the config lacks
        _fail(f"unknown config key {str(e).strip(chr(34))}; check the --config.KEY=VALUE "
              "overrides")
    except Exception as e:  # errors raised while loading the config file itself
        _fail(f"could not load the config: {e}")
    del argv
    config = flags.FLAGS.config
    if config is None:
        _fail("--config is required, e.g. --config configs/scaling.py:ilcm,fast")
    if not flags.FLAGS.workdir:
        _fail("--workdir is required")
    try:
        validate_config(config)
    except ConfigError as e:
        _fail(f"invalid config: {e}")
    workdir = flags.FLAGS.workdir
    os.makedirs(os.path.join(workdir, "metrics"), exist_ok=True)

    from wscrl_jax import experiment
    from wscrl_jax.tracking import setup_logging

    enable_compilation_cache()
    logger = setup_logging(workdir)
    logger.info("Command: %s", " ".join(sys.argv))
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    if command == "train":
        from wscrl_jax.train.checkpoint import CheckpointError
        from wscrl_jax.train.loop import NonFiniteError
        try:
            experiment.run(config, workdir)
        except (NonFiniteError, CheckpointError) as e:
            logger.error("%s", e)
            sys.exit(1)
    else:  # pragma: no cover
        raise ValueError(command)


