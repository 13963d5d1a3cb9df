"""MD-CRL on multi-domain balls images, two stages (the reference README's balls commands;
reference: `datamodule/md_balls_dataset.py`, `models/balls_autoencoder_pl.py`).

Variants, `--config configs/md_balls.py:VARIANT[,OPTION...]`
(`stage1|stage2[,minmax|mmd|minmax_mmd|none][,cnn][,fast]`):

* `stage1`: the images of 16 domains (red invariant ball in [0.5, 0.9]^2, blue spurious ball
  in a per-domain box), rendered per member from its data seed; the ResNet-18 autoencoder
  (`resnet18_ae_balls.yaml`, 128-d codes; `cnn`: the CNN autoencoder `cnn_ae_balls.yaml`),
  pixel MSE only, ReduceLROnPlateau, no early stopping (the README removes it), batch 256;
  writes its codes to WORKDIR/encoded/.
* `stage2`: the BatchNorm MLP autoencoder (`mlp_ae.yaml`; the README's `mlp_ae_balls` does
  not exist, md-crl gotcha 2) on the stage-1 codes of `--config.data.stage1_workdir=W1`,
  scaled to [0, 1] per split, with the `minmax` penalty (default; `mmd`, `minmax_mmd`,
  `none`), top_k 10, batch 1024, half the code invariant, no warm-up.
* `fast`: small data and few epochs (smoke runs and tests).

Everything else (optimiser, scheduler, trainer, sweep, checkpoint keys and their comments) is
`configs/md_mixing.py`'s; sweeps as there, e.g. `--config.sweep.seeds=1235,4256,49685,7383,9271`
for the README's five stage-2 seeds.

Expected (figures recorded in docs/benchmarks.md; the README's 1000-epoch stage 1 has not been
run):

* `stage1` (ResNet-18) at the README's data sizes, 25 epochs on an H100 sharing the GPU with
  other runs: 130 s, `hz_z_~r2` of the whole code 0.991. On the 2-core CPU a ResNet-18 step takes
  about 18 s (about an hour an epoch): use an accelerator. `stage1,cnn` with 14000 training
  images and 16 epochs on the 2-core CPU: 912 s, `hz_z_~r2` 0.997.
* `stage2`, the five seeds, 300 epochs, on the H100 stage 1: `minmax` 66 s, median
  `hz_z_~r2_linreg` 0.720 and `hz_~z_~r2_linreg` 0.209; `none` 31 s, 0.953 and 0.903. On the
  2-core CPU (on the CNN stage 1): `minmax` 13.2 min, medians 0.718 and 0.178; `none` 5.1 min,
  0.963 and 0.972. `mmd` and `minmax_mmd`: no figures recorded.
"""

import os
import runpy
import types

import ml_collections

_here = os.path.dirname(os.path.abspath(__file__))
common = types.SimpleNamespace(**runpy.run_path(os.path.join(_here, "common.py")))
md_mixing = types.SimpleNamespace(**runpy.run_path(os.path.join(_here, "md_mixing.py")))

STAGES = ("stage1", "stage2")
PENALTIES = ("minmax", "mmd", "minmax_mmd", "none")


def balls_data_block(fast: bool) -> ml_collections.ConfigDict:
    """`config.data` of stage 1 (`datamodule/md_balls.yaml`, `dataset/md_balls.yaml`, with the
    README's overrides); read by `wscrl_jax.data.balls.balls_data_config`."""
    d = ml_collections.ConfigDict()
    d.dataset = "balls"  # images rendered per member from its data seed (data/balls.py)
    d.num_domains = 16  # D, number of domains (README)
    d.ball_size = 0.08  # ball radius in [0, 1] units (5 px at 64 px)
    d.invariant_low = (0.5, 0.5)  # invariant ball box, lower corner (README; default 0.1)
    d.invariant_high = (0.9, 0.9)  # invariant ball box, upper corner
    d.n_balls_invariant = 1  # invariant balls (red first)
    d.n_balls_spurious = 1  # spurious balls, in per-domain boxes
    d.correlated_z = False  # dynamic balls: spurious positions shifted by the invariant ones
    d.corr_prob = 0.0  # probability of that shift (README: 0.0 with correlated_z False)
    d.image_size = 64  # pixels a side (the autoencoders are built for 64)
    d.num_samples = ml_collections.ConfigDict()  # reference: datamodule.num_samples
    d.num_samples.train = 2400 if fast else 60000  # rows drawn for training, valid included
    d.num_samples.valid = 400 if fast else 10000  # validation rows, split off the train rows
    d.num_samples.test = 200 if fast else 1000  # test rows (own domain boxes, as the reference)
    d.test_shares_boxes = False  # True: the test split reuses the training domain boxes
    d.max_redraws = 100  # overlap rejection rounds per sample (reference: 100)
    return d


def get_config(arg=None):
    stage, options = common.parse_variant(arg, "md_balls", STAGES,
                                          options=PENALTIES + ("cnn", "fast"),
                                          exclusive=(PENALTIES,))
    penalty = common.chosen(options, PENALTIES, default="minmax")
    fast = "fast" in options
    base = "poly_stage1" if stage == "stage1" else f"poly_stage2,{penalty}"
    c = md_mixing.get_config(base + (",fast" if fast else ""))
    m, t = c.model, c.training
    if stage == "stage1":
        shared_keys = {k: c.data[k] for k in ("stage1_workdir", "stage1_member",
                                              "normalize_per_split", "code_range",
                                              "polynomial_degree")}
        c.data = balls_data_block(fast)
        c.data.update(shared_keys)  # unused by balls stage 1; every MD-CRL config has them
        # resnet18 (README, resnet18_ae_balls.yaml) or cnn (cnn_ae_balls.yaml, model default)
        m.autoencoder = "cnn" if "cnn" in options else "resnet18"
        m.z_dim = 128  # code size (README; balls.yaml default 64)
        m.save_encoded_data = True  # balls.yaml
        t.batchsize = 64 if fast else 256  # datamodule md_balls.yaml
        t.epochs = 3 if fast else 1000  # README: no early stopping, trainer.max_epochs
        t.steps_per_call = 200
    else:
        c.data.code_range = "unit"  # md_balls_encoded.yaml: normalize -> [0, 1]
        m.autoencoder = "mlp_bn"  # mlp_ae.yaml
        m.top_k = 10  # balls_md_encoded_autoencoder.yaml
        m.hinge_loss_weight = 0.0  # README (config default 10.0)
        t.batchsize = 256 if fast else 1024  # README
        t.epochs = 10 if fast else 1000  # README: no early stopping
        c.scheduler.type = "reduce_on_plateau"  # balls_md_encoded_autoencoder.yaml
    t.early_stopping.enabled = False  # README: ~callbacks.early_stopping
    return c
