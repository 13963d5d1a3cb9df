"""Steady-state training-step throughput of the two PyTorch references, on CPU.

Runs inside the reference environment (it imports torch; never jax or wscrl_jax):

    REF_VENV/bin/python tools/reference/bench_reference.py \
        [--wscrl-root WSCRL_TREE] [--mdcrl-root MDCRL_TREE] \
        [--methods ilcm,dvae,betavae] [--dims 3,4,8] [--md-variants minmax,none,mmd] \
        [--threads 2] [--steps 200] [--warmup 20] [--rounds 1]

For every case it builds the reference's own model and optimizer from the reference's own
configs, warms up, then times `--steps` consecutive training steps with time.perf_counter and
prints one JSON line to stdout, e.g.

    {"side": "reference", "method": "ilcm", "phase": "main", "dim_z": 4, "steps_per_s": 58.4,
     "steps": 200, "threads": 2, ...}

`steps_per_s` is the median over `--rounds` timed blocks (each one listed in `rounds_steps_per_s`);
`loadavg_1m` is the machine's load when the case finished. torch's intra-op threads wait on each
other, so when other processes keep the cores busy, `--threads` above the number of idle cores
can slow steps down many times over: compare figures only from runs on a quiet machine.
Everything the reference code prints goes to stderr; stdout carries only the JSON lines.

WS-CRL (`--methods`, one model per method and `--dims` entry; experiments/scaling.py @ c327d79)
---------------------------------------------------------------------------------------------
The config is composed with Hydra from the tree's `config/` exactly as `scaling.py` would see it
with `--config-name scaling_<method> training=scaling_fast data.dim_z=D training.device=cpu`
(batch size 64). Built with the reference's functions:

* model: `experiments/scaling.py:create_model` (ILCM for ilcm/dvae, with the noise-centric
  `MLPImplicitSCM`, graph parameterisation `none` (ilcm) / `none_trivial` (dvae); ELCM with an
  `UnstructuredPrior` for betavae);
* optimizer: `experiments/experiment_utils.py:create_optimizer_and_scheduler(...,
  separate_param_groups=True)` (Adam, two parameter groups; the fast schedule's LR is constant);
* loss: `ws_crl/training.py:VAEMetrics`.

Phases are epochs of the fast schedule (3 epochs; `pretrain_epochs: 1`,
`model_interventions_after_epoch: 1`, `deterministic_intervention_encoder_after_epoch: 2`),
timed in that order on the same model and optimizer, as training would reach them:

* `pretrain` = epoch 0: `pretrain=True`, so `ILCM.forward` returns `ILCM.forward_pretrain`
  (ws_crl/lcm/ilcm.py: noise-encoder beta-VAE with `pretrain_beta`, no interventions) and
  `ELCM.forward` returns `ELCM.forward_pretrain` (ws_crl/lcm/elcm.py);
* `main` = epoch 1: `pretrain=False, model_interventions=True`: the full ILCM ELBO, summed over
  every intervention (empty + one per latent) weighted by the intervention encoder's posterior;
  for ELCM the full forward with the unstructured prior;
* `deterministic` = epoch 2 (ILCM models only): `deterministic_intervention_encoder=True`, the
  argmax intervention with a straight-through gradient, one intervention per sample.
  ELCM ignores both switches (its `forward` swallows them in `**kwargs`), so for betavae epoch 2
  is the same computation as epoch 1 and only `pretrain` and `main` are reported.

Per phase, once: `determine_graph_learning_settings` and `epoch_schedules` (experiment_utils.py,
scaling.py). The timed step is the body of the loop in `scaling.py:train`:
`model.train()`, `experiment_utils.step_schedules` (beta, regulariser amounts, intervention
encoder offset, manifold thickness), `model(x1, x2, beta=..., beta_intervention_target=...,
pretrain_beta=..., full_likelihood=..., likelihood_reduction=..., pretrain=...,
model_interventions=..., deterministic_intervention_encoder=...,
intervention_encoder_offset=..., **graph_kwargs)`, `VAEMetrics(log_prob,
true_intervention_labels=..., <regulariser amounts>, **model_outputs)` (this includes its
logged metrics, e.g. the intervention-posterior accuracy over label permutations for
dim_z <= 5, which the reference computes every step), and `experiment_utils.optimizer_step`
(finiteness check, zero_grad, backward, `clip_grad_norm_` at 10.0 with `.item()`, Adam step).

Data: a pool of batches drawn once from the reference's own ground-truth model
(`scaling.py:create_true_model` seeded with `data.nature.seed`, then `FlowLCM.sample`), i.e. the
same distribution `generate_datasets` writes to disk; the pool is cycled. Excluded: the
DataLoader (shuffling, collation, `.to(device)`, a no-op on CPU), `log_training_step`
(MLflow/progress-bar bookkeeping), validation, checkpointing, the per-epoch LR scheduler and
the post-training evaluation.

MD-CRL (`--md-variants`, linear mixing, z_dim 8, 4 domains; MD-CRL @ e5c53d9)
-----------------------------------------------------------------------------
The config is composed from `configs/train_root.yaml` with the README's linear-mixing command
(`model=mixing_synthetic datamodule=mixing datamodule.batch_size=1024
datamodule.dataset.linear=True datamodule.dataset.z_dim=8 datamodule.dataset.num_domains=4
datamodule.dataset.correlated_z=False`) plus, per variant:

* `minmax`: `model.penalty_criterion.minmax=1. model.penalty_criterion.mmd=0.`
  (`models/utils.py:penalty_loss_minmax`, top-k extremes of the invariant block per domain);
* `none`: both criteria 0: no penalty is computed (the unpenalised baseline; same loss as a
  penalty weight of 0 without the penalty's cost);
* `mmd`: `model.penalty_criterion.minmax=0. model.penalty_criterion.mmd=1.
  model.mmd_loss.fix_sigma=null datamodule.dataset.corr_prob=0.0`
  (`models/utils.py:mmd_loss` with `MMD_loss`, adaptive bandwidth). It is slow (tens of steps
  per second), so it runs `--steps // --mmd-steps-divisor` steps (the count is reported).

Model: `hydra.utils.instantiate(cfg.model, _recursive_=False)` as in
`training_pipeline.py:train` (`models/mixing_autoencoder_pl.py:MixingAutoencoderPL`, the linear
`FCAE` of `configs/model/autoencoder/linear_ae_synthetic.yaml`); optimizer from the module's own
`configure_optimizers` (Adam, lr 1e-3). The reference trains with Lightning's automatic
optimisation (no manual min-max loop: "minmax" is a penalty term, not an adversary); one step
here replays what Lightning does per batch: `MixingAutoencoderPL.training_step(batch, i)` (the
encoder/decoder forward, the penalty-weight warm-up read from `trainer.global_step`, and
`BasePl.loss`: MSE reconstruction + penalty), `optimizer.zero_grad()`, `loss.backward()`,
`torch.nn.utils.clip_grad_norm_` at the trainer config's `gradient_clip_val` (0.1, Lightning's
default "norm" algorithm) and `optimizer.step()`. Batches: full batches of 1024 from the
reference's `datamodule/mixing_dataset.py:SyntheticMixingDataset` (train split of
`BaseDataModule.prepare_data`'s `random_split`, unshuffled as its loader). Excluded: Lightning's
own per-step machinery (hooks, `self.log` result collection — `self.log` is replaced by a no-op,
the module sees a stand-in trainer holding only `global_step`), the DataLoader, validation
(sklearn R^2 fits), the per-epoch ReduceLROnPlateau step and checkpointing.

Offline imports are handled as by run_wscrl.py / run_mdcrl.py: `collections.Mapping` is aliased,
the do-nothing `mlflow` package from the stubs directory is put on sys.path (`--stubs`, default
`$WSCRL_REF_HOME/stubs`, else `stubs/` next to the WS-CRL tree), and `wandb`/`torchvision` are
empty modules in `sys.modules` after lightning and torchmetrics have been imported; MD-CRL's
`ReduceLROnPlateau(verbose=...)`, refused by recent torch, is dropped from its config
(`~model.scheduler_config.scheduler.verbose`).

Roots (defaults as the other tools): `--wscrl-root` [`$WSCRL_REF_WSCRL`, else
`$WSCRL_REF_HOME/ws-crl`], `--mdcrl-root` [`$WSCRL_REF_MDCRL`, else `$WSCRL_REF_HOME/md-crl`],
`WSCRL_REF_HOME` [`~/wscrl-reference`]. `--methods ""` / `--md-variants ""` skip a side.
"""

