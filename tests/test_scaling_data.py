"""Scaling toy data and ground-truth graphs (reference: `experiments/scaling.py:
generate_datasets`, `ws_crl/causal/graph.py`; ws-crl gotchas 1, 30, 31)."""

import jax
import ml_collections
import numpy as np
import pytest

from wscrl_jax.causal.graphs import create_graph, topological_sort, upper_triangularize
from wscrl_jax.data.scaling import (MAX_EXTRA_ROWS, create_nature, drawn_sizes, make_scaling_data,
                                   sample_pairs)

D = 4
N = 2000


# ------------------------------------------------------------------------- graphs


@pytest.mark.parametrize("seed", [0, 7, 123])
def test_random_graph_matches_numpy_bools(seed):
    d = 5
    bools = np.random.default_rng(seed).integers(0, 2, size=d * (d - 1) // 2).astype(bool)
    expected = np.zeros((d, d), bool)
    k = 0
    for i in range(d):  # row-major strict upper triangle: (0,1), (0,2), ..., (d-2, d-1)
        for j in range(i + 1, d):
            expected[i, j] = bools[k]
            k += 1
    np.testing.assert_array_equal(create_graph(d, "random", seed), expected)


def test_fixed_graph_modes():
    np.testing.assert_array_equal(create_graph(4, "full", 0), np.triu(np.ones((4, 4)), 1))
    np.testing.assert_array_equal(create_graph(4, "empty", 0), np.zeros((4, 4)))
    chain = np.zeros((4, 4))
    chain[0, 1] = chain[1, 2] = chain[2, 3] = 1
    np.testing.assert_array_equal(create_graph(4, "chain", 0), chain)
    with pytest.raises(ValueError):
        create_graph(4, "dense", 0)


def test_upper_triangularize_order():
    np.testing.assert_array_equal(upper_triangularize(np.array([1, 2, 3]), 3),
                                  [[0, 1, 2], [0, 0, 3], [0, 0, 0]])


def test_layered_topological_sort():
    # edges 0 -> 1 -> 2 and an isolated 3: round 1 takes all roots {0, 3}, then 1, then 2
    a = np.zeros((4, 4), bool)
    a[0, 1] = a[1, 2] = True
    assert topological_sort(a) == [0, 3, 1, 2]
    # 1 -> 2, 0 -> 2, 2 -> 3: roots 0 and 1 first
    b = np.zeros((4, 4), bool)
    b[1, 2] = b[0, 2] = b[2, 3] = True
    assert topological_sort(b) == [0, 1, 2, 3]
    assert topological_sort(np.triu(np.ones((3, 3), bool), 1)) == [0, 1, 2]
    cyc = np.zeros((2, 2), bool)
    cyc[0, 1] = cyc[1, 0] = True
    with pytest.raises(ValueError):
        topological_sort(cyc)


# ------------------------------------------------------------------------- nature


@pytest.fixture(scope="module")
def nature():
    return create_nature(D, "full", 3)


def test_rotation_is_special_orthogonal(nature):
    r = np.asarray(nature.rotation, np.float64)
    np.testing.assert_allclose(r @ r.T, np.eye(D), atol=1e-5)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-5)
    assert np.abs(r - np.eye(D)).max() > 0.1  # c ~ N(0, 1): far from the identity


def test_nature_graph_and_bimodal_weights(nature):
    np.testing.assert_array_equal(np.asarray(nature.adjacency), np.triu(np.ones((D, D)), 1))
    np.testing.assert_array_equal(np.asarray(create_nature(D, "random", 11).adjacency),
                                  create_graph(D, "random", 11))
    w = np.abs(np.asarray(nature.weights))
    # |sign(n1) (1 + 0.3 n2)| is concentrated around 1, never near 0 for these draws
    assert 0.7 < np.median(w) < 1.3 and w.min() > 0.1
    again = create_nature(D, "full", 3)
    np.testing.assert_array_equal(np.asarray(again.weights), np.asarray(nature.weights))


