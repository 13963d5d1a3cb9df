"""CausalCircuit stage 1: the image VAE that reduces 512x512 (or 64x64) pairs to 8-d codes.

`get_config("512")` (the reference's resolution) or `"64"` (the TFDS dataset built with
`--resolution 64`), each with `,fast`; a bare `fast` means `512,fast`. Mirrors the reference's
`config/causalcircuit_reduce_dim.yaml` (data `causalcircuit_raw`, model and training
`causalcircuit_reduce_dim[_fast]`; `experiments/causalcircuit_reduce_dim.py`): an ILCM-shaped model
whose whole run is beta-VAE pretraining, because `pretrain_epochs` (60) exceeds `epochs` (50)
(ws-crl gotcha 27, reproduced). At the end it writes the encoder means of every split to
WORKDIR/encoded/ for configs/causalcircuit.py, and figures/reconstructions.png.

    python scripts/build_causalcircuit.py --data_dir DOWNLOAD --tfds_dir T
    python scripts/train.py --config configs/causalcircuit_reduce_dim.py \
        --config.data.tfds_dir=T --workdir W1

Expected (figures recorded in docs/benchmarks.md): the real dataset has not been run. `512`
with the reference's batch of 32 does not fit a 24 GiB CPU machine (at batch 4 a step takes
about 8 s on the 2-core CPU); it is for an accelerator. `64`, batch 32: about 0.6 s a step on
the 2-core CPU. On the toy circuit (4000 pairs at 64 px, 15 epochs at learning rate 5e-4 instead
of 50 at 1e-4): 1716 s on the 2-core CPU, test reconstruction MSE 0.0013 per pixel, DCI
disentanglement of the 8-d codes 0.21. `,fast`: no figures recorded.
"""

import os
import runpy
import types

import ml_collections
from ml_collections.config_dict import placeholder

common = types.SimpleNamespace(**runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "common.py")))
scaling = types.SimpleNamespace(**runpy.run_path(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "scaling.py")))

RESOLUTIONS = ("512", "64")


def _image_net(fix_std: bool, min_std: float) -> ml_collections.ConfigDict:
    """`model.encoder` / `model.decoder` of the reference's image VAE
    (`ws_crl/encoder/image_vae.py`)."""
    g = ml_collections.ConfigDict()
    g.type = "conv"  # CoordConv ResNet (wscrl_jax/lcm/image_vae.py)
    g.hidden_channels = 32  # channels of the first block; the plan doubles them per block
    g.batchnorm = False  # the only supported value (every reference config)
    g.coordinate_embeddings = True  # CoordConv: every convolution sees two coordinate channels
    g.extra_mlp_layers = 2  # MLP layers between the conv net and the latents
    g.extra_mlp_hidden_units = 128  # their width
    g.elementwise_layers = 0  # per-latent residual MLP layers (0: identity)
    g.elementwise_hidden_units = 16  # their width
    g.min_std = min_std  # encoder: floor of softplus std; decoder with fix_std: the std itself
    g.fix_std = fix_std  # decoder: constant std min_std (exactly, unlike the MLP decoder)
    g.permutation = 0  # encoder: index of a fixed permutation of the latents (decoder inverts)
    return g


def get_config(arg=None):
    arg = "512," + arg if arg and arg.split(",")[0].strip() == "fast" else arg
    resolution, options = common.parse_variant(arg, "causalcircuit_reduce_dim", RESOLUTIONS,
                                               options=("fast",))
    fast = "fast" in options
    c = scaling.get_config("ilcm,fast" if fast else "ilcm")
    c.method = "lcm_images"  # the LCM on images read from disk (wscrl_jax/lcm/image_method.py)

    # ---------------------------------------------------------------- data (causalcircuit_raw)
    d = c.data = ml_collections.ConfigDict()
    d.dataset = "causalcircuit"  # the TFDS dataset built by scripts/build_causalcircuit.py
    d.tfds_dir = placeholder(str)  # its --tfds_dir; required (ws-crl gotcha 26)
    d.resolution = int(resolution)  # 512 (built as is) or 64 (built with --resolution 64)
    d.dim_z = 8  # latent dimension of the image VAE (reference: model.dim_z; true variables: 4)
    d.noise = 0.0  # std of Gaussian pixel noise added to both images of a training pair
    d.workers = 2  # Grain worker processes decoding JPEGs (0: in the training process)
    d.eval_batchsize = 32  # pairs per batch when encoding the splits (reference: eval.batchsize)
    c.sweep.data_seeds = "same"  # each member shuffles with its model seed unless given

    # ---------------------------------------------------------------- model
    m = c.model
    m.scm.hidden_units = 100
    m.scm.hidden_layers = 2
    m.scm.min_std = 0.2
    m.scm.manifold_thickness = 0.01
    m.encoder = _image_net(fix_std=False, min_std=1e-3)
    m.decoder = _image_net(fix_std=True, min_std=1.0)

    # ---------------------------------------------------------------- training
    t = c.training
    t.batchsize = 8 if fast else 32
    t.epochs = 10 if fast else 50
    t.clip_grad_norm = 10.0 if fast else 100.0
    # a call's batches are host arrays first (at 512 px and batch 32, 50 MB a step; the
    # pipeline reads two calls ahead); on CPU convolutional steps run one per dispatch anyway
    t.steps_per_call = 10
    t.pretrain_epochs = 10 if fast else 60  # >= epochs: the whole run is pretraining
    t.pretrain_beta = 0.1
    t.model_interventions_after_epoch = placeholder(int)
    t.deterministic_intervention_encoder_after_epoch = placeholder(int)
    lr = t.lr_schedule
    lr.type = "cosine"  # T_max = training.epochs
    lr.initial = 3e-5 if fast else 1e-4
    lr.minimal = 1e-8
    t.manifold_thickness_schedule = scaling._schedule("constant", 0.01, 0.01)
    t.beta_schedule = scaling._schedule("constant", 0.5, 0.5)
    t.z_regularization_schedule = scaling._schedule("constant", 0.1, 0.1)
    t.consistency_regularization_schedule = scaling._schedule("constant", 0.05, 0.05)
    t.intervention_entropy_regularization_schedule = scaling._schedule("constant", 0.0, 0.0)
    t.intervention_encoder_offset_schedule = scaling._schedule("constant", 1e-4, 1e-4)
    c.checkpoint.every_n_steps = 1000 if fast else 10000  # reference: save_model_every_n_steps

    # ---------------------------------------------------------------- evaluation
    e = c.eval
    e.graphs = False  # no SCM is trained (ws-crl gotcha 27); the codes' DCI is computed instead
    e.dci_train_pairs = 10000  # training pairs whose codes fit the codes' DCI regressors
    return c
