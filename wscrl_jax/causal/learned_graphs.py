"""Learned graph parameterisations: ENCO, DDS and fixed order, as pure functions on param dicts.

Mirrors `ws_crl/causal/graph.py` (`LearnedGraph`, `ENCOLearnedGraph`, `DDSLearnedGraph`,
`FixedOrderLearnedGraph`). A graph's parameters are a plain dict of
arrays (the reference's parameter names), so they can sit inside a TrainState and be vmapped
over members. `kind`, `mode` and `n` are static; `tau` may be traced.

Adjacency convention: A[..., i, j] is the edge i -> j. Edge vectors of length d(d-1)/2 fill the
strict upper triangle in the row-major order of `triu_indices(d, 1)`.

* enco: existence `E = U(sigmoid(gamma)) + U(sigmoid(gamma))^T`, orientation
  `O = U(sigmoid(theta)) + U(1 - sigmoid(theta))^T`, soft `A = E * O`,
  hard `(E >= 0.5) * (O >= 0.5)`.
* dds: standard adjacency `A_std = U(sigmoid(gamma))` among ranks, permutation `P` (row r one-hot
  at the node of rank r) from the permutation scores, `A = P^T A_std P`; DAG by construction.
* fixed_order: `A = U(sigmoid(gamma))`, hard `A >= 0.5`; DAG in the index order.

Freezing of the graph parameters (the reference's `freeze` / `unfreeze`) is not handled here.
"""

import math

import jax
import jax.numpy as jnp
import jax.scipy.linalg

from wscrl_jax.causal.gumbel import check_mode, gumbel_bernoulli, sample_permutation

GRAPH_KINDS = ("enco", "dds", "fixed_order")


def _check_kind(kind: str) -> None:
    if kind not in GRAPH_KINDS:
        raise ValueError(f"unknown graph kind {kind!r}; expected one of {GRAPH_KINDS}")


def num_pairs(dim: int) -> int:
    """d(d-1)/2, the number of node pairs."""
    return dim * (dim - 1) // 2


def upper_triangularize(values, dim: int):
    """[..., d(d-1)/2] -> [..., d, d]: values in the strict upper triangle (row-major order),
    0 elsewhere."""
    values = jnp.asarray(values)
    rows, cols = jnp.triu_indices(dim, 1)
    out = jnp.zeros(values.shape[:-1] + (dim, dim), values.dtype)
    return out.at[..., rows, cols].set(values)


def _edge_logits(params, kind):
    return params["edge_logits"] if kind == "fixed_order" else params["edge_existence_logits"]


def graph_dim(params, kind: str) -> int:
    """Number of nodes d, from the (static) parameter shapes."""
    _check_kind(kind)
    if kind == "dds":
        return params["permutation_logits"].shape[-1]
    m = _edge_logits(params, kind).shape[-1]
    return int(round((1 + math.sqrt(1 + 8 * m)) / 2))


def init_graph(key, kind: str, dim: int) -> dict:
    """Parameters of a learned graph on `dim` nodes, initialised like the reference.

    enco: `edge_existence_logits` [d(d-1)/2] ~ N(4, 0.01^2) (edges ~98% likely),
      `edge_orientation_logits` [d(d-1)/2] ~ N(0, 0.01^2).
    dds: `edge_existence_logits` [d(d-1)/2] ~ N(4, 0.01^2), `permutation_logits` [d] ~ N(0, 0.01^2).
    fixed_order: `edge_logits` [d(d-1)/2] ~ N(4, 0.01^2).
    """
    _check_kind(kind)
    m = num_pairs(dim)
    k1, k2 = jax.random.split(key)
    existence = 4.0 + 0.01 * jax.random.normal(k1, (m,), jnp.float32)
    if kind == "fixed_order":
        return {"edge_logits": existence}
    if kind == "enco":
        return {"edge_existence_logits": existence,
                "edge_orientation_logits": 0.01 * jax.random.normal(k2, (m,), jnp.float32)}
    return {"edge_existence_logits": existence,
            "permutation_logits": 0.01 * jax.random.normal(k2, (dim,), jnp.float32)}


