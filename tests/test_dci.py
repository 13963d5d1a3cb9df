"""Tests for wscrl_jax.eval.dci (mirrors ws_crl/metrics.py: compute_dci)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from wscrl_jax.eval import dci
from wscrl_jax.eval.dci import completeness, compute_dci, compute_dci_members, disentanglement

# The +1e-12 smoothing moves "exact" values by O(1e-10) at most.
TOL = 1e-8


def _scipy_reference_scores(R):
    """The reference formulas written out directly with scipy (independent of the module)."""
    d_per_code = 1.0 - scipy.stats.entropy(R.T + 1e-12, base=R.shape[1])
    c_per_factor = 1.0 - scipy.stats.entropy(R + 1e-12, base=R.shape[0])
    W = R if abs(R.sum()) >= 1e-12 else np.ones_like(R)
    d = np.sum(d_per_code * W.sum(axis=1) / W.sum())
    c = np.sum(c_per_factor * W.sum(axis=0) / W.sum())
    return d, c


# ---------------------------------------------------------------------------------------------
# disentanglement / completeness on toy importance matrices
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3, 5])
def test_identity_is_perfect(d):
    R = np.eye(d)
    assert disentanglement(R) == pytest.approx(1.0, abs=TOL)
    assert completeness(R) == pytest.approx(1.0, abs=TOL)


@pytest.mark.parametrize("shape", [(2, 2), (3, 3), (4, 2), (2, 5)])
def test_uniform_is_zero(shape):
    R = np.full(shape, 0.37)
    assert disentanglement(R) == pytest.approx(0.0, abs=TOL)
    assert completeness(R) == pytest.approx(0.0, abs=TOL)


def test_permutation_is_perfect():
    R = np.eye(4)[[2, 0, 3, 1]] * np.array([0.3, 1.0, 2.0, 0.5])  # scaled columns too
    assert disentanglement(R) == pytest.approx(1.0, abs=TOL)
    assert completeness(R) == pytest.approx(1.0, abs=TOL)


def test_hand_derived_square():
    # R = [[1, 0],
    #      [1, 1]]          (rows = model codes, columns = true factors), total = 3
    # Disentanglement (base d_true = 2):
    #   row 0 = (1, 0) -> H = 0 -> D_0 = 1;  row 1 = (1/2, 1/2) -> H = 1 -> D_1 = 0
    #   weights = row sums / total = (1/3, 2/3)  ->  D = 1/3
    # Completeness (base d_model = 2):
    #   col 0 = (1/2, 1/2) -> C_0 = 0;  col 1 = (0, 1) -> C_1 = 1
    #   weights = column sums / total = (2/3, 1/3)  ->  C = 1/3
    R = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert disentanglement(R) == pytest.approx(1.0 / 3.0, abs=TOL)
    assert completeness(R) == pytest.approx(1.0 / 3.0, abs=TOL)


def test_hand_derived_rectangular():
    # R = [[0.5, 0.5, 0],
    #      [0,   0,   1]]   d_model = 2, d_true = 3, total = 2
    # Disentanglement (base 3): row 0 = (1/2, 1/2, 0) -> H = ln2/ln3 -> D_0 = 1 - log_3(2);
    #   row 1 -> D_1 = 1; weights (1/2, 1/2) -> D = 1 - log_3(2)/2 ~= 0.684535
    # Completeness (base 2): every column has a single non-zero entry -> C_j = 1 -> C = 1
    R = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    expected_d = 1.0 - 0.5 * math.log(2) / math.log(3)
    assert expected_d == pytest.approx(0.684535, abs=1e-6)
    assert disentanglement(R) == pytest.approx(expected_d, abs=TOL)
    assert completeness(R) == pytest.approx(1.0, abs=TOL)


def test_zero_importance_fallback():
    # Total < 1e-12: the entropies see uniform (eps) distributions -> 0; weights from all-ones.
    R = np.zeros((3, 2))
    assert disentanglement(R) == pytest.approx(0.0, abs=TOL)
    assert completeness(R) == pytest.approx(0.0, abs=TOL)


@pytest.mark.parametrize("shape", [(3, 3), (5, 2), (2, 4)])
def test_matches_scipy_formulas_on_random_matrices(shape):
    R = np.random.default_rng(1).random(shape) ** 3
    d_ref, c_ref = _scipy_reference_scores(R)
    assert disentanglement(R) == pytest.approx(d_ref, abs=1e-12)
    assert completeness(R) == pytest.approx(c_ref, abs=1e-12)


@pytest.mark.parametrize("shape", [(3, 3), (4, 8), (8, 4), (6, 1), (1, 6)])
def test_entropy_is_scipys_to_the_bit(shape):
    """The module's entropy (without importing scipy.stats) gives scipy.stats.entropy's very
    values along either axis, NaN for a base of 1 included."""
    R = np.random.default_rng(2).random(shape) ** 3 + 1e-12
    for axis in (0, 1):
        with np.errstate(divide="ignore", invalid="ignore"):
            ours = dci._entropy(R, base=shape[axis], axis=axis)
            theirs = scipy.stats.entropy(R, base=shape[axis], axis=axis)
        np.testing.assert_array_equal(ours, theirs)


def test_dimension_one_gives_nan_like_reference():
    # scipy entropy with base 1 divides by log(1) = 0 -> nan in the reference.
    assert math.isnan(disentanglement(np.array([[0.4], [0.6]])))  # d_true = 1
    assert math.isnan(completeness(np.array([[0.4, 0.6]])))  # d_model = 1
    # the other score is well defined
    assert completeness(np.array([[1.0], [0.0]])) == pytest.approx(1.0, abs=TOL)


# ---------------------------------------------------------------------------------------------
# compute_dci on synthetic data
# ---------------------------------------------------------------------------------------------

N_TRAIN, N_TEST, D = 1500, 500, 3
PERM = np.array([2, 0, 1])


@pytest.fixture(scope="module")
def factors():
    rng = np.random.default_rng(0)
    return rng.normal(size=(N_TRAIN, D)), rng.normal(size=(N_TEST, D))


@pytest.fixture(scope="module")
def permuted_result(factors):
    z_tr, z_te = factors
    return compute_dci(z_tr[:, PERM], z_tr, z_te[:, PERM], z_te)


def _mix(z):
    A = np.array([[1.0, 0.9, 1.1], [-1.0, 1.0, 0.8], [0.9, -1.1, 1.0]])
    return z @ A


def test_keys_and_types(permuted_result):
    expected = ["informativeness_train", "informativeness_test", "disentanglement", "completeness"]
    expected += [f"importance_matrix_{i}_{j}" for i in range(D) for j in range(D)]
    assert list(permuted_result.keys()) == expected
    assert all(type(v) is float for v in permuted_result.values())


def test_keys_rectangular():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 2))
    codes = np.concatenate([z, rng.normal(size=(300, 1))], axis=1)  # d_model = 3, d_true = 2
    res = compute_dci(codes[:200], z[:200], codes[200:], z[200:])
    imp_keys = [k for k in res if k.startswith("importance_matrix_")]
    assert imp_keys == [f"importance_matrix_{i}_{j}" for i in range(3) for j in range(2)]
    # each column of the importance matrix sums to one (impurity-based importances)
    for j in range(2):
        assert sum(res[f"importance_matrix_{i}_{j}"] for i in range(3)) == pytest.approx(1.0)
    # the pure-noise code carries little importance
    assert res["importance_matrix_2_0"] < 0.1 and res["importance_matrix_2_1"] < 0.1


def test_permuted_codes_are_disentangled(permuted_result):
    res = permuted_result
    assert res["disentanglement"] > 0.95
    assert res["completeness"] > 0.95
    # code i is a copy of factor PERM[i]
    for i in range(D):
        assert res[f"importance_matrix_{i}_{PERM[i]}"] > 0.95
    assert res["informativeness_train"] < 0.01
    assert res["informativeness_test"] < 0.05


def test_mixed_codes_are_less_disentangled(factors, permuted_result):
    z_tr, z_te = factors
    res = compute_dci(_mix(z_tr), z_tr, _mix(z_te), z_te)
    assert res["disentanglement"] < 0.6
    assert res["disentanglement"] < permuted_result["disentanglement"] - 0.3
    assert res["completeness"] < permuted_result["completeness"] - 0.3


def test_deterministic_and_thread_count_independent(factors):
    z_tr, z_te = factors
    c_tr, c_te = _mix(z_tr)[:600], _mix(z_te)
    a = compute_dci(c_tr, z_tr[:600], c_te, z_te)
    b = compute_dci(c_tr, z_tr[:600], c_te, z_te)
    c = compute_dci(c_tr, z_tr[:600], c_te, z_te, n_jobs=1)
    assert a == b == c


def test_accepts_jax_and_float32_inputs(factors):
    z_tr, z_te = factors
    z_tr, z_te = z_tr[:400].astype(np.float32), z_te[:200].astype(np.float32)
    c_tr, c_te = z_tr[:, PERM], z_te[:, PERM]
    ref = compute_dci(c_tr, z_tr, c_te, z_te)
    res = compute_dci(jnp.asarray(c_tr), jnp.asarray(z_tr), jnp.asarray(c_te), jnp.asarray(z_te))
    assert res == ref


def test_shape_validation():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError):
        compute_dci(x, np.zeros((9, 2)), x, x)
    with pytest.raises(ValueError):
        compute_dci(x, x, np.zeros((10, 3)), x)


# ---------------------------------------------------------------------------------------------
# compute_dci_members: the JAX and native backends against scikit-learn, members together
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["jax", "native"])
def test_backend_matches_sklearn_for_every_member(factors, backend):
    """Three members (an odd count of fits: shares padded), mixed and permuted codes; the
    backend's scores equal scikit-learn's member by member."""
    z_tr, z_te = factors
    n = 800
    rng = np.random.default_rng(5)
    codes = [_mix(z_tr[:n]), z_tr[:n, PERM] + 0.1 * rng.normal(size=(n, D)),
             np.tanh(_mix(z_tr[:n]))]
    tests = [_mix(z_te), z_te[:, PERM], np.tanh(_mix(z_te))]
    args = (np.stack(codes), np.stack([z_tr[:n]] * 3), np.stack(tests), np.stack([z_te] * 3))
    jax_rows = compute_dci_members(*args, backend=backend)
    sk_rows = compute_dci_members(*args, backend="sklearn")
    assert [list(r) for r in jax_rows] == [list(r) for r in sk_rows]
    for ours, theirs in zip(jax_rows, sk_rows):
        for key in ours:
            # training predictions are the same; where two features tie exactly (tiny nodes),
            # the thresholds, hence test predictions, and the credited feature may differ
            tol = 1e-9 if key == "informativeness_train" else 5e-3
            assert ours[key] == pytest.approx(theirs[key], abs=tol), key
    assert jax_rows[1]["disentanglement"] > 0.9 > jax_rows[0]["disentanglement"]


def test_unknown_backend_is_refused(factors):
    z_tr, z_te = factors
    with pytest.raises(ValueError, match="dci_backend"):
        compute_dci_members(z_tr[None], z_tr[None], z_te[None], z_te[None], backend="xgboost")


def test_vmapped_fits_equal_sequential_fits(factors):
    """The accelerator layout (fits vmapped) gives the CPU layout's (lax.map) numbers, up to
    splits that flip between near-equal candidates: XLA may sum the batched running sums in
    another order (last-bit differences), as scikit-learn's own runs differ (1e-3, issue 12)."""
    z_tr, z_te = factors
    x_train = jnp.asarray(np.stack([_mix(z_tr[:300]), z_tr[:300, PERM]]), jnp.float32)
    x_test = jnp.asarray(np.stack([_mix(z_te[:50]), z_te[:50, PERM]]), jnp.float32)
    with jax.enable_x64(True):
        y_train = jnp.asarray(np.stack([z_tr[:300, 0], z_tr[:300, 1], z_tr[:300, 2]]))
        y_test = jnp.asarray(np.stack([z_te[:50, 0], z_te[:50, 1], z_te[:50, 2]]))
        member = jnp.array([0, 1, 1], jnp.int32)
        sorted_features = dci._sort_members(x_train)
        runs = [jax.device_get(dci._fit_factors(x_train, sorted_features, x_test, y_train,
                                                y_test, member, sequential=s))
                for s in (True, False)]
    for sequential, vmapped in zip(*runs):
        np.testing.assert_allclose(vmapped, sequential, rtol=1e-3, atol=1e-3)
