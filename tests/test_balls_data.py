"""Multi-domain balls data (reference `datamodule/md_balls_dataset.py: MDBalls`)."""

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.data import balls as B
from wscrl_jax.data import balls_render as R
from wscrl_jax.data.mixing import SPLITS

BS = 0.08  # reference ball size: radius int(64 * 0.08) = 5 px
INV_LOW, INV_HIGH = (0.1, 0.1), (0.9, 0.9)
N, D = 4002, 4  # int(4002 / 4) = 1000 per domain, 2 remainder rows

# (x, y) of [invariant (red), spurious (blue)] balls
SCENES = np.array(
    [
        [[0.5, 0.5], [0.2, 0.9]],  # the blue ball at y = 0.9 lands in the top rows
        [[0.1, 0.1], [0.9, 0.3]],
        [[0.4, 0.6], [0.45, 0.62]],  # overlap: blue over red
        [[0.01, 0.99], [0.999, 0.0]],  # clipped at the border
        [[0.3, 0.75], [0.7, 0.25]],
        [[0.6, 0.6], [0.6, 0.6]],  # same centre: the outline is blended twice
        [[0.123, 0.456], [0.789, 0.321]],
        [[0.92, 0.08], [0.08, 0.92]],
    ],
    np.float32,
)
# sha256 of the uint8 [8, 64, 64, 3] images that the reference's drawing code (gfxdraw.aacircle +
# filled_circle on pygame.Surface((64, 64)), vertical flip, screen blit, pixels3d transposed)
# gives for SCENES with pygame 2.6.1 / SDL 2.28.4.
PYGAME_SHA256 = "c0d5b9d035ddca3df3a1c6cb19d9d1ccb940eddb423dad44ee5631d5279143d1"
# Green channel of the red ball of SCENES[0] (pygame), rows 25..37 x columns 26..38 of the image.
PYGAME_RED_G = """
255 255 255 255 255 255 255 255 255 255 255 255 255
255 255 255 255 103  26   0  26 103 255 255 255 255
255 255 255   0   0   0   0   0   0   0 255 255 255
255 255   0   0   0   0   0   0   0   0   0 255 255
255   0   0   0   0   0   0   0   0   0   0   0 255
255   0   0   0   0   0   0   0   0   0   0   0 255
255   0   0   0   0   0   0   0   0   0   0   0 255
255   0   0   0   0   0   0   0   0   0   0   0 255
255   0   0   0   0   0   0   0   0   0   0   0 255
255 255   0   0   0   0   0   0   0   0   0 255 255
255 255 255   0   0   0   0   0   0   0 255 255 255
255 255 255 255 103  26   0  26 103 255 255 255 255
255 255 255 255 255 255 255 255 255 255 255 255 255
"""

RED = np.array([1.0, -1.0, -1.0], np.float32)  # (255, 0, 0)
BLUE = np.array([-1.0, 10 / 255 * 2 - 1, 1.0], np.float32)  # (0, 10, 255)


@pytest.fixture(scope="module")
def scene_images():
    u8 = np.asarray(R.render_uint8(SCENES, BS))
    return u8, np.asarray(R.to_float_images(u8))


@pytest.fixture(scope="module")
def boxes():
    lows, highs = B.domain_boxes(0, D, BS, 1)
    return np.asarray(lows), np.asarray(highs)


@pytest.fixture(scope="module")
def positions(boxes):
    out = B.sample_positions(1, N, D, *boxes, BS, INV_LOW, INV_HIGH)
    return np.asarray(out["domain"]), np.asarray(out["positions"])


def min_pair_distance(p):
    """[n, k, 2] -> [n] smallest distance between two balls of a sample."""
    d = np.linalg.norm(p[:, :, None] - p[:, None], axis=-1)
    k = p.shape[1]
    d[:, np.arange(k), np.arange(k)] = np.inf
    return d.min(axis=(1, 2))


# ----------------------------------------------------------------------------------------------
# Rendering


