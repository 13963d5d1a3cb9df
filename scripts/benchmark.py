"""Training throughput per method, phase, dim_z and number of members; one JSON line per case.

    python scripts/benchmark.py --methods ilcm,dvae,betavae --dims 3 --members 1,9
    python scripts/benchmark.py --methods "ilcm,ilcm@model.scm.transform=rq_spline" --dims 4
    python scripts/benchmark.py --methods "" --md-variants "linear+minmax,linear+mmd" \
        --md-z-dim 8 --md-domains 4 --members 5
    python scripts/benchmark.py --methods "" --balls resnet18,cnn --steps 10 --calls 2
    python scripts/benchmark.py --methods "" --circuit 64,512 --members 1,4 --steps 3 --calls 2

Each case compiles one multi-step call (reported as compile_s: the first call, compile
included), then times `--calls` further calls of `--steps` steps and reports steady-state
steps/s (each step advances every member) and member-steps/s. `--floor` adds, per case, the
steps/s of the method's loss and gradient alone (`floor_steps_per_s`: one member, batches read
in order, a plain gradient step; no shuffling, optimizer, clipping or bookkeeping), and of the
same with gradient clipping and the method's optimizer on the arrays the phase's loss reaches
(`floor_optimizer_steps_per_s`; no non-finite guard, schedules or statistics): the arithmetic a
faithful step cannot avoid, without and with its optimizer. The epoch's shuffle is made once
before the timed calls, as training makes it once per epoch (a small cost per step; the
reference's figures exclude its data loader too).
MD-CRL cases (`configs/md_mixing.py` variants, `+` for `,`) time `training.steps_per_call`
steps' worth of whole epochs per call, as its training loop runs them, each epoch's validation,
plateau schedule and early stopping included (work the reference's timed step leaves out).
"""

import ast
import copy
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wscrl_jax.cli import load_config, use_cpu_devices
from wscrl_jax.run.members import make_member_data
from wscrl_jax.methods import get_method
from wscrl_jax.run_guard import ArgumentParser
from wscrl_jax.train.loop import steps_per_epoch
from wscrl_jax.train.optim import apply_learning_rate, clip_by_global_norm
from wscrl_jax.train.reach import reached_params
from wscrl_jax.train.sharding import (member_sharding, pad_members, padded_member_count,
                                      shard_members)
from wscrl_jax.train.state import init_states
from wscrl_jax.train.step import make_run_steps

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
PHASE_EPOCHS = {"pretrain": 0, "main": 1, "deterministic": 2}  # epochs of the fast config


def bench_case(method_name, phase_name, dim_z, members, steps, calls, train_samples,
               floor=False):
    """method_name: a `configs/scaling.py` method, optionally with `@key=value` overrides, e.g.
    `ilcm@model.scm.transform=rq_spline`."""
    base, *overrides = method_name.split("@")
    config = load_config(os.path.join(CONFIGS, f"scaling.py:{base},fast"))
    apply_overrides(config, overrides, "--methods")
    config.data.dim_z = dim_z
    config.data.samples.train = train_samples
    phase = PHASE_EPOCHS[phase_name]
    return time_calls(config, method_name, phase_name, phase, members, steps, calls, floor=floor)


def bench_md_case(variant, z_dim, num_domains, members, calls, floor=False):
    """variant: `configs/md_mixing.py` options with `+` for `,`, and optionally `@key=value`
    overrides, e.g. `linear+mmd@model.mmd.fix_sigma=1.0` (the fixed-bandwidth MMD)."""
    options, *overrides = variant.split("@")
    config = load_config(os.path.join(CONFIGS, "md_mixing.py:" + options.replace("+", ",")))
    config.data.z_dim, config.data.num_domains = z_dim, num_domains
    apply_overrides(config, overrides, "--md-variants")
    result = time_calls(config, f"mdcrl:{variant}", "train", 0, members, None, calls,
                        floor=floor)
    return {**result, "num_domains": num_domains}


