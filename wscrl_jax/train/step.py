"""The compiled training call: many steps of every member in one `jit`.

`run_steps` vmaps one member's while-loop over the member axis (or, where
`options.member_loop` is "sequential", runs the members one after the other with `lax.map`:
faster on CPU where a vmapped step's working set no longer fits in cache). A single member
always runs unbatched (`lax.map` over one), so a one-member run gets the numbers of the same
seed in a sequential sweep.
Each member shuffles its own on-device training split once per epoch (permutation keyed by
epoch, so a run resumed at any call boundary draws the same batches) and reads batches by
dynamic slicing. The permutation is its own compiled call (`run_steps.epoch_orders`), which
the loop makes once per epoch and hands to every call of that epoch (sorting many rows costs
as much as many small training steps on a CPU). The last batch of an epoch is padded and
its padded rows get zero weight (the reference's `drop_last=False`).

Each phase compiles its own call (on CPU, seconds):
`run_steps.compile_ahead(phases)` compiles the run's later phases in a background thread while
the first phase compiles and trains, and a phase's first call waits for its compilation.

A convolutional method on CPU (`RunOptions.convolutional`) runs one compiled step per dispatch
instead: XLA's CPU backend runs convolutions inside a loop much more slowly, while one
dispatch per step costs little next to a convolutional step. The steps are the same;
dispatches are asynchronous, so the host still does not wait for them.
"""

import collections
import concurrent.futures
import logging
import threading
from functools import partial
from typing import Hashable, List, Optional, Sequence

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from wscrl_jax.train import streams
from wscrl_jax.train.method import Method
from wscrl_jax.train.optim import apply_learning_rate, clip_by_global_norm
from wscrl_jax.train.prng import rolled_now, rolled_threefry, use_unrolled_threefry
from wscrl_jax.train.reach import reached_params
from wscrl_jax.train.state import TrainState

log = logging.getLogger("wscrl_jax")


def phases_before(phase: Hashable, run_phases: Optional[Sequence[Hashable]]
                  ) -> Optional[List[Hashable]]:
    """The other phases that run at an epoch before the last epoch of `phase`, in order of
    first appearance: every phase whose steps may precede one of `phase`'s (None where the run's
    phases are unknown or do not include `phase`)."""
    if run_phases is None or phase not in run_phases:
        return None
    last = max(e for e, p in enumerate(run_phases) if p == phase)
    return list(dict.fromkeys(p for p in run_phases[:last] if p != phase))


def members_training(method: Method, state: TrainState, nan_limit: int):
    """[members] bool, traced: the members still training, active (`Method.is_active`) and
    below the non-finite-step limit."""
    active = jax.vmap(method.is_active, axis_size=state.step.shape[0])(state.model_state)
    return active & (state.nan_count < nan_limit)


