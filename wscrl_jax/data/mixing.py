"""Synthetic multi-domain mixing data of MD-CRL (reference: `datamodule/mixing_dataset.py`).

Latents `z = [z_inv, z_sp]` of size `z_dim`, with `d_inv = z_dim_invariant` invariant coordinates
first:

* invariant block: `z_inv ~ U(a, b)^{d_inv}` with `(a, b) = invariant_dist_params`, the same
  distribution in every domain;
* spurious block (`generation_strategy="auto"`): for every spurious dimension `k` and domain `e` a
  random sub-interval `[low, high]` of `domain_dist_ranges` is drawn once per dataset, and the
  domain's rows are `U(low, high)`. Domains are equal contiguous blocks of `m = int(n / D)` rows,
  then all rows are shuffled. `"manual"` uses explicit block lengths and one range per domain;
* dynamic SCM (`correlated_z`): after the shuffle, with probability `corr_prob` (per sample and
  spurious dimension) spurious coordinate `k` gets the **latent coordinate with the same index `k`**
  added (the invariant one when `d_sp <= d_inv`), as in the reference;
* mixing `x = mix(z)`: linear `x = z G` with `G ~ U[0,1)^{z_dim x x_dim}` redrawn until full rank
  (host-side check), polynomial (Kronecker monomials of any degree with N(0,1) coefficients and the
  reference's max-abs rebalancing of the non-linear part), or a two-layer MLP with PyTorch's
  default init.

Splits (reference `BaseDataModule.prepare_data`): one dataset of `num_samples_train` rows is drawn
and randomly split into train (`num_samples_train - num_samples_valid` rows) and valid
(`num_samples_valid`); a separate test dataset of `num_samples_test` rows gets **its own mixing
map and spurious ranges** (md-crl gotcha 5) unless `test_shares_distribution=True`.

Everything is a function of one explicit key (or integer seed), never of model-init draws. The
latent sampling and the mixing are jit-compiled with static shapes; only the linear-mixing rank
check runs on the host (a one-off per mixing map).

Layout of the random draws (stable; changing it changes every dataset):
`key -> (k_train, k_split, k_test)`; each dataset key -> `(k_map, k_latents)`;
`k_latents -> (k_inv, k_ranges, k_sp, k_perm, k_coin)`.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
KeyLike = Union[int, Array]

SPLITS = ("train", "valid", "test")

MLP_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "leaky_relu": lambda h: jax.nn.leaky_relu(h, 0.01),  # torch default slope
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
}


@dataclasses.dataclass(frozen=True)
class MixingDataConfig:
    """Reference defaults of `configs/datamodule/dataset/synthetic_mixing.yaml` + `mixing.yaml`.

    Frozen and hashable, so it can be a static argument of jitted functions. `None` fields are
    resolved in `__post_init__` (`z_dim_invariant = z_dim // 2`, `x_dim = 2 * z_dim`).
    """

    generation_strategy: str = "auto"  # "auto" (random per-domain ranges) or "manual"
    num_domains: int = 4
    z_dim: int = 4
    z_dim_invariant: Optional[int] = None  # None -> z_dim // 2
    x_dim: Optional[int] = None  # None -> 2 * z_dim
    # "manual" only: fraction of rows per domain (reference default [0.25] * 4).
    domain_lengths: Optional[Sequence[float]] = None
    # "auto": one (r0, r1) range the spurious low/high are drawn from;
    # "manual": one (low, high) per domain.
    domain_dist_ranges: Any = (-5.0, 5.0)
    invariant_dist_params: Sequence[float] = (0.0, 1.0)
    linear: bool = True
    non_linearity: str = "polynomial"  # "polynomial" or "mlp" (used when linear=False)
    polynomial_degree: int = 2
    correlated_z: bool = False  # dynamic SCM
    corr_prob: float = 0.5
    mlp_activation: str = "relu"  # hidden activation of the MLP mixing
    num_samples_train: int = 12000  # drawn once, then split into train/valid
    num_samples_valid: int = 2000
    num_samples_test: int = 2000
    # Fix for md-crl gotcha 5 (off = reference): the test split reuses the train mixing map,
    # spurious ranges and polynomial normalisation factor instead of drawing its own.
    test_shares_distribution: bool = False
    max_rank_tries: int = 1000

    def __post_init__(self):
        def _set(name, value):
            object.__setattr__(self, name, value)

        if self.z_dim_invariant is None:
            _set("z_dim_invariant", self.z_dim // 2)
        if self.x_dim is None:
            _set("x_dim", 2 * self.z_dim)
        _set("invariant_dist_params", tuple(float(v) for v in self.invariant_dist_params))
        if self.domain_lengths is not None:
            _set("domain_lengths", tuple(float(v) for v in self.domain_lengths))
        r = self.domain_dist_ranges
        if self.generation_strategy == "manual":
            _set("domain_dist_ranges", tuple(tuple(float(v) for v in pair) for pair in r))
        else:
            _set("domain_dist_ranges", tuple(float(v) for v in r))
        self.validate()

    @property
    def z_dim_spurious(self) -> int:
        return self.z_dim - self.z_dim_invariant

    @property
    def num_polynomial_features(self) -> int:
        return num_polynomial_features(self.z_dim, self.polynomial_degree)

    def validate(self) -> None:
        if self.generation_strategy not in ("auto", "manual"):
            raise ValueError(
                f"generation_strategy must be 'auto' or 'manual', got {self.generation_strategy!r}"
            )
        if not 0 <= self.z_dim_invariant <= self.z_dim:
            raise ValueError(
                f"z_dim_invariant={self.z_dim_invariant} must lie in [0, z_dim={self.z_dim}]"
            )
        if self.num_domains < 1:
            raise ValueError("num_domains must be >= 1")
        if not self.linear and self.non_linearity not in ("polynomial", "mlp"):
            raise ValueError(
                f"non_linearity must be 'polynomial' or 'mlp', got {self.non_linearity!r}"
            )
        if not self.linear and self.non_linearity == "polynomial" and self.polynomial_degree < 1:
            raise ValueError("polynomial_degree must be >= 1")
        if self.mlp_activation not in MLP_ACTIVATIONS:
            raise ValueError(f"mlp_activation must be one of {sorted(MLP_ACTIVATIONS)}")
        if self.generation_strategy == "manual":
            if self.domain_lengths is None or len(self.domain_lengths) != self.num_domains:
                raise ValueError("manual generation needs one domain_lengths entry per domain")
            if len(self.domain_dist_ranges) != self.num_domains:
                raise ValueError(
                    "manual generation needs one (low, high) domain_dist_ranges pair per domain"
                )
        elif len(self.domain_dist_ranges) != 2:
            raise ValueError("auto generation needs domain_dist_ranges = (r0, r1)")
        if not 0 <= self.num_samples_valid <= self.num_samples_train:
            raise ValueError("need 0 <= num_samples_valid <= num_samples_train")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def mixing_data_config(d) -> MixingDataConfig:
    """The run config's `data` section (configs/md_mixing.py) -> the frozen generator config."""
    ranges = d.domain_dist_ranges
    ranges = tuple(tuple(r) if isinstance(r, (list, tuple)) else r for r in ranges)
    return MixingDataConfig(
        generation_strategy=d.generation_strategy, num_domains=int(d.num_domains),
        z_dim=int(d.z_dim), z_dim_invariant=d.z_dim_invariant, x_dim=d.x_dim,
        domain_lengths=tuple(d.domain_lengths) if d.domain_lengths else None,
        domain_dist_ranges=ranges, invariant_dist_params=tuple(d.invariant_dist_params),
        linear=bool(d.linear), non_linearity=d.non_linearity,
        polynomial_degree=int(d.polynomial_degree), correlated_z=bool(d.correlated_z),
        corr_prob=float(d.corr_prob), mlp_activation=d.mlp_activation,
        num_samples_train=int(d.num_samples.train), num_samples_valid=int(d.num_samples.valid),
        num_samples_test=int(d.num_samples.test),
        test_shares_distribution=bool(d.test_shares_distribution))