def bench_balls_case(autoencoder, members, steps, calls, train_images):
    """MD-CRL balls stage 1 (`configs/md_balls.py:stage1`, batch 256) with the `resnet18` or
    `cnn` autoencoder on `train_images` rendered training images."""
    config = load_config(os.path.join(CONFIGS, "md_balls.py:stage1" +
                                      (",cnn" if autoencoder == "cnn" else "")))
    ns = config.data.num_samples
    ns.valid, ns.test = 256, 0
    ns.train = train_images + ns.valid
    return time_calls(config, f"balls:{autoencoder}", "stage1", 0, members, steps, calls)


def bench_circuit_case(resolution, members, steps, calls, batch):
    """CausalCircuit stage-1 image VAE (`configs/causalcircuit_reduce_dim.py`, pretraining: the
    whole reduce-dim run) at `resolution` pixels and batch `batch` (the reference's: 32), on
    random uint8 batches handed to the step as the Grain pipeline hands them (the pipeline is
    not timed); the method needs a built dataset, so a toy one of one batch is written to a
    temporary dir."""
    from wscrl_jax.data.causalcircuit.builder import build
    from wscrl_jax.data.causalcircuit.toy import write_toy_dataset
    config = load_config(os.path.join(CONFIGS, f"causalcircuit_reduce_dim.py:{resolution}"))
    config.training.batchsize = batch
    with tempfile.TemporaryDirectory() as tmp:
        write_toy_dataset(os.path.join(tmp, "download"), batch, 1, 1, resolution=resolution)
        build(os.path.join(tmp, "download"), os.path.join(tmp, "tfds"),
              None if resolution == 512 else resolution)
        config.data.tfds_dir = os.path.join(tmp, "tfds")
        method = get_method(config)
    rng = np.random.default_rng(0)
    shape = (members, steps, batch, resolution, resolution, 3)
    train_data = {"batch": {k: rng.integers(0, 256, shape, np.uint8) for k in ("x1", "x2")},
                  "weights": np.ones(shape[:3], np.float32),
                  "rows": np.zeros(shape[:3], np.int32)}
    return time_calls(config, f"circuit:{resolution}px", "pretrain", 0, members, steps, calls,
                      method=method, train_data=train_data)


def apply_overrides(config, overrides, flag):
    """Sets each `key=value` (a dotted config key, a Python literal or else a string); an unknown
    key ends the run with one error line naming `flag`."""
    for override in overrides:
        if "=" not in override:
            raise SystemExit(f"error: {flag} override {override!r} is not key=value")
        key, value = override.split("=", 1)
        *path, leaf = key.split(".")
        node = config
        try:
            for part in path:
                node = node[part]
            node[leaf]  # noqa: B018 (an unknown key is an error, not a new key)
        except (KeyError, AttributeError, TypeError):
            raise SystemExit(f"error: {flag} override {override!r}: the config has no "
                             f"key {key!r}") from None
        try:  # a Python literal (1.0, 3, False, None), else the string itself
            node[leaf] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            node[leaf] = value


