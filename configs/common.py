"""What every config file shares: variant parsing and the sweep/checkpoint/training blocks.

`configs/` is not a package: the config files are loaded by path (ml_collections
`config_flags.DEFINE_config_file`, `wscrl_jax.cli.load_config`), and each loads this file by
path too, with `runpy.run_path` next to its own `__file__`.

* `parse_variant(arg, config_name, variants, options, exclusive)`: "ilcm,fast" ->
  ("ilcm", frozenset({"fast"})), with one-line ValueErrors that list what is allowed;
  `chosen(options, group, default)` picks the one option of an exclusive group.
* `sweep_block`, `checkpoint_block`, `training_block`: the `sweep`, `checkpoint` and shared
  `training` keys the experiment runner and training loop read (`wscrl_jax/train/sweep.py`,
  `wscrl_jax/experiment.py`, `wscrl_jax/train/loop.py`), each field commented here once.
"""

from collections.abc import Iterable, Sequence

import ml_collections


# ---------------------------------------------------------------- variant strings
def variant_usage(variants: Sequence[str], options: Sequence[str] = (),
                  exclusive: Sequence[Sequence[str]] = ()) -> str:
    """'ilcm|dvae|betavae[,fast]': the grammar of a variant string, for messages."""
    grouped = [o for group in exclusive for o in group]
    parts = ["|".join(variants)]
    parts += [f"[,{'|'.join(group)}]" for group in exclusive]
    parts += [f"[,{o}]" for o in options if o not in grouped]
    return "".join(parts)


def parse_variant(arg: str | None, config_name: str, variants: Sequence[str],
                  options: Sequence[str] = (),
                  exclusive: Sequence[Sequence[str]] = ()) -> tuple[str, frozenset[str]]:
    """Splits the `--config FILE:ARG` argument: "ilcm,fast" -> ("ilcm", frozenset({"fast"})).

    The first comma-separated item picks the variant from `variants` (None or empty: the first
    of them); the others are options from `options`, in any order. Each group of `exclusive`
    (a sequence of options) may contribute at most one option. Blanks around items and empty
    items are ignored; a repeated option counts once. Raises ValueError naming what is allowed.
    """
    for group in exclusive:
        assert set(group) <= set(options), (group, options)  # a bug in the calling config
    usage = f"{config_name}.py:{variant_usage(variants, options, exclusive)}"
    items = [p.strip() for p in (arg or "").split(",") if p.strip()]
    variant = items[0] if items else variants[0]
    if variant not in variants:
        raise ValueError(f"unknown {config_name} variant {variant!r}; the first item must be one "
                         f"of {', '.join(variants)} (usage: {usage})")
    chosen_options = frozenset(items[1:])
    unknown = sorted(chosen_options - set(options))
    if unknown:
        allowed = ", ".join(options) if options else "none"
        raise ValueError(f"unknown {config_name} option(s) {unknown} in {arg!r}; options after "
                         f"the variant: {allowed} (usage: {usage})")
    for group in exclusive:
        clash = [o for o in group if o in chosen_options]
        if len(clash) > 1:
            raise ValueError(f"{config_name} options {clash} exclude each other; choose at most "
                             f"one of {', '.join(group)} (usage: {usage})")
    return variant, chosen_options


def chosen(options: Iterable[str], group: Sequence[str], default: str) -> str:
    """The option of the exclusive `group` present in `options` (from `parse_variant`), else
    `default`."""
    picked = [o for o in group if o in set(options)]
    return picked[0] if picked else default


# ---------------------------------------------------------------- shared blocks
def sweep_block(seeds: str = "", data_seeds: str = "", grid: str = "") -> ml_collections.ConfigDict:
    """`config.sweep` (`wscrl_jax/train/sweep.py`)."""
    s = ml_collections.ConfigDict()
    # model seeds, comma-separated (e.g. "4901,4902,4903"), trained as one vmapped run;
    # empty: config.seed alone
    s.seeds = seeds
    # data seeds, comma-separated, crossed with `seeds` (one member per pair); "same": each
    # member's data seed is its model seed; empty: config.data.nature.seed alone
    s.data_seeds = data_seeds
    # shape-changing values, one run after the other (each seed-vmapped) in
    # WORKDIR/<key>=<value>_.../, e.g. "data.z_dim=8,16;data.num_domains=2,4"; empty: none
    s.grid = grid
    return s


def tracking_block() -> ml_collections.ConfigDict:
    """`config.tracking` (`wscrl_jax/tracking.py: RunTracker`): optional MLflow runs and
    TensorBoard event files next to the CSV metrics, which are always written."""
    tr = ml_collections.ConfigDict()
    tr.mlflow = False  # one MLflow run per member (needs: pip install -e ".[mlflow]")
    # MLflow tracking URI; unset: SQLite in the workdir (sqlite:///WORKDIR/mlruns.db)
    tr.mlflow_uri = ml_collections.config_dict.placeholder(str)
    tr.tensorboard = False  # event files in WORKDIR/tensorboard/member_<k> (extra: tensorboard)
    return tr


def checkpoint_block(every_n_steps: int, max_to_keep: int,
                     async_save: bool = True) -> ml_collections.ConfigDict:
    """`config.checkpoint` (orbax, `wscrl_jax/experiment.py`)."""
    ck = ml_collections.ConfigDict()
    # steps between checkpoints, checked when a call of training.steps_per_call steps ends;
    # 0: only the final one. The end of training is always saved; rerunning with the same
    # workdir resumes from the latest checkpoint.
    ck.every_n_steps = every_n_steps
    ck.max_to_keep = max_to_keep  # checkpoints kept on disk; older ones are deleted
    ck.async_save = async_save  # write checkpoints in the background while training goes on
    return ck


def training_block(batchsize: int, epochs: int, clip_grad_norm: float, nan_limit: int,
                   steps_per_call: int, cpu_devices=None) -> ml_collections.ConfigDict:
    """The `config.training` keys the shared loop reads (`wscrl_jax/train/loop.py`, checked by
    `wscrl_jax.config_checks.check_shared_training`); each config adds its own keys."""
    t = ml_collections.ConfigDict()
    t.batchsize = batchsize  # training rows per optimizer step and member (>= 1)
    t.epochs = epochs  # passes over the training split (>= 1)
    t.clip_grad_norm = clip_grad_norm  # gradients clipped to this global L2 norm (> 0)
    # non-finite steps (loss or gradient norm; cumulative) after which a member stops training;
    # the run stops when every member has (>= 1)
    t.nan_limit = nan_limit
    # optimizer steps compiled into one device call (>= 1); a call never crosses an epoch (a
    # method whose epoch end is traced, MD-CRL's, runs as many whole epochs, each with its
    # end), and the host (logging, checkpoints, epoch-end work) wakes up between calls
    t.steps_per_call = steps_per_call
    # CPU runs without --cpu_devices: host devices to split the cores into (unset: one a core,
    # members side by side; 1 suits members in turn, training.member_loop=sequential)
    t.cpu_devices = (cpu_devices if cpu_devices is not None
                     else ml_collections.config_dict.placeholder(int))
    return t
