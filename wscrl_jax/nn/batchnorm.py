"""Batch normalisation with `torch.nn.BatchNorm1d` / `BatchNorm2d` semantics and a row mask.

Differences from `flax.linen.BatchNorm` that matter when reproducing a PyTorch model:

* torch's `momentum` weighs the *new* batch statistic: `running = (1 - m) * running + m * batch`
  (flax's `momentum` is the weight of the old value).
* torch normalises with the biased batch variance but stores the *unbiased* one
  (`n / (n - 1)` times it, `n` = elements counted per channel) in the running variance.

A row mask lets a padded batch behave as the batch of its valid rows: rows with a false mask
are normalised like the others but add nothing to the batch statistics.
"""

from typing import Optional

import flax.linen as nn
import jax.numpy as jnp


class TorchBatchNorm(nn.Module):
    """`torch.nn.BatchNorm{1,2}d` over the last (feature) axis.

    x [B, ..., C] -> [B, ..., C]: [B, C] is BatchNorm1d, NHWC [B, H, W, C] is BatchNorm2d.
    params: `scale` [C] (ones), `bias` [C] (zeros); `batch_stats`: `mean` [C] (zeros),
    `var` [C] (ones).

    `train=True`: normalise with the batch mean and biased variance over every axis but the
    last, counting only rows whose `mask` [B] is true (None: every row); the running statistics
    are updated when `batch_stats` is mutable (not during `init`). `train=False`: normalise
    with the running statistics.
    """

    momentum: float = 0.1
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x, train: bool, mask: Optional[jnp.ndarray] = None):
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)

        if train:
            mean, var = self._batch_stats(x, mask)
            if self.is_mutable_collection("batch_stats") and not self.is_initializing():
                count = self._count(x, mask)
                unbiased = var * count / jnp.maximum(count - 1.0, 1.0)
                m = self.momentum
                ra_mean.value = (1.0 - m) * ra_mean.value + m * mean
                ra_var.value = (1.0 - m) * ra_var.value + m * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value

        inv = scale * jnp.reciprocal(jnp.sqrt(var + self.eps))
        y = (x.astype(jnp.float32) - mean) * inv + bias
        return y.astype(x.dtype)

    @staticmethod
    def _valid(x, mask):
        """Mask [B] as a bool array broadcastable against x [B, ..., C], or None."""
        if mask is None:
            return None
        valid = jnp.asarray(mask) != 0
        return valid.reshape((x.shape[0],) + (1,) * (x.ndim - 1))

    @classmethod
    def _count(cls, x, mask):
        """Elements counted per channel (float32): valid rows times the positions per row."""
        per_row = 1
        for d in x.shape[1:-1]:
            per_row *= d
        if mask is None:
            return jnp.asarray(float(x.shape[0] * per_row), jnp.float32)
        valid = cls._valid(x, mask)
        return jnp.sum(valid.astype(jnp.float32)) * per_row

    @classmethod
    def _batch_stats(cls, x, mask):
        """Masked mean and biased variance per channel, float32, two passes."""
        xf = x.astype(jnp.float32)
        valid = cls._valid(x, mask)
        axes = tuple(range(x.ndim - 1))
        denom = jnp.maximum(cls._count(x, mask), 1.0)  # no rows counted: zeros, not NaN

        def masked_sum(v):
            # where, not multiply: a non-finite value in an excluded row must not leak in
            return jnp.sum(v if valid is None else jnp.where(valid, v, 0.0), axis=axes)

        mean = masked_sum(xf) / denom
        var = masked_sum(jnp.square(xf - mean)) / denom
        return mean, var
