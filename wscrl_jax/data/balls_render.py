"""The balls images of MD-CRL rendered in JAX (`datamodule/md_balls_dataset.py: _draw_scene`,
which draws with pygame); the latents they show come from `data/balls.py`.

Rendering (`render_uint8`, `render`) is a **pixel-exact emulation of pygame's `gfxdraw.aacircle` +
`gfxdraw.filled_circle`** (SDL_gfx `aaellipseColor` and `filledCircleColor` as vendored in pygame
2) on a 32-bit XRGB surface: the integer midpoint / Wu-style stencils of radius
`int(image_size * ball_size)` are computed once on the host (`pygame_disc_stencil`), then stamped
at pixel `(column int(image_size * x), pygame row int(image_size * y))` for every ball in order,
with SDL_gfx's integer blend `d + ((c - d) * a >> 8)` (alpha 255 = overwrite) for the outline and
an overwrite for the filled disc; the surface is then flipped vertically, so a ball centre lands
on image row `image_size - 1 - int(image_size * y)` (y points up). Colours are the reference's
HLS triplets `hls_to_rgb(h, l, s) * 255` truncated to ints like pygame does: red (255, 0, 0),
blue (0, 10, 255), "green" (255, 244, 0), "yellow" (0, 254, 255). Checked against pygame 2.6.1
(SDL 2.28) on 1500 random scenes of 4 balls (radii 1, 3, 5, 6, 7 px, overlaps, clipping at the
border): 0 differing pixels. The stencil is far from area coverage: with radius 5 it is 89
overwritten pixels (rows dy = -2..2 span dx = -5..5) plus 8 partly blended outline pixels at the
top and bottom (G = 26 or 103 for the red ball); a coverage disc (`clamp(r + 0.5 - dist, 0, 1)`
or 16x supersampled) would differ from it on ~30-40 edge pixels per ball, up to ~230 / 255.
Remaining assumptions: positions are float32 (the reference's float64 pixel index `int(64 x)` is
the same for the same float32 value when `image_size` is a power of two); pygame truncates the
float colour channels (`int()`), as pygame 2's `pg_RGBAFromObj` does.

Images: `uint8 -> (v / 255 - 0.5) * 2`, clipped to [-1, 1] (`ToTensor -> Standardize ->
TensorClip`), float32, **NHWC** `[n, H, W, 3]` (Flax `nn.Conv` is NHWC; the reference's tensors
are CHW). A 60000-image float32 dataset is 2.9 GB; `render_uint8` gives the 4x smaller uint8
images.
"""

from __future__ import annotations

import colorsys
import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# md_balls_dataset.py COLOURS_ (HLS); the comments there call indices 2 / 3 green / yellow.
COLOURS_HLS = ((0.0, 0.5, 1.0), (0.66, 0.5, 1.0), (0.16, 0.5, 1.0), (0.5, 0.5, 1.0))
MAX_BALLS = len(COLOURS_HLS)


def ball_colours(n_balls: int) -> np.ndarray:
    """RGB colour of each ball index, [n_balls, 3] int32: `int(255 * hls_to_rgb(*COLOURS_[i]))`."""
    if not 1 <= n_balls <= MAX_BALLS:
        raise ValueError(f"the reference has colours for 1..{MAX_BALLS} balls, got {n_balls}")
    return np.array(
        [[int(255.0 * ch) for ch in colorsys.hls_to_rgb(*c)] for c in COLOURS_HLS[:n_balls]],
        np.int32,
    )


def _lrint(v: float) -> int:
    return int(np.rint(v))  # round half to even, like C lrint in the default rounding mode


def _weight(num: int, den: int) -> int:
    """SDL_gfx: `cp = min((float)|num| / (float)|den|, 1)`, `weight = (Uint8)(cp * 255)`."""
    one = np.float32(1.0)
    cp = one if den == 0 else min(np.float32(abs(num)) / np.float32(abs(den)), one)
    return int(np.float32(cp) * np.float32(255))


