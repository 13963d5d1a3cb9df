"""MD-CRL autoencoders on multi-domain data behind the loop's `Method` interface.

Reference: `models/mixing_autoencoder_pl.py` (stage 1, and the whole method for linear mixing),
`models/mixing_md_encoded_autoencoder_pl.py` (stage 2), `models/balls_autoencoder_pl.py` and
`balls_md_encoded_autoencoder_pl.py` (balls images, two stages), `models/base_pl.py` (loss,
optimisers), the Lightning trainer and callbacks (`configs/trainer/default.yaml`,
`configs/callbacks/`).

`config.data.dataset`: `"mixing"`, synthetic data generated per member from its data seed
(`data/mixing.py`); `"balls"`, multi-domain balls images rendered per member (`data/balls.py`,
stored as uint8 [N, 64, 64, 3], converted to [-1, 1] per batch), stage 1 (reconstruction only).
Stage 1 with `model.save_encoded_data` writes its codes for stage 2 (`write_outputs`,
`data/encoded.py`). `"encoded"`: stage 2 on those codes, min-max scaled to [-1, 1] (mixing) or
[0, 1] (balls) per split (`data.code_range`, md-crl gotcha 13). Per member: data `{split: {"x" [N,
x_dim], "z" [N, z_dim], "domain" [N]}}`; params `{"ae": ..., ["classifier"]}`; model state
(checkpointed): learning rate, plateau and early-stopping counters (`train/callbacks.py`), an
`active` flag (an early-stopped member stops updating while the others go on), the last
validation loss, for online stage-1 codes the last epoch's training codes, and for BatchNorm
autoencoders the running statistics (`batch_stats`). Penalties: `penalties.py`, `mmd.py`;
metrics: `evaluate.py`.
"""

import logging
import math
from functools import partial
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np

from wscrl_jax.data.balls import balls_data_config, make_balls_splits
from wscrl_jax.data.balls_render import to_float_images
from wscrl_jax.data.encoded import load_encoded_splits, read_encoded_meta
from wscrl_jax.data.mixing import make_mixing_splits, mixing_data_config
from wscrl_jax.data.own_domains import load_domains, make_domains_data, split_sizes
from wscrl_jax.mdcrl import evaluate as mdcrl_eval
from wscrl_jax.mdcrl import outputs, validation
from wscrl_jax.mdcrl.autoencoders import BATCHNORM_AUTOENCODERS, build_autoencoder
from wscrl_jax.mdcrl.config import validate
from wscrl_jax.mdcrl.mmd import auto_mmd_capacity, mmd_rows_beyond_capacity
from wscrl_jax.mdcrl.penalties import (hinge_loss, penalty_terms,
                                       penalty_warmup_weight)
from wscrl_jax.nn.init import torch_uniform
from wscrl_jax.train.callbacks import (early_stopping_state, early_stopping_update,
                                       plateau_state, plateau_update)
from wscrl_jax.train.distributed import to_host
from wscrl_jax.train.method import Method, RunOptions, evaluate_each
from wscrl_jax.train.optim import torch_adam
from wscrl_jax.train.schedules import transformers_lr_multiplier

log = logging.getLogger("wscrl_jax")



def resolve_member_loop(choice: str, mmd: bool) -> str:
    """"vmap" or "sequential" (members one after the other, `lax.map`); "auto" picks sequential
    for an MMD penalty on a single CPU device, where vmapped members' kernel blocks spill the
    cache (docs/performance.md), and vmap everywhere else."""
    if choice != "auto":
        return choice
    single_cpu = jax.default_backend() == "cpu" and jax.local_device_count() == 1
    return "sequential" if mmd and single_cpu else "vmap"


