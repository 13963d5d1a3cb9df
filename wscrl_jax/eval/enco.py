"""Post-hoc ENCO graph learning on causal codes (`ws_crl/posthoc_graph_learning/enco.py`,
itself from CITRIS; called by `experiments/scaling.py: eval_enco_graph`), compiled: whole epochs
are scans of steps and the epoch loop a `fori_loop`, so one member's ENCO is one call, and
`jax.vmap` runs a sweep's.

The data: observational codes z1 [N, d] fit the conditional densities ("distribution" epochs);
codes after the intervention z2 [N, d] with their intervention masks [N, d] fit the graph
parameters gamma (edge existence) and theta (orientation), both [d, d] logits with
A[i, j] = edge i -> j, from ENCO's REINFORCE-free gradient estimates ("graph" epochs).

One conditional Gaussian per variable j, all d computed in parallel: input
`[z * C[:, j], 2 C[:, j] - 1]` (C the sampled graph) through Linear(2d, 64) SiLU Linear(64, 64)
SiLU Linear(64, 2) -> (mean, log_std).

Faithful to the reference: its optimisers (AdamW with the cosine-warmup factor whose first step
has learning rate 0; Adam with betas (0.9, 0.9) for gamma), torch-style gradient clipping at
0.1, batches of 512 / 256 in a fresh shuffle per epoch with the last batch partial, at most
1000 / 100 steps an epoch, 10 distribution epochs, then up to 40 epochs stopping once gamma is
saturated. `reference_quirks=True` (default) keeps ws-crl gotcha 22: the codes are not
standardised (the reference computes their statistics and never applies them) and the layers'
Kaiming bound uses PyTorch's fan-in of a 3-d weight (out * in); False standardises the codes
and uses fan-in = in.

One exact speed-up: the density of variable j depends on a sampled graph only through j's
parent set, so a graph epoch evaluates each variable under each of its 2^(d-1) parent sets
once per row and gathers, instead of once per (row, graph): the same numbers (up to the order
of float sums) at 100 / 2^(d-1) of the cost. Used while 2^(d-1) < num_graph_samples.
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

LOG_2PI = math.log(2.0 * math.pi)
NEVER = -9e15  # the reference's logit of the impossible self-edges


class EncoSettings(NamedTuple):
    """The reference's hyperparameters (`ENCOGraphLearning`, `learn_graph`, `run_enco`)."""
    lambda_sparse: float = 0.01
    num_graph_samples: int = 100
    hidden: int = 64
    pretrain_epochs: int = 10
    epochs: int = 40
    dist_batch: int = 512
    graph_batch: int = 256
    dist_max_steps: int = 1000
    graph_max_steps: int = 100
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    max_iters: float = 1e7
    min_factor: float = 0.05
    gamma_lr: float = 5e-3
    theta_lr: float = 1e-2
    clip_norm: float = 0.1
    saturation: float = 1e-3
    reference_quirks: bool = True


class EncoResult(NamedTuple):
    adjacency: jnp.ndarray  # [d, d] int32, A[i, j] = 1 for an edge i -> j
    gamma: jnp.ndarray  # [d, d] edge-existence logits
    theta: jnp.ndarray  # [d, d] orientation logits
    epochs: jnp.ndarray  # ENCO epochs run before gamma saturated (<= settings.epochs)
    nonfinite_steps: jnp.ndarray  # distribution steps skipped for non-finite gradients


def init_network(key, dim: int, hidden: int, torch_fan: bool):
    """Weights [d, out, in] with Kaiming-uniform (ReLU gain) bounds, zero biases
    (`MultivarLinear`). torch_fan: fan-in = out * in, as PyTorch computes it for a 3-d tensor."""
    sizes = ((2 * dim, hidden), (hidden, hidden), (hidden, 2))
    params = []
    for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes)), sizes):
        fan_in = n_out * n_in if torch_fan else n_in
        bound = math.sqrt(6.0 / fan_in)
        params.append({"w": jax.random.uniform(k, (dim, n_out, n_in), jnp.float32, -bound, bound),
                       "b": jnp.zeros((dim, n_out))})
    return params