def time_floor(method, data, state, epoch, spe, steps, calls, batch_size, clip_norm=None):
    """steps/s of one member's loss and gradient alone (see the module docstring): batch i is
    rows [i B, (i + 1) B) of the member's training split, the key folded with the step, and the
    parameters move by a tiny multiple of the gradient (so no step can be skipped). With
    `clip_norm`, the gradient is clipped to that norm and goes through the method's optimizer
    first, on the arrays the phase's loss reaches (as `train/step.py`, whose pretraining leaves
    the others alone).

    data: {name: [N, ...]} and state: one member's (no member axis)."""
    phase = method.phase_for_epoch(epoch)
    loss_weights = method.loss_weights(float(epoch))
    weights = jnp.ones(batch_size, jnp.float32)
    optimizer = method.make_optimizer()

    @jax.jit
    def run(params, opt_state, num):
        def one_step(i, carry):
            params, opt_state = carry
            pos = (i % spe) * batch_size
            batch = jax.tree_util.tree_map(
                lambda a: jax.lax.dynamic_slice_in_dim(a, pos, batch_size), data)
            args = (state.model_state, batch, weights, jax.random.fold_in(state.key, i),
                    loss_weights)
            grads = jax.grad(lambda p: method.loss(p, *args, phase)[0])(params)
            if clip_norm is None:
                return jax.tree_util.tree_map(lambda p, g: p - 1e-9 * g, params, grads), opt_state
            grads, _ = clip_by_global_norm(grads, clip_norm)
            reach = {}
            if isinstance(optimizer, optax.GradientTransformationExtraArgs):
                reached = reached_params(lambda p, *a: method.loss(p, *a, phase), params, *args)
                reach = {"reached": reached, "started": reached}
            updates, opt_state = optimizer.update(grads, opt_state, params, **reach)
            return apply_learning_rate(params, updates, 1e-9), opt_state
        return jax.lax.fori_loop(0, num, one_step, (params, opt_state))

    num = jnp.asarray(steps, jnp.int32)
    carry = jax.block_until_ready(run(*run(state.params, state.opt_state, num), num))  # warm up
    start = time.perf_counter()
    for _ in range(calls):
        carry = run(*carry, num)
    jax.block_until_ready(carry)
    return round(steps * calls / (time.perf_counter() - start), 1)


def timed(call, state, start_step: int, calls: int):
    """(state, seconds of `calls` calls of `call`, each rewound to `start_step`), after one
    untimed call (the first case of a process would otherwise time the compilation of the
    rewind's small ops: 10x a 10-step MD-CRL epoch call)."""
    rewound = lambda state: state.replace(step=state.step * 0 + start_step)  # noqa: E731
    state, stats = call(rewound(state))
    jax.block_until_ready(stats)
    start = time.perf_counter()
    for _ in range(calls):
        state, stats = call(rewound(state))
    jax.block_until_ready(stats)
    seconds = time.perf_counter() - start
    if "epochs" in stats and int(stats["epochs"]) < len(stats["loss_sum"]):
        raise RuntimeError("the members stopped early inside the timed epochs")
    return state, seconds


