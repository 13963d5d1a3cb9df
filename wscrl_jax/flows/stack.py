"""The reference's coupling-flow stack (`ws_crl/transforms.py: make_scalar_transform`) as a
Flax module holding the conditioner parameters.

For i in 0..layers-1: a fixed random permutation, then a coupling layer on the alternating mask
(even features when i is even); then a last permutation and, with `sigmoid`, a sigmoid.
The permutations are drawn from `permutation_seed` with numpy (the reference draws them with
torch's global generator at construction: other permutations, same distribution).
"""

import distrax
import flax.linen as nn
import numpy as np

from wscrl_jax.flows.bijectors import Permutation
from wscrl_jax.flows.coupling import (TRANSFORMS, ResidualNet, alternating_mask, coupling,
                                      params_per_feature)


class CouplingStack(nn.Module):
    """Invertible map R^d -> R^d; `forward_and_log_det(x [..., d])` -> (y [..., d], log|det J|
    [...]), `inverse_and_log_det(y)` likewise. Fields as `make_scalar_transform`."""

    features: int
    layers: int = 3
    hidden: int = 10
    transform_blocks: int = 1
    transform: str = "affine"
    bins: int = 10
    tail_bound: float = 10.0
    sigmoid: bool = False
    permutation_seed: int = 0

    def setup(self):
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform={self.transform!r} must be one of {TRANSFORMS}")
        if self.features < 2:
            raise ValueError(f"a coupling flow needs at least 2 features, got {self.features}")
        masks = [alternating_mask(self.features, i % 2 == 0) for i in range(self.layers)]
        self.nets = [ResidualNet(self.hidden,
                                 int(m.sum()) * params_per_feature(self.transform, self.bins),
                                 self.transform_blocks) for m in masks]
        self.masks = masks

    def bijector(self) -> distrax.Chain:
        rng = np.random.default_rng(self.permutation_seed)
        parts = []
        for mask, net in zip(self.masks, self.nets):
            parts += [Permutation(rng.permutation(self.features)),
                      coupling(mask, net, self.transform, self.bins, self.tail_bound)]
        parts.append(Permutation(rng.permutation(self.features)))
        if self.sigmoid:
            parts.append(distrax.Block(distrax.Sigmoid(), 1))
        return distrax.Chain(parts[::-1])  # distrax.Chain applies its last bijector first

    def __call__(self, x):
        return self.forward_and_log_det(x)

    def forward_and_log_det(self, x):
        return self.bijector().forward_and_log_det(x)

    def inverse_and_log_det(self, y):
        return self.bijector().inverse_and_log_det(y)
