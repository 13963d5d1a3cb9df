"""Run one MD-CRL reference training (`run_training.py`) on CPU, offline, without W&B.

Runs inside the reference environment (it imports torch and lightning):

    REF_VENV/bin/python tools/reference/run_mdcrl.py --ref-root MDCRL_TREE [--threads 1] \
        -- seed=1235 hydra.run.dir=/abs/run/dir [more Hydra overrides]

Everything after `--` is appended to the Hydra command line after the fixed part below.
What this adds to the reference's own command:

* `wandb` and `torchvision` are replaced in `sys.modules` by empty modules: the linear-mixing
  path imports them but does not use them once the W&B logger and the visualisation callback
  are off. The real pytorch_lightning and torchmetrics are imported first, so that their own
  checks see that torchvision is absent.
* `logger=csv` (the CSV logger config written by setup_reference.sh): metrics go to
  RUN_DIR/csv/version_0/metrics.csv;
* CPU and single-process overrides: `trainer.accelerator=cpu hydra/launcher=basic
  datamodule.num_workers=0`, and `~model.scheduler_config.scheduler.verbose` (recent torch
  refuses the `verbose` argument of ReduceLROnPlateau);
* torch is limited to `--threads` CPU threads (default 1).
"""

import argparse
import os
import runpy
import sys
import types

FIXED_OVERRIDES = ["logger=csv", "trainer.accelerator=cpu", "hydra/launcher=basic",
                   "datamodule.num_workers=0", "~model.scheduler_config.scheduler.verbose"]


class _Anything(types.ModuleType):
    """A module whose every attribute is a do-nothing callable (enough for unused imports)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


def stub_modules():
    """Put empty `wandb` and `torchvision` modules in place, after lightning has imported."""
    import pytorch_lightning  # noqa: F401
    import torchmetrics  # noqa: F401
    for name in ("wandb", "torchvision", "torchvision.models", "torchvision.transforms"):
        sys.modules.setdefault(name, _Anything(name))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    cut = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref-root", default=os.environ.get("WSCRL_REF_MDCRL"),
                   help="work tree of the MD-CRL reference (env WSCRL_REF_MDCRL)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv[:cut])
    if not args.ref_root:
        p.error("--ref-root (or WSCRL_REF_MDCRL) is required")

    import torch
    torch.set_num_threads(args.threads)
    stub_modules()

    root = os.path.abspath(args.ref_root)
    os.chdir(root)
    sys.path.insert(0, root)
    script = os.path.join(root, "run_training.py")
    sys.argv = [script] + FIXED_OVERRIDES + argv[cut + 1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
