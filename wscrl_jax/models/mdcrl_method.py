"""MD-CRL autoencoders on multi-domain mixing data, behind the loop's method interface.

Reference: `models/mixing_autoencoder_pl.py` (stage 1 / the whole method for linear mixing) and
`models/mixing_md_encoded_autoencoder_pl.py` (stage 2), `models/base_pl.py` (loss, optimisers),
the Lightning trainer and callbacks (`configs/trainer/default.yaml`, `configs/callbacks/`).

Two data sources (`config.data.dataset`):

* `"mixing"`: synthetic data generated on device per member from its data seed
  (`wscrl_jax.data.mixing`). Stage 1 with `model.save_encoded_data=True` writes the encoded
  splits to `WORKDIR/encoded/` (`write_outputs`).
* `"encoded"`: stage 2, reads `data.stage1_workdir/encoded/` (explicit metadata, no parsing of
  printed text, gotcha 14) and min-max scales each split's codes to [-1, 1] (gotcha 13).

What the loop sees: data `{split: {"x", "z", "domain"}}`; params `{"ae": ..., ["classifier"]}`;
model state (per member, checkpointed): learning rate and ReduceLROnPlateau counters, early-
stopping counters and an `active` flag (a member that early-stopped stops updating while the
others go on; the run ends when no member is active or at `training.epochs` = max_epochs).

Hooks used by the shared loop (all optional there): `shuffle` (the reference's loader does not
shuffle), `member_loop`, `make_optimizer`, `learning_rate(model_state, step)`,
`is_active(model_state)`, `record_step(params, model_state, batch, rows, weights)`,
`end_epoch(state, epoch, stats, data)`, `finished(state)`, `describe_phase`,
`headline_metrics`, `write_outputs(workdir, state, data, members)`,
`start_metrics(initial_params, data)`.
"""

import json
import logging
import math
import os
from functools import partial
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wscrl_jax.data.mixing import MixingDataConfig, make_mixing_splits
from wscrl_jax.eval import r2 as r2lib
from wscrl_jax.models.mdcrl_autoencoders import build_autoencoder
from wscrl_jax.models.mdcrl_penalties import (auto_mmd_capacity, hinge_loss, penalty_terms,
                                              penalty_warmup_weight)
from wscrl_jax.nn.init import torch_uniform

log = logging.getLogger("wscrl_jax")

SCHEDULERS = ("reduce_on_plateau", "none", "linear", "polynomial", "cosine_hard_restarts")
OPTIMIZERS = ("adam", "adamw")
ENCODED_DIR = "encoded"
ENCODED_META = "meta.json"


class Stage1OutputMissing(FileNotFoundError):
    """Stage 2 points at a workdir without stage-1 encoded data."""


# ------------------------------------------------------------------------------------------------
# Config helpers


def mixing_data_config(d) -> MixingDataConfig:
    """ConfigDict `data` -> the frozen generator config."""
    ranges = d.domain_dist_ranges
    ranges = tuple(tuple(r) if isinstance(r, (list, tuple)) else r for r in ranges)
    return MixingDataConfig(
        generation_strategy=d.generation_strategy, num_domains=int(d.num_domains),
        z_dim=int(d.z_dim), z_dim_invariant=d.z_dim_invariant, x_dim=d.x_dim,
        domain_lengths=tuple(d.domain_lengths) if d.domain_lengths else None,
        domain_dist_ranges=ranges, invariant_dist_params=tuple(d.invariant_dist_params),
        linear=bool(d.linear), non_linearity=d.non_linearity,
        polynomial_degree=int(d.polynomial_degree), correlated_z=bool(d.correlated_z),
        corr_prob=float(d.corr_prob), mlp_activation=d.mlp_activation,
        num_samples_train=int(d.num_samples.train), num_samples_valid=int(d.num_samples.valid),
        num_samples_test=int(d.num_samples.test),
        test_shares_distribution=bool(d.test_shares_distribution))


def encoded_meta_path(workdir: str) -> str:
    return os.path.join(workdir, ENCODED_DIR, ENCODED_META)