def make_run_steps(method: Method, steps_per_epoch: int, batch_size: int, clip_grad_norm: float,
                   nan_limit: int, streamed: bool = False,
                   run_phases: Optional[Sequence[Hashable]] = None):
    """Returns run_steps(state, data, num_steps, phase, order=None) -> (state, stats).

    state: TrainState stacked over members; data: {name: [members, N, ...]} training arrays,
    or with `streamed` the call's batches from a host pipeline, {"batch": {name: [members,
    num_steps, B, ...]}, "weights": [members, num_steps, B], "rows": [members, num_steps, B]}
    (`loop.train`); num_steps: traced int (no recompilation per call; the call must not cross
    an epoch); phase: static. stats: per-member sums of loss, the count of finite steps and the
    loss of the last step. order: [members, N + B] int32, the rows of the epoch's batches,
    `run_steps.epoch_orders(state, data)` at any step of that epoch (None: made for this call;
    unused when streamed; always None for a method that does not shuffle, whose rows are read
    in order inside the call). `run_steps.traces[phase]` counts the traces (compilations) of
    each phase, `run_steps.rolled_hash[phase]` whether it lowered the threefry hash rolled
    (`RunOptions.rolled_hash`); `run_steps.run_epochs(state, data, epoch_data, num_epochs,
    phase, max_epochs)` runs whole epochs with their traced epoch ends in one call
    (`all_member_epochs`; None where the method's epoch end is not traced, or for streamed or
    convolutional steps);
    `run_steps.compile_ahead(phases)` compiles later phases in the background, and
    `run_steps.used_ahead` holds the phases whose calls ran those compilations. run_phases: the
    phase of every epoch of the run, in order (None: unknown); from it a phase's step knows
    which parameter arrays cannot have taken an optimizer step yet (`optim.torch_adam`'s
    `started`) and leaves them alone without arithmetic.
    """
    use_unrolled_threefry()
    optimizer = method.make_optimizer()
    per_dispatch = method.options.convolutional and jax.default_backend() == "cpu"
    sequential = method.options.member_loop == "sequential" and not per_dispatch
    traces = collections.Counter()
    rolled = {}  # phase -> whether its last trace lowered the hash rolled

    def reach_args(state, batch, weights, key, loss_weights, phase):
        """For an optimizer that takes them (`optim.torch_adam`): {"reached": the arrays this
        phase's loss reaches (`train/reach.py`), "started": those reached by this phase or by
        any phase that runs before its last epoch (absent without `run_phases`)}; traced once
        per compilation."""
        if not isinstance(optimizer, optax.GradientTransformationExtraArgs):
            return {}

        def reached(p):
            return reached_params(lambda params, *a: method.loss(params, *a, p), state.params,
                                  state.model_state, batch, weights, key, loss_weights)

        args = {"reached": reached(phase)}
        earlier = phases_before(phase, run_phases)
        if earlier is not None:
            args["started"] = jax.tree_util.tree_map(
                lambda *hit: any(hit), args["reached"], *(reached(p) for p in earlier))
        return args

    def epoch_order(key, step, n: int):
        """One member's batch rows for the epoch of `step`: its permutation of the N rows (the
        identity without shuffling), then the first B again for the last batch's padding."""
        if method.options.shuffle:
            epoch = step // steps_per_epoch
            shuffle_key = jax.random.fold_in(jax.random.fold_in(key, streams.SHUFFLE), epoch)
            perm = jax.random.permutation(shuffle_key, n)
        else:
            perm = jnp.arange(n)
        return jnp.concatenate([perm, perm[:batch_size]])

    @jax.jit
    def shuffled_orders(state, data):
        n = jax.tree_util.tree_leaves(data)[0].shape[1]
        return jax.vmap(lambda key, step: epoch_order(key, step, n))(state.key, state.step)

    def epoch_orders(state, data):
        """[members, N + B] for a shuffling method (one compiled call); None otherwise."""
        return shuffled_orders(state, data) if method.options.shuffle else None

    def member_steps(state: TrainState, data, order, num_steps, phase):
        """num_steps: traced, or None for exactly one step outside any loop."""
        epoch = state.step // steps_per_epoch
        if streamed:
            def read_batch(i, _):
                return (jax.tree_util.tree_map(lambda a: a[i], data["batch"]), data["rows"][i],
                        data["weights"][i])
        else:
            n = jax.tree_util.tree_leaves(data)[0].shape[0]
            if order is None:  # rows in order: cheaper made here than by another dispatch
                order = epoch_order(state.key, state.step, n)

            def read_batch(_, state):
                pos = (state.step - epoch * steps_per_epoch) * batch_size
                idx = jax.lax.dynamic_slice(order, (pos,), (batch_size,))
                weights = ((pos + jnp.arange(batch_size)) < n).astype(jnp.float32)
                return jax.tree_util.tree_map(lambda a: a[idx], data), idx, weights

        def one_step(i, carry):
            state, loss_sum, finite_count, _ = carry
            batch, idx, weights = read_batch(i, state)
            key = jax.random.fold_in(jax.random.fold_in(state.key, streams.STEP), state.step)
            loss_weights = method.loss_weights(state.step / steps_per_epoch)
            grad_fn = jax.value_and_grad(method.loss, has_aux=True)
            (loss, aux), grads = grad_fn(state.params, state.model_state, batch, weights, key,
                                       loss_weights, phase)
            grads, norm = clip_by_global_norm(grads, clip_grad_norm)
            reach = reach_args(state, batch, weights, key, loss_weights, phase)
            updates, new_opt = optimizer.update(grads, state.opt_state, state.params, **reach)
            lr = method.learning_rate(state.model_state, state.step, epoch)
            new_params = apply_learning_rate(state.params, updates, lr)
            if "started" in reach:  # arrays that cannot move yet keep their very values
                new_params = jax.tree_util.tree_map(
                    lambda new, old, hit, started: new if hit or started else old,
                    new_params, state.params, reach["reached"], reach["started"])
            finite = jnp.isfinite(loss) & jnp.isfinite(norm)
            apply = finite & (state.nan_count < nan_limit) & method.is_active(state.model_state)
            model_state = method.record(state.model_state, batch, aux, idx, weights, apply)
            keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
                lambda a, b: jnp.where(apply, a, b), new, old)
            state = state.replace(params=keep(new_params, state.params),
                                  opt_state=keep(new_opt, state.opt_state),
                                  model_state=model_state, step=state.step + 1,
                                  nan_count=state.nan_count + (~finite).astype(jnp.int32))
            return (state, loss_sum + jnp.where(finite, loss, 0.0),
                    finite_count + finite.astype(jnp.int32), loss)

        carry = (state, jnp.zeros(()), jnp.zeros((), jnp.int32), jnp.full((), jnp.nan))
        if num_steps is None:
            carry = one_step(0, carry)
        else:
            carry = jax.lax.fori_loop(0, num_steps, one_step, carry)
        state, loss_sum, finite_count, last_loss = carry
        return state, {"loss_sum": loss_sum, "finite_steps": finite_count,
                       "last_loss": last_loss}

    def all_members(state, data, order, num_steps, phase):
        """Every member of the block (all members; one device's under `shard_map`). A block of
        one member (a single run) runs unbatched, as the sequential loop runs each member: a
        vmapped step pays for the member axis in every op (batched gathers, dots and
        reductions) even at size 1."""
        if sequential or state.step.shape[0] == 1:
            return jax.lax.map(lambda sdo: member_steps(*sdo, num_steps, phase),
                               (state, data, order))
        return jax.vmap(lambda s, d, o: member_steps(s, d, o, num_steps, phase))(
            state, data, order)

    @partial(jax.jit, static_argnames=("phase", "mesh"), donate_argnums=(0,))
    def run_steps_on(state, data, order, num_steps, phase, mesh):
        traces[phase] += 1
        rolled[phase] = rolled_now()
        if mesh is None:
            return all_members(state, data, order, num_steps, phase)
        spec = PartitionSpec(mesh.axis_names[0])
        if num_steps is None:
            local = lambda s, d, o: all_members(s, d, o, None, phase)  # noqa: E731
            return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec,
                                 check_vma=False)(state, data, order)
        local = lambda s, d, o, n: all_members(s, d, o, n, phase)  # noqa: E731
        return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec, PartitionSpec()),
                             out_specs=spec, check_vma=False)(state, data, order, num_steps)

    def all_member_epochs(state, data, epoch_data, num_epochs, phase, max_epochs: int):
        """Up to `num_epochs` (traced, <= max_epochs) whole epochs of every member from an epoch's
        start, each followed by the method's traced epoch end (`Method.member_epoch_end` of
        each member, vmapped), stopping early after an epoch at whose end no member is still
        training (inactive, or frozen at the non-finite limit), where the loop would stop.
        stats: "loss_sum", "finite_steps", "last_loss" per epoch [max_epochs, members] (epochs
        not run: 0, 0, NaN) and "epochs", the epochs run."""
        members = state.step.shape[0]

        def one_epoch(carry):
            done, state, per_epoch = carry
            state, stats = all_members(state, data, None, steps_per_epoch, phase)
            model_state = jax.vmap(method.member_epoch_end)(
                state.params, state.model_state, stats["last_loss"], state.step, epoch_data)
            per_epoch = {k: v.at[done].set(stats[k]) for k, v in per_epoch.items()}
            return done + 1, state.replace(model_state=model_state), per_epoch

        per_epoch = {"loss_sum": jnp.zeros((max_epochs, members)),
                     "finite_steps": jnp.zeros((max_epochs, members), jnp.int32),
                     "last_loss": jnp.full((max_epochs, members), jnp.nan)}
        done, state, per_epoch = jax.lax.while_loop(
            lambda c: (c[0] < num_epochs) & jnp.any(members_training(method, c[1], nan_limit)),
            one_epoch,
            (jnp.zeros((), jnp.int32), state, per_epoch))
        return state, {**per_epoch, "epochs": done}

    @partial(jax.jit, static_argnames=("phase", "max_epochs"), donate_argnums=(0,))
    def run_epochs_on(state, data, epoch_data, num_epochs, phase, max_epochs):
        traces[("epochs", phase)] += 1
        return all_member_epochs(state, data, epoch_data, num_epochs, phase, max_epochs)

    def lowering(phase):
        """The threefry form a phase's programs lower with (`RunOptions.rolled_hash`)."""
        return rolled_threefry(bool(method.options.rolled_hash(phase)))

    def run_epochs(state, data, epoch_data, num_epochs, phase, max_epochs):
        """Whole epochs in one call (`all_member_epochs`); data as `run_steps`'s, epoch_data the
        splits `member_epoch_end` reads, {split: {name: [members, N, ...]}}."""
        with lowering(phase):
            return run_epochs_on(state, data, epoch_data, num_epochs, phase=phase,
                                 max_epochs=max_epochs)

    # one step per dispatch compiles quickly: nothing ahead there
    ahead = AheadCompiler(run_steps_on, lowering, enabled=not streamed and not per_dispatch)

    def run_steps(state, data, num_steps, phase, order=None):
        """`run_steps_on`; a convolutional method's members run per device under `shard_map`
        (XLA's partitioner mis-splits the grouped convolutions that vmapped convolutions over
        members become, e.g. 4 members on 2 CPU devices fail to compile)."""
        sharding = state.step.sharding
        mesh = (sharding.mesh if method.options.convolutional
                and isinstance(sharding, NamedSharding) and sharding.mesh.size > 1 else None)
        if order is None and not streamed:
            order = epoch_orders(state, data)
        return ahead.call((state, data, order, num_steps), phase, mesh)

    if per_dispatch:
        run_steps = one_step_per_dispatch(run_steps, streamed, epoch_orders)
    run_steps.traces = traces
    run_steps.rolled_hash = rolled
    # several epochs a call: a method whose epoch end is traced, on arrays in device memory
    run_steps.run_epochs = (run_epochs if method.options.traced_epoch_end
                            and not streamed and not per_dispatch else None)
    run_steps.epoch_orders = epoch_orders
    run_steps.compile_ahead = ahead.schedule
    run_steps.used_ahead = ahead.used
    return run_steps


