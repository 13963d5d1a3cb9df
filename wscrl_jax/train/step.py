"""The compiled training call: many steps of every member in one `jit`.

`run_steps` vmaps one member's while-loop over the member axis (or, for a method whose
`member_loop` is "sequential", runs the members one after the other with `lax.map`: faster on
CPU where a vmapped step's working set no longer fits in cache, e.g. MD-CRL's adaptive MMD). Each member shuffles its own
on-device training split once per epoch (permutation keyed by epoch, so a run resumed at any
call boundary draws the same batches) and reads batches by dynamic slicing. The last batch of
an epoch is padded and its padded rows get zero weight (the reference's `drop_last=False`).
"""

from functools import partial

import jax
import jax.numpy as jnp
import optax

from wscrl_jax.train.state import TrainState, adam


def _clip_by_global_norm(grads, max_norm: float):
    """PyTorch `clip_grad_norm_`: scale by min(1, max_norm / (norm + 1e-6)); returns the
    pre-clipping norm as well."""
    norm = optax.tree.norm(grads)
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jax.tree_util.tree_map(lambda g: g * scale, grads), norm


def make_run_steps(method, steps_per_epoch: int, batch_size: int, lr_fn, clip_grad_norm: float,
                   nan_limit: int):
    """Returns run_steps(state, data, num_steps, phase) -> (state, stats).

    state: TrainState stacked over members; data: {name: [members, N, ...]} training arrays;
    num_steps: traced int (no recompilation per call; the call must not cross an epoch);
    phase: static. stats: per-member sums of loss, the count of finite steps and the loss of
    the last step.
    """
    # Optional method hooks (absent: the WS-CRL behaviour): make_optimizer() -> an optax
    # transformation without learning rate; learning_rate(model_state, step) replaces lr_fn;
    # shuffle=False reads the training split in order every epoch; is_active(model_state) -> a
    # member that is no longer active (e.g. early-stopped) skips its updates;
    # record_step(params, model_state, batch, rows, weights) -> model_state sees every batch
    # (dataset rows `rows`, padding weight 0) before its update (e.g. MD-CRL's online codes).
    optimizer = method.make_optimizer() if hasattr(method, "make_optimizer") else adam()
    shuffle = getattr(method, "shuffle", True)
    member_lr = getattr(method, "learning_rate", None)
    is_active = getattr(method, "is_active", None)
    record_step = getattr(method, "record_step", None)
    sequential = getattr(method, "member_loop", "vmap") == "sequential"

    def member_steps(state: TrainState, data, num_steps, phase):
        n = jax.tree_util.tree_leaves(data)[0].shape[0]
        epoch = state.step // steps_per_epoch
        if shuffle:
            shuffle_key = jax.random.fold_in(jax.random.fold_in(state.key, 0), epoch)
            perm = jax.random.permutation(shuffle_key, n)
        else:
            perm = jnp.arange(n)
        perm = jnp.concatenate([perm, perm[:batch_size]])
        lr = lr_fn(epoch) if member_lr is None else None

        def one_step(_, carry):
            state, loss_sum, finite_count, _ = carry
            pos = (state.step - epoch * steps_per_epoch) * batch_size
            idx = jax.lax.dynamic_slice(perm, (pos,), (batch_size,))
            weights = ((pos + jnp.arange(batch_size)) < n).astype(jnp.float32)
            batch = jax.tree_util.tree_map(lambda a: a[idx], data)
            key = jax.random.fold_in(jax.random.fold_in(state.key, 1), state.step)
            amounts = method.amounts(state.step / steps_per_epoch)
            grad_fn = jax.value_and_grad(method.loss, has_aux=True)
            (loss, _), grads = grad_fn(state.params, state.model_state, batch, weights, key,
                                       amounts, phase)
            model_state = state.model_state
            if record_step is not None:
                model_state = record_step(state.params, model_state, batch, idx, weights)
            grads, norm = _clip_by_global_norm(grads, clip_grad_norm)
            updates, new_opt = optimizer.update(grads, state.opt_state, state.params)
            step_lr = lr if member_lr is None else member_lr(state.model_state, state.step)
            new_params = jax.tree_util.tree_map(lambda p, u: p - step_lr * u, state.params,
                                                updates)
            finite = jnp.isfinite(loss) & jnp.isfinite(norm)
            apply = finite & (state.nan_count < nan_limit)
            if is_active is not None:
                apply = apply & is_active(state.model_state)
            keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
                lambda a, b: jnp.where(apply, a, b), new, old)
            state = state.replace(params=keep(new_params, state.params),
                                  opt_state=keep(new_opt, state.opt_state),
                                  model_state=model_state, step=state.step + 1,
                                  nan_count=state.nan_count + (~finite).astype(jnp.int32))
            return (state, loss_sum + jnp.where(finite, loss, 0.0),
                    finite_count + finite.astype(jnp.int32), loss)

        state, loss_sum, finite_count, last_loss = jax.lax.fori_loop(
            0, num_steps, one_step,
            (state, jnp.zeros(()), jnp.zeros((), jnp.int32), jnp.full((), jnp.nan)))
        return state, {"loss_sum": loss_sum, "finite_steps": finite_count,
                       "last_loss": last_loss}

    @partial(jax.jit, static_argnames=("phase",), donate_argnums=(0,))
    def run_steps(state, data, num_steps, phase):
        if sequential:
            return jax.lax.map(lambda sd: member_steps(*sd, num_steps, phase), (state, data))
        return jax.vmap(lambda s, d: member_steps(s, d, num_steps, phase))(state, data)

    return run_steps