def test_render_is_pixel_exact_pygame(scene_images):
    u8, _ = scene_images
    assert u8.shape == (8, 64, 64, 3) and u8.dtype == np.uint8
    red_g = np.array(PYGAME_RED_G.split(), np.uint8).reshape(13, 13)
    np.testing.assert_array_equal(u8[0, 25:38, 26:39, 1], red_g)
    assert np.all(u8[0, 25:38, 26:39, 0] == 255)  # red channel saturated
    assert hashlib.sha256(np.ascontiguousarray(u8).tobytes()).hexdigest() == PYGAME_SHA256
    assert R.ball_colours(4).tolist() == [[255, 0, 0], [0, 10, 255], [255, 244, 0], [0, 254, 255]]


def test_ball_centres_flipped_y_and_value_range(scene_images):
    _, x = scene_images
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0
    for i, ((xi, yi), (xs, ys)) in enumerate(SCENES):
        if i not in (2, 5):  # the blue ball covers the red centre there
            np.testing.assert_array_equal(x[i, 63 - int(64 * yi), int(64 * xi)], RED)
        np.testing.assert_allclose(x[i, 63 - int(64 * ys), int(64 * xs)], BLUE, atol=1e-6)
    # flipped y: the ball at y = 0.9 is in the top rows, the one at y = 0.5 in the middle
    blue_rows = np.nonzero(np.all(np.isclose(x[0], BLUE, atol=1e-6), axis=-1))[0]
    red_rows = np.nonzero(np.all(x[0] == RED, axis=-1))[0]
    assert blue_rows.min() == 63 - 57 - 5 and blue_rows.max() == 63 - 57 + 5
    assert red_rows.min() == 31 - 5 and red_rows.max() == 31 + 5
    # white far from the balls; exactly two colours of pixels plus the blends
    assert np.all(x[0, 50:, 50:] == 1.0) and np.all(x[1, 30:40, :20] == 1.0)
    assert np.sum(np.all(x[0] == 1.0, axis=-1)) == 64 * 64 - 2 * 97  # 89 filled + 8 outline


# ----------------------------------------------------------------------------------------------
# Latents


def test_domain_boxes_fit(boxes):
    lows, highs = boxes
    assert lows.shape == (D, 2) and highs.shape == (D, 2)
    assert np.all(lows >= BS) and np.all(highs <= 1 - BS)
    assert np.all(highs >= lows + 4 * BS)
    assert len(np.unique(lows[:, 0])) == D


