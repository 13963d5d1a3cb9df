"""Run one WS-CRL reference scaling experiment (`experiments/scaling.py`) on CPU, offline.

Runs inside the reference environment (it imports torch), from anywhere:

    REF_VENV/bin/python tools/reference/run_wscrl.py --ref-root WSCRL_TREE --method ilcm \
        [--keep-enco] [--threads 1] -- general.exp_name=N general.base_dir=B general.seed=S \
        data.dim_z=3 data.nature.seed=42 training=scaling_fast training.device=cpu

Everything after `--` goes to the reference's Hydra command line unchanged. What this adds:

* `--method` picks the reference's top-level config `scaling_<method>` (ilcm, dvae, betavae);
* torch is limited to `--threads` CPU threads (default 1: two runs at a time fill two cores);
* post-hoc ENCO graph learning is replaced by an empty result unless `--keep-enco` (it takes
  20-30 minutes a run on two cores and does not enter the outcomes compared here);
* Python 3.10+ compatibility: the reference's `collections.Mapping` is aliased.

It needs, on PYTHONPATH, the do-nothing `mlflow` package that setup_reference.sh writes, and an
empty `config/__init__.py` in the work tree (also written there), so that Hydra finds the
configs as a module. Results land in B/N/metrics/test_metrics.csv, as in the reference.
"""

import argparse
import collections
import collections.abc
import os
import sys


def parse(argv):
    """Split our options from the Hydra overrides after `--`."""
    if "--" in argv:
        cut = argv.index("--")
        ours, overrides = argv[:cut], argv[cut + 1:]
    else:
        ours, overrides = argv, []
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref-root", default=os.environ.get("WSCRL_REF_WSCRL"),
                   help="work tree of the WS-CRL reference (env WSCRL_REF_WSCRL)")
    p.add_argument("--method", choices=("ilcm", "dvae", "betavae"), default="ilcm")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--keep-enco", action="store_true",
                   help="run the reference's post-hoc ENCO graph learning (slow)")
    args = p.parse_args(ours)
    if not args.ref_root:
        p.error("--ref-root (or WSCRL_REF_WSCRL) is required")
    return args, overrides


def main(argv=None):
    args, overrides = parse(sys.argv[1:] if argv is None else argv)
    collections.Mapping = collections.abc.Mapping  # removed from `collections` in Python 3.10

    import torch
    torch.set_num_threads(args.threads)

    root = os.path.abspath(args.ref_root)
    os.chdir(root)
    sys.path.insert(0, root)
    import experiments.scaling as scaling  # noqa: E402  (the reference's own module)

    if not args.keep_enco:
        scaling.eval_enco_graph = lambda cfg, model, partition="train": {}

    sys.argv = [os.path.join(root, "experiments", "scaling.py"),
                "--config-name", f"scaling_{args.method}"] + overrides
    scaling.main()


if __name__ == "__main__":
    main()
