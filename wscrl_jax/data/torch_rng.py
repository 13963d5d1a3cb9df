"""PyTorch's CPU random number generator, in numpy, for the few draws of a ground truth.

The reference builds the scaling ground truth right after `torch.manual_seed(data seed)`
(reference: `experiments/scaling.py: generate_datasets`), so its mechanism weights and
rotation coefficients are a deterministic function of the seed. Reproducing those numbers
needs torch's generator, not torch: a Mersenne Twister (MT19937, seeded as numpy's legacy
`RandomState` seeds it) and ATen's transforms of its 32/64-bit outputs
(`ATen/core/DistributionsHelper.h`, `ATen/native/cpu/DistributionTemplates.h`):

* `uniform_(a, b)` on float32: `(u32 & (2^24 - 1)) * 2^-24 * (b - a) + a`, one 32-bit output
  per element, in order;
* `normal_` on a float32 tensor of fewer than 16 elements (or not contiguous): per element a
  double-precision Box-Muller pair from two 53-bit uniforms (`u1` angle, `u2` radius via
  `log1p(-u2)`); the second value of the pair is cached in the generator and returned by the
  next such draw;
* `normal_` on 16 or more contiguous float32 elements (`normal_fill`): all elements first
  filled with float uniforms, then Box-Muller in float32 over blocks of 16 (the first 8 as `1 -
  u` radii, the last 8 as angles); a size that is not a multiple of 16 redraws the last 16
  uniforms and recomputes them. torch's AVX2 kernel evaluates log/sin/cos with vectorised
  functions that can differ from numpy's in the last bit (about 1e-7 here).

Checked against torch 2.13 (CPU) draw for draw in `tests/test_torch_rng.py` through values it
recorded (the tests do not need torch).
"""

import numpy as np

_MASK24 = (1 << 24) - 1
_MASK53 = (1 << 53) - 1


class TorchCPUGenerator:
    """`torch.manual_seed(seed)` followed by the draws below, in the order they are made."""

    def __init__(self, seed: int):
        self._bits = np.random.MT19937()
        self._bits._legacy_seeding(int(seed) & 0xFFFFFFFF)
        self._cached_normal = None  # the second value of the last double Box-Muller pair

    def _random32(self, n: int) -> np.ndarray:
        """n raw 32-bit outputs of the Mersenne Twister, uint64 [n]."""
        return self._bits.random_raw(n).astype(np.uint64)

    def _uniform_float(self, n: int) -> np.ndarray:
        """n float32-resolution uniforms in [0, 1) (24 random bits each), float64 [n]."""
        return (self._random32(n) & _MASK24).astype(np.float64) * 2.0 ** -24

    def _uniform_double(self) -> float:
        """One 53-bit uniform in [0, 1) from two 32-bit outputs (high word first)."""
        hi, lo = (int(v) for v in self._random32(2))
        return ((hi << 32 | lo) & _MASK53) * 2.0 ** -53

    def uniform(self, shape, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        """`torch.empty(shape).uniform_(low, high)`, float32."""
        n = int(np.prod(shape))
        low32, high32 = np.float32(low), np.float32(high)
        x = self._uniform_float(n) * (float(high32) - float(low32)) + float(low32)
        return x.astype(np.float32).reshape(shape)

    def normal(self, shape, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
        """`torch.randn(shape) * std + mean` as `normal_(mean, std)` draws it, float32."""
        n = int(np.prod(shape))
        if n >= 16:
            return self._normal_fill(n, np.float32(mean), np.float32(std)).reshape(shape)
        out = np.empty(n, np.float64)
        for i in range(n):
            if self._cached_normal is not None:
                value, self._cached_normal = self._cached_normal, None
            else:
                u1, u2 = self._uniform_double(), self._uniform_double()
                radius = np.sqrt(-2.0 * np.log1p(-u2))
                theta = 2.0 * np.pi * u1
                self._cached_normal = radius * np.sin(theta)
                value = radius * np.cos(theta)
            out[i] = value * std + mean
        return out.astype(np.float32).reshape(shape)

    def _normal_fill(self, n: int, mean: np.float32, std: np.float32) -> np.ndarray:
        data = self._uniform_float(n).astype(np.float32)
        for start in range(0, n - 15, 16):
            data[start:start + 16] = _box_muller_16(data[start:start + 16], mean, std)
        if n % 16:
            tail = self._uniform_float(16).astype(np.float32)
            data[n - 16:] = _box_muller_16(tail, mean, std)
        return data


def _box_muller_16(u: np.ndarray, mean: np.float32, std: np.float32) -> np.ndarray:
    """ATen's `normal_fill_16` on 16 float32 uniforms: radii from the first 8, angles from the
    last 8; cosines fill the first half, sines the second."""
    radius = np.sqrt(np.float32(-2.0) * np.log(np.float32(1.0) - u[:8]))
    theta = np.float32(2.0 * np.pi) * u[8:]
    return np.concatenate([radius * np.cos(theta) * std + mean,
                           radius * np.sin(theta) * std + mean]).astype(np.float32)


def reference_scaling_nature(dim_z: int, seed: int, causal_effects: str = "bimodal"):
    """The reference's mechanism weights and SO(n) coefficients after `manual_seed(seed)`
    (`experiments/scaling.py: create_true_model`), in its draw order:

    1. per variable, `FixedGraphLinearANM`'s transforms: `Linear(d, 1)` init (d + 1 uniforms),
       structure `log_scale`, intervention `shift` and `log_scale` (one normal each);
    2. per variable, `_canonical_init`: bimodal `sign(randn(1, d)) * (1 + 0.3 randn(1, d))`
       (or `randn(1, d)` for "standard");
    3. `SONEncoder` coefficients `normal_(std=1)` of length d (d - 1) / 2.

    Returns weights [d, d] float32 with w[j, i] the effect of z_j on z_i, coefficients [d (d - 1)
    / 2] float32 of the strict upper triangle in row-major order.
    """
    gen = TorchCPUGenerator(seed)
    d = int(dim_z)
    for _ in range(d):
        bound = 1.0 / np.sqrt(d)  # torch's default Linear init; only the draws matter here
        gen.uniform((1, d), -bound, bound)
        gen.uniform((1,), -bound, bound)
        gen.normal((1,))  # structure log_scale
        gen.normal((1,))  # intervention shift
        gen.normal((1,))  # intervention log_scale
    weights = np.empty((d, d), np.float32)
    for i in range(d):
        if causal_effects == "bimodal":
            sign = np.sign(gen.normal((d,)))
            weights[:, i] = sign * (np.float32(1.0) + np.float32(0.3) * gen.normal((d,)))
        else:
            weights[:, i] = gen.normal((d,))
    coeffs = gen.normal((d * (d - 1) // 2,))
    return weights, coeffs