import argparse
import collections
import collections.abc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import types

WSCRL_METHODS = ("ilcm", "dvae", "betavae")
# phase name -> epoch of the scaling_fast schedule in which it is active
WSCRL_PHASES = {"pretrain": 0, "main": 1, "deterministic": 2}
MD_VARIANTS = ("minmax", "none", "mmd")
MD_Z_DIM, MD_DOMAINS, MD_BATCH = 8, 4, 1024

_STDOUT = sys.stdout  # JSON goes here; everything else is sent to stderr


def fail(msg):
    print(f"bench_reference.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def csv_list(text, cast=str):
    return [cast(t.strip()) for t in text.split(",") if t.strip()]


def parse_args(argv):
    home = os.environ.get("WSCRL_REF_HOME", os.path.expanduser("~/wscrl-reference"))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wscrl-root",
                   default=os.environ.get("WSCRL_REF_WSCRL") or os.path.join(home, "ws-crl"),
                   help="WS-CRL work tree (env WSCRL_REF_WSCRL, else $WSCRL_REF_HOME/ws-crl)")
    p.add_argument("--mdcrl-root",
                   default=os.environ.get("WSCRL_REF_MDCRL") or os.path.join(home, "md-crl"),
                   help="MD-CRL work tree (env WSCRL_REF_MDCRL, else $WSCRL_REF_HOME/md-crl)")
    p.add_argument("--stubs", default=None,
                   help="folder holding the do-nothing mlflow package (default: "
                        "$WSCRL_REF_HOME/stubs, else stubs/ beside the WS-CRL tree)")
    p.add_argument("--methods", default="ilcm,dvae,betavae",
                   help="WS-CRL methods, comma-separated ('' skips WS-CRL)")
    p.add_argument("--dims", default="3,4,8", help="WS-CRL dim_z values, comma-separated")
    p.add_argument("--md-variants", default="minmax,none,mmd",
                   help="MD-CRL penalties, comma-separated ('' skips MD-CRL)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--steps", type=int, default=200, help="timed steps per round (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (default 20)")
    p.add_argument("--rounds", type=int, default=1, help="timed rounds per case (default 1)")
    p.add_argument("--mmd-steps-divisor", type=int, default=5,
                   help="MD-CRL MMD runs steps/divisor timed steps (default 5; it is slow)")
    p.add_argument("--seed", type=int, default=42, help="model / data seed (default 42)")
    args = p.parse_args(argv)

    args.methods = csv_list(args.methods)
    args.dims = csv_list(args.dims, int)
    args.md_variants = csv_list(args.md_variants)
    for m in args.methods:
        if m not in WSCRL_METHODS:
            p.error(f"unknown method {m!r} (choose from {', '.join(WSCRL_METHODS)})")
    for v in args.md_variants:
        if v not in MD_VARIANTS:
            p.error(f"unknown MD-CRL variant {v!r} (choose from {', '.join(MD_VARIANTS)})")
    if args.methods and not args.dims:
        p.error("--dims is empty")
    if min(args.steps, args.rounds, args.threads, args.mmd_steps_divisor) < 1 or args.warmup < 0:
        p.error("--steps, --rounds, --threads, --mmd-steps-divisor must be >= 1, --warmup >= 0")

    if args.methods:
        args.wscrl_root = os.path.abspath(os.path.expanduser(args.wscrl_root))
        if not os.path.isfile(os.path.join(args.wscrl_root, "experiments", "scaling.py")):
            fail(f"no WS-CRL work tree at {args.wscrl_root} (experiments/scaling.py missing); "
                 "pass --wscrl-root or set WSCRL_REF_WSCRL / WSCRL_REF_HOME")
        if args.stubs is None:
            candidates = [os.path.join(home, "stubs"),
                          os.path.join(os.path.dirname(args.wscrl_root), "stubs")]
            args.stubs = next((c for c in candidates
                               if os.path.isfile(os.path.join(c, "mlflow", "__init__.py"))),
                              None)
        if args.stubs is not None:
            args.stubs = os.path.abspath(os.path.expanduser(args.stubs))
    if args.md_variants:
        args.mdcrl_root = os.path.abspath(os.path.expanduser(args.mdcrl_root))
        if not os.path.isfile(os.path.join(args.mdcrl_root, "models", "mixing_autoencoder_pl.py")):
            fail(f"no MD-CRL work tree at {args.mdcrl_root} "
                 "(models/mixing_autoencoder_pl.py missing); pass --mdcrl-root or set "
                 "WSCRL_REF_MDCRL / WSCRL_REF_HOME")
    return args