def _enco_matrices(existence, orientation, dim):
    """Edge probabilities [..., m] (existence; orientation i -> j for i < j) -> E, O [..., d, d]."""
    upper = upper_triangularize(existence, dim)
    e = upper + jnp.swapaxes(upper, -1, -2)
    o = (upper_triangularize(orientation, dim)
         + jnp.swapaxes(upper_triangularize(1.0 - orientation, dim), -1, -2))
    return e, o


def _permute(permutation, standard):
    """P^T A_std P for P [..., d, d] and A_std [..., d, d]."""
    return jnp.swapaxes(permutation, -1, -2) @ standard @ permutation


def _dds_permutation(params):
    """Most likely permutation [d, d] (argsort of the scores, no noise)."""
    return sample_permutation(None, params["permutation_logits"], mode="deterministic")


def standard_adjacency(params):
    """DDS edge probabilities among ranks, `U(sigmoid(gamma))` [d, d] (strictly upper)."""
    dim = params["permutation_logits"].shape[-1]
    return upper_triangularize(jax.nn.sigmoid(params["edge_existence_logits"]), dim)


def soft_adjacency(params, kind: str):
    """Soft adjacency [d, d], entries in [0, 1] (for dds under the most likely permutation)."""
    dim = graph_dim(params, kind)
    if kind == "enco":
        e, o = _enco_matrices(jax.nn.sigmoid(params["edge_existence_logits"]),
                              jax.nn.sigmoid(params["edge_orientation_logits"]), dim)
        return e * o
    if kind == "dds":
        return _permute(_dds_permutation(params), standard_adjacency(params))
    return upper_triangularize(jax.nn.sigmoid(params["edge_logits"]), dim)


def hard_adjacency(params, kind: str):
    """Binary adjacency [d, d] (float 0/1): edges with probability >= 0.5 (for enco also the
    orientation probability >= 0.5; an orientation logit of exactly 0 keeps both directions)."""
    dim = graph_dim(params, kind)
    if kind == "enco":
        e, o = _enco_matrices(jax.nn.sigmoid(params["edge_existence_logits"]),
                              jax.nn.sigmoid(params["edge_orientation_logits"]), dim)
        return ((e >= 0.5) & (o >= 0.5)).astype(e.dtype)
    if kind == "dds":
        standard = standard_adjacency(params)
        return _permute(_dds_permutation(params), (standard >= 0.5).astype(standard.dtype))
    soft = soft_adjacency(params, kind)
    return (soft >= 0.5).astype(soft.dtype)


def _sample_random(key, params, kind, n, hard, tau):
    """Gumbel samples (modes hard / soft): ([n, d, d], log_prob [n] or None)."""
    dim = graph_dim(params, kind)
    k_edges, k_other = jax.random.split(key)
    edge_logits = jnp.broadcast_to(_edge_logits(params, kind), (n, num_pairs(dim)))
    edges, edge_log_prob = gumbel_bernoulli(k_edges, edge_logits, tau, hard)
    if kind == "fixed_order":
        return upper_triangularize(edges, dim), jnp.sum(edge_log_prob, axis=-1)
    if kind == "enco":
        orient_logits = jnp.broadcast_to(params["edge_orientation_logits"], edge_logits.shape)
        orientation, _ = gumbel_bernoulli(k_other, orient_logits, tau, hard)
        e, o = _enco_matrices(edges, orientation, dim)
        return e * o, None
    # dds: the permutation is always a hard, Gumbel-perturbed sample at temperature 1 (as in the
    # DDS paper), whatever the mode and temperature of the edges.
    permutation = sample_permutation(k_other, params["permutation_logits"], tau=1.0,
                                     mode="hard", sample_shape=(n,))
    return _permute(permutation, upper_triangularize(edges, dim)), None


