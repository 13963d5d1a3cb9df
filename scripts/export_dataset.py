"""Write a built-in dataset of one data seed in the own-data formats (docs/own_data.md).

    python scripts/export_dataset.py --config configs/scaling.py:ilcm,fast \
        --config.data.dim_z=3 --config.data.nature.seed=42 --out DIR
    python scripts/export_dataset.py --config configs/md_mixing.py:linear,minmax \
        --config.data.z_dim=8 --data_seed=1235 --out DIR

The config file and overrides are the training command's; the data seed is the one its run
would use (`--data_seed` picks one where the config's sweep has several). Train on the files
with `--config.data.dataset=pairs` (scaling) or `domains` (MD-CRL mixing) and
`--config.data.path=DIR`. Errors are one `error:` line (exit 2); existing files are never
overwritten.
"""

import sys

from absl import flags
from ml_collections import config_flags

from wscrl_jax.cli import fail
from wscrl_jax.config_checks import ConfigError
from wscrl_jax.data.export import export_arrays, write_arrays
from wscrl_jax.data.npz_files import DataFileError
from wscrl_jax.methods import validate_config
from wscrl_jax.train.prng import rolled_threefry
from wscrl_jax.train.sweep import sweep_members

USAGE = ("export_dataset.py --config configs/scaling.py:ilcm,fast [--config.KEY=VALUE ...] "
         "[--data_seed=S] --out DIR")


def main(argv):
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Config file and variant, as for training",
                                    flag_values=values, lock_config=True)
    flags.DEFINE_string("out", None, "Directory to write the .npz files to (new or empty).",
                        flag_values=values)
    flags.DEFINE_integer("data_seed", None, "Data seed (default: the config's, where its "
                         "sweep has one).", flag_values=values)
    if any(a in ("--help", "-h") for a in argv[1:]):
        print(f"usage: {USAGE}\n\n{values.get_help()}")
        return 0
    try:
        values(argv)
        config = values.config
    except flags.Error as e:
        fail(f"{' '.join(str(e).split())[:300]} (usage: {USAGE})")
    except (KeyError, AttributeError) as e:
        fail(f"unknown config key {e}; check the --config.KEY=VALUE overrides")
    except Exception as e:  # errors raised while loading the config file itself
        fail(f"could not load the config: {' '.join(str(e).split())[:300]}")
    if config is None or not values.out:
        fail(f"--config and --out are required (usage: {USAGE})")
    try:
        validate_config(config)
    except ConfigError as e:
        fail(f"invalid config: {e}")
    seeds = sorted({d for _, d in sweep_members(config)})
    seed = values.data_seed
    if seed is None and len(seeds) != 1:
        fail(f"the config's sweep has the data seeds {seeds}; pick one with --data_seed")
    seed = seeds[0] if seed is None else seed
    try:
        with rolled_threefry():  # as the training run generates its data (the same bits)
            arrays = export_arrays(config, seed)
        paths = write_arrays(values.out, arrays)
    except DataFileError as e:
        fail(str(e))
    except OSError as e:
        fail(f"{e.strerror or e}: {e.filename or values.out}", 1)
    print(f"data seed {seed}: wrote {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