def _aacircle_ops(rad: int) -> list[tuple[int, int, int]]:
    """`aaellipseColor(dst, 0, 0, rad, rad, opaque colour)`: (dx, row dy, alpha) in draw order.

    Alpha 255 overwrites; below 255 blends `d + ((c - d) * alpha >> 8)`
    (`pixelColorWeightNolock`: `alpha = 255 * weight >> 8`).
    """
    if rad == 0:
        return [(0, 0, 255)]  # vlineColor of one pixel
    a2 = b2 = rad * rad
    ds = dt = 2 * a2
    sab = np.sqrt(float(a2 + b2))
    t, s, d = 0, -2 * a2 * rad, 0
    xp, yp = 0, -rad
    ops = [(xp, yp, 255), (-xp, yp, 255), (xp, -yp, 255), (-xp, -yp, 255)]  # "end points"

    def alpha(w):
        return (255 * w) >> 8

    for _ in range(_lrint(a2 / sab)):
        xp -= 1
        d += t - b2
        if d >= 0:
            ys = yp - 1
        elif d - s - a2 > 0:
            if 2 * d - s - a2 >= 0:
                ys = yp + 1
            else:
                ys = yp
                yp += 1
                d -= s + a2
                s += ds
        else:
            yp += 1
            ys = yp + 1
            d -= s + a2
            s += ds
        t -= dt
        w = _weight(d, s)
        aw, ai = alpha(w), alpha(255 - w)
        ops += [(xp, yp, ai), (-xp, yp, ai), (xp, ys, aw), (-xp, ys, aw)]
        ops += [(xp, -yp, ai), (-xp, -yp, ai), (xp, -ys, aw), (-xp, -ys, aw)]
    for _ in range(_lrint(b2 / sab)):
        yp += 1
        d -= s + a2
        if d <= 0:
            xs = xp + 1
        elif d + t - b2 < 0:
            if 2 * d + t - b2 <= 0:
                xs = xp - 1
            else:
                xs = xp
                xp -= 1
                d += t - b2
                t -= dt
        else:
            xp -= 1
            xs = xp - 1
            d += t - b2
            t -= dt
        s += ds
        w = _weight(d, t)
        aw, ai = alpha(w), alpha(255 - w)
        ops += [(xp, yp, ai), (-xp, yp, ai), (xp, -yp, ai), (-xp, -yp, ai)]
        ops += [(xs, yp, aw), (-xs, yp, aw), (xs, -yp, aw), (-xs, -yp, aw)]
    return ops


def _filled_circle_pixels(rad: int) -> set[tuple[int, int]]:
    """Pixels (dx, row dy) that `filledCircleColor(dst, 0, 0, rad)` overwrites."""
    if rad == 0:
        return {(0, 0)}
    px: set[tuple[int, int]] = set()

    def hline(half, y):
        px.update((x, y) for x in range(-half, half + 1))

    cx, cy, ocx, ocy = 0, rad, -1, -1
    df, d_e, d_se = 1 - rad, 3, -2 * rad + 5
    while True:
        if ocy != cy:
            hline(cx, cy)
            hline(cx, -cy)
            ocy = cy
        if ocx != cx:
            if cx != cy:
                hline(cy, -cx)
                hline(cy, cx)
            ocx = cx
        if df < 0:
            df += d_e
            d_e += 2
            d_se += 2
        else:
            df += d_se
            d_e += 2
            d_se += 4
            cy -= 1
        cx += 1
        if cx > cy:
            return px