class MDCRLMethod(Method):
    """Autoencoder + invariance penalties on multi-domain data (stage 1 or stage 2)."""

    #: Metrics that lead each row of `test_metrics.csv` and the log's summary.
    headline_metrics = ("hz_z_~r2", "hz_~z_~r2")

    def __init__(self, config):
        super().__init__(config)
        d, m, tr = config.data, config.model, config.training
        self.stage2 = d.dataset == "encoded"
        self.images = d.dataset == "balls"
        self.batch_size = int(tr.batchsize)
        # Balls: stage 1 on the images, or stage 2 on the codes of a balls stage 1.
        self.balls = self.images
        if self.stage2:
            meta = read_encoded_meta(d.stage1_workdir)
            self.meta = meta
            self.balls = meta.get("source") == "balls"
            self.num_domains = int(meta["num_domains"])
            self.x_dim = self.latent = int(meta["latent_dim"])
            self.d_inv = int(self.latent * float(m.z_dim_invariant_fraction))
            # Mixing: the reference splits the true z at the model's d_inv; balls: the true
            # invariant ball coordinates (z_invariant).
            self.d_data = int(meta["z_dim_invariant"]) if self.balls else self.d_inv
            self.true_z_dim = int(meta["z_dim"])
            n_train = int(meta["splits"]["train"])
            decoder_latent = self.latent
        elif self.images:
            self.data_cfg = balls_data_config(d, image_dtype="uint8")
            self.num_domains = self.data_cfg.num_domains
            self.x_dim = 3 * self.data_cfg.image_size ** 2
            self.latent = decoder_latent = int(m.z_dim)
            self.d_data = 2 * self.data_cfg.n_balls_invariant
            self.d_inv = self.d_data  # unused: stage 1 on images has no penalties
            self.true_z_dim = 2 * self.data_cfg.n_balls
            n_train = self.data_cfg.num_samples_train - self.data_cfg.num_samples_valid
        elif d.dataset == "domains":  # own data: the latents to learn are data.z_dim
            domains = load_domains(d.path, d.get("source", "npz"))
            self.num_domains, self.x_dim = domains.num_domains, domains.x_dim
            self.latent = int(d.z_dim) + 2 * int(m.mismatch_dims)
            z_inv = int(d.z_dim) // 2 if d.z_dim_invariant is None else int(d.z_dim_invariant)
            self.d_inv = z_inv + int(m.mismatch_dims)
            # the true invariant latents, first in the data's z (own_domains.make_domains_data)
            known = domains.invariant is not None
            self.d_data = len(domains.invariant) if known else z_inv
            self.true_z_dim = domains.z_dim
            n_train = split_sizes(domains, d.val_fraction, d.test_fraction)["train"]
            decoder_latent = int(d.z_dim)
            if not known:  # no R^2 without true latents (mdcrl/evaluate.py)
                self.headline_metrics = ("val_loss",)
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
        # Stage 1 keeps the last epoch's online training codes (reference, md-crl gotcha 12).
        self.online_codes = (not self.stage2 and bool(m.save_encoded_data)
                             and m.encoded_train_codes == "online")
        self.module = build_autoencoder(
            m.autoencoder, self.x_dim, self.latent, decoder_latent=decoder_latent,
            poly_degree=int(d.polynomial_degree), hidden=tuple(m.mlp_hidden),
            negative_slope=float(m.mlp_negative_slope), width=int(m.mlp_width))
        self.batch_norm = m.autoencoder in BATCHNORM_AUTOENCODERS
        self.input_shape = ((self.data_cfg.image_size,) * 2 + (3,) if self.images
                            else (self.x_dim,))
        if self.balls:
            self.headline_metrics = (("hz_z_~r2_linreg", "hz_~z_~r2_linreg") if self.stage2
                                     else ("val_loss", "hz_z_~r2"))
        pc = m.penalty_criterion
        self.flags = {k: bool(pc[k]) for k in ("minmax", "stddev", "mmd", "domain_classification")}
        self.any_penalty = any(self.flags.values())
        self.warmup = bool(m.warmup)
        self.mmd_capacity = auto_mmd_capacity(self.batch_size, self.num_domains,
                                              m.mmd.capacity)
        # The adaptive MMD with a row budget per domain reports the rows it leaves out.
        self.count_mmd_overflow = (self.flags["mmd"] and not m.mmd.fix_sigma
                                   and self.mmd_capacity is not None)
        self._reported_overflow = 0
        # the reference's loader does not shuffle (`training.shuffle`); the epoch end
        # (validation, plateau, early stopping) runs inside the compiled call, except for
        # convolutional models, whose validation batches run from the host
        self.options = RunOptions(
            train_inputs=("x", "domain"), shuffle=bool(tr.shuffle),
            member_loop=resolve_member_loop(tr.member_loop, self.flags["mmd"]),
            convolutional=self.images, traced_epoch_end=not self.images,
            epoch_end_splits=("valid",))
        self._epoch_end = jax.jit(jax.vmap(self.member_epoch_end))
        # convolutional models: one validation batch of every member per compiled call
        self._val_batch = jax.jit(jax.vmap(self._batch_val_terms,
                                           in_axes=(0, 0, 0, 0, None, None)))
        self._encode = jax.jit(self._encode_member)

    # ------------------------------------------------------------------ config
    @classmethod
    def validate_config(cls, c):
        validate(c)

    # ------------------------------------------------------------------ data and init
    def make_data(self, data_seed: int) -> Dict[str, Dict[str, jnp.ndarray]]:
        """The splits of `data_seed` (own domains: the split seed of one file)."""
        if self.config.data.dataset == "domains":
            return make_domains_data(self.config.data, int(data_seed))
        if self.images:
            return make_balls_splits(int(data_seed), self.data_cfg)
        if not self.stage2:
            return make_mixing_splits(int(data_seed), self.data_cfg)
        d = self.config.data
        return load_encoded_splits(d.stage1_workdir, int(d.stage1_member),
                                   bool(d.normalize_per_split),
                                   code_range=d.code_range)

    def _init_variables(self, key):
        return self.module.init(key, jnp.zeros((2,) + self.input_shape))

    def init(self, key):
        k_ae, k_clf = jax.random.split(key)
        params = {"ae": self._init_variables(k_ae)["params"]}
        if self.flags["domain_classification"]:
            # LogisticRegressionModel: bias-free torch Linear(d_inv -> D), default init.
            params["classifier"] = torch_uniform(self.d_inv)(
                k_clf, (self.d_inv, self.num_domains))
        return params, self.initial_model_state()

    def initial_model_state(self):
        """Scheduler and early-stopping counters, `val_loss` (NaN until the first epoch ends),
        for online stage-1 codes `online_codes` [n_train, latent] (NaN until written), and the
        BatchNorm running statistics (`batch_stats`: torch's initial mean 0, variance 1)."""
        state = {**plateau_state(self.config.optimizer.lr), **early_stopping_state(),
                 "val_loss": jnp.asarray(jnp.nan, jnp.float32)}
        if self.batch_norm:  # shapes only: no second initialisation to compile
            shapes = jax.eval_shape(self._init_variables, jax.random.PRNGKey(0))["batch_stats"]
            state["batch_stats"] = jax.tree_util.tree_map_with_path(
                lambda path, a: (jnp.ones if path[-1].key == "var" else jnp.zeros)(
                    a.shape, a.dtype), shapes)
        if self.online_codes:
            state["online_codes"] = jnp.full((self.n_train, self.latent), jnp.nan, jnp.float32)
        if self.count_mmd_overflow:
            state["mmd_rows_beyond_capacity"] = jnp.zeros((), jnp.int32)
        return state

    # ------------------------------------------------------------------ optimiser
    def make_optimizer(self):
        o = self.config.optimizer
        return torch_adam(o.b1, o.b2, o.eps, o.weight_decay, decoupled=o.type == "adamw")

    def learning_rate(self, model_state, step, epoch):
        """ReduceLROnPlateau's (model state) or the constant rate; else the transformers
        per-step schedule of `scheduler.type` at this optimizer step."""
        del epoch
        sc = self.config.scheduler
        if sc.type in ("reduce_on_plateau", "none"):
            return model_state["lr"]
        lr0 = float(self.config.optimizer.lr)
        return lr0 * transformers_lr_multiplier(
            sc.type, step, int(sc.num_warmup_steps), int(sc.num_training_steps), lr_init=lr0,
            lr_end=float(sc.lr_end), power=float(sc.power), num_cycles=float(sc.num_cycles))

    # ------------------------------------------------------------------ inside the step
    def is_active(self, model_state):
        return model_state["active"]

    def record(self, model_state, batch, aux, rows, weights, applied):
        """With a capacity-limited adaptive MMD, counts the rows it leaves out. Keeps the BatchNorm running statistics of the training forward pass (where the
        update is applied) and the codes of each training batch (aux["z_hat"] [B, latent],
        computed by the loss in training mode with the weights before that batch's update) at
        its dataset rows [B] (padding rows, weight 0, dropped): after the last epoch, the
        reference's saved training codes (`on_train_epoch_end`, md-crl gotcha 12)."""
        model_state = dict(model_state)
        if self.count_mmd_overflow:
            dom = jnp.where(weights > 0, batch["domain"].reshape(-1).astype(jnp.int32), -1)
            beyond = mmd_rows_beyond_capacity(dom, self.num_domains, self.mmd_capacity)
            model_state["mmd_rows_beyond_capacity"] += jnp.where(model_state["active"], beyond,
                                                                 0)
        if self.batch_norm:
            model_state["batch_stats"] = jax.tree_util.tree_map(
                lambda new, old: jnp.where(applied, new, old), aux["batch_stats"],
                model_state["batch_stats"])
        if self.online_codes:
            rows = jnp.where(weights > 0, rows, self.n_train)  # out of range: dropped
            codes = model_state["online_codes"].at[rows].set(aux["z_hat"], mode="drop")
            model_state["online_codes"] = jnp.where(model_state["active"], codes,
                                                    model_state["online_codes"])
        return model_state

    # ------------------------------------------------------------------ phases and loss
    def phase_for_epoch(self, epoch: int):
        return "MD-CRL stage2" if self.stage2 else "MD-CRL stage1"

    def loss_weights(self, fractional_epoch):
        """{"penalty_weight": scalar}: the warm-up ramp at step `round(f * steps_per_epoch)`
        (stage 1), else the constant `model.penalty_weight`."""
        m = self.config.model
        if not self.warmup:
            return {"penalty_weight": jnp.asarray(m.penalty_weight, jnp.float32)}
        step = jnp.round(jnp.asarray(fractional_epoch, jnp.float32) * self.steps_per_epoch)
        return {"penalty_weight": penalty_warmup_weight(step, float(m.penalty_weight),
                                                        int(m.wait_steps), int(m.linear_steps))}

    def _apply(self, params, model_state, x, *, train: bool, mask=None, method=None):
        """The autoencoder (or its `method`, e.g. "encode") on x [B, ...] (uint8 images are
        converted to [-1, 1]) -> (outputs, new BatchNorm statistics or None). BatchNorm
        models use the batch statistics of the rows where mask [B] is set when `train`, the
        running statistics of the model state otherwise."""
        x = to_float_images(x) if x.dtype == jnp.uint8 else x
        if not self.batch_norm:
            return self.module.apply({"params": params["ae"]}, x, method=method), None
        variables = {"params": params["ae"], "batch_stats": model_state["batch_stats"]}
        if not train:
            return self.module.apply(variables, x, train=False, method=method), None
        out, updated = self.module.apply(variables, x, train=True, mask=mask, method=method,
                                         mutable=["batch_stats"])
        return out, updated["batch_stats"]

    def loss(self, params, model_state, batch, weights, key, loss_weights, phase):
        """The training loss (BatchNorm in training mode); aux: the scalar terms of `_terms`,
        the batch's codes `z_hat` [B, latent] and the new BatchNorm statistics."""
        del key, phase
        loss, aux, z, stats = self._terms(params, model_state, batch, weights, loss_weights,
                                          train=True)
        aux = {**aux, "z_hat": z}
        if stats is not None:
            aux["batch_stats"] = stats
        return loss, aux

    def _terms(self, params, model_state, batch, weights, loss_weights, train: bool):
        """recon + penalty_weight * penalties + hinge_weight * hinge on one batch.

        batch: x [B, x_dim] (or images [B, H, W, 3]), domain [B]; weights [B] (0 for padding
        rows, which are also moved out of every domain so the penalties ignore them and out of
        the BatchNorm statistics). Returns (loss, {name: scalar}, z [B, latent], BatchNorm
        statistics or None).
        """
        m = self.config.model
        x = batch["x"]
        dom = jnp.where(weights > 0, batch["domain"].reshape(-1).astype(jnp.int32), -1)
        x = to_float_images(x) if x.dtype == jnp.uint8 else x
        (z, x_hat), stats = self._apply(params, model_state, x, train=train, mask=weights > 0)
        row = jnp.mean(jnp.square(x_hat - x).reshape(x.shape[0], -1), axis=-1)
        recon = jnp.sum(weights * row) / jnp.maximum(jnp.sum(weights), 1.0)
        pw = loss_weights["penalty_weight"]
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
                      "hinge_loss": float(m.hinge_loss_weight) * hinge}, z, stats

    # ------------------------------------------------------------------ validation, epoch end
    def _batch_val_terms(self, params, model_state, x, domain, weights, loss_weights):
        """One validation batch's scalar terms (eval mode), x [B, ...], weights [B]."""
        batch = {"x": x, "domain": domain}
        return self._terms(params, model_state, batch, weights, loss_weights, train=False)[1]

    def member_epoch_end(self, params, model_state, last_loss, step, data):
        """One member after the epoch ending at `step`: its validation loss on data["valid"]
        (eval mode, at the last training step's penalty weight: md-crl gotcha 11), then the
        epoch callbacks (`_epoch_callbacks`)."""
        loss_weights = self.loss_weights((step - 1) / self.steps_per_epoch)
        val = validation.member_val_loss(self._batch_val_terms, self.batch_size, params,
                                         model_state, data["valid"], loss_weights)
        return self._epoch_callbacks(model_state, last_loss, val["loss"],
                                     step // self.steps_per_epoch - 1)

    def end_epoch(self, state, epoch: int, stats, data):
        """After an epoch whose end did not run in the compiled call: `member_epoch_end` of
        every member (convolutional models: the validation batches from the host). Then, with
        a capacity-limited adaptive MMD, the log line on the rows it left out."""
        ms = state.model_state
        if "epochs" not in stats and self.options.convolutional:
            weights = self.loss_weights((int(to_host(state.step)[0]) - 1) / self.steps_per_epoch)
            val = validation.val_loss_on_host(self._val_batch, self.batch_size, state.params,
                                              ms, data["valid"], weights)
            ms = self._update_state(ms, stats["last_loss"], val["loss"],
                                    jnp.asarray(epoch, jnp.int32))
        elif "epochs" not in stats:
            ms = self._epoch_end(state.params, ms, stats["last_loss"], state.step,
                                 {"valid": data["valid"]})
        if self.count_mmd_overflow:
            self._warn_mmd_overflow(to_host(ms["mmd_rows_beyond_capacity"]), epoch)
        return state.replace(model_state=ms)

    def _warn_mmd_overflow(self, beyond, epoch: int):
        """Logs once per epoch in which the capacity-limited adaptive MMD left rows out
        (beyond: [members], cumulative)."""
        total = int(beyond.sum())
        if total > self._reported_overflow:
            log.warning("Epoch %d: the adaptive MMD left out %d rows beyond model.mmd.capacity=%d "
                        "so far (per member: %s); set model.mmd.capacity=0 for an exact MMD",
                        epoch, total, self.mmd_capacity, beyond.tolist())
            self._reported_overflow = total

    def _epoch_callbacks(self, ms, last_loss, val_loss, epoch):
        """One member's epoch-end callbacks: ReduceLROnPlateau on the last training step's loss
        (`monitor: train_loss`, md-crl gotcha 22), early stopping on the validation loss. A
        stopped member keeps its state as it was when it stopped."""
        new = dict(ms)
        new["val_loss"] = val_loss.astype(jnp.float32)
        if self.config.scheduler.type == "reduce_on_plateau":
            new = plateau_update(new, last_loss, self.config.scheduler)
        new = early_stopping_update(new, val_loss, epoch, self.config.training.early_stopping,
                                    int(self.config.training.min_epochs))
        return jax.tree_util.tree_map(lambda a, b: jnp.where(ms["active"], a, b), new, ms)

    @partial(jax.jit, static_argnums=0)
    def _update_state(self, model_state, last_loss, val_loss, epoch):
        """`_epoch_callbacks` of every member: model_state [members, ...], last_loss and
        val_loss [members], epoch scalar."""
        return jax.vmap(self._epoch_callbacks, in_axes=(0, 0, 0, None))(
            model_state, last_loss, val_loss, epoch)

    # ------------------------------------------------------------------ encoding and outputs
    def _encode_member(self, params, model_state, x):
        """Eval-mode codes [N, latent] of x [N, ...]."""
        return self._apply(params, model_state, x, train=False, method="encode")[0]

    def encode(self, params, model_state, x):
        """Codes [N, latent] of one member's observations x [N, x_dim] (or images [N, H, W,
        3], `batch_size` at a time) with its final weights and BatchNorm running statistics
        (jitted)."""
        if not self.images:
            return self._encode(params, model_state, x)
        n, b = x.shape[0], self.batch_size
        chunks = [self._encode(params, model_state, validation.pad_rows(x[s:s + b], b))[:n - s]
                  for s in range(0, n, b)]
        return jnp.concatenate(chunks)

    def reconstruct(self, params, model_state, x):
        """Eval-mode reconstructions of a few observations x [n, ...] -> [n, ...] (floats)."""
        return self._apply(params, model_state, x, train=False)[0][1]

    def write_outputs(self, workdir: str, state, data, members):
        """Figures, and with `model.save_encoded_data` the stage-1 codes (`outputs.py`)."""
        outputs.write_outputs(self, workdir, state, data, members)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, params, model_state, data, keys, initial_params, *, real, progress,
                 compile_only=False):
        """Member by member (`mdcrl/evaluate.py`): the final metrics, then those of the
        untrained model (`*_linreg_start`; none for balls, md-crl gotcha 23). Own data without
        the true latents: one log line names the metrics skipped. Nothing compiles ahead."""
        if compile_only:
            return []
        mdcrl_eval.log_skipped_metrics(data)
        return evaluate_each(self._evaluate_member, params, model_state, data, keys,
                             initial_params, real=real, progress=progress)

    def _evaluate_member(self, params, model_state, data, key, initial_params):
        del key
        if self.balls:
            return mdcrl_eval.evaluate_balls_member(self, params, model_state, data)
        metrics = mdcrl_eval.evaluate_member(self, params, model_state, data)
        return {**metrics, **mdcrl_eval.start_metrics(self, initial_params,
                                                      self.initial_model_state(), data)}

    def summary(self, rows) -> str:
        """Each headline metric: every member's value and the median."""
        return "; ".join(
            f"{k} = {', '.join(f'{r.get(k, np.nan):.4f}' for r in rows)}"
            + (f" (median {float(np.nanmedian([r.get(k, np.nan) for r in rows])):.4f})"
               if len(rows) > 1 else "") for k in self.headline_metrics)
