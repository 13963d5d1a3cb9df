"""Gradient-boosted regression trees in JAX, split for split as scikit-learn's defaults.

What DCI needs (reference: ``ws_crl/metrics.py: compute_dci``):
``sklearn.ensemble.GradientBoostingRegressor()`` with its defaults -- squared error, initial
prediction the mean, 100 stages of one depth-3 regression tree on the residuals, learning rate 0.1,
exact ("best") split search over every feature, thresholds at midpoints, ``min_samples_leaf`` 1 --
and its impurity-based ``feature_importances_``. This module fits those trees as pure array
programs, so that :func:`fit` can be mapped over true factors and sweep members and compiled once
(``wscrl_jax/eval/dci.py``).

How it matches scikit-learn (``sklearn/tree/_splitter.pyx``, ``_criterion.pyx``,
``ensemble/_gb.py``):

* features are compared as float32 (scikit-learn casts ``X`` to float32), everything else --
  residuals, sums, thresholds, predictions -- is float64 (the fit runs under ``jax.enable_x64``);
* a split may fall between neighbouring values of a node only where the larger exceeds the smaller
  by more than ``FEATURE_THRESHOLD`` (1e-7); its threshold is their midpoint, or the smaller value
  where the midpoint rounds to the larger;
* the best split maximises the squared-error proxy ``S_l^2 / N_l + S_r^2 / N_r``; ``friedman_mse``
  ranks the splits of a node identically (scikit-learn 1.9 dropped the option for that reason);
* a node is a leaf below 2 samples, at impurity <= float64 eps, without a valid split, or at depth
  3; leaves predict the mean residual;
* importances: each split adds ``N imp - N_l imp_l - N_r imp_r`` (here ``S_l^2/N_l + S_r^2/N_r -
  S^2/N``, the same quantity without the sums of squares) to its feature, summed over the trees
  and normalised to sum 1 (zeros when no tree splits).

The one difference: among splits with *exactly* equal proxies scikit-learn keeps the first in a
random feature order (``random_state``); here the lowest feature index wins. Within a feature both
keep the lowest position.

Layout: the trees are full binary trees of ``max_depth`` levels; node k of level l has index
``2**l - 1 + k``, its children are nodes 2k and 2k+1 of level l+1. A node that does not split
sends all its samples to its left child (threshold +inf), so every sample ends in one of the
``2**max_depth`` leaves.

Shapes: n training samples, m evaluated samples, p features.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

FEATURE_THRESHOLD = 1.0e-7  # sklearn/tree/_splitter.pyx: nearer values count as one value
EPSILON = float(np.finfo(np.float64).eps)  # a node at or below this impurity is a leaf
LEARNING_RATE = 0.1  # scikit-learn's default


class SortedFeatures(NamedTuple):
    """Per feature, the training samples in ascending order (computed once, shared by all fits
    on the same inputs).

    order: [p, n] int32, the sample at each sorted position.
    values: [p, n] float32, the feature values in that order.
    """
    order: jax.Array
    values: jax.Array


class Trees(NamedTuple):
    """The boosted trees, stacked over stages T.

    feature: [T, 2**depth - 1] int32, the feature a node splits on (0 where it does not split).
    threshold: [T, 2**depth - 1] float64, samples with value <= threshold go left (+inf: the node
        does not split).
    value: [T, 2**depth] float64, the leaf predictions (mean residual; 0 for empty leaves).
    """
    feature: jax.Array
    threshold: jax.Array
    value: jax.Array


def sort_features(x) -> SortedFeatures:
    """x: [n, p] -> SortedFeatures. Casts x to float32 as scikit-learn does."""
    values = jnp.asarray(x, jnp.float32).T
    order = jnp.argsort(values, axis=1, stable=True).astype(jnp.int32)
    return SortedFeatures(order, jnp.take_along_axis(values, order, axis=1))


_BLOCK = 32


def cumsum(values):
    """Running sums along the last axis of a float array [..., n], as two levels of
    block-triangular matrix products (blocks of 32, then blocks of 32 block totals) and a short
    running sum over the rest.

    Same values as ``jnp.cumsum`` up to float64 rounding (the order of additions differs), and
    on XLA's CPU backend several times faster: its running sum (a reduce-window) is slow per
    element and would dominate the cost of the trees. Counts (sums of 0/1 values) are exact below
    2**53 in float64 and 2**24 in float32.
    """
    *batch, n = values.shape
    size = -(-n // _BLOCK ** 2) * _BLOCK ** 2
    padded = jnp.pad(values, [(0, 0)] * len(batch) + [(0, size - n)])
    upper = jnp.triu(jnp.ones((_BLOCK, _BLOCK), values.dtype))

    def within_blocks(v):  # [..., m] -> (running sums within blocks of 32, block totals)
        blocks = v.reshape(*v.shape[:-1], -1, _BLOCK)
        inner = jnp.einsum("...bi,ij->...bj", blocks, upper,
                           precision=jax.lax.Precision.HIGHEST)
        return inner, inner[..., -1]

    inner, totals = within_blocks(padded)  # [..., size/32, 32], [..., size/32]
    inner2, totals2 = within_blocks(totals)  # [..., size/1024, 32], [..., size/1024]
    outer2 = jnp.cumsum(totals2, axis=-1) - totals2
    before_block = (inner2 + outer2[..., None]).reshape(totals.shape) - totals
    return (inner + before_block[..., None]).reshape(*batch, size)[..., :n]


def _node_sums(values, node, num_nodes):
    """Per node, the sum of `values` [n] over its samples: [K] (masked sums: for the few nodes
    of a depth-3 tree XLA runs these faster than a scatter-add)."""
    members = node[None] == jnp.arange(num_nodes, dtype=node.dtype)[:, None]
    return jnp.sum(jnp.where(members, values[None], 0.0), axis=1)


def _materialize(tree, anchor):
    """`tree` computed once, before its consumers: a conditional (on `anchor >= 0`, always true
    but unknown to XLA) that XLA cannot fuse into the loops reading the values."""
    return jax.lax.cond(anchor >= 0, lambda t: t,
                        lambda t: jax.tree_util.tree_map(jnp.zeros_like, t), tree)


def _at_nodes(values, node):
    """values [..., K] read at each position's node (node [n] int) -> [..., n]: a chain of
    selects for the few nodes of a shallow tree (XLA's CPU gathers cost several ns a value)."""
    num_nodes = values.shape[-1]
    if num_nodes > 4:
        return values[..., node]
    out = jnp.broadcast_to(values[..., :1], values.shape[:-1] + node.shape)
    for k in range(1, num_nodes):
        out = jnp.where(node == k, values[..., k:k + 1], out)
    return out


def _first_argmax(values):
    """Index of the first maximum along the last axis (argmax, written as two plain reductions,
    which XLA's CPU backend runs several times faster than its variadic argmax)."""
    best = jnp.max(values, axis=-1, keepdims=True)
    index = jnp.arange(values.shape[-1], dtype=jnp.int32)
    return jnp.min(jnp.where(values == best, index, values.shape[-1]), axis=-1)


class _Level(NamedTuple):
    """The training samples of one level, per feature grouped by node (nodes in order, each
    node's samples in ascending feature value): a node is a contiguous segment of positions.

    perm: [p, n] int32 sample at each position; values: [p, n] float32 its feature value;
    start, end: [K] int32 the segment of each node (the same for every feature);
    node: [n] int32 the node of each position.
    """
    perm: jax.Array
    values: jax.Array
    start: jax.Array
    end: jax.Array
    node: jax.Array


def _level(perm, values, start, end) -> _Level:
    position = jnp.arange(perm.shape[1], dtype=jnp.int32)
    node = jnp.sum(position[:, None] >= end[None, :], axis=1, dtype=jnp.int32)
    return _Level(perm, values, start, end, jnp.minimum(node, start.shape[0] - 1))


class _Splits(NamedTuple):
    """The chosen split of every node of a level, [K] each: whether it splits, on which feature
    at which threshold, its gain (N imp - N_l imp_l - N_r imp_r), the node's residual sum and
    count, and those of its left part (all of the node where it does not split)."""
    has_split: jax.Array
    feature: jax.Array
    threshold: jax.Array
    gain: jax.Array
    sum_node: jax.Array
    count_node: jax.Array
    sum_left: jax.Array
    count_left: jax.Array


def _best_splits(level: _Level, residual, squares, parent_split) -> _Splits:
    """The best split of each of the K nodes of a level.

    residual: [n] float64; squares: [K] the nodes' sums of squared residuals; parent_split:
    [K] bool, False below a node that did not split (such a node stays a leaf).
    """
    p, n = level.perm.shape
    num_nodes = level.start.shape[0]
    node = level.node
    running = cumsum(residual[level.perm])  # [p, n]
    running0 = jnp.pad(running, ((0, 0), (1, 0)))
    before = running0[:, level.start]  # [p, K]: running sum before each node's segment
    sum_node = running0[0, level.end] - before[0]  # [K]
    count_node = (level.end - level.start).astype(jnp.float64)
    safe = jnp.maximum(count_node, 1.0)
    impurity = squares / safe - (sum_node / safe) ** 2  # scikit-learn's node_impurity
    splittable = parent_split & (count_node >= 2) & (impurity > EPSILON)
    before, sum_node, count_node, splittable = _materialize(
        (before, sum_node, count_node, splittable), level.end[0])

    sum_left = running - _at_nodes(before, node)
    position = jnp.arange(n, dtype=jnp.int32)
    n_left = (position - _at_nodes(level.start, node) + 1).astype(jnp.float64)
    n_right = _at_nodes(count_node, node) - n_left
    sum_right = _at_nodes(sum_node, node) - sum_left
    # a split may fall between a node's neighbouring values more than FEATURE_THRESHOLD apart
    values = level.values.astype(jnp.float64)  # as scikit-learn: float32 + 1e-7 in double
    gap = jnp.pad(values[:, 1:] > values[:, :-1] + FEATURE_THRESHOLD, ((0, 0), (0, 1)))
    valid = gap & (n_right > 0) & _at_nodes(splittable, node)
    proxy = jnp.where(valid, sum_left ** 2 / n_left + sum_right ** 2 / jnp.maximum(n_right, 1.0),
                      -jnp.inf)  # [p, n]
    # computed once: XLA would otherwise fuse the proxy into each reduction below
    proxy = _materialize(proxy, level.end[0])
    in_node = node[None, :] == jnp.arange(num_nodes)[:, None]  # [K, n]
    feature_best = jnp.max(jnp.where(in_node[None], proxy[:, None, :], -jnp.inf), axis=2)  # [p, K]
    best_proxy = jnp.max(feature_best, axis=0)  # [K]
    feature = _first_argmax(feature_best.T).astype(jnp.int32)  # lowest feature among equals
    pos = _first_argmax(jnp.where(in_node, proxy[feature], -jnp.inf))  # then lowest position
    has_split = best_proxy > -jnp.inf
    lo = values[feature, pos]
    hi = values[feature, jnp.minimum(pos + 1, n - 1)]
    mid = lo / 2.0 + hi / 2.0
    threshold = jnp.where((mid == hi) | jnp.isinf(mid), lo, mid)
    return _Splits(
        has_split=has_split, feature=jnp.where(has_split, feature, 0),
        threshold=jnp.where(has_split, threshold, jnp.inf),
        gain=jnp.where(has_split, best_proxy - sum_node ** 2 / safe, 0.0),
        sum_node=sum_node, count_node=count_node,
        sum_left=jnp.where(has_split, sum_left[feature, pos], sum_node),
        count_left=jnp.where(has_split, n_left[pos], count_node))


def _partition(level: _Level, right) -> _Level:
    """The next level: every node's segment split stably into its left then right child.

    right: [n] bool per sample, True where it goes to the right child.
    """
    p, n = level.perm.shape
    position = jnp.arange(n, dtype=jnp.int32)
    goes_left = ~right[level.perm]  # [p, n]
    # exclusive running count of left-goers, then counted from each node's start (float32
    # matrix products: exact for counts below 2**24)
    lefts = cumsum(goes_left.astype(jnp.float32)).astype(jnp.int32)
    lefts0 = jnp.pad(lefts, ((0, 0), (1, 0)))
    start = _at_nodes(level.start, level.node)
    left_before, n_left_node = _materialize(
        (lefts0[:, level.start], lefts0[0, level.end] - lefts0[0, level.start]), level.end[0])
    rank_left = lefts - goes_left - _at_nodes(left_before, level.node)
    new_position = jnp.where(
        goes_left, start + rank_left,
        start + _at_nodes(n_left_node, level.node) + (position - start) - rank_left)
    # one scatter moves both: the sample index in the high and the value's bits in the low half
    packed = (level.perm.astype(jnp.uint64) << 32) | jax.lax.bitcast_convert_type(
        level.values, jnp.uint32).astype(jnp.uint64)
    flat = (jnp.arange(p, dtype=jnp.int32)[:, None] * n + new_position).reshape(-1)
    packed = jnp.zeros(p * n, packed.dtype).at[flat].set(
        packed.reshape(-1), unique_indices=True).reshape(p, n)
    perm = (packed >> 32).astype(jnp.int32)
    values = jax.lax.bitcast_convert_type((packed & 0xFFFFFFFF).astype(jnp.uint32), jnp.float32)
    middle = level.start + n_left_node
    return _level(perm, values, jnp.stack([level.start, middle], axis=1).reshape(-1),
                  jnp.stack([middle, level.end], axis=1).reshape(-1))


def fit_tree(x, residual, sorted_features: SortedFeatures, max_depth: int):
    """One regression tree on the residuals.

    x: [n, p] float32; residual: [n] float64.
    Returns (feature [2**depth - 1], threshold [2**depth - 1], value [2**depth], leaf [n] int32,
    gain per feature [p]).
    """
    n, p = x.shape
    node = jnp.zeros(n, jnp.int32)
    parent_split = jnp.ones(1, bool)
    level = _level(sorted_features.order, sorted_features.values, jnp.zeros(1, jnp.int32),
                   jnp.full(1, n, jnp.int32))
    features, thresholds = [], []
    gains = jnp.zeros(p, jnp.float64)
    for depth in range(max_depth):
        squares = _node_sums(residual * residual, node, 2 ** depth)
        splits = _materialize(_best_splits(level, residual, squares, parent_split), node[0])
        gains = gains.at[splits.feature].add(splits.gain)
        features.append(splits.feature)
        thresholds.append(splits.threshold)
        right = (x[jnp.arange(n), _at_nodes(splits.feature, node)].astype(jnp.float64)
                 > _at_nodes(splits.threshold, node))
        node = 2 * node + right.astype(jnp.int32)
        parent_split = jnp.repeat(splits.has_split, 2)
        if depth + 1 < max_depth:
            level = _partition(level, right)
    # leaves: the two parts of every last-level node (the right part empty where it did not split)
    sums = jnp.stack([splits.sum_left, splits.sum_node - splits.sum_left], axis=1).reshape(-1)
    counts = jnp.stack([splits.count_left, splits.count_node - splits.count_left], 1).reshape(-1)
    value = _materialize(sums / jnp.maximum(counts, 1.0), node[0])
    return (jnp.concatenate(features), jnp.concatenate(thresholds), value, node, gains)


def apply_trees(trees: Trees, x):
    """The leaf of every sample in every tree: x [m, p] -> [T, m] int32."""
    m = x.shape[0]
    max_depth = trees.value.shape[-1].bit_length() - 1  # 2**depth leaves
    x = jnp.asarray(x, jnp.float32)

    def leaves(feature, threshold):
        node = jnp.zeros(m, jnp.int32)
        for level in range(max_depth):
            index = 2 ** level - 1 + node
            right = x[jnp.arange(m), feature[index]].astype(jnp.float64) > threshold[index]
            node = 2 * node + right.astype(jnp.int32)
        return node

    return jax.vmap(leaves)(trees.feature, trees.threshold)


def predict(init, trees: Trees, x, learning_rate: float = LEARNING_RATE):
    """Boosted prediction [m] float64 of x [m, p], stages added in order as scikit-learn does
    (`learning_rate`: the one the trees were fitted with)."""
    leaf = apply_trees(trees, x)
    steps = jnp.take_along_axis(trees.value, leaf, axis=1)  # [T, m]

    def add(prediction, step):
        return prediction + learning_rate * step, None

    return jax.lax.scan(add, jnp.full(x.shape[0], init, jnp.float64), steps)[0]


def fit(x, y, sorted_features: SortedFeatures, *, n_estimators: int = 100,
        learning_rate: float = LEARNING_RATE, max_depth: int = 3):
    """Boosted trees on (x [n, p] -> y [n]).

    Returns (init scalar, Trees, importances [p] float64 summing to 1 (zeros when no tree splits),
    training prediction [n] float64).
    """
    if jax.dtypes.canonicalize_dtype(jnp.float64) != jnp.float64:
        raise RuntimeError("gbrt.fit computes in float64, as scikit-learn: call it (and trace "
                           "it) under `with jax.enable_x64(True):`")
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float64)
    init = jnp.mean(y)

    def stage(carry, _):
        prediction, gains = carry
        feature, threshold, value, leaf, tree_gains = fit_tree(
            x, y - prediction, sorted_features, max_depth)
        prediction = prediction + learning_rate * value[leaf]
        return (prediction, gains + tree_gains), Trees(feature, threshold, value)

    start = (jnp.full_like(y, init), jnp.zeros(x.shape[1], jnp.float64))
    (prediction, gains), trees = jax.lax.scan(stage, start, None, length=n_estimators)
    total = jnp.sum(gains)
    any_split = jnp.any(jnp.isfinite(trees.threshold))
    importances = jnp.where(total > 0, gains / jnp.where(total > 0, total, 1.0),
                            jnp.where(any_split, jnp.nan, 0.0))
    return init, trees, importances, prediction
