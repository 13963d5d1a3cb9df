"""The LCM on image pairs read from disk: CausalCircuit stage 1 (`method = "lcm_images"`).

Reference: `experiments/causalcircuit_reduce_dim.py` with `config/causalcircuit_reduce_dim.yaml`
and `ws_crl/encoder/image_vae.py`: the ILCM (or dVAE / beta-VAE) of `lcm/method.py` with the
CoordConv ResNet encoder and decoder of `lcm/image_vae.py`, trained on the TFDS `causalcircuit`
dataset through a Grain pipeline (`data/causalcircuit/pipeline.py`: per-member shuffling from the
data seed, JPEGs decoded in worker processes, its iterator state in the checkpoint). Batches reach
the step as uint8 images and become floats in [0, 1] inside it.

After training every split is encoded (encoder means, the reference's `encode_decode_pair`
codes) and written for stage 2 (`data/causalcircuit/codes.py`), with
`figures/reconstructions.png`. The reference evaluates nothing here; this package reports, per
member, the test reconstruction MSE and the DCI of the codes against the true variables.
"""

import dataclasses
import functools
import importlib
import logging
import math
import os
from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from wscrl_jax.config_checks import (ConfigError, batch_fits, boolean, finite_number, one_of,
                                     positive_int, require)
from wscrl_jax.data.causalcircuit.codes import write_codes_meta
from wscrl_jax.data.causalcircuit.files import CausalCircuitFormatError
from wscrl_jax.data.encoded import write_encoded
from wscrl_jax.eval.dci import compute_dci_members, resolve_dci_backend
from wscrl_jax.lcm.image_vae import RESOLUTIONS
from wscrl_jax.lcm.method import LCMMethod
from wscrl_jax.plots import image_grid
from wscrl_jax.train.checkpoint import CheckpointError

log = logging.getLogger("wscrl_jax")
SPLITS = ("train", "val", "test")


def to_flat_floats(x):
    """uint8 images [..., R, R, 3] -> floats in [0, 1], HWC-flattened [..., R * R * 3]."""
    return x.reshape(*x.shape[:-3], -1).astype(jnp.float32) / 255.0