def conditional_nll(params, z, parents):
    """Negative log-density of each variable given its parents.

    z [..., d]; parents [..., d, d] with row j the parent mask of variable j (the transpose of
    an adjacency). Returns [..., d].

    The layers run with the variable axis j leading ([d, ..., features]): XLA's CPU dots want
    their batch axis major, and this layout spares a transpose around each of the three layers
    (a noticeable share of ENCO's time on CPU; the same products, last bits aside).
    """
    values = z[..., None, :] * parents
    h = jnp.concatenate([values, jnp.broadcast_to(2.0 * parents - 1.0, values.shape)], axis=-1)
    h = jnp.moveaxis(h, -2, 0)  # [d, ..., 2d]
    between = tuple(range(1, h.ndim - 1))  # the axes of `...`
    for i, layer in enumerate(params):
        h = jnp.einsum("j...i,joi->j...o", h, layer["w"]) + jnp.expand_dims(layer["b"], between)
        if i < len(params) - 1:
            h = jax.nn.silu(h)
    mean, log_std = jnp.moveaxis(h[..., 0], 0, -1), jnp.moveaxis(h[..., 1], 0, -1)
    return log_std + 0.5 * LOG_2PI + 0.5 * ((z - mean) * jnp.exp(-log_std)) ** 2


def _lr_factor(step, s: EncoSettings):
    """`CosineWarmupScheduler`: cosine from 1 to min_factor over max_iters, times t / warmup
    while t <= warmup (so step 0 has learning rate 0, ws-crl gotcha 22)."""
    t = step.astype(jnp.float32)
    cosine = 0.5 * (1.0 + jnp.cos(jnp.pi * t / s.max_iters)) * (1 - s.min_factor) + s.min_factor
    return cosine * jnp.where(t <= s.warmup, t / s.warmup, 1.0)


def _optimizers(s: EncoSettings):
    net = optax.adamw(lambda step: s.lr * _lr_factor(step, s), b1=0.9, b2=0.999, eps=1e-8,
                      weight_decay=s.weight_decay)
    gamma = optax.adam(s.gamma_lr, b1=0.9, b2=0.9, eps=1e-8)
    theta = optax.adam(s.theta_lr, b1=0.9, b2=0.999, eps=1e-8)
    return net, gamma, theta


def _torch_clip(grads, max_norm):
    """`clip_grad_norm_`: scale by max_norm / (norm + 1e-6) when that is below 1."""
    norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree_util.tree_leaves(grads)))
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jax.tree_util.tree_map(lambda g: g * scale, grads), norm


