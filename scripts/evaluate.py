"""Evaluate a trained workdir from its checkpoint, without training.

    python scripts/evaluate.py --workdir W [--member K] [--step S]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main():
    p = argparse.ArgumentParser(description="Evaluate the checkpoint of a training workdir.")
    p.add_argument("--workdir", required=True, help="workdir written by scripts/train.py")
    p.add_argument("--member", type=int, default=None, help="evaluate only this member index")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    args = p.parse_args()
    if not os.path.isdir(args.workdir):
        print(f"error: workdir {args.workdir} does not exist", file=sys.stderr)
        sys.exit(2)

    from wscrl_jax import experiment
    from wscrl_jax.tracking import setup_logging
    from wscrl_jax.train.checkpoint import CheckpointError

    from wscrl_jax.cli import enable_compilation_cache

    enable_compilation_cache()
    setup_logging(args.workdir)
    try:
        experiment.evaluate_workdir(args.workdir, args.member, args.step)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
