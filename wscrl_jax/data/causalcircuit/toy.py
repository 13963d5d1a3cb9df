"""A toy CausalCircuit: pairs of rendered "circuit" images in exactly the download's format,
for users without the download and for tests.

Causal variables, in the dataset page's order: red, green, blue light intensity and the arm
position, all in (0, 1). Graph (`TOY_GRAPH[i, j] = 1` means i -> j):

    arm -> red, arm -> green, arm -> blue   (the arm presses the button under each light)
    red -> green                            (the red light also drives the green one)

Mechanisms are additive noise in logit space, so the noise is recoverable from the values:
`arm = sigmoid(e_arm)`, `light_k = sigmoid(f_k(parents) + e_k)` with
`f_k = -1 + 4 * exp(-((arm - button_k) / 0.12)^2)` (+ `2.5 * red - 1.25` for green), e ~ N(0, s^2).

Pairs (the reference's weak supervision): label 0 (no intervention) or k in 1..4 (intervention
on variable k - 1), uniform over the five (so P(label 0) = 1/5); masks one-hot of label - 1
(all False for label 0). The intervened variable gets a fresh value `sigmoid(u)`,
u ~ N(0, 1.5^2), independent of its parents; every other variable keeps its noise and is
recomputed, so only the target and its descendants change. `epsilon[:, 1]` holds the noise
encodings of the second sample (the noise that the observational mechanisms map to it): equal
to `epsilon[:, 0]` except for the target, whose entry is `u - f_target(parents after)`.
"""

import os
from typing import Dict

import numpy as np

from wscrl_jax.data.causalcircuit.files import NUM_CAUSAL, NUM_SHARDS, encode_jpeg

TOY_VARIABLES = ("red", "green", "blue", "arm")
RED, GREEN, BLUE, ARM = range(NUM_CAUSAL)
TOY_GRAPH = np.zeros((NUM_CAUSAL, NUM_CAUSAL), np.int64)
TOY_GRAPH[ARM, [RED, GREEN, BLUE]] = 1
TOY_GRAPH[RED, GREEN] = 1
_ORDER = (ARM, RED, GREEN, BLUE)  # a topological order of TOY_GRAPH
_BUTTONS = (0.2, 0.5, 0.8)  # arm positions that press the red, green, blue buttons
_NOISE_STD = np.array([0.6, 0.6, 0.6, 1.2])
_INTERVENTION_STD = 1.5

# Scene (coordinates in [0, 1], x right, y down): lights in a row at the top, an arm swinging
# from a pivot at the bottom centre along an arc below them.
_BACKGROUND = np.array([18.0, 18.0, 24.0])
_LIGHTS_XY = ((0.2, 0.2), (0.5, 0.2), (0.8, 0.2))
_LIGHT_RADIUS = 0.11
_PIVOT = (0.5, 0.95)
_ARM_LENGTH = 0.45
_ARM_HALF_WIDTH = 0.035
_HAND_RADIUS = 0.07
_ARM_COLOUR = np.array([205.0, 205.0, 190.0])


def descendants(k: int) -> np.ndarray:
    """bool [4]: the variables downstream of variable k in TOY_GRAPH (k excluded)."""
    reach = np.zeros(NUM_CAUSAL, bool)
    frontier = TOY_GRAPH[k].astype(bool)
    while (frontier & ~reach).any():
        reach |= frontier
        frontier = TOY_GRAPH[reach].any(axis=0)
    return reach


def _offset(k: int, z: np.ndarray) -> np.ndarray:
    """f_k(parents) [N] of variable k given the values z [N, 4] (its parents set)."""
    if k == ARM:
        return np.zeros(len(z))
    out = -1.0 + 4.0 * np.exp(-(((z[:, ARM] - _BUTTONS[k]) / 0.12) ** 2))
    if k == GREEN:
        out = out + 2.5 * z[:, RED] - 1.25
    return out


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def toy_solve(eps: np.ndarray) -> np.ndarray:
    """The observational SCM: noise [N, 4] -> causal variables [N, 4]."""
    z = np.zeros(np.shape(eps))
    for k in _ORDER:
        z[:, k] = _sigmoid(_offset(k, z) + eps[:, k])
    return z