def git_commit(root):
    """Short commit of a work tree (None when git cannot tell)."""
    try:
        out = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def time_steps(step, warmup, steps, rounds):
    """Run `step(k)` warmup times, then `rounds` blocks of `steps`; steps/s of each block."""
    k = 0
    for _ in range(warmup):
        step(k)
        k += 1
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            step(k)
            k += 1
        rates.append(steps / (time.perf_counter() - t0))
    return rates


def emit(record, rates):
    import torch
    record.update(steps_per_s=round(statistics.median(rates), 2),
                  rounds_steps_per_s=[round(r, 2) for r in rates],
                  torch=torch.__version__,
                  loadavg_1m=round(os.getloadavg()[0], 2))  # others' load skews the figures
    print(json.dumps(record), file=_STDOUT, flush=True)


def seed_all(seed):
    import numpy as np
    import torch
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------- WS-CRL
def wscrl_setup(root, stubs):
    """Make the WS-CRL tree importable offline; return its modules."""
    collections.Mapping = collections.abc.Mapping  # gone from `collections` in Python 3.10
    if stubs is not None and stubs not in sys.path:
        sys.path.insert(0, stubs)
    try:
        import mlflow  # noqa: F401
    except ImportError:
        fail("WS-CRL imports mlflow: no stub found (pass --stubs DIR holding mlflow/__init__.py, "
             "as written by tools/reference/setup_reference.sh)")
    if root not in sys.path:
        sys.path.insert(0, root)
    import experiments.experiment_utils as eu
    import experiments.scaling as scaling
    from ws_crl.training import VAEMetrics
    return scaling, eu, VAEMetrics


