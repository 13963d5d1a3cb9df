"""The training loop, for any method: epochs, static phases, compiled multi-step calls.

The host wakes up once per call (`training.steps_per_call` steps of every member) to update
the progress bar, log, and check for members that hit the non-finite-step limit.
"""

import functools
import logging
import math
from typing import Callable, Optional

import jax
import numpy as np
from tqdm.auto import tqdm

from wscrl_jax.train.distributed import first_given, multiprocess, to_host
from wscrl_jax.train.method import Method
from wscrl_jax.train.preemption import Interrupted
from wscrl_jax.train.state import TrainState
from wscrl_jax.train.step import make_run_steps, members_training

log = logging.getLogger("wscrl_jax")


class NonFiniteError(RuntimeError):
    """Every member reached the limit of non-finite steps."""


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    return math.ceil(num_samples / batch_size)


def is_stream(train_data) -> bool:
    """True for a host pipeline (see `train`), False for on-device arrays."""
    return not isinstance(train_data, dict)


def train_size(train_data) -> int:
    """Training rows of each member: N of {name: [members, N, ...]}, or a stream's."""
    if is_stream(train_data):
        return int(train_data.num_samples)
    return int(jax.tree_util.tree_leaves(train_data)[0].shape[1])


@functools.lru_cache(maxsize=None)
def _training(method: Method, nan_limit: int):
    """Compiled `step.members_training`: state [members, ...] -> [members]."""
    return jax.jit(functools.partial(members_training, method, nan_limit=nan_limit))


def no_member_training(method: Method, state: TrainState, nan_limit: int) -> bool:
    """True when every member has stopped: inactive (`Method.is_active`, e.g. early-stopped)
    or frozen at the non-finite-step limit."""
    return not np.any(to_host(_training(method, nan_limit)(state)))


def whole_epochs(step: int, spe: int, epochs_per_call: int, phases, resets) -> int:
    """Epochs the next call runs whole with their epoch ends (`run_steps.run_epochs`): from an
    epoch's start, up to `epochs_per_call`, ending before the next change of phase, optimizer
    reset or the last epoch's end; 0 mid-epoch."""
    if step % spe or epochs_per_call < 2:
        return 0
    first = step // spe
    last = min(first + epochs_per_call, len(phases))
    for epoch in range(first + 1, last):
        if phases[epoch] != phases[first] or epoch in resets:
            return epoch - first
    return last - first