def sample_toy_pairs(n: int, rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """n pairs: original_latents, epsilon float64 [n, 2, 4], intervention_labels int64 [n],
    intervention_masks bool [n, 4]."""
    eps = rng.normal(size=(n, NUM_CAUSAL)) * _NOISE_STD
    labels = rng.integers(0, NUM_CAUSAL + 1, size=n)
    fresh = rng.normal(size=n) * _INTERVENTION_STD
    masks = labels[:, None] == np.arange(1, NUM_CAUSAL + 1)[None, :]
    z1, z2, eps2 = toy_solve(eps), np.zeros((n, NUM_CAUSAL)), eps.copy()
    for k in _ORDER:  # the same order and operations as toy_solve: equal values stay equal
        offset2 = _offset(k, z2)
        pre = np.where(masks[:, k], fresh, offset2 + eps[:, k])
        z2[:, k] = _sigmoid(pre)
        eps2[:, k] = np.where(masks[:, k], fresh - offset2, eps[:, k])
    return {"original_latents": np.stack([z1, z2], axis=1), "epsilon": np.stack([eps, eps2], 1),
            "intervention_labels": labels.astype(np.int64), "intervention_masks": masks}


def _cover(dist: np.ndarray, radius: float, resolution: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of a shape at distance `dist` with edge at `radius`."""
    return np.clip((radius - dist) * resolution + 0.5, 0.0, 1.0)[..., None]


def render(latents: np.ndarray, resolution: int) -> np.ndarray:
    """latents [N, 4] (red, green, blue, arm in [0, 1]) -> uint8 images [N, R, R, 3].

    Each light is a disc whose own channel goes from 40 (off) to 255 (on) over a dim housing;
    the arm is a bar from the pivot to a disc (the hand) whose angle follows the arm variable.
    """
    z = np.clip(np.asarray(latents, np.float64), 0.0, 1.0)
    n, r = len(z), resolution
    centres = (np.arange(r) + 0.5) / r
    x, y = centres[None, None, :], centres[None, :, None]  # [1, 1, R], [1, R, 1]
    image = np.broadcast_to(_BACKGROUND, (n, r, r, 3)).copy()
    for k, (cx, cy) in enumerate(_LIGHTS_XY):
        cover = _cover(np.hypot(x - cx, y - cy), _LIGHT_RADIUS, r)  # [1, R, R, 1]
        colour = np.full((n, 3), 30.0)
        colour[:, k] = 40.0 + 215.0 * z[:, k]
        image = image * (1 - cover) + cover * colour[:, None, None, :]
    angle = np.pi * (0.12 + 0.76 * z[:, ARM])
    hx = (_PIVOT[0] - _ARM_LENGTH * np.cos(angle))[:, None, None]  # [N, 1, 1]
    hy = (_PIVOT[1] - _ARM_LENGTH * np.sin(angle))[:, None, None]
    dx, dy = hx - _PIVOT[0], hy - _PIVOT[1]
    t = np.clip(((x - _PIVOT[0]) * dx + (y - _PIVOT[1]) * dy) / _ARM_LENGTH ** 2, 0.0, 1.0)
    bar = np.hypot(x - _PIVOT[0] - t * dx, y - _PIVOT[1] - t * dy)  # distance to the segment
    cover = np.maximum(_cover(bar, _ARM_HALF_WIDTH, r),
                       _cover(np.hypot(x - hx, y - hy), _HAND_RADIUS, r))
    image = image * (1 - cover) + cover * _ARM_COLOUR
    return np.round(image).astype(np.uint8)


def _jpeg_array(latents: np.ndarray, resolution: int, chunk: int = 256) -> np.ndarray:
    """latents [N, 2, 4] -> imgs |S<L> [N, 2] (the download's fixed-length JPEG bytes)."""
    flat = latents.reshape(-1, NUM_CAUSAL)
    streams = []
    for start in range(0, len(flat), chunk):  # chunks bound the [chunk, R, R] temporaries
        streams += [encode_jpeg(im) for im in render(flat[start:start + chunk], resolution)]
    length = max([len(s) for s in streams] + [1])
    return np.array(streams, dtype=f"S{length}").reshape(len(latents), 2)


def _save(path: str, pairs: Dict[str, np.ndarray], resolution: int):
    np.savez(path, imgs=_jpeg_array(pairs["original_latents"], resolution),
             original_latents=pairs["original_latents"].astype(np.float64),
             epsilon=pairs["epsilon"].astype(np.float64),
             intervention_labels=pairs["intervention_labels"].astype(np.int64),
             intervention_masks=pairs["intervention_masks"].astype(bool),
             pressed=np.zeros((len(pairs["intervention_labels"]), 2, 3)))


def write_toy_dataset(out_dir: str, train: int = 4000, val: int = 500, test: int = 500,
                      resolution: int = 64, layout: str = "single", seed: int = 0) -> str:
    """Writes a toy download to out_dir: train.npz (layout "single") or train-0.npz ..
    train-9.npz (layout "sharded", the pairs split evenly in order), val.npz, test.npz.
    Deterministic in `seed` (each split from its own stream, so sizes do not interact)."""
    if layout not in ("single", "sharded"):
        raise ValueError(f"layout must be 'single' or 'sharded', got {layout!r}")
    sizes = {"train": train, "val": val, "test": test}
    for split, size in sizes.items():
        if int(size) < 1:
            raise ValueError(f"{split} must be at least 1 pair, got {size}")
    if int(resolution) < 16:
        raise ValueError(f"resolution must be at least 16 pixels, got {resolution}")
    os.makedirs(out_dir, exist_ok=True)
    streams = np.random.SeedSequence(seed).spawn(len(sizes))
    for (split, size), stream in zip(sizes.items(), streams):
        pairs = sample_toy_pairs(int(size), np.random.default_rng(stream))
        if split == "train" and layout == "sharded":
            for k, rows in enumerate(np.array_split(np.arange(size), NUM_SHARDS)):
                _save(os.path.join(out_dir, f"train-{k}.npz"),
                      {key: v[rows] for key, v in pairs.items()}, resolution)
        else:
            _save(os.path.join(out_dir, f"{split}.npz"), pairs, resolution)
    return out_dir
