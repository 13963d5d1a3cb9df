"""wscrl_jax/eval/gbrt.py (the JAX trees) and gbrt_native.py (the same trees compiled for the
CPU) against scikit-learn's GradientBoostingRegressor on tiny problems: the same splits (or, where
two features tie exactly, the same partition of the samples), the same predictions, the same
importances."""

import shutil
import sysconfig

import jax
import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingRegressor

from wscrl_jax.eval import gbrt, gbrt_native

DEPTH = 3


def _fit_jax(x, y, x_test):
    with jax.enable_x64(True):
        init, trees, importances, prediction = jax.jit(gbrt.fit)(x, y, gbrt.sort_features(x))
        test_prediction = gbrt.predict(init, trees, x_test)
        return jax.device_get((trees, importances, prediction, test_prediction))


def _fit_native(x, y, x_test):
    init, trees, importances, prediction = gbrt_native.fit(x, y)
    return trees, importances, prediction, gbrt_native.predict(init, trees, x_test)


@pytest.fixture(params=["jax", "native"])
def _fit(request):
    """(x, y, x_test) -> (Trees, importances, training prediction, test prediction)."""
    return {"jax": _fit_jax, "native": _fit_native}[request.param]


def _compare_trees(reg, trees, x):
    """Walks every sklearn tree beside ours. Returns (nodes with the same feature and threshold,
    nodes where the feature differs but the split makes the same two sets of samples, an exact
    tie). Fails on any other difference."""
    x = x.astype(np.float64)
    same = tied = 0
    for stage, estimator in enumerate(reg.estimators_[:, 0]):
        tree = estimator.tree_
        todo = [(0, 0, 0, np.ones(len(x), bool))]  # sklearn node, our index, depth, samples
        while todo:
            node, index, depth, samples = todo.pop()
            if depth == DEPTH:
                continue
            feature = int(trees.feature[stage, index])
            threshold = float(trees.threshold[stage, index])
            if tree.children_left[node] == -1:  # sklearn leaf: ours must not split
                assert np.isinf(threshold), (stage, index)
                todo.append((node, 2 * index + 1, depth + 1, samples))
                continue
            ours = samples & (x[:, feature] <= threshold)
            theirs = samples & (x[:, tree.feature[node]] <= tree.threshold[node])
            children = [tree.children_left[node], tree.children_right[node]]
            if feature == tree.feature[node]:
                assert threshold == tree.threshold[node], (stage, index)
                same += 1
            else:  # a tie: the same two sets of samples, possibly with left and right swapped
                mirrored = np.array_equal(ours, samples & ~theirs)
                assert mirrored or np.array_equal(ours, theirs), (stage, index)
                children = children[::-1] if mirrored else children
                tied += 1
            todo.append((children[0], 2 * index + 1, depth + 1, ours))
            todo.append((children[1], 2 * index + 2, depth + 1, samples & ~ours))
    return same, tied


def _problem(n, p, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)).astype(np.float32)
    y = np.sin(2 * x[:, 0]) + 0.5 * x[:, -1] ** 2 + 0.1 * rng.normal(size=n)
    return x, y, rng.normal(size=(50, p)).astype(np.float32)


