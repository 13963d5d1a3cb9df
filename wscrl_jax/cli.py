"""Command-line entry points `wscrl-train` and `wscrl-evaluate` (and `scripts/*.py`).

One flags library (absl, with ml_collections config files) for both commands; config
loading; one-line errors and exit codes: 2 for bad input (nothing is written), 1 for a run
that fails (all members diverged, no intact or no matching checkpoint, a file-system error),
143 / 130 after SIGTERM / SIGINT (a checkpoint is saved first). docs/reliability.md lists them.
"""

import ast
import contextlib
import importlib.util
import logging
import os
import sys
from typing import Callable, List, Optional

import ml_collections
from absl import flags
from ml_collections import config_flags

from wscrl_jax.config_checks import ConfigError


def fail(message: str, code: int = 2):
    """Prints `error: message` on stderr and exits."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _as_command(main: Callable, argv: Optional[List[str]]):
    """Runs `main(argv)`. As a command (no `argv`: a console script or scripts/*.py) it then
    exits without the interpreter's shutdown, once the log files are closed (`_exit_now`):
    after a failure whose `error:` line is out, because threads of an aborted run (the
    checkpointer's event loop, XLA's) can print tracebacks or crash during the shutdown; after
    a run that finished, because the shutdown (freeing the compiled programs and the tracing
    caches) takes 0.7-0.9 s, unless another thread that is not a daemon still runs or the run
    spans several processes (whose coordination ends at the shutdown). Called with `argv`
    (tests, the Python API) it returns or raises SystemExit as usual."""
    if argv is not None:
        return main(argv)
    try:
        main(None)
    except SystemExit as e:
        if e.code in (None, 0):
            raise
        if not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        _exit_now(e.code if isinstance(e.code, int) else 1)
    if _nothing_left_running():
        _exit_now(0)


def _nothing_left_running() -> bool:
    """True when this is the only process of the run and no other thread that is not a
    daemon runs (everything the run writes is written and closed by then)."""
    import threading
    if "jax" in sys.modules:
        from wscrl_jax.train.distributed import multiprocess
        if multiprocess():
            return False
    return all(t.daemon or t is threading.current_thread() for t in threading.enumerate())


def _exit_now(code: int):
    """Closes the log files, flushes stdout and stderr, and ends the process with `code`."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def load_config(spec: str):
    """`get_config(arg)` of a config file given as "configs/scaling.py:ilcm,fast" (the same
    spelling as `--config`, without overrides)."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location(
        "wscrl_config_" + os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def enable_compilation_cache():
    """Persists compiled XLA programs across runs (directory from $WSCRL_JAX_CACHE, default
    ~/.cache/wscrl_jax/xla; set it empty to disable): a rerun skips most compile time."""
    path = os.environ.get("WSCRL_JAX_CACHE", os.path.expanduser("~/.cache/wscrl_jax/xla"))
    if path:
        import jax
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _last_line(message: str) -> str:
    """The informative last line of an absl/config_flags error (drops embedded tracebacks)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) > 1 and any(line.startswith("Traceback") for line in lines):
        return f"{lines[0].split(':')[0]}: {lines[-1]}"
    return " ".join(lines)


def _parse_flags(argv: List[str], define: Callable[[flags.FlagValues], None],
                 usage: str) -> flags.FlagValues:
    """Parses argv with a fresh set of flags; --help prints them and exits 0."""
    values = flags.FlagValues()
    define(values)
    if any(a in ("--help", "-h", "--helpfull") for a in argv[1:]):
        print(f"usage: {usage}\n\n{values.get_help()}")
        sys.exit(0)
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)  # config_flags' warnings (get_config returned None): the
    saved_argv, sys.argv = sys.argv, list(argv)  # error line says it once; config_flags finds
    try:                                         # the --config.KEY overrides in sys.argv
        values(argv)
    except flags.Error as e:
        fail(_last_line(str(e)) + " (see --help)")
    except (KeyError, AttributeError) as e:  # an override names a key the config lacks
        fail(_key_error_line(e, argv))
    except Exception as e:  # errors raised while loading the config file itself
        fail(f"could not load the config: {e}")
    finally:
        absl_log.setLevel(level)
        sys.argv = saved_argv
    return values


def _key_error_line(e: Exception, argv: List[str]) -> str:
    """One line for a KeyError / AttributeError while loading the config: a config file
    without get_config, or an override naming a key the config lacks (with ml_collections'
    suggestion, unescaped)."""
    text = str(e.args[0]) if e.args else str(e)
    if "get_config" in text:
        spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "")
        return (f"could not load the config: {spec.partition(':')[0] or 'the config file'} "
                "defines no get_config(arg) function")
    for _ in range(3):  # the message may arrive as the repr of a repr of the key
        if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
            try:
                text = str(ast.literal_eval(text))
                continue
            except (ValueError, SyntaxError):
                pass
        break
    key, *hint = [line.strip() for line in text.strip().splitlines() if line.strip()]
    key = key if key.startswith(("'", '"')) else repr(key)
    hint = f" ({hint[0][0].lower()}{hint[0][1:]})" if hint else ""
    return f"unknown config key {key}{hint}; check the --config.KEY=VALUE overrides"


def use_cpu_devices(count: Optional[int]):
    """Splits the CPU into `count` host devices (default: one a core) before JAX starts, so
    that the members of a sweep run side by side on the cores (more member-steps/s than one
    device; figures in docs/performance.md). GPU and TPU runs are unaffected: their devices are the
    accelerators. An XLA_FLAGS device count set by the user wins; once JAX has started (a second
    run in one process) the devices stay as they are."""
    if count is not None and count < 1:
        fail(f"--cpu_devices={count} must be >= 1 (1: one CPU device)")
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    import jax
    count = count or os.cpu_count() or 1
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # the backend is already initialised
        pass
    except AttributeError:  # a JAX without the option: the flag does the same before start-up
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={count}")


def _define_device_flag(values: flags.FlagValues):
    flags.DEFINE_integer("cpu_devices", None, "CPU runs: host devices to split the cores into "
                         "(default: one a core; training MD-CRL with an MMD penalty, or members "
                         "in turn (training.member_loop=sequential): one; 1 keeps a single "
                         "device).", flag_values=values)
    flags.DEFINE_string("coordinator_address", os.environ.get("JAX_COORDINATOR_ADDRESS"),
                        "Multi-process runs (jax.distributed): host:port of process 0 "
                        "(default: $JAX_COORDINATOR_ADDRESS).", flag_values=values)
    flags.DEFINE_integer("num_processes", _env_int("JAX_NUM_PROCESSES"), "Multi-process runs: "
                         "how many processes run this same command (default: "
                         "$JAX_NUM_PROCESSES, else 1).", flag_values=values)
    flags.DEFINE_integer("process_id", _env_int("JAX_PROCESS_ID"), "Multi-process runs: this "
                         "process's index, 0 to num_processes - 1 (default: $JAX_PROCESS_ID).",
                         flag_values=values)
    flags.DEFINE_bool("distributed", False, "Join a multi-process run whose size JAX detects "
                      "itself (TPU VM pod slices, SLURM, Open MPI).", flag_values=values)


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.lstrip("-").isdigit():
        fail(f"${name}={value!r} is not an integer")
    return int(value)


def default_cpu_devices(config) -> Optional[int]:
    """The host devices a CPU run of `config` gets without `--cpu_devices`: the config's
    `training.cpu_devices` (e.g. one device for MD-CRL's MMD penalties), else None (one a
    core)."""
    training = None if config is None else config.get("training")
    return None if training is None else training.get("cpu_devices")


def start_processes(values: flags.FlagValues, config=None):
    """Splits the CPU into devices (`use_cpu_devices`: `--cpu_devices`, else in a single-process
    run what the config's method prefers, else one a core) and, for a multi-process run, joins
    the other processes (`jax.distributed`); one error line for inconsistent flags or a
    coordinator that cannot be reached."""
    n, pid, address = values.num_processes, values.process_id, values.coordinator_address
    count = values.cpu_devices
    single_process = (n is None or n == 1) and not values.distributed
    if count is None and single_process:  # multi-process runs keep one device a core
        count = default_cpu_devices(config)
    use_cpu_devices(count)
    if n is not None and n < 1:
        fail(f"--num_processes={n} must be >= 1")
    if n is not None and n > 1 and not values.distributed:
        if not address:
            fail("--num_processes > 1 needs --coordinator_address=HOST:PORT (process 0's "
                 "address, the same on every process)")
        if pid is None or not 0 <= pid < n:
            fail(f"--process_id={pid} must be in [0, {n}) for --num_processes={n}")
    from wscrl_jax.train import distributed
    try:
        distributed.initialize(address, n, pid, auto_detect=values.distributed)
    except Exception as e:  # the runtime's own errors (timeouts, unreachable coordinator)
        first = " ".join(str(e).split())[:300]
        fail(f"could not join the multi-process run ({type(e).__name__}: {first}); check "
             "--coordinator_address, --num_processes and --process_id", 1)


def _define_train_flags(values: flags.FlagValues):
    _define_device_flag(values)
    config_flags.DEFINE_config_file("config", None, "Config file and variant, e.g. "
                                    "configs/scaling.py:ilcm,fast; override any key with "
                                    "--config.KEY=VALUE", flag_values=values, lock_config=True)
    flags.DEFINE_string("workdir", None, "Directory for logs, metrics and checkpoints; "
                        "rerunning on it resumes.", flag_values=values)
    flags.DEFINE_bool("allow_config_change", False, "Resume although the config differs from "
                      "the checkpoint's in keys that change training (logged).",
                      flag_values=values)
    flags.DEFINE_bool("reevaluate", False, "Evaluate a finished workdir again.",
                      flag_values=values)
    flags.DEFINE_bool("overwrite", False, "Train on a workdir whose outputs (config.json, "
                      "metrics, figures) have no checkpoint or another config: they are moved "
                      "to WORKDIR/replaced_<time>/ first.", flag_values=values)


def _define_evaluate_flags(values: flags.FlagValues):
    _define_device_flag(values)
    flags.DEFINE_string("workdir", None, "Workdir written by wscrl-train.", flag_values=values)
    flags.DEFINE_integer("member", None, "Evaluate only this member index (default: all).",
                         flag_values=values)
    flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).",
                         flag_values=values)


def train_main(argv: Optional[List[str]] = None):
    """`wscrl-train --config FILE:VARIANT --workdir DIR [--config.KEY=VALUE ...]`."""
    _as_command(_train, argv)


def _train(argv: Optional[List[str]]):
    values = _parse_flags(argv or sys.argv, _define_train_flags,
                          "wscrl-train --config configs/scaling.py:ilcm,fast --workdir DIR "
                          "[--config.KEY=VALUE ...]")
    try:
        config = values.config
        if config is not None:
            "method" in config  # noqa: B015  (the file is loaded on first access)
    except OSError as e:
        fail(f"could not load the config: {str(e).strip().splitlines()[-1].strip()}")
    if config is None and values["config"].present:  # absl warned already: say it once
        fail("get_config of the --config file returned None, not an "
             "ml_collections.ConfigDict (a missing return?)")
    if config is None:
        fail("--config is required, e.g. --config configs/scaling.py:ilcm,fast")
    if not isinstance(config, ml_collections.ConfigDict):
        fail(f"get_config of the --config file returned a {type(config).__name__}, not an "
             "ml_collections.ConfigDict")
    if not values.workdir:
        fail("--workdir is required")
    start_processes(values, config)
    from wscrl_jax.methods import validate_config
    try:
        validate_config(config)
    except ConfigError as e:
        fail(f"invalid config: {e}")
    workdir = values.workdir
    import jax

    from wscrl_jax import experiment, run_guard
    from wscrl_jax.train.checkpoint import CheckpointError
    from wscrl_jax.train.loop import NonFiniteError
    from wscrl_jax.tracking import TrackingError
    from wscrl_jax.train.preemption import Interrupted, StopNow, StopRequest

    # reliability hooks (run_guard): one process per workdir; never replace another run's files
    with run_guard.lock_workdir(workdir, "training", jax.process_index()):
        logger = _prepare_workdir(workdir)
        if jax.process_index() == 0:
            run_guard.check_workdir_state(workdir, config, values.overwrite)
        logger.info("Command: %s", " ".join(argv or sys.argv))
        enable_compilation_cache()
        with _one_line_errors(logger, workdir), StopRequest() as stop:
            try:
                experiment.run(config, workdir, stop_requested=stop,
                               allow_config_change=values.allow_config_change,
                               reevaluate=values.reevaluate)
            except Interrupted as e:
                _fail_logged(logger, f"stopped by {e.signal_name} at step {e.step}; the "
                             "checkpoint is saved, rerun the same command to resume",
                             130 if e.signal_name == "SIGINT" else 143)
            except StopNow as e:  # evaluation, or a second Ctrl-C: nothing left half-written
                run_guard.remove_temporaries(workdir)
                _fail_logged(logger, run_guard.stopped_message(e),
                             run_guard.exit_code(e.signal_name))
            except (NonFiniteError, CheckpointError) as e:
                _fail_logged(logger, str(e), 1)
            except TrackingError as e:
                _fail_logged(logger, str(e), 2)
            except ConfigError as e:  # found only once the run is built (e.g. multi-process)
                _fail_logged(logger, f"invalid config: {e}", 2)


def _prepare_workdir(workdir: str):
    """Creates WORKDIR/metrics and the log file (process 0 of a multi-process run; the others
    log warnings to stderr only); one error line if the path cannot hold them."""
    import jax

    from wscrl_jax.tracking import setup_logging
    try:
        os.makedirs(os.path.join(workdir, "metrics"), exist_ok=True)
        return setup_logging(workdir, jax.process_index(), jax.process_count())
    except OSError as e:
        fail(f"cannot use --workdir {workdir}: {e.strerror or e} ({e.filename or workdir})")


def _fail_logged(logger, message: str, code: int):
    """`fail`, with the message also in WORKDIR/output.log (not repeated on stderr)."""
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    fail(message, code)


@contextlib.contextmanager
def _one_line_errors(logger, workdir: Optional[str] = None):
    """Storage errors (no space, quota, read-only, I/O; also the checkpoint library's
    RESOURCE_EXHAUSTED) become one `error:` line with the path, after the workdir's temporary
    files are removed (`run_guard.storage_failure`); other file-system errors one line with
    the path; any other crash is logged with its traceback to output.log before it
    propagates. Other libraries' error reports go to output.log only."""
    from wscrl_jax import run_guard
    with run_guard.library_errors_to_log(logger):  # also while the error is handled
        try:
            yield
        except Exception as e:
            storage = run_guard.storage_failure(e, workdir)
            if storage:
                _fail_logged(logger, storage, 1)
            if isinstance(e, OSError):
                _fail_logged(logger, f"{e.strerror or e}: {e.filename or ''}".rstrip(": "), 1)
            logger.exception("The run crashed")
            raise


def evaluate_main(argv: Optional[List[str]] = None):
    """`wscrl-evaluate --workdir DIR [--member K] [--step S]`: evaluates a checkpoint without
    training."""
    _as_command(_evaluate, argv)


def _evaluate(argv: Optional[List[str]]):
    values = _parse_flags(argv or sys.argv, _define_evaluate_flags,
                          "wscrl-evaluate --workdir DIR [--member K] [--step S]")
    if not values.workdir:
        fail("--workdir is required")
    if not os.path.isdir(values.workdir):
        fail(f"workdir {values.workdir} does not exist")
    start_processes(values)

    import jax

    from wscrl_jax import run_guard
    from wscrl_jax.run.evaluation import evaluate_workdir
    from wscrl_jax.train.checkpoint import CheckpointError
    from wscrl_jax.train.preemption import StopNow, StopRequest

    # reliability hooks (run_guard): not while another process trains or evaluates there
    with run_guard.lock_workdir(values.workdir, "evaluation", jax.process_index()):
        logger = _prepare_workdir(values.workdir)
        enable_compilation_cache()
        with _one_line_errors(logger, values.workdir), StopRequest() as stop:
            try:
                stop.stop_now_from_here("evaluation")  # nothing to checkpoint: stop at once
                evaluate_workdir(values.workdir, values.member, values.step)
            except StopNow as e:
                run_guard.remove_temporaries(values.workdir)
                _fail_logged(logger, run_guard.stopped_message(e),
                             run_guard.exit_code(e.signal_name))
            except CheckpointError as e:
                _fail_logged(logger, str(e), 2)
            except ConfigError as e:  # e.g. an image workdir under --num_processes
                _fail_logged(logger, f"invalid config: {e}", 2)