def wscrl_config(root, method, dim_z, seed, base_dir):
    """The Hydra config scaling.py would get for this method, dim_z and the fast schedule."""
    from hydra import compose, initialize_config_dir
    overrides = ["training=scaling_fast", "training.device=cpu", f"data.dim_z={dim_z}",
                 f"data.nature.seed={seed}", f"general.seed={seed}", "general.exp_name=bench",
                 f"general.base_dir={base_dir}", "general.verbose=false"]
    # scaling.py's @hydra.main sets no version_base: Hydra 1.1 semantics
    with initialize_config_dir(config_dir=os.path.join(root, "config"), version_base="1.1"):
        return compose(config_name=f"scaling_{method}", overrides=overrides)


def wscrl_batches(scaling, cfg, n_batches):
    """Batches from the reference's ground-truth model (as generate_datasets draws them)."""
    import torch
    torch.manual_seed(cfg.data.nature.seed)
    nature = scaling.create_true_model(cfg)
    bs = cfg.training.batchsize
    with torch.no_grad():
        data = nature.sample(n_batches * bs, additional_noise=cfg.data.nature.observation_noise)
    return [tuple(t[i * bs:(i + 1) * bs] for t in data) for i in range(n_batches)]


def wscrl_cases(args):
    import torch
    scaling, eu, VAEMetrics = wscrl_setup(args.wscrl_root, args.stubs)
    commit = git_commit(args.wscrl_root)
    # general.base_dir only feeds path interpolations in the config; nothing is written there
    base_dir = os.path.join(tempfile.gettempdir(), "bench_reference_unused")
    for method in args.methods:
        # betavae (ELCM) ignores the deterministic-encoder switch: epoch 2 repeats epoch 1
        phases = ("pretrain", "main") if method == "betavae" else tuple(WSCRL_PHASES)
        for dim_z in args.dims:
            cfg = wscrl_config(args.wscrl_root, method, dim_z, args.seed, base_dir)
            batches = wscrl_batches(scaling, cfg, n_batches=50)
            seed_all(cfg.general.seed)  # as initialize_experiment does before create_model
            model = scaling.create_model(cfg)
            criteria = VAEMetrics(dim_z=cfg.data.dim_z)
            optim, _ = eu.create_optimizer_and_scheduler(cfg, model, separate_param_groups=True)
            steps_per_epoch = -(-cfg.data.samples.train // cfg.training.batchsize)
            for phase in phases:
                epoch = WSCRL_PHASES[phase]
                graph_kwargs = eu.determine_graph_learning_settings(cfg, epoch, model)
                model_interventions, pretrain, det_encoder = scaling.epoch_schedules(
                    cfg, model, epoch, optim)
                bad = [0]

                def step(k, epoch=epoch, graph_kwargs=graph_kwargs, pretrain=pretrain,
                         model_interventions=model_interventions, det_encoder=det_encoder):
                    x1, x2, _z1, _z2, labels, _true_int = batches[k % len(batches)]
                    model.train()
                    (beta, beta_intervention, consistency, cyclicity, edge, inverse_consistency,
                     z_reg, entropy, offset) = eu.step_schedules(
                        cfg, model, epoch + (k % steps_per_epoch) / steps_per_epoch)
                    log_prob, outputs = model(
                        x1, x2, beta=beta, beta_intervention_target=beta_intervention,
                        pretrain_beta=cfg.training.pretrain_beta,
                        full_likelihood=cfg.training.full_likelihood,
                        likelihood_reduction=cfg.training.likelihood_reduction,
                        pretrain=pretrain, model_interventions=model_interventions,
                        deterministic_intervention_encoder=det_encoder,
                        intervention_encoder_offset=offset, **graph_kwargs)
                    loss, _metrics = criteria(
                        log_prob, true_intervention_labels=labels,
                        z_regularization_amount=z_reg, edge_regularization_amount=edge,
                        cyclicity_regularization_amount=cyclicity,
                        consistency_regularization_amount=consistency,
                        inverse_consistency_regularization_amount=inverse_consistency,
                        intervention_entropy_regularization_amount=entropy, **outputs)
                    finite, _grad_norm = eu.optimizer_step(cfg, loss, model, outputs, optim,
                                                           x1, x2)
                    bad[0] += not finite

                rates = time_steps(step, args.warmup, args.steps, args.rounds)
                emit(dict(side="reference", method=method, phase=phase, dim_z=dim_z,
                          batch_size=cfg.training.batchsize, steps=args.steps,
                          warmup=args.warmup, rounds=args.rounds, threads=args.threads,
                          nonfinite_steps=bad[0], ref="ws-crl", ref_commit=commit,
                          torch_threads=torch.get_num_threads()), rates)


# ----------------------------------------------------------------------------------- MD-CRL
class _Anything(types.ModuleType):
    """A module whose every attribute is a do-nothing callable (for imported-but-unused names)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


class _StepCounter:
    """What MixingAutoencoderPL.training_step reads from its trainer: the global step."""

    def __init__(self):
        self.global_step = 0


def mdcrl_setup(root):
    """Make the MD-CRL tree importable offline (wandb/torchvision stubbed, resolvers on)."""
    import pytorch_lightning  # noqa: F401  (real ones first: they probe for torchvision)
    import torchmetrics  # noqa: F401
    for name in ("wandb", "torchvision", "torchvision.models", "torchvision.transforms"):
        sys.modules.setdefault(name, _Anything(name))
    if root not in sys.path:
        sys.path.insert(0, root)
    import utils.hydra_custom_resolvers  # noqa: F401  (registers add_int, mult_int, ...)


def mdcrl_config(root, variant, seed):
    from hydra import compose, initialize_config_dir
    penalty = {
        "minmax": ["model.penalty_criterion.minmax=1.", "model.penalty_criterion.mmd=0."],
        "none": ["model.penalty_criterion.minmax=0.", "model.penalty_criterion.mmd=0."],
        "mmd": ["model.penalty_criterion.minmax=0.", "model.penalty_criterion.mmd=1.",
                "model.mmd_loss.fix_sigma=null", "datamodule.dataset.corr_prob=0.0"],
    }[variant]
    overrides = ["ckpt_path=null", "model=mixing_synthetic", "datamodule=mixing",
                 f"datamodule.batch_size={MD_BATCH}", "datamodule.dataset.linear=True",
                 f"datamodule.dataset.z_dim={MD_Z_DIM}",
                 f"datamodule.dataset.num_domains={MD_DOMAINS}",
                 "datamodule.dataset.correlated_z=False", "hydra/launcher=basic",
                 # recent torch refuses ReduceLROnPlateau(verbose=...), built by
                 # configure_optimizers (the scheduler itself only steps per epoch)
                 "~model.scheduler_config.scheduler.verbose",
                 "logger=csv" if os.path.isfile(os.path.join(root, "configs", "logger", "csv.yaml"))
                 else "logger=wandb", f"seed={seed}"] + penalty
    with initialize_config_dir(config_dir=os.path.join(root, "configs"), version_base="1.3.2"):
        return compose(config_name="train_root", overrides=overrides)


def mdcrl_batches(cfg, seed):
    """Full batches of the train split, as BaseDataModule.prepare_data + its loader give them."""
    import hydra
    import torch
    params = cfg.datamodule.dataset.dataset_parameters
    dataset = hydra.utils.instantiate(params.train.dataset)
    x, z, domain = dataset.data
    n_valid = params.valid.dataset.num_samples
    lengths = [len(dataset) - n_valid, n_valid]
    train_split, _ = torch.utils.data.random_split(
        range(len(dataset)), lengths, generator=torch.Generator().manual_seed(seed))
    idx = torch.as_tensor(list(train_split))
    bs = cfg.datamodule.batch_size
    return [{"x": x[idx[i:i + bs]], "z": z[idx[i:i + bs]], "domain": domain[idx[i:i + bs]]}
            for i in range(0, len(idx) - bs + 1, bs)]


def mdcrl_cases(args):
    import hydra
    import torch
    mdcrl_setup(args.mdcrl_root)
    commit = git_commit(args.mdcrl_root)
    for variant in args.md_variants:
        cfg = mdcrl_config(args.mdcrl_root, variant, args.seed)
        seed_all(args.seed)  # training_pipeline.train: seed_everything(config.seed)
        model = hydra.utils.instantiate(cfg.model, _recursive_=False)
        batches = mdcrl_batches(cfg, args.seed)
        counter = _StepCounter()
        model.trainer = counter
        model.log = lambda *a, **k: None  # Lightning's logging is not timed
        model.train()
        configured = model.configure_optimizers()
        optimizer = configured[0][0] if isinstance(configured, tuple) else configured[0]
        params = [p for group in optimizer.param_groups for p in group["params"]]
        clip = cfg.trainer.get("gradient_clip_val")

        def step(k):
            i = k % len(batches)
            loss = model.training_step(batches[i], i)
            optimizer.zero_grad()
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            counter.global_step += 1

        steps = args.steps if variant != "mmd" else max(1, args.steps // args.mmd_steps_divisor)
        warmup = args.warmup if variant != "mmd" else max(
            2, args.warmup // args.mmd_steps_divisor)
        rates = time_steps(step, warmup, steps, args.rounds)
        emit(dict(side="reference", method="mdcrl_linear", phase=variant, dim_z=MD_Z_DIM,
                  num_domains=MD_DOMAINS, batch_size=MD_BATCH, steps=steps, warmup=warmup,
                  rounds=args.rounds, threads=args.threads, ref="md-crl", ref_commit=commit,
                  torch_threads=torch.get_num_threads()), rates)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sys.stdout = sys.stderr  # keep the references' prints out of the JSON stream
    import torch
    torch.set_num_threads(args.threads)
    if args.methods:
        wscrl_cases(args)
    if args.md_variants:
        mdcrl_cases(args)


if __name__ == "__main__":
    main()