@pytest.mark.parametrize("n", [40, 300])
def test_one_feature_matches_sklearn_split_for_split(n, _fit):
    x, y, x_test = _problem(n, 1, seed=n)
    x[::7, 0] = x[1::7, 0][: len(x[::7])]  # duplicated values: no split between equal values
    reg = GradientBoostingRegressor(random_state=0).fit(x, y)
    trees, importances, prediction, test_prediction = _fit(x, y, x_test)
    same, tied = _compare_trees(reg, trees, x)
    assert tied == 0 and same > 100
    np.testing.assert_allclose(prediction, reg.predict(x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(test_prediction, reg.predict(x_test), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(importances, [1.0])


@pytest.mark.parametrize("n, p", [(60, 3), (400, 4), (3000, 4)])
def test_several_features_same_partitions_and_predictions(n, p, _fit):
    x, y, x_test = _problem(n, p, seed=p)
    reg = GradientBoostingRegressor(random_state=0).fit(x, y)
    trees, importances, prediction, test_prediction = _fit(x, y, x_test)
    same, tied = _compare_trees(reg, trees, x)
    assert same > 10 * tied  # exact ties between features occur only in tiny nodes
    np.testing.assert_allclose(prediction, reg.predict(x), rtol=0, atol=1e-12)
    assert abs(importances.sum() - 1.0) < 1e-12
    # ties move importance between the tied features only; most of it is attributed as sklearn
    np.testing.assert_allclose(importances, reg.feature_importances_, atol=0.02)


def test_values_closer_than_feature_threshold_are_not_split(_fit):
    base = np.float32(0.5)
    near = np.nextafter(base, np.float32(1))  # 6e-8 above: one value for scikit-learn
    x = np.array([0.1, 0.2, base, near, near, 0.8, 0.9, 1.0], np.float32)[:, None]
    y = np.array([0.0, 0.1, 5.0, -5.0, -5.0, 1.0, 1.1, 0.9])
    reg = GradientBoostingRegressor(random_state=0).fit(x, y)
    trees, _, prediction, _ = _fit(x, y, x)
    same, tied = _compare_trees(reg, trees, x)
    assert same > 0 and tied == 0
    splits = trees.threshold[np.isfinite(trees.threshold)]
    assert not np.any((splits > base) & (splits < near))
    np.testing.assert_allclose(prediction, reg.predict(x), rtol=0, atol=1e-12)


def test_constant_target_grows_no_tree(_fit):
    x, _, x_test = _problem(30, 2, seed=0)
    y = np.full(30, 2.5)
    reg = GradientBoostingRegressor(random_state=0).fit(x, y)
    trees, importances, prediction, test_prediction = _fit(x, y, x_test)
    assert np.all(np.isinf(trees.threshold))
    np.testing.assert_array_equal(importances, reg.feature_importances_)  # zeros
    np.testing.assert_array_equal(prediction, 2.5)
    np.testing.assert_array_equal(test_prediction, 2.5)


@pytest.mark.parametrize("n", [5, 1000, 4097])
def test_cumsum_matches_numpy(n):
    rng = np.random.default_rng(n)
    values = rng.normal(size=(3, n)) * 100
    flags = (rng.random((2, n)) < 0.3).astype(np.float64)
    with jax.enable_x64(True):
        sums, counts = jax.device_get((gbrt.cumsum(values), gbrt.cumsum(flags)))
    np.testing.assert_allclose(sums, np.cumsum(values, axis=1), rtol=1e-12, atol=1e-9)
    np.testing.assert_array_equal(counts, np.cumsum(flags, axis=1))


def test_fit_refuses_float32():
    x, y, _ = _problem(10, 1, seed=0)
    with pytest.raises(RuntimeError, match="enable_x64"):
        gbrt.fit(x, y, gbrt.sort_features(x))


def test_native_library_is_built():
    """The install compiles the native trees (setup.py) wherever a C compiler is present;
    `auto` uses them on the CPU."""
    from wscrl_jax.eval.dci import resolve_dci_backend
    if not gbrt_native.available():
        compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
        assert shutil.which(compiler) is None, (
            f"{compiler} is present but the native trees were not built: reinstall with "
            "`pip install -e .` and read its build log")
        pytest.skip("no C compiler at install time: the DCI uses its JAX trees")
    assert resolve_dci_backend("auto") == ("native" if jax.default_backend() == "cpu" else "jax")


def test_native_refuses_mismatched_shapes():
    x, y, _ = _problem(20, 2, seed=0)
    with pytest.raises(ValueError, match="do not match"):
        gbrt_native.fit(x, y[:-1])
    init, trees, _, _ = gbrt_native.fit(x, y)
    assert trees.feature.max() == 1
    with pytest.raises(ValueError, match="features"):  # instead of reading past the rows
        gbrt_native.predict(init, trees, x[:, :1])
