"""The scaling ground truth of a seed is the reference's (issue: same seed, same data).

`data/reference_nature.npz` was recorded once, outside the project, with torch 2.13 (CPU) and
the reference's own classes: `torch.manual_seed(seed)`, then `create_graph`,
`FixedGraphLinearANM(graph, d, initialization=...)` and `SONEncoder(coeff_std=1.0)` as
`experiments/scaling.py: create_true_model` builds them, for dim_z 2-10, seeds 0-9, 42, 302,
4701 and random, chain and full graphs (bimodal effects; standard for seeds 0-9); plus raw
`torch.randn` / `uniform_` draws of several sizes. These tests need neither torch nor the
reference.
"""

import os

import numpy as np
import pytest

from wscrl_jax.causal.graphs import create_graph
from wscrl_jax.data.scaling import create_nature
from wscrl_jax.data.torch_rng import TorchCPUGenerator, reference_scaling_nature

RECORDED = np.load(os.path.join(os.path.dirname(__file__), "data", "reference_nature.npz"))
SEEDS = list(range(10)) + [42, 302, 4701]
TOLERANCE = 1e-6


@pytest.mark.parametrize("seed", [0, 42, 2**31 + 5])
def test_generator_draws_match_torch(seed):
    """Cached double Box-Muller pairs (sizes 1, 1, 3, 2), float uniforms, and `normal_fill`
    (16, 17 with its redrawn tail, 45), interleaved as recorded."""
    g = TorchCPUGenerator(seed)
    draws = np.concatenate([g.normal((1,)), g.normal((1,)), g.normal((3,)),
                            g.uniform((5,), -0.3, 0.7), g.normal((16,)), g.normal((17,)),
                            g.uniform((1,)), g.normal((45,)), g.normal((2,))])
    np.testing.assert_allclose(draws, RECORDED[f"draws_{seed}"], rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("dim_z", range(2, 11))
def test_ground_truth_matches_reference(dim_z):
    worst = 0.0
    for seed in SEEDS:
        for effects in ("bimodal", "standard"):
            if effects == "standard" and seed >= 10:
                continue
            weights, coeffs = reference_scaling_nature(dim_z, seed, effects)
            key = f"{effects}_{dim_z}_{seed}"
            worst = max(worst, np.max(np.abs(weights - RECORDED[f"weights_{key}"])),
                        np.max(np.abs(coeffs - RECORDED[f"coeffs_{key}"])))
        for mode in ("random", "chain", "full"):
            np.testing.assert_array_equal(create_graph(dim_z, mode, seed),
                                          RECORDED[f"adjacency_{dim_z}_{seed}_{mode}"])
    assert worst <= TOLERANCE, worst


def test_create_nature_uses_the_reference_numbers_by_default():
    nature = create_nature(3, "random", 42)
    w = np.asarray(nature.weights)
    # the figures for seed 42: effects 0 -> 2 and 1 -> 2
    assert w[0, 2] == pytest.approx(-0.9975, abs=1e-4) and w[1, 2] == pytest.approx(-1.2187,
                                                                                   abs=1e-4)
    np.testing.assert_array_equal(np.asarray(nature.adjacency), RECORDED["adjacency_3_42_random"])
    rotation = np.asarray(nature.rotation, np.float64)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-5)
    assert np.linalg.det(rotation) == pytest.approx(1.0, abs=1e-5)
    coeffs = RECORDED["coeffs_bimodal_3_42"].astype(np.float64)
    skew = np.zeros((3, 3))
    skew[np.triu_indices(3, 1)] = coeffs
    from scipy.linalg import expm
    np.testing.assert_allclose(rotation, expm(skew - skew.T), atol=1e-5)


def test_jax_ground_truth_stays_available():
    ref, jax_nature = create_nature(3, "random", 42), create_nature(3, "random", 42, rng="jax")
    np.testing.assert_array_equal(np.asarray(ref.adjacency), np.asarray(jax_nature.adjacency))
    assert not np.allclose(np.asarray(ref.weights), np.asarray(jax_nature.weights))
    with pytest.raises(ValueError, match="data.nature.rng"):
        create_nature(3, "random", 42, rng="torch")