def read_encoded_meta(workdir: str) -> dict:
    path = encoded_meta_path(workdir)
    if not workdir or not os.path.isfile(path):
        raise Stage1OutputMissing(
            f"data.stage1_workdir={workdir!r} holds no stage-1 output ({path} is missing); run "
            "stage 1 first, e.g. configs/md_mixing.py:poly_stage1 --workdir W1, then pass "
            "--config.data.stage1_workdir=W1")
    with open(path) as f:
        return json.load(f)


def adam_with_weight_decay(b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
    """torch Adam (L2 added to the gradient) or AdamW (decoupled decay), without the learning
    rate (the step applies it). Same state structure as `optax.scale_by_adam`."""
    base = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    wd = float(weight_decay)

    def update(grads, state, params=None):
        if wd and not decoupled:
            grads = jax.tree_util.tree_map(lambda g, p: g + wd * p, grads, params)
        updates, state = base.update(grads, state, params)
        if wd and decoupled:
            updates = jax.tree_util.tree_map(lambda u, p: u + wd * p, updates, params)
        return updates, state

    return optax.GradientTransformation(base.init, update)


def hf_lr_lambda(kind: str, step, warmup: int, total: int, *, lr_init: float, lr_end: float = 0.0,
                 power: float = 1.0, num_cycles: float = 1.0):
    """Multiplier of the `transformers` per-step schedules at optimizer step `step` (traced)."""
    s = jnp.asarray(step, jnp.float32)
    warm = s / max(1, warmup)
    if kind == "linear":
        after = jnp.maximum(0.0, (total - s) / max(1, total - warmup))
    elif kind == "polynomial":
        pct = 1.0 - (s - warmup) / max(1, total - warmup)
        decayed = (lr_init - lr_end) * jnp.maximum(pct, 0.0) ** power + lr_end
        after = jnp.where(s > total, lr_end, decayed) / lr_init
    elif kind == "cosine_hard_restarts":
        progress = (s - warmup) / max(1, total - warmup)
        after = jnp.where(progress >= 1.0, 0.0,
                          0.5 * (1.0 + jnp.cos(jnp.pi * jnp.mod(num_cycles * progress, 1.0))))
    else:
        raise ValueError(kind)
    return jnp.where(s < warmup, warm, after).astype(jnp.float32)


def resolve_member_loop(choice: str, adaptive_mmd: bool) -> str:
    """"vmap" or "sequential" (members one after the other, `lax.map`); "auto" picks sequential
    for the adaptive-bandwidth MMD on a single CPU device, where the vmapped [members, pairs,
    capacity, capacity] kernel blocks spill the cache (1.5x faster for 5 members, measured in
    docs/benchmarks.md), and vmap everywhere else."""
    if choice != "auto":
        return choice
    single_cpu = jax.default_backend() == "cpu" and jax.local_device_count() == 1
    return "sequential" if adaptive_mmd and single_cpu else "vmap"


def plateau_update(ms, metric, sc):
    """torch `ReduceLROnPlateau.step(metric)` (mode min, abs threshold) on per-member state."""
    better = metric < ms["plateau_best"] - sc.threshold
    best = jnp.where(better, metric, ms["plateau_best"])
    bad = jnp.where(better, 0, ms["plateau_bad"] + 1)
    in_cooldown = ms["plateau_cooldown"] > 0
    cooldown = jnp.where(in_cooldown, ms["plateau_cooldown"] - 1, ms["plateau_cooldown"])
    bad = jnp.where(in_cooldown, 0, bad)
    reduce = bad > sc.patience
    old = ms["lr"]
    new = jnp.maximum(old * sc.factor, sc.min_lr)
    lr = jnp.where(reduce & (old - new > sc.eps), new, old)
    cooldown = jnp.where(reduce, sc.cooldown, cooldown)
    bad = jnp.where(reduce, 0, bad)
    return {**ms, "lr": lr.astype(jnp.float32), "plateau_best": best.astype(jnp.float32),
            "plateau_bad": bad.astype(jnp.int32), "plateau_cooldown": cooldown.astype(jnp.int32)}


def early_stopping_update(ms, val_loss, epoch, es, min_epochs: int):
    """Lightning `EarlyStopping(monitor=val_loss, mode=min)` + the trainer's `min_epochs`:
    improvement means `val < best - min_delta`; stop once `wait >= patience` (or the value is
    not finite) and at least `min_epochs` epochs are done. Stopped members stay stopped."""
    improved = val_loss + es.min_delta < ms["es_best"]
    best = jnp.where(improved, val_loss, ms["es_best"])
    wait = jnp.where(improved, 0, ms["es_wait"] + 1)
    stop = (wait >= es.patience) | ~jnp.isfinite(val_loss)
    stop = stop & (epoch + 1 >= min_epochs) & bool(es.enabled)
    active = ms["active"]
    return {**ms, "es_best": best.astype(jnp.float32), "es_wait": wait.astype(jnp.int32),
            "active": active & ~stop,
            "stopped_epoch": jnp.where(active & stop, epoch, ms["stopped_epoch"]).astype(
                jnp.int32)}


# ------------------------------------------------------------------------------------------------
# The method


class MDCRLMethod:
    """Autoencoder + invariance penalties on multi-domain mixing data (stage 1 or stage 2)."""

    train_split = "train"
    train_inputs = ("x", "domain")
    headline_metrics = ("hz_z_~r2", "hz_~z_~r2")

    def __init__(self, config):
        self.config = config
        d, m, tr = config.data, config.model, config.training
        self.stage2 = d.dataset == "encoded"
        self.batch_size = int(tr.batchsize)
        self.shuffle = bool(tr.shuffle)
        if self.stage2:
            meta = read_encoded_meta(d.stage1_workdir)
            self.meta = meta
            self.num_domains = int(meta["num_domains"])
            self.x_dim = self.latent = int(meta["latent_dim"])
            self.d_inv = int(self.latent * float(m.z_dim_invariant_fraction))
            self.d_data = self.d_inv  # the reference splits the true z at the model's d_inv
            self.true_z_dim = int(meta["z_dim"])
            n_train = int(meta["splits"]["train"])
            decoder_latent = self.latent
        else:
            self.data_cfg = mixing_data_config(d)
            self.num_domains = self.data_cfg.num_domains
            self.x_dim = self.data_cfg.x_dim
            self.latent = self.data_cfg.z_dim + 2 * int(m.mismatch_dims)
            self.d_inv = self.data_cfg.z_dim_invariant + int(m.mismatch_dims)
            self.d_data = self.data_cfg.z_dim_invariant
            self.true_z_dim = self.data_cfg.z_dim
            n_train = self.data_cfg.num_samples_train - self.data_cfg.num_samples_valid
            decoder_latent = self.data_cfg.z_dim
        self.steps_per_epoch = math.ceil(n_train / self.batch_size)
        self.n_train = n_train
        # Stage 1 keeps the last epoch's online training codes (reference, gotcha 12).
        self.online_codes = (not self.stage2 and bool(m.save_encoded_data)
                             and m.get("encoded_train_codes", "online") == "online")
        self.module = build_autoencoder(
            m.autoencoder, self.x_dim, self.latent, decoder_latent=decoder_latent,
            poly_degree=int(d.polynomial_degree), hidden=tuple(m.mlp_hidden),
            negative_slope=float(m.mlp_negative_slope))
        pc = m.penalty_criterion
        self.flags = {k: bool(pc[k]) for k in ("minmax", "stddev", "mmd", "domain_classification")}
        self.any_penalty = any(self.flags.values())
        self.warmup = bool(m.warmup)
        self.mmd_capacity = auto_mmd_capacity(self.batch_size, self.num_domains,
                                              m.mmd.capacity)
        self.member_loop = resolve_member_loop(
            tr.get("member_loop", "vmap"), self.flags["mmd"] and not m.mmd.fix_sigma)
        self._val_loss = jax.jit(jax.vmap(self._member_val_loss, in_axes=(0, 0, 0, None)))
        self._encode = jax.jit(self._encode_member)

    # ------------------------------------------------------------------ data and init
    def make_data(self, data_seed: int) -> Dict[str, Dict[str, jnp.ndarray]]:
        if not self.stage2:
            return make_mixing_splits(int(data_seed), self.data_cfg)
        return load_encoded_splits(self.config.data.stage1_workdir,
                                   int(self.config.data.stage1_member),
                                   bool(self.config.data.normalize_per_split))

    def init(self, key):
        k_ae, k_clf = jax.random.split(key)
        params = {"ae": self.module.init(k_ae, jnp.zeros((2, self.x_dim)))["params"]}
        if self.flags["domain_classification"]:
            # LogisticRegressionModel: bias-free torch Linear(d_inv -> D), default init.
            params["classifier"] = torch_uniform(self.d_inv)(
                k_clf, (self.d_inv, self.num_domains))
        return params

    def init_model_state(self):
        f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
        return {"lr": f32(self.config.optimizer.lr), "plateau_best": f32(jnp.inf),
                "plateau_bad": i32(0), "plateau_cooldown": i32(0), "es_best": f32(jnp.inf),
                "es_wait": i32(0), "active": jnp.asarray(True), "stopped_epoch": i32(-1),
                "val_loss": f32(jnp.nan), **({"online_codes": jnp.full(
                    (self.n_train, self.latent), jnp.nan, jnp.float32)}
                    if self.online_codes else {})}

    # ------------------------------------------------------------------ optimiser and schedules
    def make_optimizer(self):
        o = self.config.optimizer
        return adam_with_weight_decay(o.b1, o.b2, o.eps, o.weight_decay,
                                      decoupled=o.type == "adamw")

    def learning_rate(self, model_state, step):
        sc = self.config.scheduler
        if sc.type in ("reduce_on_plateau", "none"):
            return model_state["lr"]
        lr0 = float(self.config.optimizer.lr)
        return lr0 * hf_lr_lambda(sc.type, step, int(sc.num_warmup_steps),
                                  int(sc.num_training_steps), lr_init=lr0,
                                  lr_end=float(sc.lr_end), power=float(sc.power),
                                  num_cycles=float(sc.num_cycles))

    def is_active(self, model_state):
        return model_state["active"]

    def record_step(self, params, model_state, batch, rows, weights):
        """Keeps the codes of each training batch [B, latent], computed with the weights before
        that batch's update, at its dataset rows [B] (padding rows, weight 0, dropped): after
        the last epoch, the reference's saved training codes (`on_train_epoch_end`, gotcha 12).
        """
        if not self.online_codes:
            return model_state
        z = self._encode_member(params, batch["x"])
        rows = jnp.where(weights > 0, rows, self.n_train)  # out of range: dropped
        codes = model_state["online_codes"].at[rows].set(z, mode="drop")
        codes = jnp.where(model_state["active"], codes, model_state["online_codes"])
        return {**model_state, "online_codes": codes}

    def phase_for_epoch(self, epoch: int):
        return "stage2" if self.stage2 else "stage1"

    @staticmethod
    def describe_phase(phase) -> str:
        return f"MD-CRL {phase}"

    def amounts(self, fractional_epoch):
        m = self.config.model
        if not self.warmup:
            return {"penalty_weight": jnp.asarray(m.penalty_weight, jnp.float32)}
        step = jnp.round(jnp.asarray(fractional_epoch, jnp.float32) * self.steps_per_epoch)
        return {"penalty_weight": penalty_warmup_weight(step, float(m.penalty_weight),
                                                        int(m.wait_steps), int(m.linear_steps))}

    # ------------------------------------------------------------------ loss
    def loss(self, params, model_state, batch, weights, key, amounts, phase):
        """recon + penalty_weight * penalties + hinge_weight * hinge on one batch.

        batch: x [B, x_dim], domain [B]; weights [B] (0 for padding rows, which are also
        moved out of every domain so the penalties ignore them).
        """
        del model_state, key, phase
        m = self.config.model
        x = batch["x"]
        dom = jnp.where(weights > 0, batch["domain"].reshape(-1).astype(jnp.int32), -1)
        z, x_hat = self.module.apply({"params": params["ae"]}, x)
        row = jnp.mean(jnp.square(x_hat - x), axis=-1)
        recon = jnp.sum(weights * row) / jnp.maximum(jnp.sum(weights), 1.0)
        pw = amounts["penalty_weight"]
        penalty = jnp.zeros(())
        if self.any_penalty:
            terms = penalty_terms(
                z, dom, num_domains=self.num_domains, d_inv=self.d_inv, **self.flags,
                top_k=int(m.top_k), loss_transform=m.loss_transform,
                kernel_multiplier=float(m.mmd.kernel_multiplier),
                kernel_number=int(m.mmd.kernel_number), fix_sigma=m.mmd.fix_sigma,
                mmd_capacity=self.mmd_capacity, classifier_weight=params.get("classifier"),
                skip_small_domains=bool(m.skip_small_domains),
                skip_degenerate=bool(m.skip_degenerate))
            penalty = terms["total"]
        hinge = jnp.zeros(())
        if float(m.hinge_loss_weight) > 0:
            hinge = hinge_loss(z, dom, self.num_domains, self.d_inv, float(m.stddev_threshold),
                               float(m.stddev_eps), bool(m.skip_degenerate))
        loss = recon + pw * penalty + float(m.hinge_loss_weight) * hinge
        return loss, {"loss": loss, "reconstruction_loss": recon, "penalty_loss": pw * penalty,
                      "hinge_loss": float(m.hinge_loss_weight) * hinge}

    # ------------------------------------------------------------------ validation, epoch end
    def _batches(self, arrays):
        """{name: [N, ...]} -> ({name: [nb, B, ...]}, weights [nb, B]) in order, padded."""
        n = jax.tree_util.tree_leaves(arrays)[0].shape[0]
        b = self.batch_size
        nb = math.ceil(n / b)
        pad = nb * b - n
        out = jax.tree_util.tree_map(
            lambda a: jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)])
            .reshape((nb, b) + a.shape[1:]), arrays)
        weights = (jnp.arange(nb * b) < n).astype(jnp.float32).reshape(nb, b)
        return out, weights

    def _member_val_loss(self, params, model_state, valid, amounts):
        """Lightning's epoch mean of the per-batch validation losses (weighted by batch size)."""
        batches, weights = self._batches({"x": valid["x"], "domain": valid["domain"]})

        def one(args):
            batch, w = args
            _, aux = self.loss(params, model_state, batch, w, None, amounts, None)
            return aux

        aux = jax.lax.map(one, (batches, weights))
        sizes = jnp.sum(weights, axis=1)
        return jax.tree_util.tree_map(lambda v: jnp.sum(v * sizes) / jnp.sum(sizes), aux)

    def end_epoch(self, state, epoch: int, stats, data):
        """After each epoch: validation loss, ReduceLROnPlateau on the last training-step loss
        (`monitor: train_loss`, gotcha 22), early stopping on the validation loss."""
        step = int(np.asarray(state.step)[0])
        # Validation reuses the last training step's penalty weight (gotcha 11).
        amounts = self.amounts((step - 1) / self.steps_per_epoch)
        val = self._val_loss(state.params, state.model_state, data["valid"], amounts)
        ms = self._update_state(state.model_state, stats["last_loss"], val["loss"],
                                jnp.asarray(epoch, jnp.int32))
        return state.replace(model_state=ms)

    @partial(jax.jit, static_argnums=0)
    def _update_state(self, model_state, last_loss, val_loss, epoch):
        def one(ms, last, val):
            new = dict(ms)
            new["val_loss"] = val.astype(jnp.float32)
            if self.config.scheduler.type == "reduce_on_plateau":
                new = plateau_update(new, last, self.config.scheduler)
            new = early_stopping_update(new, val, epoch, self.config.training.early_stopping,
                                        int(self.config.training.min_epochs))
            # A stopped member keeps its state as it was when it stopped.
            return jax.tree_util.tree_map(lambda a, b: jnp.where(ms["active"], a, b), new, ms)

        return jax.vmap(one)(model_state, last_loss, val_loss)

    def finished(self, state) -> bool:
        active = np.asarray(state.model_state["active"])
        alive = np.asarray(state.nan_count) < int(self.config.training.nan_limit)
        return not np.any(active & alive)

    # ------------------------------------------------------------------ encoding and outputs
    def _encode_member(self, params, x):
        return self.module.apply({"params": params["ae"]}, x, method="encode")

    def encode(self, params, x):
        return self._encode(params, x)

    def write_outputs(self, workdir: str, state, data, members):
        """Stage 1 (`model.save_encoded_data`): the codes of every split of every member plus
        explicit metadata for stage 2. Validation and test codes come from the final weights;
        training codes are the last epoch's online codes (`model.encoded_train_codes="online"`,
        reference, gotcha 12) or the final weights' (`"final"`)."""
        if self.stage2 or not bool(self.config.model.save_encoded_data):
            return
        out = os.path.join(workdir, ENCODED_DIR)
        os.makedirs(out, exist_ok=True)
        splits = {}
        for index in range(len(members)):
            params = jax.tree_util.tree_map(lambda a: a[index], state.params)
            arrays = {}
            for split, d in data.items():
                x = d["x"][index]
                if split == "train" and self.online_codes:
                    codes = state.model_state["online_codes"][index]
                else:
                    codes = self.encode(params, x)
                arrays[f"z_hat_{split}"] = np.asarray(codes)
                arrays[f"z_{split}"] = np.asarray(d["z"][index])
                arrays[f"domain_{split}"] = np.asarray(d["domain"][index])
                splits[split] = int(x.shape[0])
            tmp = os.path.join(out, f"member{index}.tmp.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, os.path.join(out, f"member{index}.npz"))
        meta = {"latent_dim": self.latent, "num_domains": self.num_domains,
                "z_dim": self.true_z_dim, "z_dim_invariant": self.d_data,
                "x_dim": self.x_dim, "members": [list(m) for m in members], "splits": splits,
                "train_codes": "online" if self.online_codes else "final"}
        with open(encoded_meta_path(workdir) + ".tmp", "w") as f:
            json.dump(meta, f, indent=2)
        os.replace(encoded_meta_path(workdir) + ".tmp", encoded_meta_path(workdir))
        log.info("Stage-1 codes of %d member(s) written to %s", len(members), out)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, params, model_state, data, key) -> Dict[str, float]:
        """Section 8 metrics (in-sample per validation batch, batch-size weighted, as the
        reference logs them), whole-validation-set in-sample R^2 (`full_*`), held-out R^2 fitted
        on train and scored on test (`heldout_*`), domain accuracies, final losses."""
        del key
        ev = self.config.eval
        stage = 2 if self.stage2 else 1
        consistent = not bool(ev.stage2_reference_names)
        codes = {s: np.asarray(self.encode(params, d["x"])) for s, d in data.items()}
        for s, c in codes.items():
            if not np.all(np.isfinite(c)):
                raise ValueError(f"non-finite codes on the {s} split")
        valid = data["valid"]
        z_v, x_v = np.asarray(valid["z"]), np.asarray(valid["x"])
        dom_v = np.asarray(valid["domain"])
        n = z_v.shape[0]
        b = self.batch_size
        sums: Dict[str, float] = {}
        for start in range(0, n, b):
            sl = slice(start, min(n, start + b))
            rows = sl.stop - sl.start
            batch_metrics = r2lib.mixing_r2_metrics(
                z_v[sl], codes["valid"][sl], self.d_data, self.d_inv, stage=stage,
                x=None if self.stage2 else x_v[sl], consistent_names=consistent)
            if ev.domain_accuracy:
                batch_metrics.update(r2lib.domain_accuracies(codes["valid"][sl], dom_v[sl],
                                                             self.d_inv))
            for k, v in batch_metrics.items():
                sums[k] = sums.get(k, 0.0) + rows * v
        metrics = {k: v / n for k, v in sums.items()}
        full = r2lib.mixing_r2_metrics(z_v, codes["valid"], self.d_data, self.d_inv, stage=stage,
                                       consistent_names=consistent)
        metrics.update({f"full_{k}": v for k, v in full.items() if "norm" not in k})
        if "test" in data:
            held = r2lib.mixing_r2_metrics_heldout(
                np.asarray(data["train"]["z"]), codes["train"], np.asarray(data["test"]["z"]),
                codes["test"], self.d_data, self.d_inv, stage=stage, consistent_names=consistent)
            metrics.update({f"heldout_{k}": v for k, v in held.items()})
            if ev.domain_accuracy:
                metrics.update(heldout_domain_accuracies(
                    codes["train"], np.asarray(data["train"]["domain"]), codes["test"],
                    np.asarray(data["test"]["domain"]), self.d_inv))
        metrics["val_loss"] = float(model_state["val_loss"])
        metrics["learning_rate"] = float(model_state["lr"])
        metrics["stopped_epoch"] = int(model_state["stopped_epoch"])
        first = {k: metrics.pop(k) for k in self.headline_metrics}
        return {**first, **metrics}

    def start_metrics(self, initial_params, data) -> Dict[str, float]:
        """`*_linreg_start` (reference `on_train_start`): in-sample R^2 on the whole validation
        split before training, both splits at the model's d_inv. Stage 1: true z against the
        untrained model's codes; stage 2: against its input (the stage-1 codes)."""
        valid = data["valid"]
        codes = valid["x"] if self.stage2 else self.encode(initial_params, valid["x"])
        codes = np.asarray(codes)
        if not np.all(np.isfinite(codes)):
            return {}
        return r2lib.start_r2_metrics(np.asarray(valid["z"]), codes, self.d_inv)