@pytest.fixture(scope="module")
def pairs(nature):
    order = tuple(topological_sort(np.asarray(nature.adjacency)))
    out = sample_pairs(jax.random.PRNGKey(0), nature, N, order)
    return {k: np.asarray(v) for k, v in out.items()}, order


def test_shapes_and_dtypes(pairs):
    p, _ = pairs
    for k in ("x1", "x2", "z1", "z2"):
        assert p[k].shape == (N, D) and p[k].dtype == np.float32
    assert p["intervention_labels"].shape == (N,) and p["intervention_labels"].dtype == np.int32
    assert p["true_interventions"].shape == (N, D)
    assert p["true_interventions"].dtype == np.int32


def test_observations_are_rotated_latents(pairs, nature):
    p, _ = pairs
    r = np.asarray(nature.rotation)
    # x = R^T z per sample, i.e. x_row = z_row @ R
    np.testing.assert_allclose(p["x1"], p["z1"] @ r, atol=1e-5)
    np.testing.assert_allclose(p["x2"], p["z2"] @ r, atol=1e-5)


def test_labels_and_masks(pairs):
    p, _ = pairs
    labels = p["intervention_labels"]
    expected = np.concatenate([np.zeros((1, D)), np.eye(D)])[labels]
    np.testing.assert_array_equal(p["true_interventions"], expected)
    counts = np.bincount(labels, minlength=D + 1)
    assert len(counts) == D + 1
    # uniform over {0..d}: expected 400 each, sd ~ 18
    assert counts.min() > 320 and counts.max() < 480


def _descendants(adj):
    d = adj.shape[0]
    reach = adj.astype(bool).copy()
    for _ in range(d):
        reach = reach | (reach.astype(int) @ adj.astype(int) > 0)
    return reach  # reach[i, j]: j is a descendant of i


def test_counterfactual_structure(pairs, nature):
    p, _ = pairs
    z1, z2 = p["z1"].astype(np.float64), p["z2"].astype(np.float64)
    labels = p["intervention_labels"]
    effects = np.asarray(nature.adjacency, np.float64) * np.asarray(nature.weights, np.float64)
    # noise of z1 under the linear SCM z_i = eps_i + sum_j A_ji w_ji z_j
    eps = z1 - z1 @ effects
    assert np.abs(eps.mean(0)).max() < 0.1 and np.abs(eps.std(0) - 1).max() < 0.1
    # empty intervention: z2 == z1 (the 1e-9 manifold noise is below float32 resolution)
    np.testing.assert_allclose(z2[labels == 0], z1[labels == 0], atol=1e-6)
    desc = _descendants(np.asarray(nature.adjacency))
    for v in range(D):
        rows = labels == v + 1
        nondesc = ~desc[v]
        nondesc[v] = False
        # non-descendants of the target keep their values
        np.testing.assert_allclose(z2[rows][:, nondesc], z1[rows][:, nondesc], atol=1e-6)
        # descendants follow the SCM from z2's parents with z1's noise
        for i in np.flatnonzero(desc[v]):
            np.testing.assert_allclose(z2[rows, i], eps[rows, i] + z2[rows] @ effects[:, i],
                                       atol=1e-4)
        # the target itself is a fresh N(0, 1) draw, independent of z1's value
        zt = z2[rows, v]
        assert abs(zt.mean()) < 0.2 and abs(zt.std() - 1) < 0.15
        assert abs(np.corrcoef(zt, z1[rows, v])[0, 1]) < 0.2
        if desc[v].any():  # descendants actually change
            assert np.abs(z2[rows][:, desc[v]] - z1[rows][:, desc[v]]).mean() > 0.1


