"""The causal graph implicit in a trained ILCM's solution functions
(reference: `ws_crl/posthoc_graph_learning/implicit.py`), as one compiled function.

The model is seen through one callable, `solution(index, inputs, conditioning, mask_row,
inverse) -> [B]`: solution function `index` (traced) on inputs [B] with noise context
conditioning [B, d] masked by mask_row [d]; inverse=True maps noise to the causal value, False
applies the causal-to-noise formula.

1. Topological order: dep[i, j] measures how much solution i (noise -> causal, context = all
   noise but e_i) changes when column j of the context is shuffled; greedily take the remaining
   variable whose summed dependence on the other remaining variables is smallest.
2. Effects: along that order, the mechanism of variable i at position p recomputes the noise of
   every earlier variable from the causal codes (the earlier ones first), shuffles the noise of
   the others, and maps e_i through solution i; effect[j, i] is its dependence on z_j.

The reference's mechanism applies solution i's causal-to-noise formula to e_i
(`MaskedSolutionTransform.inverse` calls the forward map, ws-crl gotcha 7);
`fix_mechanism_direction=True` applies the noise-to-causal map instead. Each dependence is
`mean((f - f_shuffled)^2) / max(std(f), 0.1)^2`, f normalised by its own mean and (unbiased)
standard deviation as the reference does; every evaluation draws its own permutations, so the
scores are noisy by design.

The instances (position p, earlier position q, context shuffled or not) are static; only the
variable at each position is traced, so step k evaluates one solution network on the rows of
every instance that still needs it.
"""

from typing import Callable

import jax
import jax.numpy as jnp


def dependence(f, f_shuffled):
    """Normalised MSE between f [B] and f_shuffled [B] (`dependance`, normalize=True)."""
    std = jnp.maximum(jnp.std(f, ddof=1), 0.1)
    return jnp.mean((f - f_shuffled) ** 2) / std ** 2


def _shuffle_column(key, x, column):
    """x [B, d] with column `column` (traced) permuted over the batch."""
    perm = jax.random.permutation(key, x.shape[0])
    return jnp.where(jnp.arange(x.shape[1]) == column, x[perm], x)


def _shuffle_columns(key, x):
    """x [B, d] with every column permuted independently."""
    keys = jax.random.split(key, x.shape[1])
    perms = jax.vmap(lambda k: jax.random.permutation(k, x.shape[0]))(keys)  # [d, B]
    return jnp.take_along_axis(x, perms.T, axis=0)


def order_dependences(key, solution: Callable, noise):
    """dep [d, d]: dependence of solution i (context: all noise but e_i) on e_j, one
    permutation per pair; the diagonal is 0."""
    dim = noise.shape[1]
    everything_but = 1.0 - jnp.eye(dim)
    keys = jax.random.split(key, dim * dim).reshape(dim, dim, -1)

    def pair(i, j, k):
        f = solution(i, noise[:, i], noise, everything_but[i], True)
        f_shuffled = solution(i, noise[:, i], _shuffle_column(k, noise, j), everything_but[i],
                              True)
        return jnp.where(i == j, 0.0, dependence(f, f_shuffled))

    idx = jnp.arange(dim)
    return jax.vmap(lambda i, ki: jax.vmap(lambda j, k: pair(i, j, k))(idx, ki))(idx, keys)


def greedy_order(dep):
    """Order [d]: repeatedly the remaining i with the smallest sum over remaining j != i of
    dep[i, j] (ties: the lowest index, as the reference's set iteration)."""
    dim = dep.shape[0]
    remaining = jnp.ones(dim, bool)
    order = []
    for _ in range(dim):
        others = remaining[None, :] & remaining[:, None] & ~jnp.eye(dim, dtype=bool)
        score = jnp.where(remaining, jnp.sum(jnp.where(others, dep, 0.0), axis=1), jnp.inf)
        i = jnp.argmin(score)
        order.append(i)
        remaining = remaining.at[i].set(False)
    return jnp.stack(order).astype(jnp.int32)


def causal_effects(key, solution: Callable, noise, causal, masks, order,
                   fix_mechanism_direction: bool = False):
    """effect [d, d]: effect[j, i] = strength of z_j -> z_i for j before i in `order`, else 0.

    noise, causal [N, d]: the noise encodings and their causal codes; masks [d, d]: the
    model's context masks (row i: what solution i reads); order [d] (traced).
    """
    dim = noise.shape[1]
    # instances: (position p, earlier position q, context column order[q] shuffled or not)
    inst = [(p, q, c) for p in range(1, dim) for q in range(p) for c in (0, 1)]
    n_inst = len(inst)
    k_ctx, k_steps = jax.random.split(key)
    shuffle_keys = jax.random.split(k_ctx, n_inst)
    contexts = jnp.stack([  # [n_inst, N, d]: the causal codes each instance sees
        _shuffle_column(shuffle_keys[n], causal, order[q]) if c else causal
        for n, (p, q, c) in enumerate(inst)])
    position = jnp.argsort(order)  # position[v] = place of variable v in the order
    filled = jnp.zeros((n_inst,) + noise.shape)  # recomputed noise of earlier variables
    outputs = [None] * n_inst
    for k in range(dim):
        v = order[k]
        # every instance at a position >= k: ancestors (p > k) and mechanisms ending here
        active = [n for n, (p, _, _) in enumerate(inst) if p >= k]
        if not active:
            continue
        keys = jax.random.split(jax.random.fold_in(k_steps, k), len(active))
        randomized = jax.vmap(_shuffle_columns, in_axes=(0, None))(keys, noise)
        before = (position < k)[None, None, :]
        conditioning = jnp.where(before, filled[jnp.array(active)], randomized)
        ancestors = [a for a, n in enumerate(active) if inst[n][0] > k]
        finals = [a for a, n in enumerate(active) if inst[n][0] == k]
        if ancestors:  # noise of variable v recomputed from each instance's causal codes
            idx = jnp.array(ancestors)
            rows = jnp.array([active[a] for a in ancestors])
            inputs = contexts[rows][:, :, v]
            e_v = jax.vmap(lambda z, cond: solution(v, z, cond, masks[v], False))(
                inputs, conditioning[idx])
            filled = filled.at[rows, :, v].set(e_v)
        if finals:  # the mechanism of v itself, on its own noise
            idx = jnp.array(finals)
            f = jax.vmap(lambda cond: solution(v, noise[:, v], cond, masks[v],
                                               fix_mechanism_direction))(conditioning[idx])
            for a, value in zip(finals, f):
                outputs[active[a]] = value
    effect = jnp.zeros((dim, dim))
    for n in range(0, n_inst, 2):  # pairs (unshuffled, shuffled) of the same (p, q)
        p, q, _ = inst[n]
        effect = effect.at[order[q], order[p]].set(dependence(outputs[n], outputs[n + 1]))
    return effect


def implicit_graph(key, solution: Callable, noise, causal, masks,
                   fix_mechanism_direction: bool = False):
    """(effect [d, d], order [d]) of one model (`compute_implicit_causal_effects`)."""
    k_order, k_effects = jax.random.split(key)
    order = greedy_order(order_dependences(k_order, solution, noise))
    effect = causal_effects(k_effects, solution, noise, causal, masks, order,
                            fix_mechanism_direction)
    return effect, order