class ImageLCMMethod(LCMMethod):
    """ILCM / dVAE / beta-VAE on CausalCircuit image pairs (stage 1)."""

    def __init__(self, config):
        super().__init__(config)
        self.options = dataclasses.replace(self.options, convolutional=True,
                                           evaluates_padding=False)
        self.resolution = int(config.data.resolution)
        self._written_codes = None  # codes of the state `write_outputs` saw, for `evaluate`

    @functools.cached_property
    def sources(self):
        """The built dataset's TFDS sources, opened on first use (a loaded model that only
        encodes and decodes needs no dataset)."""
        return _data_sources(self.config.data)

    @staticmethod
    def observation_dim(data_cfg) -> int:
        return int(data_cfg.resolution) ** 2 * 3

    @staticmethod
    def image_resolution(data_cfg) -> int:
        return int(data_cfg.resolution)

    # ------------------------------------------------------------------ config
    @classmethod
    def check_data(cls, c):
        d = c.data
        one_of(d.dataset, ("causalcircuit",), "data.dataset")
        require(d.tfds_dir, "data.tfds_dir is not set; build the dataset with python "
                "scripts/build_causalcircuit.py --data_dir DOWNLOAD --tfds_dir T, then pass "
                "--config.data.tfds_dir=T")
        one_of(d.resolution, RESOLUTIONS, "data.resolution")
        positive_int(d.dim_z, "data.dim_z", 2)
        finite_number(d.noise, "data.noise", 0)
        positive_int(d.workers, "data.workers", 0)
        positive_int(d.eval_batchsize, "data.eval_batchsize")
        try:
            sources = _data_sources(d)
            size = _causalcircuit("builder").image_size(sources["train"])
        except CausalCircuitFormatError as e:
            raise ConfigError(str(e)) from None
        if size != int(d.resolution):  # a dataset built from images of another size
            raise ConfigError(
                f"data.resolution={d.resolution}, but the images of the dataset in "
                f"{d.tfds_dir} are {size}x{size}; build it with python "
                f"scripts/build_causalcircuit.py --data_dir DOWNLOAD --tfds_dir T"
                f"{' --resolution 64' if size != 512 else ''} and pass "
                f"--config.data.resolution={64 if size != 512 else 512}")
        batch_fits(c.training.batchsize, len(sources["train"]), "the training split")

    @classmethod
    def check_network(cls, g, name: str):
        one_of(g.type, ("conv",), f"model.{name}.type")
        positive_int(g.hidden_channels, f"model.{name}.hidden_channels")
        require(g.batchnorm is False, f"model.{name}.batchnorm={g.batchnorm!r}: only False is "
                "supported (as in every reference config)")
        boolean(g.coordinate_embeddings, f"model.{name}.coordinate_embeddings")
        positive_int(g.extra_mlp_layers, f"model.{name}.extra_mlp_layers", 0)
        positive_int(g.extra_mlp_hidden_units, f"model.{name}.extra_mlp_hidden_units")
        positive_int(g.elementwise_layers, f"model.{name}.elementwise_layers", 0)
        positive_int(g.elementwise_hidden_units, f"model.{name}.elementwise_hidden_units")
        finite_number(g.min_std, f"model.{name}.min_std", 0, exclusive=True)
        boolean(g.fix_std, f"model.{name}.fix_std")
        positive_int(g.permutation, f"model.{name}.permutation", 0)

    @classmethod
    def check_model_and_training(cls, c):
        super().check_model_and_training(c)
        require(c.model.encoder.permutation < math.factorial(c.data.dim_z),
                f"model.encoder.permutation={c.model.encoder.permutation} must be below "
                f"{c.data.dim_z}! = {math.factorial(c.data.dim_z)}")
        fix = c.training.fix_topological_order_epoch
        require(fix is None or fix >= c.training.epochs, "training.fix_topological_order_epoch "
                "is not supported on images; leave it unset (the reduce-dim run never uses it)")
        require(not c.eval.graphs, "eval.graphs=True is not supported on images; set it False "
                "(graphs are evaluated on the codes, configs/causalcircuit.py)")
        positive_int(c.eval.dci_train_pairs, "eval.dci_train_pairs")

    # ------------------------------------------------------------------ data
    def make_data(self, data_seed: int):
        """No on-device data: training reads the disk through `training_data`."""
        del data_seed
        return {}

    def training_data(self, data, data_seeds, start_step, saved):
        """The Grain pipeline of every member's training pairs (`data/causalcircuit/`)."""
        del data
        if start_step and (saved is None or any(str(d) not in saved for d in data_seeds)):
            raise CheckpointError(
                f"the checkpoint at step {start_step} holds no data-pipeline state for data "
                f"seeds {sorted(set(data_seeds))}; start a new --workdir")
        tr = self.config.training
        return _pipeline().PairStream(self.sources["train"], data_seeds, tr.batchsize,
                                      self.config.data.workers, start_step, saved,
                                      lookahead=2 * int(tr.steps_per_call))  # two calls' batches

    # ------------------------------------------------------------------ loss
    def loss(self, params, model_state, batch, weights, key, loss_weights, phase):
        """The LCM loss of uint8 image pairs x1, x2 [B, R, R, 3] (pixel noise `data.noise`)."""
        x1, x2 = to_flat_floats(batch["x1"]), to_flat_floats(batch["x2"])
        noise = float(self.config.data.noise)
        if noise:
            k1, k2, key = jax.random.split(key, 3)
            x1 = x1 + noise * jax.random.normal(k1, x1.shape)
            x2 = x2 + noise * jax.random.normal(k2, x2.shape)
        return super().loss(params, model_state, {"x1": x1, "x2": x2}, weights, key,
                            loss_weights, phase)

    # ------------------------------------------------------------------ outputs
    def encode_splits(self, params, splits=SPLITS, limit=None, progress=False):
        """Codes of every member on `splits` in download order: {split: {x1, x2 [M, N, dim_z],
        z1, z2, e1, e2 [N, 4], intervention_labels [N], true_interventions [N, 4],
        mse [M, N] (per-pixel reconstruction MSE of x1)}}; `limit`: first pairs read only."""
        bs = int(self.config.data.eval_batchsize)
        out = {}
        for split in splits:
            source = self.sources[split]
            total = len(source) if limit is None else min(limit, len(source))
            parts = []
            with tqdm(total=total, disable=not progress, unit="pair", leave=False,
                      desc=f"encoding {split}") as bar:
                for batch in _pipeline().iterate_split(source, bs, int(self.config.data.workers)):
                    parts.append(self._encode_batch(params, batch, bs))
                    bar.update(len(batch["index"]))
                    if sum(len(p["index"]) for p in parts) >= total:
                        break
            merged = {k: np.concatenate([p[k] for p in parts], axis=1 if k in _MEMBER_FIELDS
                                        else 0) for k in parts[0]}
            order = np.argsort(merged.pop("index"), kind="stable")[:total]
            out[split] = {k: v[:, order] if k in _MEMBER_FIELDS else v[order]
                          for k, v in merged.items()}
        return out

    def _encode_batch(self, params, batch, bs: int):
        """One batch of pairs through every member (padded to `bs` rows: one compilation)."""
        n = len(batch["index"])
        pad = lambda a: np.concatenate([a, np.repeat(a[-1:], bs - n, 0)])  # noqa: E731
        mu1, mu2, mse = jax.device_get(_pair_codes(self, params, pad(batch["x1"]),
                                                   pad(batch["x2"])))
        return {"x1": mu1[:, :n], "x2": mu2[:, :n], "mse": mse[:, :n],
                "z1": batch["z1"], "z2": batch["z2"], "e1": batch["e1"], "e2": batch["e2"],
                "intervention_labels": batch["intervention_labels"].astype(np.int32),
                "true_interventions": batch["intervention_masks"].astype(np.int32),
                "index": batch["index"]}

    def write_outputs(self, workdir: str, state, data, members) -> None:
        """WORKDIR/encoded/ (every split's codes per member, for configs/causalcircuit.py) and
        WORKDIR/figures/reconstructions.png."""
        del data
        codes = self.encode_splits(state.params, progress=True)
        for i in range(len(members)):
            write_encoded(workdir, i, {
                split: {k: (v[i] if k in _MEMBER_FIELDS else v) for k, v in named.items()
                        if k != "mse"} for split, named in codes.items()})
        write_codes_meta(workdir, members, {s: len(codes[s]["z1"]) for s in SPLITS},
                         self.dim_z, self.resolution)
        log.info("Codes of %d member(s) written to %s", len(members),
                 os.path.join(workdir, "encoded"))
        self._written_codes = codes
        self._write_figure(workdir, state.params, len(members))

    def _write_figure(self, workdir: str, params, num_members: int, count: int = 8):
        batch = next(_pipeline().iterate_split(self.sources["test"], count))
        x = batch["x1"]
        _, recon = _reconstruct(self, params, jnp.asarray(x))
        r = self.resolution
        recon = np.clip(np.asarray(recon).reshape(num_members, -1, r, r, 3), 0.0, 1.0)
        images = [x] + [(255 * recon[i]).round().astype(np.uint8) for i in range(num_members)]
        names = ["test input"] + [f"member {i}" for i in range(num_members)]
        os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
        image_grid(os.path.join(workdir, "figures", "reconstructions.png"),
                   np.concatenate(images), np.repeat(np.arange(len(names)), len(x)),
                   per_label=len(x), title="test images (before the intervention) and "
                   "reconstructions from the encoder means", row_names=names)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, params, model_state, data, keys, initial_params, *, real,
                 progress, compile_only=False) -> List[Dict[str, float]]:
        """Per member: `reconstruction_mse` (test images through the encoder and decoder means,
        per pixel, images in [0, 1]) and the DCI of the codes (encoder means of the before
        images, fit on the `eval.dci_train_pairs` training pairs stored first in the TFDS
        dataset, a fixed subset) against the true causal variables (`code_*`). Uses the codes
        `write_outputs` just wrote where it ran on these parameters, else encodes."""
        del model_state, data, keys, initial_params, real  # no padding: see `options`
        if compile_only:  # its encoding runs batch by batch after `write_outputs`
            return []
        with tqdm(total=2, disable=not progress, unit="stage", leave=False) as bar:
            return self._evaluate_codes(params, bar)

    def _evaluate_codes(self, params, bar):
        bar.set_description("evaluation: encoding")
        codes = self._written_codes
        limit = int(self.config.eval.dci_train_pairs)
        if codes is None or codes["test"]["x1"].shape[0] != params_members(params):
            codes = {**self.encode_splits(params, ("train",), limit),
                     **self.encode_splits(params, ("test",))}
            train = codes["train"]
        else:  # the same pairs, picked out of the whole split (download order)
            source = self.sources["train"]
            rows = np.sort([int(source[i]["index"]) for i in range(min(limit, len(source)))])
            train = {k: v[:, rows] if k in _MEMBER_FIELDS else v[rows]
                     for k, v in codes["train"].items()}
        test = codes["test"]
        bar.update()
        bar.set_description(
            f"evaluation: DCI ({resolve_dci_backend(self.config.eval.dci_backend)})")
        m = test["x1"].shape[0]
        per_member = lambda a: np.broadcast_to(a, (m,) + a.shape)  # noqa: E731
        dci = compute_dci_members(train["x1"], per_member(train["z1"]),
                                  test["x1"], per_member(test["z1"]),
                                  backend=self.config.eval.dci_backend,
                                  random_state=self.config.eval.dci_random_state)
        bar.update()
        return [{"reconstruction_mse": float(np.mean(test["mse"][i])),
                 **{f"code_{k}": v for k, v in dci[i].items()}} for i in range(m)]