@functools.lru_cache(maxsize=None)
def pygame_disc_stencil(radius_px: int) -> tuple[np.ndarray, np.ndarray]:
    """pygame's `aacircle` + `filled_circle` of integer radius as a stencil around the centre.

    Returns:
      alphas: [M, K, K] int32, the M successive outline blends of each pixel (0 = none,
        255 = overwrite), indexed [m, row dy + E, dx + E] in pygame rows (y down), K = 2 E + 1;
      filled: [K, K] bool, the pixels the filled circle overwrites (after the outline).
    """
    ops = _aacircle_ops(radius_px)
    fill = _filled_circle_pixels(radius_px)
    extent = max(max(abs(dx), abs(dy)) for dx, dy, _ in ops + [(x, y, 0) for x, y in fill])
    k = 2 * extent + 1
    seq: dict[tuple[int, int], list[int]] = {}
    for dx, dy, a in ops:
        seq.setdefault((dy + extent, dx + extent), []).append(a)
    alphas = np.zeros((max(len(v) for v in seq.values()), k, k), np.int32)
    for (r, c), a_list in seq.items():
        alphas[: len(a_list), r, c] = a_list
    filled = np.zeros((k, k), bool)
    for dx, dy in fill:
        filled[dy + extent, dx + extent] = True
    return alphas, filled


@functools.partial(jax.jit, static_argnames=("ball_size", "image_size", "batch_size"))
def _render_uint8(positions, *, ball_size, image_size, batch_size):
    n_balls = positions.shape[1]
    alphas, filled = pygame_disc_stencil(int(ball_size * image_size))
    extent = (filled.shape[0] - 1) // 2
    k = 2 * extent + 1
    alphas = jnp.asarray(alphas.reshape(alphas.shape[0], -1))
    filled = jnp.asarray(filled.reshape(-1))
    colours = jnp.asarray(ball_colours(n_balls))  # [n_balls, 3]
    rows = jnp.arange(image_size, dtype=jnp.int32)[:, None]  # pygame rows, y down
    cols = jnp.arange(image_size, dtype=jnp.int32)[None, :]

    def one(pos):  # [n_balls, 2] -> [H, W, 3]
        img = jnp.full((image_size, image_size, 3), 255, jnp.int32)
        # pygame's int(): truncation towards zero
        centre = jnp.trunc(image_size * pos).astype(jnp.int32)
        for b in range(n_balls):
            c = colours[b]
            iy = rows - centre[b, 1] + extent
            ix = cols - centre[b, 0] + extent
            inside = (iy >= 0) & (iy < k) & (ix >= 0) & (ix < k)  # [H, W]; clipping
            flat = jnp.clip(iy, 0, k - 1) * k + jnp.clip(ix, 0, k - 1)
            for m in range(alphas.shape[0]):
                a = jnp.where(inside, alphas[m][flat], 0)[..., None]
                blended = img + jnp.floor_divide((c - img) * a, 256)  # SDL_gfx >> 8
                img = jnp.where(a == 255, c, blended)
            img = jnp.where((inside & filled[flat])[..., None], c, img)
        return img[::-1].astype(jnp.uint8)  # pygame.transform.flip(surf, False, True)

    return jax.lax.map(one, positions, batch_size=batch_size)


def render_uint8(
    positions: Array, ball_size: float, image_size: int = 64, batch_size: int = 1024
) -> Array:
    """Images of the balls, [n, H, W, 3] uint8 (white background; ball i in colour i).

    positions: [n, n_balls, 2] (x, y) in [0, 1], drawn in ball order (later balls on top).
    `batch_size` samples are rendered at once (peak memory only).
    """
    positions = jnp.asarray(positions, jnp.float32)
    ball_colours(positions.shape[1])
    if positions.shape[0] == 0:
        return jnp.zeros((0, image_size, image_size, 3), jnp.uint8)
    return _render_uint8(
        positions, ball_size=float(ball_size), image_size=int(image_size),
        batch_size=int(min(batch_size, positions.shape[0])),
    )


def to_float_images(images_uint8: Array) -> Array:
    """`ToTensor -> Standardize -> TensorClip`: uint8 -> float32 in [-1, 1], same layout."""
    x = (images_uint8.astype(jnp.float32) / 255.0 - 0.5) * 2.0
    return jnp.clip(x, -1.0, 1.0)


def render(
    positions: Array, ball_size: float, image_size: int = 64, batch_size: int = 1024
) -> Array:
    """Model-ready images, [n, H, W, 3] float32 in [-1, 1] (NHWC; see `render_uint8`)."""
    return to_float_images(render_uint8(positions, ball_size, image_size, batch_size))