def test_sampling_is_deterministic_in_the_key(nature, pairs):
    p, order = pairs
    again = sample_pairs(jax.random.PRNGKey(0), nature, N, order)
    other = sample_pairs(jax.random.PRNGKey(1), nature, N, order)
    for k in p:
        np.testing.assert_array_equal(np.asarray(again[k]), p[k])
    assert not np.allclose(np.asarray(other["z1"]), p["z1"])


def test_observation_noise(nature, pairs):
    _, order = pairs
    p = sample_pairs(jax.random.PRNGKey(0), nature, N, order, observation_noise=0.5)
    r = np.asarray(nature.rotation)
    resid = np.asarray(p["x1"]) - np.asarray(p["z1"]) @ r
    assert resid.std() == pytest.approx(0.5, rel=0.05)
    resid2 = np.asarray(p["x2"]) - np.asarray(p["z2"]) @ r
    assert abs(np.corrcoef(resid.ravel(), resid2.ravel())[0, 1]) < 0.1  # independent noise


def _data_cfg():
    # same d, order and n as the `pairs` fixture, so the jitted sampler is not recompiled
    return ml_collections.ConfigDict(dict(
        dim_z=D, mixing="so_n", samples=dict(train=N, val=N, test=N),
        nature=dict(mode="full", seed=0, causal_effects="bimodal", rng="reference",
                    mechanisms="linear", manifold_thickness=1e-9, observation_noise=0.0)))


def test_make_scaling_data_splits_and_determinism():
    cfg = _data_cfg()
    a = make_scaling_data(cfg, 5)
    b = make_scaling_data(cfg, 5)
    c = make_scaling_data(cfg, 6)
    assert set(a) == {"train", "dci_train", "val", "test", "truth"}
    np.testing.assert_array_equal(a["truth"]["adjacency"], np.triu(np.ones((D, D), int), 1))
    assert a["train"]["x1"].shape == (N, D) and a["dci_train"]["x1"].shape == (N, D)
    assert a["val"]["z2"].shape == (N, D) and a["test"]["intervention_labels"].shape == (N,)
    for split in a:
        for k in a[split]:
            np.testing.assert_array_equal(np.asarray(a[split][k]), np.asarray(b[split][k]))
    assert not np.allclose(np.asarray(a["train"]["z1"]), np.asarray(c["train"]["z1"]))
    # splits are independent draws
    assert not np.allclose(np.asarray(a["train"]["z1"]), np.asarray(a["dci_train"]["z1"]))
    assert not np.allclose(np.asarray(a["val"]["z1"]), np.asarray(a["test"]["z1"]))
    # the ground truth is a function of the data seed
    nat = create_nature(D, "full", 5)
    np.testing.assert_allclose(np.asarray(a["train"]["x1"]),
                               np.asarray(a["train"]["z1"]) @ np.asarray(nat.rotation), atol=1e-5)


def test_smaller_splits_are_the_first_rows_of_one_draw_to_the_bit():
    """Val and test are drawn at the train size and keep their first rows (one compilation of
    `sample_pairs`): the bits of drawing each at its own size, observation noise included."""
    cfg = _data_cfg()
    cfg.samples.val = cfg.samples.test = N // 4
    cfg.nature.observation_noise = 0.5
    assert drawn_sizes({"train": N, "val": N // 4}) == {"train": N, "val": N}
    assert drawn_sizes({"train": MAX_EXTRA_ROWS + 20, "val": 10})["val"] == 10
    data = make_scaling_data(cfg, 0)
    nature = create_nature(D, "full", 0)
    order = tuple(topological_sort(np.asarray(nature.adjacency)))
    base = jax.random.fold_in(jax.random.PRNGKey(0), 1)
    for index, split in ((2, "val"), (3, "test")):
        alone = sample_pairs(jax.random.fold_in(base, index), nature, N // 4, order,
                             1e-9, 0.5)
        assert data[split]["x1"].shape == (N // 4, D)
        for name, a in alone.items():
            np.testing.assert_array_equal(np.asarray(data[split][name]), np.asarray(a))