def as_key(key: KeyLike) -> Array:
    """A PRNG key from an integer seed (keys pass through)."""
    if isinstance(key, (int, np.integer)):
        return jax.random.PRNGKey(int(key))
    return key


# ----------------------------------------------------------------------------------------------
# Polynomial features


def num_polynomial_features(z_dim: int, degree: int) -> int:
    """P = sum_{k=0}^{degree} z_dim^k (ordered Kronecker monomials, duplicates included)."""
    return sum(z_dim**k for k in range(degree + 1))


def polynomial_features(z: Array, degree: int) -> Array:
    """Kronecker monomial features, as the reference's `compute_decoder_polynomial`.

    Args:
      z: [..., z_dim].
      degree: static int >= 0.
    Returns:
      [..., P] with blocks `[1] | z | z (x) z | (z (x) z) (x) z | ...`; in degree 2 the feature of
      index `a * z_dim + b` (within the block) is `z_a z_b`.
    """
    z = jnp.asarray(z)
    feats = [jnp.ones(z.shape[:-1] + (1,), z.dtype)]
    block = None
    for k in range(1, degree + 1):
        block = (
            z if k == 1 else (block[..., :, None] * z[..., None, :]).reshape(z.shape[:-1] + (-1,))
        )
        feats.append(block)
    return jnp.concatenate(feats, axis=-1)


