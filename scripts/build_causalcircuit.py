"""Check a CausalCircuit download and build the TFDS dataset `causalcircuit` (ArrayRecord files
that training reads; no TensorFlow needed).

    python scripts/build_causalcircuit.py --data_dir DOWNLOAD_DIR --tfds_dir TFDS_DIR \\
        [--resolution 64]

DOWNLOAD_DIR holds train.npz (or train-0.npz .. train-9.npz), val.npz and test.npz from
https://developer.qualcomm.com/software/ai-datasets/causalcircuit (or from
scripts/make_toy_causalcircuit.py). Without --resolution the JPEGs are stored unchanged
(config `full`); --resolution 64 stores 64x64 re-encodings (config `res64`). Every file is
checked and every image decoded before anything is written; a problem is one `error:` line
(exit 2). Building a dataset that is already built does nothing.
"""

import logging

from wscrl_jax.cli import fail
from wscrl_jax.run_guard import ArgumentParser


def main():
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data_dir", required=True, help="the CausalCircuit download")
    p.add_argument("--tfds_dir", required=True, help="TFDS data directory to build into")
    p.add_argument("--resolution", type=int, choices=(64,), default=None,
                   help="store 64x64 images (default: the downloaded 512x512 JPEGs)")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: cores)")
    args = p.parse_args()
    if args.workers is not None and args.workers < 1:
        fail(f"--workers must be at least 1, got {args.workers}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from wscrl_jax.data.causalcircuit.builder import CausalCircuitFormatError, build
    try:
        path = build(args.data_dir, args.tfds_dir, args.resolution, args.workers)
    except CausalCircuitFormatError as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot build into {args.tfds_dir}: {e}", 1)
    print(f"causalcircuit ready in {path}")


if __name__ == "__main__":
    main()
