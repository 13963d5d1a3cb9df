"""Evaluate a trained workdir from its checkpoint, without training (the same as the
`wscrl-evaluate` command).

    python scripts/evaluate.py --workdir W [--member K] [--step S]
"""

from wscrl_jax.cli import evaluate_main

if __name__ == "__main__":
    evaluate_main()