# ----------------------------------------------------------------------------------------------
# Mixing maps


def _is_full_rank(g) -> bool:
    g = np.asarray(g)
    return int(np.linalg.matrix_rank(g)) >= min(g.shape)


def draw_linear_mixing(
    key: Array,
    z_dim: int,
    x_dim: int,
    max_tries: int = 1000,
    sampler: Optional[Callable[[Array, tuple], Array]] = None,
) -> Array:
    """`G ~ U[0,1)^{z_dim x x_dim}`, redrawn until `rank(G) = min(z_dim, x_dim)` (host-side).

    Attempt `t` uses `fold_in(key, t)`. `sampler(key, shape)` replaces the uniform draw (tests).
    Returns [z_dim, x_dim] float32.
    """
    sampler = sampler or (lambda k, shape: jax.random.uniform(k, shape, jnp.float32))
    for attempt in range(max_tries):
        g = sampler(jax.random.fold_in(key, attempt), (z_dim, x_dim))
        if _is_full_rank(g):
            return jnp.asarray(g, jnp.float32)
    raise RuntimeError(f"no full-rank mixing matrix in {max_tries} draws")


def draw_mixing_map(key: KeyLike, cfg: MixingDataConfig) -> dict:
    """Draw the mixing parameters of one dataset instantiation.

    Returns a dict of arrays:
      linear: {"G": [z_dim, x_dim]};
      polynomial: {"coeffs": [P, x_dim]} (N(0, 1));
      mlp: {"w1": [z_dim, 2 z_dim], "b1": [2 z_dim], "w2": [2 z_dim, x_dim], "b2": [x_dim]}
      (PyTorch default nn.Linear init, U(+-1/sqrt(fan_in)) for weights and biases).
    """
    key = as_key(key)
    if cfg.linear:
        return {"G": draw_linear_mixing(key, cfg.z_dim, cfg.x_dim, cfg.max_rank_tries)}
    if cfg.non_linearity == "polynomial":
        p = cfg.num_polynomial_features
        return {"coeffs": jax.random.normal(key, (p, cfg.x_dim), jnp.float32)}
    hidden = 2 * cfg.z_dim
    k1, k2, k3, k4 = jax.random.split(key, 4)

    def u(k, shape, fan_in):
        b = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(k, shape, jnp.float32, -b, b)

    return {
        "w1": u(k1, (cfg.z_dim, hidden), cfg.z_dim),
        "b1": u(k2, (hidden,), cfg.z_dim),
        "w2": u(k3, (hidden, cfg.x_dim), hidden),
        "b2": u(k4, (cfg.x_dim,), hidden),
    }


def apply_mixing(
    mixing: Mapping[str, Array],
    z: Array,
    cfg: MixingDataConfig,
    norm_factor: Optional[Array] = None,
):
    """x = mix(z). jit-compatible (cfg static).

    Args:
      mixing: output of `draw_mixing_map`.
      z: [n, z_dim].
      norm_factor: polynomial only. None: computed from this `z` as the reference does,
        `0.5 * max|x_high| / max|x_lin|` over the whole dataset; pass a value to reuse another
        dataset's factor.
    Returns:
      (x [n, x_dim], norm_factor scalar (polynomial with degree >= 2) or None).
    """
    if cfg.linear:
        return z @ mixing["G"], None
    if cfg.non_linearity == "mlp":
        act = MLP_ACTIVATIONS[cfg.mlp_activation]
        h = act(z @ mixing["w1"] + mixing["b1"])
        return h @ mixing["w2"] + mixing["b2"], None
    feats = polynomial_features(z, cfg.polynomial_degree)
    c = mixing["coeffs"]
    n_lin = 1 + cfg.z_dim
    x_lin = feats[:, :n_lin] @ c[:n_lin]
    if cfg.polynomial_degree < 2:
        # The reference takes max|.| of an empty tensor here and crashes; no rebalancing needed.
        return x_lin, None
    x_high = feats[:, n_lin:] @ c[n_lin:]
    if norm_factor is None:
        norm_factor = 0.5 * jnp.max(jnp.abs(x_high)) / jnp.max(jnp.abs(x_lin))
    return x_lin + x_high / norm_factor, norm_factor


