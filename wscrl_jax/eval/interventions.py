"""Metrics of the intervention posterior q(I | x1, x2) against the true targets
(`experiments/scaling.py: evaluate`, `ws_crl/metrics.py`)."""

import itertools

import numpy as np


def label_permutations(dim_z: int):
    """All relabellings of targets 1..d with label 0 (no intervention) fixed: [d!, d+1]."""
    return np.array([(0,) + p for p in itertools.permutations(range(1, dim_z + 1))])


def intervention_metrics(q: np.ndarray, true_labels: np.ndarray, dim_z: int) -> dict:
    """Host-side intervention-posterior metrics, in the reference's column order.

    q [N, K] posterior over targets, true_labels [N]. The correct-target metrics are each
    maximised independently over relabellings of targets 1..d (label 0 fixed); only for
    dim_z <= 5, as in the reference.
    """
    q = np.asarray(q, np.float64)
    argmax = q.argmax(-1)
    hist = np.bincount(argmax, minlength=q.shape[1]) / len(argmax)
    out = {"intervention_entropy": float(-(q.mean(0) * np.log(q.mean(0) + 1e-9)).sum()),
           "intervention_entropy_deterministic": float(-(hist * np.log(hist + 1e-9)).sum())}
    if dim_z > 5:
        return out
    for k in range(q.shape[1]):
        out[f"intervention_posterior_{k}"] = float(q[:, k].mean())
    best_log, best_post, best_acc = -np.inf, -np.inf, -np.inf
    rows = np.arange(len(true_labels))
    for mapping in label_permutations(dim_z):
        q_true = q[rows, mapping[true_labels]]
        best_log = max(best_log, float(np.log(q_true + 1e-9).mean()))
        best_post = max(best_post, float(q_true.mean()))
        best_acc = max(best_acc, float((argmax == mapping[true_labels]).mean()))
    out.update({"intervention_correct_log_posterior": best_log,
                "intervention_correct_posterior": best_post, "intervention_accuracy": best_acc})
    return out