def heldout_domain_accuracies(z_train, d_train, z_test, d_test, d_inv: int) -> dict:
    """Logistic regression (the reference's settings) fitted on train codes, accuracy on test."""
    from sklearn.linear_model import LogisticRegression

    out = {}
    for key, sl in (("domain_acc", slice(None)), ("hz_domain_acc", slice(0, d_inv)),
                    ("~hz_domain_acc", slice(d_inv, None))):
        clf = LogisticRegression(random_state=0, max_iter=500).fit(z_train[:, sl], d_train)
        out[f"heldout_{key}"] = float(np.mean(clf.predict(z_test[:, sl]) == d_test))
    return out


def load_encoded_splits(workdir: str, member_index: int, per_split: bool = True):
    """Stage-2 inputs from a stage-1 workdir: {split: {"x": scaled codes, "z", "domain"}}.

    `x = 2 (z_hat - min) / (max - min) - 1` with the global extrema of each split's own codes
    for train and valid (reference, gotcha 13); `per_split=False` uses the training split's
    extrema for every split. The reference's stage-2 test split is its validation split (gotcha
    6); here `test` is the stage-1 test split (same mixing map when
    `data.test_shares_distribution`), for the held-out R^2 only, and always scaled with the
    training extrema: with its own extrema the fitted train -> test regressions would see
    differently scaled inputs (held-out R^2 0.41 instead of 0.80 on the poly pipeline).
    """
    meta = read_encoded_meta(workdir)
    path = os.path.join(workdir, ENCODED_DIR, f"member{member_index}.npz")
    if not os.path.isfile(path):
        raise Stage1OutputMissing(f"{path} is missing (stage 1 has {len(meta['members'])} "
                                  "member(s); check data.stage1_member)")
    with np.load(path) as f:
        arrays = dict(f)
    lo_tr, hi_tr = arrays["z_hat_train"].min(), arrays["z_hat_train"].max()
    out = {}
    for split in meta["splits"]:
        zh = arrays[f"z_hat_{split}"].astype(np.float32)
        lo, hi = (zh.min(), zh.max()) if per_split and split != "test" else (lo_tr, hi_tr)
        out[split] = {"x": jnp.asarray(2.0 * (zh - lo) / (hi - lo) - 1.0, jnp.float32),
                      "z": jnp.asarray(arrays[f"z_{split}"], jnp.float32),
                      "domain": jnp.asarray(arrays[f"domain_{split}"], jnp.int32)}
    return out
