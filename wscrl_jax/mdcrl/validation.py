"""The validation loss of MD-CRL members at the end of each epoch (reference: Lightning's
`val_loss`, the batch-size-weighted mean of the per-batch losses of `validation_step`, with
the model in eval mode)."""

import math

import jax
import jax.numpy as jnp


def pad_rows(a, rows: int, axis: int = 0):
    """a with zero rows appended along `axis` up to `rows` (one compiled shape per batch)."""
    missing = rows - a.shape[axis]
    if missing == 0:
        return a
    widths = [(0, 0)] * a.ndim
    widths[axis] = (0, missing)
    return jnp.pad(a, widths)


def batches(arrays, batch_size: int):
    """{name: [N, ...]} -> ({name: [nb, B, ...]}, weights [nb, B]) in order, padded."""
    n = jax.tree_util.tree_leaves(arrays)[0].shape[0]
    nb = math.ceil(n / batch_size)
    out = jax.tree_util.tree_map(
        lambda a: pad_rows(a, nb * batch_size).reshape((nb, batch_size) + a.shape[1:]), arrays)
    weights = (jnp.arange(nb * batch_size) < n).astype(jnp.float32).reshape(nb, batch_size)
    return out, weights


def member_val_loss(batch_terms, batch_size: int, params, model_state, valid, loss_weights):
    """One member's weighted mean of the scalar terms of `batch_terms(params, model_state, x,
    domain, weights, loss_weights)` (eval mode) over the consecutive batches of valid {"x" [N,
    ...], "domain" [N]}, the batches in a `lax.map` (per member, traced)."""
    grouped, weights = batches({"x": valid["x"], "domain": valid["domain"]}, batch_size)

    def one(args):
        batch, w = args
        return batch_terms(params, model_state, batch["x"], batch["domain"], w, loss_weights)

    aux = jax.lax.map(one, (grouped, weights))
    sizes = jnp.sum(weights, axis=1)
    return jax.tree_util.tree_map(lambda v: jnp.sum(v * sizes) / jnp.sum(sizes), aux)


def val_loss_on_host(members_batch_terms, batch_size: int, params, model_state, valid,
                     loss_weights):
    """`member_val_loss` of every member of a convolutional model: the batches in a host loop
    (XLA's CPU backend convolves much more slowly inside `lax.map`), each one compiled call of
    `members_batch_terms` (`batch_terms` vmapped over members); the same weighted mean.
    params, model_state, valid: [members, ...]; returns {name: [members]}."""
    n, b = valid["x"].shape[1], batch_size
    sums, total = None, 0.0
    for start in range(0, n, b):
        rows = min(b, n - start)
        x, dom = (pad_rows(valid[k][:, start:start + rows], b, axis=1) for k in ("x", "domain"))
        weights = (jnp.arange(b) < rows).astype(jnp.float32)
        terms = members_batch_terms(params, model_state, x, dom, weights, loss_weights)
        terms = jax.tree_util.tree_map(lambda v: v * rows, terms)
        sums = terms if sums is None else jax.tree_util.tree_map(jnp.add, sums, terms)
        total += rows
    return jax.tree_util.tree_map(lambda v: v / total, sums)