def time_calls(config, method_name, phase_name, epoch, members, steps, calls, method=None,
               train_data=None, floor=False):
    """Compiles and times `calls` calls of `steps` steps (None: one epoch) at `epoch`; given
    `train_data` (a streamed call's batches, [members, steps, ...]) instead of the method's."""
    method = method or get_method(config)
    total = padded_member_count(members, len(jax.local_devices()))  # as a run pads its sweep
    seeds = [(1000 + m, 2000 + m) for m in range(members)]
    seeds += [seeds[-1]] * (total - members)
    sharding = member_sharding(total)
    streamed = train_data is not None
    if streamed:
        train_data = shard_members(pad_members(train_data, total), sharding)
        spe = 10 ** 9  # the call never reaches an epoch's end
    else:
        data = make_member_data(method, seeds)
        train_data = shard_members({k: data["train"][k] for k in method.options.train_inputs},
                                   sharding)
    state = shard_members(init_states(method, [s for s, _ in seeds]), sharding)
    # member 0 as initialised, for --floor (the calls below donate the stacked state)
    floor_state = (jax.tree_util.tree_map(lambda a: a[0], state)
                   if floor and not streamed else None)
    tr = config.training
    if not streamed:
        spe = steps_per_epoch(int(jax.tree_util.tree_leaves(train_data)[0].shape[1]),
                              tr.batchsize)
    steps = steps or spe
    state = shard_members(state.replace(step=jnp.full((total,), epoch * spe, jnp.int32)),
                          sharding)
    phase = method.phase_for_epoch(epoch)
    run_steps = make_run_steps(method, spe, tr.batchsize, float(tr.clip_grad_norm),
                               int(tr.nan_limit), streamed=streamed,
                               run_phases=[method.phase_for_epoch(e) for e in range(tr.epochs)])
    num = jnp.asarray(steps, jnp.int32)
    # the epoch's batch order, made once per epoch as the training loop does (not timed)
    order = None if streamed else run_steps.epoch_orders(state, train_data)
    call = lambda state: run_steps(state, train_data, num, phase, order)  # noqa: E731
    extra = {}
    if run_steps.run_epochs is not None and steps == spe:  # whole epochs a call, as training
        epochs = max(1, int(tr.steps_per_call) // spe)
        steps = epochs * spe
        epoch_data = {k: data[k] for k in method.options.epoch_end_splits}
        # steps_per_s: the epochs' training steps alone (their ends made no-ops), the work the
        # reference's timed step does; with_epoch_ends_steps_per_s: as training runs them
        bare = copy.copy(method)
        bare.member_epoch_end = lambda params, model_state, *args: model_state
        bare_epochs = make_run_steps(bare, spe, tr.batchsize, float(tr.clip_grad_norm),
                                     int(tr.nan_limit)).run_epochs
        with_ends = lambda state: run_steps.run_epochs(  # noqa: E731
            state, train_data, epoch_data, np.int32(epochs), phase, epochs)
        call = lambda state: bare_epochs(  # noqa: E731
            state, train_data, epoch_data, np.int32(epochs), phase, epochs)
        state, _ = with_ends(state)  # compiled, not timed
        state, seconds = timed(with_ends, state, epoch * spe, calls)
        extra["with_epoch_ends_steps_per_s"] = round(steps * calls / seconds, 1)
    start = time.perf_counter()
    state, stats = call(state)
    jax.block_until_ready(stats)
    compile_s = time.perf_counter() - start
    state, elapsed = timed(call, state, epoch * spe, calls)
    if floor_state is not None:
        member_data = {k: data["train"][k][0] for k in method.options.train_inputs}
        n = int(jax.tree_util.tree_leaves(member_data)[0].shape[0])
        floor_args = (method, member_data, floor_state, epoch, n // tr.batchsize, steps, calls,
                      tr.batchsize)
        extra["floor_steps_per_s"] = time_floor(*floor_args)
        extra["floor_optimizer_steps_per_s"] = time_floor(
            *floor_args, clip_norm=float(tr.clip_grad_norm))
    device = jax.devices()[0]
    # latent size: dim_z (WS-CRL), data.z_dim (MD-CRL mixing), model.z_dim (balls codes)
    dim = config.data.get("dim_z") or config.data.get("z_dim") or config.model.z_dim
    return {"backend": jax.default_backend(), "device": device.device_kind, "method": method_name,
            "phase": phase_name, "dim_z": int(dim),
            "members": members, "padded_to": total, "batch": tr.batchsize,
            "devices": len(sharding.mesh.devices.flat),
            "member_loop": method.options.member_loop,
            "compile_s": round(compile_s, 3),
            "call_s": round(elapsed / calls, 4),
            "steps_per_s": round(steps * calls / elapsed, 1),
            "member_steps_per_s": round(members * steps * calls / elapsed, 1), **extra}


def main():
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="ilcm,dvae,betavae")
    p.add_argument("--phases", default="pretrain,main,deterministic")
    p.add_argument("--dims", default="3")
    p.add_argument("--members", default="1")
    p.add_argument("--steps", type=int, default=500, help="steps per compiled call")
    p.add_argument("--calls", type=int, default=3, help="timed calls per case")
    p.add_argument("--train-samples", type=int, default=100000)
    p.add_argument("--md-variants", default="",
                   help="MD-CRL md_mixing variants, '+' for ',' and '@key=value' for an override, "
                   "e.g. linear+minmax,linear+mmd,linear+mmd@model.mmd.fix_sigma=1.0")
    p.add_argument("--md-z-dim", type=int, default=8)
    p.add_argument("--md-domains", type=int, default=4)
    p.add_argument("--balls", default="",
                   help="MD-CRL balls stage-1 autoencoders to time at batch 256: resnet18,cnn")
    p.add_argument("--balls-images", type=int, default=2560,
                   help="training images of the balls cases (--steps is capped at an epoch)")
    p.add_argument("--circuit", default="",
                   help="CausalCircuit image-VAE resolutions to time: 64,512")
    p.add_argument("--circuit-batch", type=int, default=32,
                   help="batch of the --circuit cases (the reference's: 32)")
    p.add_argument("--floor", action="store_true",
                   help="also time each case's loss and gradient alone (floor_steps_per_s) "
                   "and with clipping and the optimizer (floor_optimizer_steps_per_s); not for "
                   "the streamed --circuit cases")
    p.add_argument("--plot", default=None,
                   help="write a PNG of member-steps/s against members (needs matplotlib)")
    p.add_argument("--cpu_devices", type=int, default=None,
                   help="CPU: host devices to split the cores into (default: one a core, as "
                   "wscrl-train for most configs; 1: a single device, as wscrl-train gives "
                   "MD-CRL's MMD penalties and members in turn, training.member_loop="
                   "sequential)")
    args = p.parse_args()
    use_cpu_devices(args.cpu_devices)
    results = []
    for variant in filter(None, args.md_variants.split(",")):
        for members in (int(m) for m in args.members.split(",")):
            result = bench_md_case(variant, args.md_z_dim, args.md_domains, members,
                                   args.calls, args.floor)
            results.append(result)
            print(json.dumps(result), flush=True)
    balls = [a for a in args.balls.split(",") if a]
    unknown = sorted(set(balls) - {"resnet18", "cnn"})
    if unknown:
        raise SystemExit(f"error: --balls {','.join(unknown)}: the balls autoencoders are "
                         "resnet18 and cnn")
    for autoencoder in balls:
        for members in (int(m) for m in args.members.split(",")):
            result = bench_balls_case(autoencoder, members, min(args.steps,
                                      args.balls_images // 256), args.calls, args.balls_images)
            results.append(result)
            print(json.dumps(result), flush=True)
    for resolution in (int(r) for r in filter(None, args.circuit.split(","))):
        if resolution not in (64, 512):
            raise SystemExit(f"error: --circuit {resolution}: the image VAE takes 64 or 512")
        for members in (int(m) for m in args.members.split(",")):
            result = bench_circuit_case(resolution, members, args.steps, args.calls,
                                        args.circuit_batch)
            results.append(result)
            print(json.dumps(result), flush=True)
    for method_name in filter(None, args.methods.split(",")):
        phases = args.phases.split(",")
        if method_name.split("@")[0] == "betavae":  # one loss for every epoch after pretraining
            phases = [ph for ph in phases if ph != "deterministic"]
        for dim_z in (int(d) for d in args.dims.split(",")):
            for members in (int(m) for m in args.members.split(",")):
                for phase_name in phases:
                    result = bench_case(method_name, phase_name, dim_z, members, args.steps,
                                        args.calls, args.train_samples, args.floor)
                    results.append(result)
                    print(json.dumps(result), flush=True)
    if args.plot:
        plot_members(results, args.plot)


def plot_members(results, path):
    """Aggregate member-steps/s against members, one line per (method, phase, dim_z)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    groups = {}
    for r in results:
        groups.setdefault((r["method"], r["phase"], r["dim_z"]), []).append(r)
    for (method, phase, dim_z), rows in groups.items():
        rows.sort(key=lambda r: r["members"])
        ax.plot([r["members"] for r in rows], [r["member_steps_per_s"] for r in rows], "o-",
                label=f"{method} {phase}, dim_z={dim_z}")
    ax.set_xscale("log")
    ax.set_xlabel("members (vmapped)")
    ax.set_ylabel("member-steps / s")
    ax.set_title(f"{results[0]['backend']}: {results[0]['device']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