_MEMBER_FIELDS = ("x1", "x2", "mse")  # fields with a leading member axis in `encode_splits`


def params_members(params) -> int:
    return int(jax.tree_util.tree_leaves(params)[0].shape[0])


@functools.partial(jax.jit, static_argnums=(0,))
def _pair_codes(method, params, x1, x2):
    """Every member's encoder means of both images [M, B, dim_z] and the per-pixel
    reconstruction MSE of x1 [M, B] (uint8 images [B, R, R, 3]; only the codes and the MSE
    leave the device)."""
    f1, f2 = to_flat_floats(x1), to_flat_floats(x2)

    def one(p):
        mu1, rec1 = method.module.apply({"params": p}, f1, method="reconstruct")
        mu2 = method.module.apply({"params": p}, f2, method="encode_to_noise")
        return mu1, mu2, jnp.mean(jnp.square(rec1 - f1), axis=-1)
    return jax.vmap(one)(params)


@functools.partial(jax.jit, static_argnums=(0,))
def _reconstruct(method, params, x):
    """Every member's encoder means [M, B, dim_z] and decoder means [M, B, R * R * 3] of uint8
    images x [B, R, R, 3]."""
    flat = to_flat_floats(x)
    return jax.vmap(lambda p: method.module.apply({"params": p}, flat,
                                                  method="reconstruct"))(params)


def _data_sources(data_cfg):
    """The built dataset's TFDS sources."""
    return _causalcircuit("builder").data_sources(data_cfg.tfds_dir, _tfds_resolution(data_cfg))


def _pipeline():
    return _causalcircuit("pipeline")


def _causalcircuit(name: str):
    """`data.causalcircuit.builder` (TFDS) or `.pipeline` (Grain), imported on first use, so
    the other methods run where neither package is installed (the GPU image has neither); a
    missing one is a ConfigError line."""
    try:
        return importlib.import_module(f"wscrl_jax.data.causalcircuit.{name}")
    except ModuleNotFoundError as e:
        raise ConfigError(f"CausalCircuit data need tensorflow-datasets and grain ({e}); "
                          "install them: pip install tensorflow-datasets grain "
                          "importlib_resources") from None


def _tfds_resolution(data_cfg):
    """The TFDS config of `data.resolution`: None (full size, 512) or 64."""
    return None if int(data_cfg.resolution) == 512 else int(data_cfg.resolution)
