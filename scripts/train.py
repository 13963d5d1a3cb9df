"""Train and evaluate a model from a config file.

    python scripts/train.py --config configs/scaling.py:ilcm,fast --workdir W \
        --config.data.dim_z=3 --config.seed=42 --config.data.nature.seed=42
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from wscrl_jax.cli import main_with_config  # noqa: E402

if __name__ == "__main__":
    main_with_config("train")
