"""Check your own `.npz` data and build it once into a TFDS ArrayRecord dataset, which training
reads with `--config.data.source=tfds --config.data.path=TFDS_DIR` (docs/own_data.md).

    python scripts/build_dataset.py --format pairs --path DIR_OR_NPZ --dim_z D --out TFDS_DIR
    python scripts/build_dataset.py --format domains --path DIR_OR_NPZ --out TFDS_DIR \\
        [--split_seed S --val_fraction 0.1 --test_fraction 0.1]

--path is what `data.path` takes: a directory of train.npz, val.npz, test.npz (pairs: and
optionally dci_train.npz), or one .npz file, split here as the in-memory route splits it
(--split_seed, --val_fraction, --test_fraction; the built dataset then keeps that split). The
files pass the in-memory route's checks before anything is written; a problem is one `error:`
line (exit 2). The dataset goes to TFDS_DIR/own_data/<format>/1.0.0; an existing one is never
overwritten.
"""

import logging

from wscrl_jax.cli import fail
from wscrl_jax.config_checks import SEED_LIMIT
from wscrl_jax.run_guard import ArgumentParser


def main():
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--format", required=True, choices=("pairs", "domains"),
                   help="pairs (data.dataset=pairs) or domains (data.dataset=domains)")
    p.add_argument("--path", required=True, help="an .npz directory or file, as data.path")
    p.add_argument("--out", required=True, help="TFDS data directory to build into")
    p.add_argument("--dim_z", type=int, default=None,
                   help="pairs: the number of causal variables (data.dim_z)")
    p.add_argument("--split_seed", type=int, default=0, help="one file: its split seed")
    p.add_argument("--val_fraction", type=float, default=0.1,
                   help="one file: fraction of rows for validation")
    p.add_argument("--test_fraction", type=float, default=0.1,
                   help="one file: fraction of rows for the test split")
    args = p.parse_args()
    if args.dim_z is not None and args.format != "pairs":
        fail("--dim_z is for --format pairs; domains take the number of latents to learn "
             "from data.z_dim at training")
    if args.format == "pairs" and (args.dim_z is None or args.dim_z < 2):
        fail(f"--format pairs needs --dim_z D >= 2, the data.dim_z of the runs that train on "
             f"it (got {args.dim_z})")
    if not 0 <= args.split_seed < SEED_LIMIT:
        fail(f"--split_seed {args.split_seed} must be an integer seed in [0, 2**32)")
    for name in ("val_fraction", "test_fraction"):
        value = getattr(args, name)
        if not 0 < value < 1:
            fail(f"--{name} {value} must be in (0, 1)")
    if args.val_fraction + args.test_fraction >= 1:
        fail(f"--val_fraction {args.val_fraction} and --test_fraction {args.test_fraction} "
             "leave no training rows; their sum must be < 1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from wscrl_jax.data.npz_files import DataFileError
    from wscrl_jax.data.own_tfds import build
    try:
        path = build(args.format, args.path, args.out, args.dim_z, args.split_seed,
                     args.val_fraction, args.test_fraction)
    except DataFileError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot build into {args.out}: {e}", 1)
    print(f"{args.format} ready in {path}; train with --config.data.dataset={args.format} "
          f"--config.data.source=tfds --config.data.path={args.out}")


if __name__ == "__main__":
    main()