def _epoch_batches(key, n: int, batch: int, max_steps: int):
    """A fresh shuffle cut into min(max_steps, ceil(n / batch)) batches: row indices
    [steps, batch] and weights [steps, batch] (0 for the padding of the last batch)."""
    steps = min(max_steps, -(-n // batch))
    perm = jax.random.permutation(key, n)
    pad = steps * batch - n
    if pad > 0:
        perm = jnp.concatenate([perm, jnp.zeros((pad,), perm.dtype)])
    idx = perm[:steps * batch].reshape(steps, batch)
    weights = (jnp.arange(steps * batch) < n).astype(jnp.float32).reshape(steps, batch)
    return idx, weights


def _parent_sets(dim: int) -> np.ndarray:
    """[d, 2^(d-1), d]: every parent mask of variable j (bit j always 0), in the order of the
    binary number formed by the other variables' bits (lowest index = lowest bit)."""
    k = 2 ** (dim - 1)
    out = np.zeros((dim, k, dim), np.float32)
    for j in range(dim):
        others = [i for i in range(dim) if i != j]
        for code in range(k):
            for bit, i in enumerate(others):
                out[j, code, i] = (code >> bit) & 1
    return out


def _graph_nll_sums(params, z, graphs, use_parent_sets: bool):
    """Sums over graphs of the NLL where edge i -> j is present / absent.

    z [B, d]; graphs [G, d, d] (A[g, i, j]). Returns (pos, neg), each [B, d, d]:
    pos[b, i, j] = sum_g nll[b, g, j] A[g, i, j], neg likewise with 1 - A.
    """
    dim = z.shape[-1]
    if not use_parent_sets:
        nll = conditional_nll(params, z[:, None, :], jnp.swapaxes(graphs, -1, -2)[None])
        return (jnp.einsum("bgj,gij->bij", nll, graphs),
                jnp.einsum("bgj,gij->bij", nll, 1.0 - graphs))
    sets = jnp.asarray(_parent_sets(dim))  # [d, K, d]
    nll = conditional_nll(params, z[:, None, :], jnp.swapaxes(sets, 0, 1)[None])  # [B, K, d]
    others = np.array([[i for i in range(dim) if i != j] for j in range(dim)])  # [d, d-1]
    bits = 2 ** np.arange(dim - 1)
    # code[g, j]: index of graph g's parent set of j among `sets[j]`
    columns = jnp.take_along_axis(jnp.swapaxes(graphs, 1, 2), others[None], axis=2)  # [G, d, d-1]
    code = jnp.sum(columns * bits, axis=-1).astype(jnp.int32)  # [G, d]
    onehot = jax.nn.one_hot(code, sets.shape[1])  # [G, d, K]
    pos_count = jnp.einsum("gjk,gij->kij", onehot, graphs)
    neg_count = jnp.einsum("gjk,gij->kij", onehot, 1.0 - graphs)
    return (jnp.einsum("bkj,kij->bij", nll, pos_count),
            jnp.einsum("bkj,kij->bij", nll, neg_count))


def learn_graph(key, z1, z2, interventions, settings: EncoSettings = EncoSettings()) -> EncoResult:
    """ENCO on one member: observational codes z1 [N, d], interventional codes z2 [N', d] and
    their intervention masks [N', d] (1 = intervened). Jit and vmap it from outside."""
    s = settings
    n1, dim = z1.shape
    n2 = z2.shape[0]
    interventions = interventions.astype(jnp.float32)
    if not s.reference_quirks:  # standardise with z1's statistics, which the reference skips
        mean, std = jnp.mean(z1, 0), jnp.std(z1, 0, ddof=1)
        z1, z2 = (z1 - mean) / std, (z2 - mean) / std
    net_opt, gamma_opt, theta_opt = _optimizers(s)
    k_init, k_loop = jax.random.split(key)
    params = init_network(k_init, dim, s.hidden, s.reference_quirks)
    gamma = theta = NEVER * jnp.eye(dim)
    use_parent_sets = 2 ** (dim - 1) < s.num_graph_samples
    off_diagonal = 1.0 - jnp.eye(dim)

    def edge_probs(gamma, theta):
        return jax.nn.sigmoid(gamma) * jax.nn.sigmoid(theta)

    def dist_step(carry, inputs):
        params, opt_state, gamma, theta, nonfinite = carry
        key, idx, w = inputs
        z = z1[idx]
        graphs = jax.random.bernoulli(key, edge_probs(gamma, theta), (idx.shape[0], dim, dim))

        def loss_fn(params):
            nll = conditional_nll(params, z, jnp.swapaxes(graphs, -1, -2).astype(jnp.float32))
            return jnp.sum(w * jnp.mean(nll, -1)) / jnp.sum(w)

        grads = jax.grad(loss_fn)(params)
        grads, norm = _torch_clip(grads, s.clip_norm)
        updates, new_opt_state = net_opt.update(grads, opt_state, params)
        ok = jnp.isfinite(norm)  # the reference raises here (error_if_nonfinite); we skip
        params, opt_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(ok, new, old),
            (optax.apply_updates(params, updates), new_opt_state), (params, opt_state))
        return (params, opt_state, gamma, theta, nonfinite + (~ok).astype(jnp.int32)), None

    def graph_step(carry, inputs):
        params, gamma, theta, g_state, t_state = carry
        key, idx, w = inputs
        z, targets = z2[idx], interventions[idx]
        graphs = jax.random.bernoulli(key, edge_probs(gamma, theta),
                                      (s.num_graph_samples, dim, dim)).astype(jnp.float32)
        pos_sum, neg_sum = _graph_nll_sums(params, z, graphs, use_parent_sets)
        n_pos = jnp.sum(graphs, 0)
        n_neg = s.num_graph_samples - n_pos
        mask = ((n_pos > 0) & (n_neg > 0)).astype(jnp.float32)
        diff = pos_sum / jnp.maximum(n_pos, 1e-5) - neg_sum / jnp.maximum(n_neg, 1e-5)
        sg, st = jax.nn.sigmoid(gamma), jax.nn.sigmoid(theta)
        g_grad = mask * st * sg * (1 - sg) * (diff + s.lambda_sparse)
        g_grad = g_grad * (1 - targets[:, None, :]) * off_diagonal
        t_grad = mask * sg * st * (1 - st) * diff
        t_grad = t_grad * targets[:, :, None] * (1 - targets[:, :, None] * targets[:, None, :])
        t_grad = t_grad - jnp.swapaxes(t_grad, 1, 2)
        mean_rows = lambda g: jnp.einsum("b,bij->ij", w, g) / jnp.sum(w)  # noqa: E731
        g_upd, g_state = gamma_opt.update(mean_rows(g_grad), g_state)
        t_upd, t_state = theta_opt.update(mean_rows(t_grad), t_state)
        return (params, gamma + g_upd, theta + t_upd, g_state, t_state), None

    def dist_epoch(key, carry):
        k_perm, k_steps = jax.random.split(key)
        idx, w = _epoch_batches(k_perm, n1, s.dist_batch, s.dist_max_steps)
        keys = jax.random.split(k_steps, idx.shape[0])
        return jax.lax.scan(dist_step, carry, (keys, idx, w))[0]

    def graph_epoch(key, carry):
        k_perm, k_steps = jax.random.split(key)
        idx, w = _epoch_batches(k_perm, n2, s.graph_batch, s.graph_max_steps)
        keys = jax.random.split(k_steps, idx.shape[0])
        return jax.lax.scan(graph_step, carry, (keys, idx, w))[0]

    def saturated(gamma):
        sg = jax.nn.sigmoid(gamma)
        return jnp.max(sg * (1 - sg)) < s.saturation

    # One loop over all epochs, so each kind of epoch is compiled once: the first
    # `pretrain_epochs` fit the densities only; after them, a member whose gamma is saturated
    # stops (the reference's loop `continue`s: nothing changes any more) while others go on.
    def epoch_body(epoch, carry):
        dist, g_state, t_state, main_epochs = carry
        k_dist, k_graph = jax.random.split(jax.random.fold_in(k_loop, epoch))
        main = epoch >= s.pretrain_epochs
        active = ~(main & saturated(dist[2]))
        new_dist = dist_epoch(k_dist, dist)
        params, opt_state, gamma, theta, nonfinite = new_dist

        def fit_graph(args):
            return graph_epoch(k_graph, args)
        params, gamma, theta, g_new, t_new = jax.lax.cond(
            main, fit_graph, lambda args: args, (params, gamma, theta, g_state, t_state))
        new = ((params, opt_state, gamma, theta, nonfinite), g_new, t_new,
               main_epochs + main.astype(jnp.int32))
        return jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new,
                                      (dist, g_state, t_state, main_epochs))

    carry = ((params, net_opt.init(params), gamma, theta, jnp.int32(0)), gamma_opt.init(gamma),
             theta_opt.init(theta), jnp.int32(0))
    dist, _, _, epochs = jax.lax.fori_loop(0, s.pretrain_epochs + s.epochs, epoch_body, carry)
    _, _, gamma, theta, nonfinite = dist
    adjacency = ((theta > 0) & (gamma > 0)).astype(jnp.int32)
    return EncoResult(adjacency, gamma, theta, epochs, nonfinite)