def sample_adjacency(key, params, kind: str, n: int, mode: str = "hard", tau=1.0):
    """Samples n adjacency matrices.

    Modes (as the reference's `sample_adjacency_matrices`):
      hard: straight-through Gumbel-Bernoulli edges (values 0/1; dds: also a hard permutation).
      soft: relaxed Gumbel-Bernoulli edges in (0, 1) at temperature `tau`.
      deterministic: value `hard_adjacency(params)` repeated n times, gradient of a *random* soft
        sample (`hard + soft - stop_gradient(soft)`), as the reference does; for dds the soft
        sample still uses a random hard permutation.

    Returns:
      adjacency: [n, d, d].
      log_prob: [n], the log-probability of the rounded edge outcomes summed over edges, for
        fixed_order only (for deterministic: that of the soft sample, as the reference); None for
        enco and dds, whose reference methods return no log-probability.
    """
    _check_kind(kind)
    check_mode(mode)
    if mode != "deterministic":
        return _sample_random(key, params, kind, n, mode == "hard", tau)
    soft, log_prob = _sample_random(key, params, kind, n, False, tau)
    hard = jnp.broadcast_to(jax.lax.stop_gradient(hard_adjacency(params, kind)), soft.shape)
    return hard + (soft - jax.lax.stop_gradient(soft)), log_prob


def num_edges(params, kind: str):
    """Expected number of edges (scalar): sum of the soft adjacency (dds: of the standard one)."""
    if kind == "dds":
        return jnp.sum(standard_adjacency(params))
    return jnp.sum(soft_adjacency(params, kind))


def acyclicity_regularizer(adjacency):
    """Squared NOTEARS penalty `(trace(expm(A)) - d)^2`: [..., d, d] -> [...]; 0 iff A is a DAG
    (for non-negative A)."""
    dim = adjacency.shape[-1]
    trace = jnp.trace(jax.scipy.linalg.expm(adjacency), axis1=-2, axis2=-1)
    return (trace - dim) ** 2


def graph_acyclicity(params, kind: str):
    """Acyclicity penalty of a learned graph (scalar): NOTEARS on the soft adjacency for enco; 0
    for dds and fixed_order, which are acyclic by construction."""
    _check_kind(kind)
    if kind == "enco":
        return acyclicity_regularizer(soft_adjacency(params, kind))
    return jnp.zeros((), jnp.float32)


def _matrix_powers(adjacency):
    """A^1, ..., A^(d-1) of [..., d, d], as a list."""
    powers, power = [], adjacency
    for _ in range(1, adjacency.shape[-1]):
        powers.append(power)
        power = power @ adjacency
    return powers


def ancestor_mask(adjacency):
    """Soft ancestor probabilities `1 - prod_{n=1}^{d-1} (1 - A^n)`: [..., d, d] -> [..., d, d].

    Entry [k, i] is the probability that k is an ancestor of i (exact 0/1 for a binary DAG), so
    column i is the ancestor mask of variable i (ILCM with a learned graph, reference 2.6).
    """
    non_ancestor = jnp.ones_like(adjacency)
    for power in _matrix_powers(adjacency):
        non_ancestor = non_ancestor * (1.0 - power)
    return 1.0 - non_ancestor


def non_descendant_mask(adjacency, interventions, eps=1.0e-9):
    """Soft mask of the variables that neither are intervention targets nor descend from one.

    `ND = prod_{n=0}^{d-1} (1 - A^n)` ([k, j]: probability that j is not a descendant of k; the
    n = 0 identity term makes every node its own descendant), then
    `mask_j = exp(sum_k I_k log(ND[k, j] + eps))`. Values below eps are replaced by a
    straight-through zero (value 0, gradient of the unclipped mask), as the reference does.

    Args:
      adjacency: [..., d, d].
      interventions: [..., d] (bool or float), broadcast against the adjacency's batch dims.
      eps: floor inside the log.

    Returns:
      [..., d] float mask.
    """
    dim = adjacency.shape[-1]
    nd = jnp.broadcast_to(1.0 - jnp.eye(dim, dtype=adjacency.dtype), adjacency.shape)
    for power in _matrix_powers(adjacency):
        nd = nd * (1.0 - power)
    weights = jnp.asarray(interventions).astype(adjacency.dtype)[..., :, None]
    mask = jnp.exp(jnp.sum(weights * jnp.log(nd + eps), axis=-2))
    return jnp.where(mask >= eps, mask, mask - jax.lax.stop_gradient(mask))