class AheadCompiler:
    """Compiles the calls of a run's later phases in a background thread while the first phase
    compiles and trains; a call of such a phase waits for its compilation instead of starting
    its own. `run_steps_on`: the jitted call (static `phase` and `mesh`); `lowering(phase)`: the
    context a phase's program is lowered in (`train/prng.py: rolled_threefry`)."""

    def __init__(self, run_steps_on, lowering, enabled: bool = True):
        self.run_steps_on, self.lowering, self.enabled = run_steps_on, lowering, enabled
        self.futures = {}  # phase -> Future of its compiled call
        self.pending = []  # the phases `schedule` was given, until the next call starts them
        self.used = set()  # the phases whose calls ran what was compiled ahead

    def schedule(self, phases):
        """Compile `phases`, starting at the next call, with that call's argument shapes. Only
        for calls of an unchanging shape (not with streamed batches)."""
        if self.enabled:
            self.pending[:] = list(dict.fromkeys(phases))

    def call(self, args, phase, mesh):
        """run_steps_on(*args, phase, mesh), through its ahead-compiled program where there is
        one; starts the scheduled compilations first."""
        if self.pending:
            self._start([p for p in self.pending if p != phase], args, mesh)
            self.pending.clear()
        compiled = self.futures[phase].result() if phase in self.futures else None  # waits
        if compiled is not None:
            try:
                out = compiled(*args)
                self.used.add(phase)
                return out
            except (TypeError, ValueError) as e:  # arguments it was not compiled for
                log.debug("phase %s: compiled ahead for other arguments (%s)", phase, e)
                del self.futures[phase]
        with self.lowering(phase):
            return self.run_steps_on(*args, phase=phase, mesh=mesh)

    def _start(self, phases, args, mesh):
        if not phases:
            return
        specs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(
            a.shape, a.dtype, sharding=getattr(a, "sharding", None),
            weak_type=getattr(a, "weak_type", False)), args)
        futures = {phase: concurrent.futures.Future() for phase in phases}
        self.futures.update(futures)

        def compile_all():
            for phase, future in futures.items():
                try:
                    with self.lowering(phase):
                        lowered = self.run_steps_on.lower(*specs, phase=phase, mesh=mesh)
                    future.set_result(lowered.compile())
                except Exception:  # noqa: BLE001  the call compiles it again and reports
                    future.set_result(None)

        # not a daemon: a run that stops early exits once its compilations end, rather than
        # tearing the backend down under them
        threading.Thread(target=compile_all, name="compile-ahead").start()


def one_step_per_dispatch(run_steps, streamed: bool, epoch_orders):
    """`run_steps` as one compiled step (num_steps=None) per dispatch, the call's stats summed
    on the device."""
    def run_steps_per_dispatch(state, data, num_steps, phase, order=None):
        if order is None and not streamed:
            order = epoch_orders(state, data)
        total = None
        for i in range(int(num_steps)):
            step_data = (jax.tree_util.tree_map(lambda a: a[:, i:i + 1], data) if streamed
                         else data)
            state, stats = run_steps(state, step_data, None, phase, order)
            total = stats if total is None else {
                "loss_sum": total["loss_sum"] + stats["loss_sum"],
                "finite_steps": total["finite_steps"] + stats["finite_steps"],
                "last_loss": stats["last_loss"]}
        return state, total

    return run_steps_per_dispatch
