"""Metrics of the intervention posterior q(I | x1, x2) against the true targets
(`experiments/scaling.py: evaluate`, `ws_crl/metrics.py`), every member of a sweep at once.

Host numpy in float64, as the reference: the arrays are small ([members, N, d + 1]), numpy
runs them quickly, and a compiled version costs more to compile than to run.
"""

import itertools
from typing import List

import numpy as np


def label_permutations(dim_z: int):
    """All relabellings of targets 1..d with label 0 (no intervention) fixed: [d!, d+1]."""
    return np.array([(0,) + p for p in itertools.permutations(range(1, dim_z + 1))])


def intervention_metrics_members(q, true_labels, dim_z: int) -> List[dict]:
    """Intervention-posterior metrics of every member, in the reference's column order.

    q [M, N, K] posterior over targets, true_labels [M, N]. The correct-target metrics are each
    maximised independently over relabellings of targets 1..d (label 0 fixed); only for
    dim_z <= 5, as in the reference. Members are vectorised; each member's numbers are those of
    the reference's per-member numpy, bit for bit.
    """
    q = np.asarray(q, np.float64)
    true_labels = np.asarray(true_labels)
    num_targets = q.shape[2]
    argmax = q.argmax(-1)  # [M, N]
    hist = (argmax[..., None] == np.arange(num_targets)).sum(1) / argmax.shape[1]  # [M, K]
    mean = q.mean(1)  # [M, K]
    entropy = -(mean * np.log(mean + 1e-9)).sum(-1)
    entropy_deterministic = -(hist * np.log(hist + 1e-9)).sum(-1)
    out = [{"intervention_entropy": float(entropy[m]),
            "intervention_entropy_deterministic": float(entropy_deterministic[m])}
           for m in range(q.shape[0])]
    if dim_z > 5:
        return out
    posterior = np.stack([q[:, :, k].mean(1) for k in range(num_targets)], axis=1)  # [M, K]
    best = np.full((3, q.shape[0]), -np.inf)  # log posterior, posterior, accuracy
    for mapping in label_permutations(dim_z):
        mapped = mapping[true_labels]  # [M, N]
        q_true = np.take_along_axis(q, mapped[..., None], axis=2)[..., 0]
        best = np.maximum(best, [np.log(q_true + 1e-9).mean(1), q_true.mean(1),
                                 (argmax == mapped).mean(1)])
    for m, metrics in enumerate(out):
        metrics.update({f"intervention_posterior_{k}": float(posterior[m, k])
                        for k in range(num_targets)})
        metrics.update({"intervention_correct_log_posterior": float(best[0, m]),
                        "intervention_correct_posterior": float(best[1, m]),
                        "intervention_accuracy": float(best[2, m])})
    return out


def intervention_metrics(q, true_labels, dim_z: int) -> dict:
    """One member's metrics (`intervention_metrics_members`): q [N, K], true_labels [N]."""
    return intervention_metrics_members(np.asarray(q)[None], np.asarray(true_labels)[None],
                                        dim_z)[0]
