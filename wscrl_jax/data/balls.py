"""Multi-domain balls images of MD-CRL, generated and rendered in JAX.

Reference: `datamodule/md_balls_dataset.py: MDBalls` (+ `abstract_md_balls_dataset.py:
BallsDataset`, `base_datamodule.py: BaseDataModule`).
Everything is vectorised over samples (no pygame, no per-sample Python loop) and jit-compiled.

Latents (one dataset of `n` samples, `D` domains, balls of radius `ball_size` in [0, 1] units):

1. Domain boxes (`domain_boxes`): per domain `low, high ~ U(ball_size, 1 - ball_size)^2`, both
   redrawn until `high >= low` and `high >= low + 4 * ball_size * n_balls_spurious` in both
   coordinates (a `lax.while_loop` per domain, unbounded like the reference's `while`).
2. Domain labels (`domain_labels`): contiguous blocks of `m = int((1 / D) * n)` rows in index order
   (the reference's float arithmetic). The `n - D * m` remainder rows keep label 0 **and are full
   domain-0 samples** (their spurious balls are drawn in domain 0's box): the reference selects
   `domain_mask == 0`, which includes them. This differs from the mixing data (md-crl gotcha
   7), where the remainder rows keep spurious zeros.
3. Spurious balls (indices `n_inv ...`): `U(low + ball_size, high - ball_size)` per coordinate in
   the sample's domain box; a spurious ball with a *later* spurious ball closer than
   `2 * ball_size` is redrawn in the same box, at most `max_redraws` (100) rounds.
4. Invariant balls (indices `0 .. n_inv - 1`): `U(invariant_low + ball_size, invariant_high -
   ball_size)` in every domain; an invariant ball closer than `2 * ball_size` to a later ball of
   the list `[invariant balls, n_inv copies of the origin, spurious balls]` is redrawn, at most 100
   rounds. The origin copies are the reference's quirk (it compares against `z_all`, whose
   invariant slots are still zero); they only matter when the invariant box reaches within
   `2 * ball_size` of the corner (0, 0), never with the README settings.
5. `correlated_z` (`correlate_positions`): the reference's `_correlate_z` repair sequence, step by
   step (md-crl gotcha 20): `offset = 0.2 * coin * inv`; samples out of frame above get the offset
   reversed; still out -> restored; overlap count == 1 -> offset `* -2` added again (which can
   give `+3 * offset`); out of `[ball_size, 1 - ball_size]` or overlap count == 1 -> spurious
   balls restored. Requires `n_inv == n_sp` or `n_inv == 1`.

The redraw rounds are a `lax.while_loop` per sample (vmapped: the batched loop runs until every
sample is done or has used its rounds; finished samples are frozen by the loop's select). Each
round redraws all balls and keeps the new draws for the flagged ones only, which is distributed
like the reference's redraw of the flagged ones.

Rendering and the image format: `data/balls_render.py`.

Splits (`make_balls_splits`, reference `BaseDataModule.prepare_data`): one dataset of
`num_samples_train` (60000) rows is drawn and split by a random permutation into train
(`num_samples_train - num_samples_valid` = 50000 rows, in permutation order like `random_split`)
and valid (10000); test is a separate dataset of `num_samples_test` (1000) rows with **its own
domain boxes** (a new `MDBalls`), unless `test_shares_boxes=True`.

Layout of the random draws (stable; changing it changes every dataset):
`key -> (k_train, k_split, k_test)`; each dataset key -> `(k_boxes, k_positions)`;
`k_positions -> (k_sp, k_sp_redraw, k_inv, k_inv_redraw, k_coin)`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wscrl_jax.data.balls_render import ball_colours, render_uint8, to_float_images
from wscrl_jax.data.mixing import KeyLike, as_key

Array = jax.Array

@dataclasses.dataclass(frozen=True)
class BallsDataConfig:
    """Reference defaults of `configs/datamodule/md_balls.yaml` + `dataset/md_balls.yaml`."""

    num_domains: int = 16
    ball_size: float = 0.08  # radius in [0, 1] units; int(64 * 0.08) = 5 px
    invariant_low: Sequence[float] = (0.1, 0.1)  # README: (0.5, 0.5)
    invariant_high: Sequence[float] = (0.9, 0.9)
    n_balls_invariant: int = 1
    n_balls_spurious: int = 1
    correlated_z: bool = False
    corr_prob: float = 0.5
    image_size: int = 64
    num_samples_train: int = 60000  # drawn once, then split into train/valid
    num_samples_valid: int = 10000
    num_samples_test: int = 1000
    # Off = reference: the test dataset draws its own domain boxes (a new MDBalls instance).
    test_shares_boxes: bool = False
    max_redraws: int = 100  # overlap redraw rounds (reference: 100)
    render_batch_size: int = 1024  # samples rendered per vmapped batch (memory, not results)
    # "float32": images in [-1, 1]; "uint8": the rendered bytes (4x less memory; the model
    # converts a batch with `balls_render.to_float_images`, which gives the same floats)
    image_dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "invariant_low", tuple(float(v) for v in self.invariant_low))
        object.__setattr__(self, "invariant_high", tuple(float(v) for v in self.invariant_high))
        self.validate()

    @property
    def n_balls(self) -> int:
        return self.n_balls_invariant + self.n_balls_spurious

    def validate(self) -> None:
        if self.num_domains < 1:
            raise ValueError("num_domains must be >= 1")
        if self.n_balls_invariant < 1 or self.n_balls_spurious < 1:
            raise ValueError("need at least one invariant and one spurious ball")
        ball_colours(self.n_balls)
        _check_box_feasible(self.ball_size, self.n_balls_spurious)
        if len(self.invariant_low) != 2 or len(self.invariant_high) != 2:
            raise ValueError("invariant_low / invariant_high must have 2 entries (x, y)")
        if self.correlated_z:
            _check_correlation(self.n_balls_invariant, self.n_balls_spurious)
        if not 0.0 <= self.corr_prob <= 1.0:
            raise ValueError("corr_prob must lie in [0, 1]")
        if self.image_dtype not in ("float32", "uint8"):
            raise ValueError(f"image_dtype must be float32 or uint8, not {self.image_dtype!r}")
        if self.image_size < 1 or self.render_batch_size < 1 or self.max_redraws < 0:
            raise ValueError("image_size, render_batch_size >= 1 and max_redraws >= 0 required")
        if not 0 <= self.num_samples_valid <= self.num_samples_train:
            raise ValueError("need 0 <= num_samples_valid <= num_samples_train")
        if self.num_samples_test < 0:
            raise ValueError("num_samples_test must be >= 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def balls_data_config(d, **overrides) -> BallsDataConfig:
    """`BallsDataConfig` from a run config's data section (`configs/md_balls.py`); raises
    ValueError / TypeError on bad values."""
    ns = d.num_samples
    fields = dict(
        num_domains=int(d.num_domains), ball_size=float(d.ball_size),
        invariant_low=tuple(d.invariant_low), invariant_high=tuple(d.invariant_high),
        n_balls_invariant=int(d.n_balls_invariant), n_balls_spurious=int(d.n_balls_spurious),
        correlated_z=bool(d.correlated_z), corr_prob=float(d.corr_prob),
        image_size=int(d.image_size), num_samples_train=int(ns.train),
        num_samples_valid=int(ns.valid), num_samples_test=int(ns.test),
        test_shares_boxes=bool(d.test_shares_boxes), max_redraws=int(d.max_redraws))
    return BallsDataConfig(**{**fields, **overrides})


def _check_box_feasible(ball_size: float, n_balls_spurious: int) -> None:
    # The reference's box loop never ends when no box of width 4 * size * n_sp fits.
    if not 0.0 < ball_size < 0.5 or 4 * ball_size * n_balls_spurious >= 1 - 2 * ball_size:
        raise ValueError(
            f"ball_size={ball_size} with {n_balls_spurious} spurious balls: no domain box of "
            "width 4 * ball_size * n_balls_spurious fits in [ball_size, 1 - ball_size]"
        )


def _check_correlation(n_inv: int, n_sp: int) -> None:
    if not (n_inv == n_sp or n_inv == 1):
        raise ValueError(
            "correlated_z needs n_balls_invariant == n_balls_spurious or n_balls_invariant == 1 "
            f"(the reference's broadcast), got {n_inv} and {n_sp}"
        )


# ----------------------------------------------------------------------------------------------
# Latents


@functools.partial(jax.jit, static_argnames=("num_domains", "ball_size", "n_balls_spurious"))
def _domain_boxes(key, num_domains, ball_size, n_balls_spurious):
    width = 4 * ball_size * n_balls_spurious

    def draw(k):
        k_lo, k_hi = jax.random.split(k)
        lo = jax.random.uniform(k_lo, (2,), jnp.float32, ball_size, 1.0 - ball_size)
        hi = jax.random.uniform(k_hi, (2,), jnp.float32, ball_size, 1.0 - ball_size)
        return lo, hi

    def bad(c):
        _, lo, hi = c
        return jnp.any(hi < lo) | jnp.any(hi < lo + width)

    def body(c):
        k, _, _ = c
        k, sub = jax.random.split(k)
        return (k, *draw(sub))

    def one(k):
        k, sub = jax.random.split(k)
        _, lo, hi = jax.lax.while_loop(bad, body, (k, *draw(sub)))
        return lo, hi

    return jax.vmap(one)(jax.random.split(key, num_domains))


def domain_boxes(
    key: KeyLike, num_domains: int, ball_size: float, n_balls_spurious: int
) -> tuple[Array, Array]:
    """Per-domain box of the spurious balls (`_build_domain_grids`), redrawn until it fits.

    Returns (lows [D, 2], highs [D, 2]) float32, columns (x, y), with `ball_size <= low`,
    `high <= 1 - ball_size` and `high >= low + 4 * ball_size * n_balls_spurious`.
    """
    _check_box_feasible(ball_size, n_balls_spurious)
    return _domain_boxes(as_key(key), int(num_domains), float(ball_size), int(n_balls_spurious))


def domain_labels(n: int, num_domains: int) -> np.ndarray:
    """Domain of each row, [n] int32: blocks of `m = int((1 / D) * n)` rows; remainder rows -> 0."""
    m = int((1.0 / num_domains) * n)  # MDBalls: int(domain_lengths[e] * num_samples)
    labels = np.zeros(n, np.int32)
    if m > 0:
        labels[: num_domains * m] = np.arange(num_domains * m) // m
    return labels


def _later_close(p: Array, threshold: float) -> Array:
    """[k, 2] -> [k] bool: ball i has a later ball j > i closer than `threshold`.

    `np.triu(dist < threshold).sum(-1) > 1` of the reference (the diagonal counts once).
    """
    dist = jnp.sqrt(jnp.sum((p[None, :, :] - p[:, None, :]) ** 2, axis=-1))
    k = p.shape[0]
    upper = jnp.asarray(np.triu(np.ones((k, k), bool)))
    return jnp.sum((dist < threshold) & upper, axis=-1) > 1


def _overlap_count(p: Array, threshold: float) -> Array:
    """[n, k, 2] -> [n] int32: number of balls with a later ball closer than `threshold`."""
    return jnp.sum(jax.vmap(lambda q: _later_close(q, threshold))(p), axis=-1).astype(jnp.int32)


def _redraw(key, pos, flags_fn, draw_fn, max_redraws):
    """Redraw the flagged balls of one sample until none is flagged, at most `max_redraws`."""

    def cond(c):
        i, _, flags = c
        return (i < max_redraws) & jnp.any(flags)

    def body(c):
        i, p, flags = c
        p = jnp.where(flags[:, None], draw_fn(jax.random.fold_in(key, i)), p)
        return i + 1, p, flags_fn(p)

    _, pos, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), pos, flags_fn(pos)))
    return pos


def correlate_positions(
    positions: Array, coin: Array, n_balls_invariant: int, ball_size: float
) -> Array:
    """The reference's `MDBalls._correlate_z` (md-crl gotcha 20), in its exact order.

    Args:
      positions: [n, n_balls, 2] (invariant balls first); coin: [n, n_sp] in {0, 1} (one coin
        per sample and spurious ball, shared by x and y).
    Returns: [n, n_balls, 2]; the invariant balls are never changed.
    """
    n_inv = n_balls_invariant
    inv, sp = positions[:, :n_inv], positions[:, n_inv:]
    _check_correlation(n_inv, sp.shape[1])
    lo, hi = ball_size, 1.0 - ball_size
    thr = 2 * ball_size
    src = inv if inv.shape[1] == sp.shape[1] else inv[:, :1]  # broadcast of one invariant ball
    offset = coin.astype(positions.dtype)[..., None] * src * 0.2  # [n, n_sp, 2]
    temp = sp + offset

    def per_sample(mask):  # [n] -> [n, 1, 1]
        return mask[:, None, None]

    above = per_sample(jnp.any(temp > hi, axis=(1, 2)))  # out of frame: reverse the offset
    offset = jnp.where(above, -2 * offset, offset)
    temp = jnp.where(above, temp + offset, temp)
    above = per_sample(jnp.any(temp > hi, axis=(1, 2)))  # still out: restore the sample
    offset = jnp.where(above, 0.0, offset)
    temp = jnp.where(above, sp, temp)

    # overlap count compared with `== True`, i.e. == 1
    close = per_sample(_overlap_count(jnp.concatenate([inv, temp], 1), thr) == 1)
    offset = jnp.where(close, -2 * offset, offset)
    temp = jnp.where(close, temp + offset, temp)
    close = per_sample(_overlap_count(jnp.concatenate([inv, temp], 1), thr) == 1)

    out = per_sample(jnp.any((temp > hi) | (temp < lo), axis=(1, 2)))
    temp = jnp.where(out | close, sp, temp)  # restore the spurious balls
    return jnp.concatenate([inv, temp], axis=1)


@functools.partial(
    jax.jit,
    static_argnames=(
        "n", "num_domains", "ball_size", "invariant_low", "invariant_high",
        "n_balls_invariant", "n_balls_spurious", "correlated_z", "corr_prob",
    ),
)
def _sample_positions(
    key, lows, highs, max_redraws, *, n, num_domains, ball_size, invariant_low, invariant_high,
    n_balls_invariant, n_balls_spurious, correlated_z, corr_prob,
):
    n_inv, n_sp = n_balls_invariant, n_balls_spurious
    thr = 2 * ball_size
    k_sp, k_sp_redraw, k_inv, k_inv_redraw, k_coin = jax.random.split(key, 5)
    domain = jnp.asarray(domain_labels(n, num_domains))

    # spurious balls in their domain's box, shrunk by the ball size
    sp_lo = lows.astype(jnp.float32)[domain] + ball_size  # [n, 2]
    sp_hi = highs.astype(jnp.float32)[domain] - ball_size

    def draw_sp(k, lo, hi):
        return jax.random.uniform(k, (n_sp, 2), jnp.float32) * (hi - lo) + lo

    sp = jax.vmap(draw_sp)(jax.random.split(k_sp, n), sp_lo, sp_hi)  # [n, n_sp, 2]

    def redraw_sp(k, p, lo, hi):
        return _redraw(
            k, p, lambda q: _later_close(q, thr), lambda kk: draw_sp(kk, lo, hi), max_redraws
        )

    sp = jax.vmap(redraw_sp)(jax.random.split(k_sp_redraw, n), sp, sp_lo, sp_hi)

    # invariant balls: one box for all domains
    inv_lo = jnp.asarray(invariant_low, jnp.float32) + ball_size
    inv_hi = jnp.asarray(invariant_high, jnp.float32) - ball_size

    def draw_inv(k):
        return jax.random.uniform(k, (n_inv, 2), jnp.float32) * (inv_hi - inv_lo) + inv_lo

    inv = jax.vmap(draw_inv)(jax.random.split(k_inv, n))  # [n, n_inv, 2]
    origin = jnp.zeros((n_inv, 2), jnp.float32)  # z_all's unfilled invariant slots

    def redraw_inv(k, p, s):
        def flags(q):
            return _later_close(jnp.concatenate([q, origin, s], 0), thr)[:n_inv]

        return _redraw(k, p, flags, draw_inv, max_redraws)

    inv = jax.vmap(redraw_inv)(jax.random.split(k_inv_redraw, n), inv, sp)

    positions = jnp.concatenate([inv, sp], axis=1)
    if correlated_z:
        coin = jax.random.bernoulli(k_coin, corr_prob, (n, n_sp))
        positions = correlate_positions(positions, coin, n_inv, ball_size)
    return {"domain": domain, "positions": positions}


def sample_positions(
    key: KeyLike,
    n: int,
    num_domains: int,
    lows: Array,
    highs: Array,
    ball_size: float,
    invariant_low: Sequence[float],
    invariant_high: Sequence[float],
    n_balls_invariant: int = 1,
    n_balls_spurious: int = 1,
    correlated_z: bool = False,
    corr_prob: float = 0.5,
    max_redraws: int = 100,
) -> dict:
    """Ball positions of one dataset (steps 2-5 of `MDBalls._generate_data`).

    Args:
      key: PRNG key or int seed.
      n: number of samples (static).
      lows, highs: [D, 2] domain boxes (`domain_boxes`).
      invariant_low, invariant_high: (x, y) of the invariant box.
      max_redraws: overlap redraw rounds per sample (traced: changing it does not recompile).
    Returns:
      {"domain": [n] int32 (blocks of `int(n / D)`, remainder rows 0; see `domain_labels`),
       "positions": [n, n_balls_invariant + n_balls_spurious, 2] float32, (x, y) per ball,
       invariant balls first}.
    """
    if correlated_z:
        _check_correlation(n_balls_invariant, n_balls_spurious)
    return _sample_positions(
        as_key(key), jnp.asarray(lows), jnp.asarray(highs), jnp.int32(max_redraws),
        n=int(n), num_domains=int(num_domains), ball_size=float(ball_size),
        invariant_low=tuple(float(v) for v in invariant_low),
        invariant_high=tuple(float(v) for v in invariant_high),
        n_balls_invariant=int(n_balls_invariant), n_balls_spurious=int(n_balls_spurious),
        correlated_z=bool(correlated_z), corr_prob=float(corr_prob),
    )


# ----------------------------------------------------------------------------------------------
# Datasets and splits


def _positions_for(key: Array, cfg: BallsDataConfig, n: int, boxes) -> dict:
    lows, highs = boxes
    return sample_positions(
        key, n, cfg.num_domains, lows, highs, cfg.ball_size, cfg.invariant_low,
        cfg.invariant_high, cfg.n_balls_invariant, cfg.n_balls_spurious, cfg.correlated_z,
        cfg.corr_prob, cfg.max_redraws,
    )


def _items(cfg: BallsDataConfig, positions: Array, domain: Array) -> dict:
    """Per-sample arrays of a split (the reference's item dict, images last)."""
    z = positions.reshape(positions.shape[0], 2 * positions.shape[1])  # [x0, y0, x1, y1, ...]
    n_inv = 2 * cfg.n_balls_invariant
    x = render_uint8(positions, cfg.ball_size, cfg.image_size, cfg.render_batch_size)
    if cfg.image_dtype == "float32":
        x = to_float_images(x)
    return {"x": x, "z": z, "z_invariant": z[:, :n_inv], "z_spurious": z[:, n_inv:],
            "domain": domain}


def generate_balls_dataset(
    key: KeyLike,
    cfg: BallsDataConfig,
    num_samples: int,
    boxes: Optional[tuple[Array, Array]] = None,
) -> tuple[dict, dict]:
    """One dataset instantiation (`MDBalls`): new domain boxes unless `boxes` is given.

    Returns:
      data: {"x": [n, H, W, 3] f32 in [-1, 1] (uint8 with `cfg.image_dtype="uint8"`),
             "z": [n, 2 * n_balls] f32 ([x_inv, y_inv, x_sp, y_sp] for one ball each),
             "z_invariant": [n, 2 * n_inv], "z_spurious": [n, 2 * n_sp], "domain": [n] int32};
      info: {"domain_lows": [D, 2], "domain_highs": [D, 2]}.
    """
    k_boxes, k_pos = jax.random.split(as_key(key))
    if boxes is None:
        boxes = domain_boxes(k_boxes, cfg.num_domains, cfg.ball_size, cfg.n_balls_spurious)
    lat = _positions_for(k_pos, cfg, num_samples, boxes)
    data = _items(cfg, lat["positions"], lat["domain"])
    return data, {"domain_lows": boxes[0], "domain_highs": boxes[1]}


def make_balls_splits(key: KeyLike, cfg: BallsDataConfig, return_info: bool = False):
    """Train / valid / test splits as the reference datamodule builds them.

    Train and valid come from one dataset of `num_samples_train` rows split by a random
    permutation (first `num_samples_train - num_samples_valid` permuted rows -> train, the rest ->
    valid, in permutation order, like `random_split`); the positions are permuted before
    rendering, so the full image tensor is never materialised. Test is its own dataset with its
    own domain boxes (unless `cfg.test_shares_boxes`); omitted when `num_samples_test == 0`.

    Returns:
      {split: {"x": [n_split, H, W, 3] f32, "z": [n_split, 2 * n_balls] f32, "z_invariant",
      "z_spurious", "domain": [n_split] int32}}, and with `return_info` also
      {"train": info, "test": info} (valid shares train's; see `generate_balls_dataset`).
    """
    k_train, k_split, k_test = jax.random.split(as_key(key), 3)
    k_boxes, k_pos = jax.random.split(k_train)
    boxes = domain_boxes(k_boxes, cfg.num_domains, cfg.ball_size, cfg.n_balls_spurious)
    lat = _positions_for(k_pos, cfg, cfg.num_samples_train, boxes)
    n_tr = cfg.num_samples_train - cfg.num_samples_valid
    perm = jax.random.permutation(k_split, cfg.num_samples_train)
    splits = {
        name: _items(cfg, lat["positions"][idx], lat["domain"][idx])
        for name, idx in (("train", perm[:n_tr]), ("valid", perm[n_tr:]))
    }
    infos = {"train": {"domain_lows": boxes[0], "domain_highs": boxes[1]}}
    if cfg.num_samples_test > 0:
        shared = boxes if cfg.test_shares_boxes else None
        splits["test"], infos["test"] = generate_balls_dataset(
            k_test, cfg, cfg.num_samples_test, shared
        )
    return (splits, infos) if return_info else splits
