"""Synthetic multi-domain mixing data (reference `datamodule/mixing_dataset.py`)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from wscrl_jax.data import mixing as M

# test split as large as the undivided train+valid draw: one compilation serves both
SMALL = M.MixingDataConfig(num_samples_train=2400, num_samples_valid=400, num_samples_test=2400)


@pytest.fixture(scope="module")
def linear_splits():
    return M.make_mixing_splits(0, SMALL, return_info=True)


@pytest.fixture(scope="module")
def full_linear():
    """The undivided train+valid dataset of `linear_splits` (documented key layout)."""
    k_train = jax.random.split(jax.random.PRNGKey(0), 3)[0]
    return M.generate_mixing_dataset(k_train, SMALL, SMALL.num_samples_train)


def test_defaults_mirror_reference():
    d = M.MixingDataConfig().to_dict()
    assert (
        d["num_domains"] == 4 and d["z_dim"] == 4 and d["z_dim_invariant"] == 2 and d["x_dim"] == 8
    )
    assert d["domain_dist_ranges"] == (-5.0, 5.0) and d["invariant_dist_params"] == (0.0, 1.0)
    assert d["linear"] and d["non_linearity"] == "polynomial" and d["polynomial_degree"] == 2
    assert not d["correlated_z"] and d["corr_prob"] == 0.5
    assert (d["num_samples_train"], d["num_samples_valid"], d["num_samples_test"]) == (
        12000,
        2000,
        2000,
    )
    assert M.MixingDataConfig(z_dim=7).z_dim_invariant == 3
    with pytest.raises(ValueError):
        M.MixingDataConfig(generation_strategy="bogus")


def test_shapes_and_split_sizes(linear_splits):
    splits, info = linear_splits
    sizes = {"train": 2000, "valid": 400, "test": 2400}
    for name, n in sizes.items():
        s = splits[name]
        assert s["x"].shape == (n, 8) and s["x"].dtype == jnp.float32
        assert s["z"].shape == (n, 4) and s["z"].dtype == jnp.float32
        assert s["domain"].shape == (n,) and s["domain"].dtype == jnp.int32
    assert info["train"]["spurious_low"].shape == (2, 4)
    assert info["train"]["mixing"]["G"].shape == (4, 8)


def test_train_valid_partition_one_dataset(linear_splits, full_linear):
    splits, _ = linear_splits
    full, _ = full_linear
    both = np.concatenate([np.asarray(splits["train"]["z"]), np.asarray(splits["valid"]["z"])])
    key = lambda a: a[np.lexsort(a.T[::-1])]
    np.testing.assert_array_equal(key(both), key(np.asarray(full["z"])))
    # exactly n / D rows per domain before the split
    np.testing.assert_array_equal(np.bincount(np.asarray(full["domain"]), minlength=4), [600] * 4)


def test_determinism_from_seed(linear_splits):
    splits, _ = linear_splits
    again = M.make_mixing_splits(jax.random.PRNGKey(0), SMALL)  # int seed == PRNGKey(seed)
    other = M.make_mixing_splits(1, SMALL)
    for name in M.SPLITS:
        for k in ("x", "z", "domain"):
            np.testing.assert_array_equal(np.asarray(splits[name][k]), np.asarray(again[name][k]))
    assert not np.allclose(np.asarray(splits["train"]["z"]), np.asarray(other["train"]["z"]))


def test_invariant_same_distribution_in_every_domain(full_linear):
    data, _ = full_linear
    z, dom = np.asarray(data["z"]), np.asarray(data["domain"])
    for e in range(4):
        for i in range(2):
            v = z[dom == e, i]
            assert v.min() >= 0.0 and v.max() < 1.0
            assert stats.kstest(v, "uniform").pvalue > 1e-3


def test_spurious_per_domain_ranges(full_linear):
    data, info = full_linear
    z, dom = np.asarray(data["z"]), np.asarray(data["domain"])
    lo, hi = np.asarray(info["spurious_low"]), np.asarray(info["spurious_high"])
    assert np.all(lo <= hi) and np.all(lo >= -5.0) and np.all(hi <= 5.0)
    for e in range(4):
        for k in range(2):
            v = z[dom == e, 2 + k]
            assert v.min() >= lo[k, e] - 1e-5 and v.max() <= hi[k, e] + 1e-5
            u = (v - lo[k, e]) / (hi[k, e] - lo[k, e])
            assert stats.kstest(u, "uniform").pvalue > 1e-3
    # ranges differ between domains
    assert len(np.unique(lo[0])) == 4


def test_range_pairs_are_sorted_uniform_pairs():
    cfg = M.MixingDataConfig(z_dim=400, z_dim_invariant=0, num_domains=25)
    lo, hi = M.draw_spurious_ranges(jax.random.PRNGKey(3), cfg)
    lo, hi = np.asarray(lo).ravel(), np.asarray(hi).ravel()
    # rejection sampling of (low, high) ~ U(-5, 5)^2 given low <= high: low ~ min of two uniforms
    assert stats.kstest((lo + 5) / 10, stats.beta(1, 2).cdf).pvalue > 1e-3
    assert stats.kstest((hi + 5) / 10, stats.beta(2, 1).cdf).pvalue > 1e-3


def test_linear_mixing_and_rank_check(linear_splits):
    splits, info = linear_splits
    g = np.asarray(info["train"]["mixing"]["G"])
    assert np.linalg.matrix_rank(g) == 4 and g.min() >= 0 and g.max() < 1
    s = splits["train"]
    np.testing.assert_allclose(np.asarray(s["x"]), np.asarray(s["z"]) @ g, rtol=1e-5, atol=1e-5)
    # the test split has its own mixing map (md-crl gotcha 5) unless the fix flag is set
    assert not np.allclose(np.asarray(info["test"]["mixing"]["G"]), g)

    calls = []

    def sampler(key, shape):  # rank-deficient proposals first
        calls.append(1)
        if len(calls) < 3:
            return jnp.ones(shape)
        return jax.random.uniform(key, shape)

    g2 = M.draw_linear_mixing(jax.random.PRNGKey(0), 3, 5, sampler=sampler)
    assert len(calls) == 3 and np.linalg.matrix_rank(np.asarray(g2)) == 3
    with pytest.raises(RuntimeError):
        M.draw_linear_mixing(
            jax.random.PRNGKey(0), 3, 5, max_tries=2, sampler=lambda k, s: jnp.zeros(s)
        )


def test_test_split_can_share_distribution():
    cfg = dataclasses.replace(SMALL, test_shares_distribution=True)
    splits, info = M.make_mixing_splits(0, cfg, return_info=True)
    np.testing.assert_array_equal(
        np.asarray(info["test"]["mixing"]["G"]), np.asarray(info["train"]["mixing"]["G"])
    )
    np.testing.assert_array_equal(
        np.asarray(info["test"]["spurious_low"]), np.asarray(info["train"]["spurious_low"])
    )


def test_polynomial_features_count_and_order():
    assert M.num_polynomial_features(14, 3) == 2955  # README polynomial setting
    assert M.MixingDataConfig(z_dim=3, polynomial_degree=2).num_polynomial_features == 13
    z = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], np.float32)
    f = np.asarray(M.polynomial_features(jnp.asarray(z), 3))
    assert f.shape == (2, 1 + 3 + 9 + 27)
    for r in range(2):
        want = np.concatenate(
            [[1.0], z[r], np.kron(z[r], z[r]), np.kron(np.kron(z[r], z[r]), z[r])]
        )
        np.testing.assert_allclose(f[r], want, rtol=1e-6)


def test_polynomial_mixing_rebalancing():
    cfg = M.MixingDataConfig(
        z_dim=3,
        x_dim=6,
        linear=False,
        polynomial_degree=3,
        num_samples_train=800,
        num_samples_valid=0,
        num_samples_test=0,
    )
    data, info = M.generate_mixing_dataset(5, cfg, 800)
    c = np.asarray(info["mixing"]["coeffs"], np.float64)
    assert c.shape == (40, 6)
    f = np.asarray(M.polynomial_features(data["z"], 3), np.float64)
    x1, x2 = f[:, :4] @ c[:4], f[:, 4:] @ c[4:]
    x2 = x2 / (0.5 * np.abs(x2).max() / np.abs(x1).max())
    assert np.abs(x2).max() == pytest.approx(2 * np.abs(x1).max(), rel=1e-6)
    np.testing.assert_allclose(np.asarray(data["x"]), x1 + x2, rtol=1e-4, atol=1e-4)
    assert float(info["norm_factor"]) > 0


def test_mlp_mixing():
    cfg = M.MixingDataConfig(
        linear=False,
        non_linearity="mlp",
        num_samples_train=400,
        num_samples_valid=0,
        num_samples_test=0,
    )
    data, info = M.generate_mixing_dataset(2, cfg, 400)
    p = {k: np.asarray(v) for k, v in info["mixing"].items()}
    assert p["w1"].shape == (4, 8) and p["w2"].shape == (8, 8)
    assert np.abs(p["w1"]).max() <= 0.5 and np.abs(p["w2"]).max() <= 1 / np.sqrt(8)
    z = np.asarray(data["z"])
    want = np.maximum(z @ p["w1"] + p["b1"], 0) @ p["w2"] + p["b2"]
    np.testing.assert_allclose(np.asarray(data["x"]), want, rtol=1e-5, atol=1e-5)


def test_dynamic_scm_adds_same_index_invariant():
    base = M.MixingDataConfig(
        corr_prob=0.5, num_samples_train=2000, num_samples_valid=0, num_samples_test=0
    )
    corr = dataclasses.replace(base, correlated_z=True)
    key = jax.random.PRNGKey(7)
    k_lat = jax.random.split(key)[1]
    a = M.sample_latents(k_lat, base, 2000)
    b = M.sample_latents(k_lat, corr, 2000)  # same draws, plus the coins
    za, zb = np.asarray(a["z"]), np.asarray(b["z"])
    np.testing.assert_array_equal(za[:, :2], zb[:, :2])
    diff = zb[:, 2:] - za[:, 2:]
    coin = np.isclose(diff, za[:, :2], atol=1e-6) & (za[:, :2] > 1e-6)
    assert np.all(coin | np.isclose(diff, 0.0, atol=1e-6))
    assert coin.mean() == pytest.approx(0.5, abs=0.04)


def test_uneven_blocks_and_manual_strategy():
    # n not divisible by D: trailing rows keep domain 0 and spurious zeros (md-crl gotcha 7)
    cfg = M.MixingDataConfig(
        num_domains=3, num_samples_train=10, num_samples_valid=0, num_samples_test=0
    )
    lat = M.sample_latents(jax.random.PRNGKey(0), cfg, 10)
    z, dom = np.asarray(lat["z"]), np.asarray(lat["domain"])
    assert np.bincount(dom, minlength=3).tolist() == [4, 3, 3]
    assert np.sum(np.all(z[:, 2:] == 0.0, axis=1)) == 1

    man = M.MixingDataConfig(
        generation_strategy="manual",
        num_domains=2,
        domain_lengths=(0.25, 0.75),
        domain_dist_ranges=((-2.0, -1.0), (1.0, 3.0)),
        num_samples_train=400,
        num_samples_valid=0,
        num_samples_test=0,
    )
    lat = M.sample_latents(jax.random.PRNGKey(1), man, 400)
    z, dom = np.asarray(lat["z"]), np.asarray(lat["domain"])
    assert np.bincount(dom).tolist() == [100, 300]
    assert z[dom == 0, 2:].min() >= -2 and z[dom == 0, 2:].max() <= -1
    assert z[dom == 1, 2:].min() >= 1 and z[dom == 1, 2:].max() <= 3


def test_latents_vmap_over_data_seeds():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    out = jax.vmap(lambda k: M.sample_latents(k, SMALL, 100)["z"])(keys)
    assert out.shape == (3, 100, 4)
    assert not np.allclose(np.asarray(out[0]), np.asarray(out[1]))
