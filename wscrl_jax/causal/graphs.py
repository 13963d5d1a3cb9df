"""Ground-truth DAGs (`ws_crl/causal/graph.py: create_graph`, `ws_crl/utils.py`).

Adjacency convention: A[i, j] = 1 means an edge i -> j. Graphs are upper triangular.
"""

import numpy as np

GRAPH_MODES = ("random", "full", "chain", "empty")


def upper_triangularize(values: np.ndarray, dim: int) -> np.ndarray:
    """Scatters d(d-1)/2 values into the strict upper triangle in row-major order."""
    out = np.zeros((dim, dim), dtype=np.asarray(values).dtype)
    out[np.triu_indices(dim, k=1)] = values
    return out


def create_graph(dim_z: int, mode: str, edge_seed: int) -> np.ndarray:
    """Adjacency [d, d] (bool). 'random' draws each edge with p = 1/2 from numpy's
    `default_rng(edge_seed).integers(0, 2, d(d-1)/2)`, like the reference."""
    n_edges = dim_z * (dim_z - 1) // 2
    if mode == "full":
        return upper_triangularize(np.ones(n_edges, bool), dim_z)
    if mode == "empty":
        return np.zeros((dim_z, dim_z), bool)
    if mode == "chain":
        return np.eye(dim_z, k=1, dtype=bool)
    if mode == "random":
        edges = np.random.default_rng(edge_seed).integers(0, 2, size=n_edges).astype(bool)
        return upper_triangularize(edges, dim_z)
    raise ValueError(f"unknown graph mode {mode!r}; expected one of {GRAPH_MODES}")


def topological_sort(adjacency: np.ndarray) -> list:
    """Layered Kahn order: each round takes all remaining nodes without remaining parents,
    in increasing index order (`ws_crl/utils.py: topological_sort`)."""
    a = np.asarray(adjacency, dtype=bool).copy()
    remaining = list(range(a.shape[0]))
    order = []
    while remaining:
        roots = [j for j in remaining if not a[remaining, j].any()]
        if not roots:
            raise ValueError("graph has a cycle")
        order.extend(roots)
        remaining = [j for j in remaining if j not in roots]
    return order
