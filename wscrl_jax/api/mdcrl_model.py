"""A trained MD-CRL autoencoder (mixing, polynomial and balls pipelines) as an object.

Observations: mixing data [N, x_dim]; balls images [N, 64, 64, 3] (uint8, converted to [-1, 1]
as in training, or floats already in [-1, 1]). A two-stage run (`data.dataset = "encoded"`)
composes its stage 1: observations go through the stage-1 encoder, its codes are min-max scaled
with the stage-1 training codes' extrema to stage 2's `data.code_range` (as stage 2's test split
is), and decoding runs the way back. Results are numpy, with a leading member axis where the
model has several members.
"""

from typing import Optional

import numpy as np

from wscrl_jax.api.batching import DEFAULT_CHUNK, IMAGE_CHUNK, MemberRunner
from wscrl_jax.api.errors import as_observations, require
from wscrl_jax.data.encoded import read_member_arrays


def _encode(method, variables, key, x):
    del key
    return method._apply(variables["params"], variables["model_state"], x, train=False,
                         method="encode")[0]


def _decode(method, variables, key, z):
    del key
    return method._apply(variables["params"], variables["model_state"], z, train=False,
                         method="decode")[0]


def _reconstruct(method, variables, key, x):
    del key
    return method._apply(variables["params"], variables["model_state"], x, train=False)[0][1]


class MDCRLModel:
    """See the module docstring. Attributes: config, workdir, step, members, latent (code
    size), invariant_dim (the invariant block: the first `invariant_dim` code coordinates),
    observation_shape, stage1 (the composed stage-1 model or None)."""

    def __init__(self, restored, stage1=None, chunk: Optional[int] = None):
        self.method = restored.method
        self.config = restored.config
        self.workdir, self.step = restored.workdir, restored.step
        self.members, self.member_indices = restored.members, restored.indices
        self.single = restored.single
        self.stage1 = stage1
        self.latent = int(self.method.latent)
        self.invariant_dim = int(self.method.d_inv)
        own_shape = tuple(self.method.input_shape)
        self.observation_shape = stage1.observation_shape if stage1 is not None else own_shape
        self.images = self.method.images
        default = IMAGE_CHUNK if self.images else DEFAULT_CHUNK
        self._runner = MemberRunner(restored.variables, self.single, chunk or default)
        self._fns = {f.__name__: _bound(f, self.method) for f in (_encode, _decode, _reconstruct)}
        self._scale = None
        if stage1 is not None:  # the stage-1 training codes' extrema, as stage 2 scales codes
            d = self.config.data
            _, arrays = read_member_arrays(d.stage1_workdir, int(d.stage1_member), ("z_hat",))
            lo, hi = float(arrays["z_hat_train"].min()), float(arrays["z_hat_train"].max())
            self._scale = (lo, hi, d.get("code_range", "symmetric"))

    @property
    def num_members(self) -> int:
        return len(self.members)

    def __repr__(self):
        return (f"MDCRLModel(latent={self.latent}, invariant={self.invariant_dim}, "
                f"{self.num_members} member(s), step {self.step}, {self.workdir!r}"
                f"{', stage 1 composed' if self.stage1 is not None else ''})")

    # ------------------------------------------------------------------ stage composition
    def _inputs(self, x, name="x"):
        """Observations -> the run's own inputs ([(M,) N, ...])."""
        if self.stage1 is None:
            return as_observations(x, self.observation_shape, name, allow_uint8=self.images)
        lo, hi, code_range = self._scale
        unit = (np.asarray(self.stage1.encode(x), np.float32) - lo) / (hi - lo)
        return unit if code_range == "unit" else 2.0 * unit - 1.0

    def _outputs(self, x):
        """The run's own decoded inputs -> observations."""
        if self.stage1 is None:
            return x
        lo, hi, code_range = self._scale
        unit = x if code_range == "unit" else (x + 1.0) / 2.0
        codes = unit * (hi - lo) + lo
        out = self.stage1.decode(codes.reshape(-1, codes.shape[-1]))
        return out.reshape(codes.shape[:-1] + out.shape[1:])

    # ------------------------------------------------------------------ functions
    def encode(self, x):
        """Codes [N, latent] of observations x (eval mode: BatchNorm running statistics)."""
        return self._runner(self._fns["_encode"], [self._inputs(x)],
                            [len(self._own_shape())])

    def invariant(self, x):
        """The invariant block of the codes [N, invariant_dim]: the coordinates the run's
        invariance penalties act on."""
        return self.encode(x)[..., :self.invariant_dim]

    def decode(self, z):
        """Observations decoded from codes z [N, latent] (balls: images in about [-1, 1])."""
        z = as_observations(z, (self.latent,), "z")
        return self._outputs(self._runner(self._fns["_decode"], [z], [1]))

    def reconstruct(self, x):
        """Reconstructions of observations x through the autoencoder(s)."""
        if self.stage1 is not None:
            return self.decode(self.encode(x))
        return self._runner(self._fns["_reconstruct"], [self._inputs(x)],
                            [len(self._own_shape())])

    def _own_shape(self):
        """One input row of the run's own model (its images, or [x_dim])."""
        return tuple(self.method.input_shape)

    def dataset(self, split: str = "valid") -> dict:
        """The run's own data of `split` ({x, z, domain}, regenerated from each member's data
        seed; a two-stage run's are the scaled stage-1 codes), with a member axis where the
        model has several."""
        per_seed, out = {}, []
        for _, data_seed in self.members:
            if data_seed not in per_seed:
                data = self.method.make_data(int(data_seed))
                require(split in data, f"split={split!r} is not one of {sorted(data)}")
                per_seed[data_seed] = {k: np.asarray(v) for k, v in data[split].items()}
            out.append(per_seed[data_seed])
        if self.single:
            return out[0]
        return {k: np.stack([o[k] for o in out]) for k in out[0]}


def _bound(fn, method):
    def bound(variables, key, *rows):
        return fn(method, variables, key, *rows)
    bound.__name__ = fn.__name__
    return bound
