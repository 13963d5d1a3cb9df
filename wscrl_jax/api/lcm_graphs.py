"""The causal graphs of a loaded WS-CRL model: the graph it trained with (`learned`), and the
post-hoc ENCO and implicit graphs, either as the run's evaluation found them
(WORKDIR/metrics/test_metrics*.csv) or computed afresh on given observations
(`lcm/graphs.py`), with the matching of model variables to the true ones where the run knew
the true graph."""

import os
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from wscrl_jax.api.errors import APIError
from wscrl_jax.eval.graph_match import to_true_order
from wscrl_jax.lcm import graphs as lcm_graphs
from wscrl_jax.tracking import read_csv

GRAPH_KINDS = ("learned", "enco", "implicit")


class Graph(NamedTuple):
    """A graph over the model's causal variables (A[i, j] = 1: edge i -> j), per member
    ([M, ...] where the model has several members).

    adjacency [d, d] (int 0/1; the implicit graph thresholded at the run's
    `eval.implicit_graph_threshold`); strength [d, d]: the implicit graph's effect strengths
    (None for the others); matching [d]: the true variable of each model variable (None where
    unknown); true_adjacency [d, d] and in_true_order [d, d] (the adjacency relabelled to the
    true variables) where the run knew the truth."""

    kind: str
    adjacency: np.ndarray
    strength: Optional[np.ndarray]
    matching: Optional[np.ndarray]
    true_adjacency: Optional[np.ndarray]
    in_true_order: Optional[np.ndarray]


def metric_rows(workdir: str, step: int, indices, latest: Optional[int]):
    """The run's metric rows of the members `indices` at `step` (test_metrics.csv for the
    newest step, test_metrics_step<S>.csv otherwise), or None where not written."""
    name = "test_metrics.csv" if step == latest else f"test_metrics_step{step}.csv"
    path = os.path.join(workdir, "metrics", name)
    if not os.path.isfile(path):
        return None
    rows = read_csv(path)
    if len(rows) <= max(indices):
        return None
    return [rows[i] for i in indices]


def _matrix(row, prefix, dim, cast=float):
    try:
        return np.array([[cast(float(row[f"{prefix}_{i}_{j}"])) for j in range(dim)]
                         for i in range(dim)])
    except (KeyError, ValueError):
        return None


def graph_from_rows(kind: str, rows, dim: int, threshold: float, learned=None) -> Graph:
    """The graphs of the metric rows (one per member), stacked [M, ...]."""
    strengths = adjacencies = None
    if kind == "learned":
        adjacencies = [np.asarray(a, np.int32) for a in learned]
    else:
        prefix = "implicit_graph" if kind == "implicit" else "enco_graph"
        matrices = [_matrix(r, prefix, dim) for r in rows]
        if any(m is None for m in matrices):
            raise APIError(f"the run's evaluation holds no {kind} graph (eval.graphs off, or "
                           f"more than 5 variables for the implicit graph); pass observations "
                           f"to graph({kind!r}, x1=..., x2=...) to compute it")
        if kind == "implicit":
            strengths = matrices
            adjacencies = [(m > threshold).astype(np.int32) for m in matrices]
        else:
            adjacencies = [m.astype(np.int32) for m in matrices]
    return _with_truth(kind, adjacencies, strengths, rows, dim)


def _with_truth(kind, adjacencies, strengths, rows, dim) -> Graph:
    matching = truth = ordered = None
    if rows is not None:
        matchings = [_matching(r, dim) for r in rows]
        truths = [_matrix(r, "true_graph", dim, int) for r in rows]
        if all(m is not None for m in matchings) and all(t is not None for t in truths):
            matching, truth = np.stack(matchings), np.stack(truths).astype(np.int32)
            ordered = np.stack([to_true_order(a, m) for a, m in zip(adjacencies, matchings)])
    return Graph(kind, np.stack(adjacencies), None if strengths is None else np.stack(strengths),
                 matching, truth, ordered)


def _matching(row, dim):
    try:
        return np.array([int(float(row[f"graph_matching_{k}"])) for k in range(dim)])
    except (KeyError, ValueError):
        return None


def compute_graph(method, variables, kind: str, x1, x2, seed: int, rows) -> Graph:
    """ENCO (pairs x1, x2 [M, N, dim_x]) or the implicit graph (x1) of every member afresh,
    with the run's evaluation settings; matched to the truth through the run's matching where
    its metric rows have one."""
    cfg = method.config.eval
    params, model_state = variables["params"], variables["model_state"]
    members = x1.shape[0]
    keys = jax.vmap(lambda m: jax.random.fold_in(jax.random.PRNGKey(seed), m))(
        jnp.arange(members))
    strengths = None
    if kind == "enco":
        result = jax.device_get(lcm_graphs._enco_graphs(
            method, params, model_state, {"x1": jnp.asarray(x1), "x2": jnp.asarray(x2)}, keys,
            lcm_graphs.enco_settings(cfg)))
        adjacencies = list(np.asarray(result.adjacency, np.int32))
    else:
        effects, _ = jax.device_get(lcm_graphs._implicit_graphs(
            method, params, model_state, jnp.asarray(x1), keys,
            bool(cfg.implicit_graph_fix_direction)))
        strengths = list(np.asarray(effects))
        threshold = float(cfg.implicit_graph_threshold)
        adjacencies = [(e > threshold).astype(np.int32) for e in strengths]
    return _with_truth(kind, adjacencies, strengths, rows, method.dim_z)


def learned_adjacency(method, variables):
    """Hard adjacency [M, d, d] of every member's learned graph parameters."""
    return np.asarray(jax.device_get(lcm_graphs._learned_graphs(method, variables["params"])))
