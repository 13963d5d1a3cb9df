"""Train and evaluate a model from a config file (the same as the `wscrl-train` command).

    python scripts/train.py --config configs/scaling.py:ilcm,fast --workdir W \
        --config.data.dim_z=3 --config.seed=42 --config.data.nature.seed=42
"""

from wscrl_jax.cli import train_main

if __name__ == "__main__":
    train_main()
