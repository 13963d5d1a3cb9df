"""Comparing a learned graph with the true one: latent matching and structural Hamming distance.

A model's latents come in an arbitrary order, so a graph over codes is first carried to the
true variables: code k is matched to the true factor it is most important for, by the
assignment (Hungarian algorithm, `scipy.optimize.linear_sum_assignment`) that maximises the
summed DCI importance `R[k, matching[k]]` (R [d_model, d_true], as in `eval/dci.py`). The
reference reports learned graphs unmatched and no distance.
"""

import numpy as np


def match_latents(importance) -> np.ndarray:
    """matching [d_model]: the true factor of each code (d_model <= d_true)."""
    importance = np.asarray(importance, dtype=np.float64)
    from scipy.optimize import linear_sum_assignment  # here: 0.12 s to import
    rows, cols = linear_sum_assignment(importance, maximize=True)
    matching = np.full(importance.shape[0], -1, dtype=np.int64)
    matching[rows] = cols
    return matching


def to_true_order(adjacency, matching) -> np.ndarray:
    """A graph over codes [d, d] (A[k, l]: edge k -> l) as a graph over the true factors:
    out[matching[k], matching[l]] = A[k, l]."""
    adjacency = np.asarray(adjacency)
    out = np.zeros_like(adjacency)
    out[np.ix_(matching, matching)] = adjacency
    return out


def structural_hamming_distance(learned, true) -> int:
    """Pairs {i, j} whose edges differ: a missing, an extra or a reversed edge counts 1 (a pair
    with edges both ways in one graph and one edge in the other also counts 1).
    Inputs: binary [d, d] with A[i, j] = edge i -> j; the diagonal is ignored."""
    learned, true = np.asarray(learned) != 0, np.asarray(true) != 0
    upper = np.triu_indices(learned.shape[0], k=1)
    differs = (learned[upper] != true[upper]) | (learned.T[upper] != true.T[upper])
    return int(np.sum(differs))
