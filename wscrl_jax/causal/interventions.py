"""Intervention sets and intervention encoders (`ws_crl/causal/interventions.py`)."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from wscrl_jax.nn.mlp import MLP

def intervention_masks(dim_z: int, intervention_set: str = "atomic_or_none") -> np.ndarray:
    """Masks [K, dim_z] (float32): label k -> mask row k.

    atomic_or_none: row 0 empty, row k one-hot at k-1 (K = d+1); atomic: d one-hot rows;
    all: 2^d rows with bit j of the label marking variable j.
    """
    eye = np.eye(dim_z, dtype=np.float32)
    if intervention_set == "atomic_or_none":
        return np.concatenate([np.zeros((1, dim_z), np.float32), eye], 0)
    if intervention_set == "atomic":
        return eye
    if intervention_set == "all":
        labels = np.arange(2 ** dim_z)[:, None]
        return ((labels >> np.arange(dim_z)[None, :]) & 1).astype(np.float32)
    raise ValueError(f"unknown intervention set {intervention_set!r}")


def add_offset(q, offset):
    """(q + offset) / sum(q + offset) over the last axis: keeps every probability positive."""
    q = q + offset
    return q / jnp.sum(q, axis=-1, keepdims=True)


class HeuristicInterventionEncoder(nn.Module):
    """q(I | x1, x2) from Delta = mu2 - mu1: logits [0, a + b|Delta_k| + g Delta_k^2] -> [B, d+1].

    Parameters alpha, beta, gamma start at -3, 15, 15.
    """

    @nn.compact
    def __call__(self, mu1, mu2, offset):
        alpha = self.param("alpha", lambda k: jnp.asarray(-3.0, jnp.float32))
        beta = self.param("beta", lambda k: jnp.asarray(15.0, jnp.float32))
        gamma = self.param("gamma", lambda k: jnp.asarray(15.0, jnp.float32))
        delta = mu2 - mu1
        logits = alpha + beta * jnp.abs(delta) + gamma * jnp.square(delta)
        logits = jnp.concatenate([jnp.zeros_like(logits[:, :1]), logits], axis=-1)
        return add_offset(nn.softmax(logits, axis=-1), offset)


class MLPInterventionEncoder(nn.Module):
    """ReLU MLP on [mu1, mu2 - mu1] with a softmax over the K targets, then the same offset.

    The reference's `mlp` variant cannot be called with the offset (ws-crl gotcha 8); here it is
    made to work by applying the offset like the heuristic encoder does.
    """

    hidden: Sequence[int]
    num_targets: int

    @nn.compact
    def __call__(self, mu1, mu2, offset):
        h = jnp.concatenate([mu1, mu2 - mu1], axis=-1)
        logits = MLP(tuple(self.hidden), out=self.num_targets)(h)
        return add_offset(nn.softmax(logits, axis=-1), offset)