def train(method: Method, state: TrainState, train_data, config, *, progress: bool = True,
          on_call_end: Optional[Callable] = None, eval_data=None,
          stop_requested: Optional[Callable[[], Optional[str]]] = None,
          num_members: Optional[int] = None) -> TrainState:
    """Trains all members from `state.step` to the end of `training.epochs`.

    train_data: {name: [members, N, ...]} on device, or a host pipeline (e.g. Grain over a
    disk dataset) with `num_samples` (N) and `take(num)` -> (batch {name: [members, num, B,
    ...]}, weights [members, num, B], rows [members, num, B]): the next `num` steps' batches,
    which the loop puts on the devices for each call. on_call_end(state, info) runs on the host
    after every compiled call (checkpointing, metric files; info: "step", "epoch", "loss"
    [members] of the call's end, and "rows", (step, epoch, mean loss [members]) of each epoch
    of a call of whole epochs, else of the call); eval_data: the run's {split:
    {name: [members, ...]}}, passed to `method.end_epoch`. The method's hooks
    (`train/method.py`) decide phases, optimizer resets, epoch ends and early finishing.
    stop_requested() is checked after each call (after `on_call_end`): a name it returns (e.g.
    a `preemption.StopRequest`'s signal) raises `Interrupted` with the state at that boundary.
    num_members: the real members, where the state carries inert padding after them (only
    those are reported; default: all).
    """
    tr = config.training
    streamed = is_stream(train_data)
    spe = steps_per_epoch(train_size(train_data), tr.batchsize)
    total = tr.epochs * spe
    phases = [method.phase_for_epoch(e) for e in range(tr.epochs)]
    run_steps = make_run_steps(method, spe, tr.batchsize, float(tr.clip_grad_norm),
                               int(tr.nan_limit), streamed=streamed, run_phases=phases)
    resets = method.options.optimizer_reset_epochs
    step = int(to_host(state.step)[0])
    bar = tqdm(total=total, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    previous_phase = None
    frozen_reported = set()
    order, order_epoch = None, None  # the epoch's batch rows, made once per epoch
    run_steps.compile_ahead(phases[step // spe:])
    # whole epochs a call where the epoch end is traced (one process: several untested)
    epochs_per_call = (int(tr.steps_per_call) // spe
                       if run_steps.run_epochs is not None and not multiprocess() else 1)
    epoch_data = ({k: eval_data[k] for k in method.options.epoch_end_splits}
                  if epochs_per_call > 1 else None)
    while step < total:
        if no_member_training(method, state, int(tr.nan_limit)):
            log.info("Stopping at step %d (epoch %d): no member is still training", step,
                     step // spe)
            break
        epoch = step // spe
        phase = method.phase_for_epoch(epoch)
        if phase != previous_phase:
            log.info("Epoch %d: %s", epoch, phase)
            previous_phase = phase
        if step == epoch * spe and epoch in resets:
            log.info("Epoch %d: resetting the optimizer state (warm restart)", epoch)
            state = state.replace(opt_state=jax.vmap(method.make_optimizer().init)(
                state.params))
        num = min(int(tr.steps_per_call), (epoch + 1) * spe - step)
        whole = whole_epochs(step, spe, epochs_per_call, phases, resets)
        call_data = train_data
        if whole > 1:  # several epochs, each with its epoch end, in one call
            state, stats = run_steps.run_epochs(state, train_data, epoch_data, np.int32(whole),
                                                phase, epochs_per_call)
            ran = (int(to_host(state.step)[0]) - step) // spe
            num, epoch = ran * spe, epoch + ran - 1
        else:
            if streamed:
                batch, weights, rows = train_data.take(num)
                call_data = jax.device_put({"batch": batch, "weights": weights, "rows": rows},
                                           state.step.sharding)
            elif order_epoch != epoch:
                order, order_epoch = run_steps.epoch_orders(state, train_data), epoch
            state, stats = run_steps(state, call_data, np.int32(num), phase, order)
        step += num
        if step == (epoch + 1) * spe:
            state = method.end_epoch(state, epoch, stats, eval_data)
        loss_sum, finite, nan_count = (x[..., :num_members] for x in to_host(
            (stats["loss_sum"], stats["finite_steps"], state.nan_count)))
        if whole > 1:  # (step, epoch, mean loss [members]) of each epoch, as epoch calls give
            rows = [((e + 1) * spe, e, loss_sum[i] / np.maximum(finite[i], 1))
                    for i, e in enumerate(range(epoch - ran + 1, epoch + 1))]
            finite = finite[:ran].sum(0)
        else:
            rows = [(step, epoch, loss_sum / np.maximum(finite, 1))]
        mean_loss = rows[-1][2]
        bar.set_postfix_str(f"Loss = {np.mean(mean_loss):.2f}")
        bar.update(num)
        for m in np.flatnonzero(nan_count >= tr.nan_limit):
            if m not in frozen_reported:
                log.warning("Member %d had %d non-finite steps and is frozen from step %d on",
                            m, nan_count[m], step)
                frozen_reported.add(m)
        if len(frozen_reported) == len(nan_count):
            bar.close()
            raise NonFiniteError(f"all members reached {tr.nan_limit} non-finite steps "
                                 f"(NaN or inf in the loss or gradients); training stopped at "
                                 f"step {step}")
        if np.any((nan_count > 0) & (finite < num)):
            log.warning("Non-finite loss or gradients at steps before %d: updates skipped "
                        "(counts per member: %s)", step, nan_count.tolist())
        if on_call_end is not None:
            on_call_end(state, {"step": step, "epoch": epoch, "loss": mean_loss, "rows": rows})
        # every process stops at the same call when any of them was asked to
        stop = first_given(stop_requested()) if stop_requested is not None else None
        if stop:
            bar.close()
            raise Interrupted(state, step, stop)
    bar.close()
    return state
