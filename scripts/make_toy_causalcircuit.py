"""Write a toy CausalCircuit download (rendered circuit images, known causal graph) in exactly
the format of the real files, for trying the pipeline without the download.

    python scripts/make_toy_causalcircuit.py --out_dir data/toy_causalcircuit \\
        [--train 4000 --val 500 --test 500 --resolution 64 --layout single --seed 0]

The graph and mechanisms: wscrl_jax/data/causalcircuit/toy.py. Build the TFDS dataset from it
with scripts/build_causalcircuit.py --data_dir OUT_DIR.
"""

from wscrl_jax.cli import fail
from wscrl_jax.run_guard import ArgumentParser


def main():
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out_dir", required=True, help="directory for the .npz files")
    p.add_argument("--train", type=int, default=4000, help="training pairs")
    p.add_argument("--val", type=int, default=500, help="validation pairs")
    p.add_argument("--test", type=int, default=500, help="test pairs")
    p.add_argument("--resolution", type=int, default=64, help="image side in pixels")
    p.add_argument("--layout", choices=("single", "sharded"), default="single",
                   help="train.npz, or train-0.npz .. train-9.npz")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for name in ("train", "val", "test"):
        if getattr(args, name) < 1:
            fail(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not 16 <= args.resolution <= 512:
        fail(f"--resolution must be 16 to 512 pixels (the image VAE takes 64 or 512), got "
             f"{args.resolution}")
    if not 0 <= args.seed < 2**32:
        fail(f"--seed must be 0 to 2**32 - 1, got {args.seed}")
    from wscrl_jax.data.causalcircuit.toy import write_toy_dataset
    try:
        out = write_toy_dataset(args.out_dir, args.train, args.val, args.test, args.resolution,
                                args.layout, args.seed)
    except OSError as e:
        fail(f"cannot write {args.out_dir}: {e}", 1)
    print(f"wrote a toy CausalCircuit ({args.train}/{args.val}/{args.test} pairs, "
          f"{args.resolution}x{args.resolution}, {args.layout} layout) to {out}")


if __name__ == "__main__":
    main()