# ----------------------------------------------------------------------------------------------
# Latents


def domain_blocks(cfg: MixingDataConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Static (start, size) of each domain's contiguous block of rows before the shuffle.

    auto: `size = int((1 / D) * n)` and `start = e * size` (reference arithmetic); manual:
    `size_e = int(domain_lengths[e] * n)`, consecutive. Rows after the last block belong to no
    block: they keep spurious value 0 and domain 0 (md-crl gotcha 7, reproduced).
    """
    d = cfg.num_domains
    if cfg.generation_strategy == "manual":
        sizes = np.array([int(length * n) for length in cfg.domain_lengths], np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    else:
        size = int((1.0 / d) * n)
        sizes = np.full(d, size, np.int64)
        starts = np.arange(d, dtype=np.int64) * size
    return starts, sizes


@partial(jax.jit, static_argnames=("cfg",))
def draw_spurious_ranges(key: Array, cfg: MixingDataConfig) -> tuple[Array, Array]:
    """Per (spurious dim, domain) interval, each [d_sp, D].

    auto: the reference draws `low, high ~ U(r0, r1)` independently and redraws both until
    `low <= high`; that is distributed as the sorted pair of two uniforms, which is what we draw
    (no rejection loop, jit-able). manual: the fixed per-domain ranges.
    """
    d_sp, d = cfg.z_dim_spurious, cfg.num_domains
    if cfg.generation_strategy == "manual":
        r = jnp.asarray(cfg.domain_dist_ranges, jnp.float32)  # [D, 2]
        return jnp.broadcast_to(r[:, 0], (d_sp, d)), jnp.broadcast_to(r[:, 1], (d_sp, d))
    r0, r1 = cfg.domain_dist_ranges
    pair = jax.random.uniform(key, (d_sp, d, 2), jnp.float32, r0, r1)
    return jnp.min(pair, axis=-1), jnp.max(pair, axis=-1)


def sample_latents(
    key: Array,
    cfg: MixingDataConfig,
    n: int,
    lows: Optional[Array] = None,
    highs: Optional[Array] = None,
):
    """Latents and domain labels of one dataset (steps 2-6 of the reference generator).

    jit-compiled (cfg and n static); vmap over keys for per-member data. `lows`/`highs`
    ([d_sp, D]) default to fresh draws.
    Returns dict: z [n, z_dim] f32, domain [n] int32, spurious_low/high [d_sp, D].
    """
    return _sample_latents_jit(key, _trace_config(cfg), n, lows, highs)


def _latents(
    key: Array, cfg: MixingDataConfig, n: int, lows: Optional[Array], highs: Optional[Array]
):
    k_inv, k_ranges, k_sp, k_perm, k_coin = jax.random.split(key, 5)
    d_inv, d_sp = cfg.z_dim_invariant, cfg.z_dim_spurious
    a, b = cfg.invariant_dist_params
    z_inv = jax.random.uniform(k_inv, (n, d_inv), jnp.float32) * (b - a) + a

    if lows is None or highs is None:
        lows, highs = draw_spurious_ranges(k_ranges, cfg)

    starts, sizes = domain_blocks(cfg, n)
    rows = np.arange(n)
    in_block = (rows[:, None] >= starts[None, :]) & (
        rows[:, None] < (starts + sizes)[None, :]
    )  # [n, D]
    covered = jnp.asarray(in_block.any(axis=1))
    domain = jnp.asarray(np.argmax(in_block, axis=1).astype(np.int32))  # 0 where uncovered

    u = jax.random.uniform(k_sp, (n, d_sp), jnp.float32)
    lo = lows.T[domain]  # [n, d_sp]
    hi = highs.T[domain]
    z_sp = jnp.where(covered[:, None], u * (hi - lo) + lo, 0.0)

    z = jnp.concatenate([z_inv, z_sp], axis=1)
    perm = jax.random.permutation(k_perm, n)
    z, domain = z[perm], domain[perm]

    if cfg.correlated_z and d_sp > 0:
        coin = jax.random.bernoulli(k_coin, cfg.corr_prob, (n, d_sp)).astype(z.dtype)
        # Same-index coordinate (md-crl gotcha 8): invariant k when d_sp <= d_inv; pre-update
        # values.
        z = z.at[:, d_inv:].add(coin * z[:, :d_sp])
    return {"z": z, "domain": domain, "spurious_low": lows, "spurious_high": highs}


_sample_latents_jit = jax.jit(_latents, static_argnames=("cfg", "n"))


def _trace_config(cfg: MixingDataConfig) -> MixingDataConfig:
    """cfg with the fields that do not change the traced computation zeroed (fewer recompiles)."""
    return dataclasses.replace(
        cfg,
        num_samples_train=0,
        num_samples_valid=0,
        num_samples_test=0,
        test_shares_distribution=False,
        max_rank_tries=1,
    )


@partial(jax.jit, static_argnames=("cfg", "n"))
def _sample_dataset(key, cfg: MixingDataConfig, n: int, mixing, lows, highs, norm_factor):
    lat = _latents(key, cfg, n, lows, highs)
    x, nf = apply_mixing(mixing, lat["z"], cfg, norm_factor)
    return x, lat, nf


def generate_mixing_dataset(
    key: KeyLike,
    cfg: MixingDataConfig,
    num_samples: int,
    mixing: Optional[Mapping[str, Array]] = None,
    spurious_ranges: Optional[tuple[Array, Array]] = None,
    norm_factor: Optional[Array] = None,
) -> tuple[dict, dict]:
    """One dataset instantiation (`SyntheticMixingDataset`): new mixing map and ranges by default.

    Args:
      key: PRNG key or int seed; split into (k_map, k_latents).
      num_samples: n (static).
      mixing / spurious_ranges / norm_factor: reuse another instantiation's (else drawn).
    Returns:
      data: {"x": [n, x_dim] f32, "z": [n, z_dim] f32, "domain": [n] int32};
      info: {"mixing": dict, "spurious_low": [d_sp, D], "spurious_high": [d_sp, D],
             "norm_factor": scalar or None}.
    """
    k_map, k_lat = jax.random.split(as_key(key))
    if mixing is None:
        mixing = draw_mixing_map(k_map, cfg)
    lows, highs = spurious_ranges if spurious_ranges is not None else (None, None)
    x, lat, nf = _sample_dataset(
        k_lat, _trace_config(cfg), num_samples, mixing, lows, highs, norm_factor
    )
    data = {"x": x, "z": lat["z"], "domain": lat["domain"]}
    info = {
        "mixing": dict(mixing),
        "spurious_low": lat["spurious_low"],
        "spurious_high": lat["spurious_high"],
        "norm_factor": nf,
    }
    return data, info


def make_mixing_splits(key: KeyLike, cfg: MixingDataConfig, return_info: bool = False):
    """Train / valid / test splits as the reference datamodule builds them.

    Train and valid come from one dataset of `num_samples_train` rows, split by a random
    permutation (first `num_samples_train - num_samples_valid` permuted rows -> train, the rest ->
    valid, in permutation order, like `random_split`). Test is its own dataset (own mixing map and
    spurious ranges unless `cfg.test_shares_distribution`); omitted when `num_samples_test == 0`.

    Returns:
      {split: {"x": [n_split, x_dim] f32, "z": [n_split, z_dim] f32, "domain": [n_split] int32}},
      and with `return_info` also {"train": info, "test": info} (valid shares train's info;
      see `generate_mixing_dataset`).
    """
    k_train, k_split, k_test = jax.random.split(as_key(key), 3)
    full, info_train = generate_mixing_dataset(k_train, cfg, cfg.num_samples_train)
    n_tr = cfg.num_samples_train - cfg.num_samples_valid
    perm = jax.random.permutation(k_split, cfg.num_samples_train)
    splits = {
        "train": {k: v[perm[:n_tr]] for k, v in full.items()},
        "valid": {k: v[perm[n_tr:]] for k, v in full.items()},
    }
    infos = {"train": info_train}
    if cfg.num_samples_test > 0:
        if cfg.test_shares_distribution:
            test, info_test = generate_mixing_dataset(
                k_test,
                cfg,
                cfg.num_samples_test,
                mixing=info_train["mixing"],
                spurious_ranges=(info_train["spurious_low"], info_train["spurious_high"]),
                norm_factor=info_train["norm_factor"],
            )
        else:
            test, info_test = generate_mixing_dataset(k_test, cfg, cfg.num_samples_test)
        splits["test"] = test
        infos["test"] = info_test
    return (splits, infos) if return_info else splits