def test_domain_labels_blocks_and_remainder(positions, boxes):
    domain, p = positions
    assert domain.dtype == np.int32 and p.shape == (N, 2, 2) and p.dtype == np.float32
    np.testing.assert_array_equal(domain[: 4 * 1000], np.arange(4000) // 1000)
    np.testing.assert_array_equal(domain[4000:], 0)  # remainder rows: domain 0 samples
    np.testing.assert_array_equal(B.domain_labels(10, 3), [0, 0, 0, 1, 1, 1, 2, 2, 2, 0])
    lows, highs = boxes
    tail = p[4000:, 1]  # drawn in domain 0's box like the reference's `domain_mask == 0`
    assert np.all((tail >= lows[0] + BS) & (tail <= highs[0] - BS))


def test_positions_follow_boxes(positions, boxes):
    domain, p = positions
    lows, highs = boxes
    inv, sp = p[:, 0], p[:, 1]
    assert np.all((inv >= INV_LOW[0] + BS - 1e-6) & (inv <= INV_HIGH[0] - BS + 1e-6))
    for e in range(D):
        lo, hi = lows[e] + BS, highs[e] - BS
        s = sp[domain == e]
        assert np.all((s >= lo - 1e-6) & (s <= hi + 1e-6))
        # uniform in the shrunk box: mean at the centre (5 standard errors), full spread
        se = (hi - lo) / np.sqrt(12 * len(s))
        assert np.all(np.abs(s.mean(0) - (lo + hi) / 2) < 5 * se)
        assert np.all(s.min(0) < lo + 0.02 * (hi - lo)) and np.all(s.max(0) > hi - 0.02 * (hi - lo))
    # invariant: the same box in every domain (the overlap redraws shift it only slightly)
    np.testing.assert_allclose(inv.mean(0), [0.5, 0.5], atol=0.02)
    assert min_pair_distance(p).min() >= 2 * BS


def test_overlap_rejection_needs_and_does_redraws():
    lows, highs = B.domain_boxes(2, 2, BS, 2)  # two spurious balls per box
    args = (3, 1000, 2, lows, highs, BS, INV_LOW, INV_HIGH, 1, 2)
    raw = np.asarray(B.sample_positions(*args, max_redraws=0)["positions"])
    fixed = B.sample_positions(*args)  # 100 rounds; same compilation
    p, domain = np.asarray(fixed["positions"]), np.asarray(fixed["domain"])
    assert np.mean(min_pair_distance(raw) < 2 * BS) > 0.1  # redraws are needed
    assert min_pair_distance(p).min() >= 2 * BS
    lo, hi = np.asarray(lows)[domain] + BS, np.asarray(highs)[domain] - BS
    assert np.all((p[:, 1:] >= lo[:, None] - 1e-6) & (p[:, 1:] <= hi[:, None] + 1e-6))


def correlate_reference(z_all, coin, n_inv, ball_size):
    """`MDBalls._correlate_z` transcribed (properties ["x", "y"]; z_all [n, n_balls, 2])."""
    z_all = np.asarray(z_all, np.float64)
    ball_z_dim = 2
    z_all_temp = z_all.copy()
    offset = np.zeros((z_all.shape[0], z_all.shape[1] - n_inv, ball_z_dim))
    coin = np.repeat(coin[:, :, None], ball_z_dim, axis=-1)
    for dim_idx in range(ball_z_dim):
        offset[:, :, dim_idx] = coin[:, :, dim_idx] * z_all[:, :n_inv, dim_idx] * 0.2
    z_all_temp[:, n_inv:, :ball_z_dim] = z_all_temp[:, n_inv:, :ball_z_dim] + offset
    mask = (z_all_temp[:, n_inv:, :ball_z_dim] > 1 - ball_size).sum(axis=(1, 2)) >= 1
    offset[mask] = offset[mask] * -2
    z_all_temp[mask, n_inv:, :ball_z_dim] = z_all_temp[mask, n_inv:, :ball_z_dim] + offset[mask]
    mask = (z_all_temp[:, n_inv:, :ball_z_dim] > 1 - ball_size).sum(axis=(1, 2)) >= 1
    offset[mask] = 0
    z_all_temp[mask] = z_all[mask].copy()

    def close_count(z):
        c = z[:, :, :2]
        dm = np.linalg.norm(c[:, None, :] - c[:, :, None], axis=-1)
        return (np.triu(dm < ball_size * 2).sum(-1) > 1).sum(-1)

    close_mask = close_count(z_all_temp)
    mask = close_mask == True  # noqa: E712 (the reference's comparison)
    offset[mask] = offset[mask] * -2
    z_all_temp[mask, n_inv:, :ball_z_dim] = z_all_temp[mask, n_inv:, :ball_z_dim] + offset[mask]
    close_mask = close_count(z_all_temp)
    sp = z_all_temp[:, n_inv:, :ball_z_dim]
    mask = np.logical_or(sp > 1 - ball_size, sp < ball_size).sum(axis=(1, 2)) >= 1
    offset[mask] = 0
    z_all_temp[mask, n_inv:, :2] = z_all[mask, n_inv:, :2].copy()
    mask = close_mask.copy()
    offset[mask] = 0  # integer indexing of rows 0/1 (dead in the reference too)
    z_all_temp[mask == 1, n_inv:, :2] = z_all[mask == 1, n_inv:, :2].copy()
    return z_all_temp


@pytest.mark.parametrize("n_inv,n_sp", [(1, 1), (1, 2), (2, 2)])
def test_correlate_matches_reference_sequence(n_inv, n_sp):
    rng = np.random.default_rng(n_inv + 10 * n_sp)
    n = 3000
    inv = rng.uniform(0.18, 0.82, (n, n_inv, 2))
    sp = rng.uniform(0.1, 0.9, (n, n_sp, 2))  # reaches the edge: offsets push it out of frame
    p = np.concatenate([inv, sp], 1).astype(np.float32)
    coin = rng.integers(0, 2, (n, n_sp))
    fn = jax.jit(B.correlate_positions, static_argnums=(2, 3))
    got = np.asarray(fn(jnp.asarray(p), jnp.asarray(coin), n_inv, BS))
    want = correlate_reference(p, coin, n_inv, BS)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal(got[:, :n_inv], p[:, :n_inv])
    off = 0.2 * coin[..., None] * (p[:, :n_inv] if n_inv == n_sp else p[:, :1])

    def moved(sign):
        diff = np.abs(got[:, n_inv:] - (p[:, n_inv:] + sign * off))
        return np.all(diff < 1e-5, axis=(1, 2)) & (coin.sum(1) > 0)

    kept = np.all(got[:, n_inv:] == p[:, n_inv:], axis=(1, 2)) & (coin.sum(1) > 0)
    assert moved(1).sum() > 50 and moved(-1).sum() > 50 and kept.sum() > 50  # every branch
    assert np.all((got >= BS) & (got <= 1 - BS))


def test_correlated_sampling_stays_in_frame(boxes, positions):
    out = B.sample_positions(1, N, D, *boxes, BS, INV_LOW, INV_HIGH, correlated_z=True)
    p = np.asarray(out["positions"])
    _, base = positions  # same key: the positions before the correlation step
    np.testing.assert_array_equal(p[:, 0], base[:, 0])
    assert np.all((p >= BS) & (p <= 1 - BS))
    shift = (p[:, 1] - base[:, 1]) / (0.2 * base[:, 0])
    moved = np.any(p[:, 1] != base[:, 1], axis=-1)
    assert 0.3 < moved.mean() < 0.6  # corr_prob 0.5, minus the few restored samples
    np.testing.assert_allclose(np.abs(shift[moved]), 1.0, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# Splits


def test_splits_shapes_partition_and_determinism():
    cfg = B.BallsDataConfig(
        num_domains=D, num_samples_train=40, num_samples_valid=20, num_samples_test=20
    )
    s1, info = B.make_balls_splits(0, cfg, return_info=True)
    s2 = B.make_balls_splits(0, cfg)
    s3 = B.make_balls_splits(1, cfg)
    for name in SPLITS:
        a = s1[name]
        assert a["x"].shape == (20, 64, 64, 3) and a["x"].dtype == jnp.float32
        assert a["z"].shape == (20, 4) and a["z"].dtype == jnp.float32
        assert a["z_invariant"].shape == (20, 2) and a["z_spurious"].shape == (20, 2)
        assert a["domain"].shape == (20,) and a["domain"].dtype == jnp.int32
        zz = np.concatenate([a["z_invariant"], a["z_spurious"]], 1)
        np.testing.assert_array_equal(a["z"], zz)
        for k in a:
            np.testing.assert_array_equal(a[k], s2[name][k])  # deterministic from the seed
        assert not np.array_equal(a["z"], s3[name]["z"])
    # images agree with the latents
    np.testing.assert_array_equal(s1["test"]["x"], R.render(s1["test"]["z"].reshape(20, 2, 2), BS))
    # train + valid are one dataset of 40 distinct rows in all 4 domains; test has its own boxes
    z = np.concatenate([s1["train"]["z"], s1["valid"]["z"]])
    assert len(np.unique(z, axis=0)) == 40
    dom = np.concatenate([s1["train"]["domain"], s1["valid"]["domain"]])
    assert np.bincount(dom).tolist() == [10] * 4
    assert not np.allclose(info["train"]["domain_lows"], info["test"]["domain_lows"])


def test_config_validation():
    assert B.BallsDataConfig().to_dict()["num_domains"] == 16
    with pytest.raises(ValueError, match="domain box"):
        B.BallsDataConfig(ball_size=0.2)
    with pytest.raises(ValueError, match="correlated_z"):
        B.BallsDataConfig(correlated_z=True, n_balls_invariant=2, n_balls_spurious=1)
    with pytest.raises(ValueError, match="colours"):
        B.BallsDataConfig(n_balls_invariant=2, n_balls_spurious=3)
