"""MD-CRL penalties against hand-computed values and a loop-based numpy transcription of the
reference semantics (`models/utils.py`)."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wscrl_jax.mdcrl import mmd as mmd_lib
from wscrl_jax.mdcrl import penalties as P

# ----------------------------------------------------------------------------------------------
# Loop-based numpy versions of the reference behaviour (data-dependent sizes, Python loops).


def ref_minmax(z, dom, num_domains, d_inv, top_k, transform):
    mins = np.zeros((num_domains, d_inv, top_k))
    maxs = np.zeros((num_domains, d_inv, top_k))
    skip = np.zeros(num_domains, bool)
    for e in range(num_domains):
        ze = z[dom == e]
        if len(ze) == 0:
            skip[e] = True
        elif len(ze) >= top_k:
            for i in range(d_inv):
                s = np.sort(ze[:, i])
                mins[e, i] = s[:top_k]
                maxs[e, i] = s[::-1][:top_k]
    f = {
        "mse": np.square,
        "l1": np.abs,
        "log_mse": lambda a: np.log(a**2),
        "log_l1": lambda a: np.log(np.abs(a)),
    }[transform]
    total = 0.0
    for e, g in itertools.combinations(range(num_domains), 2):
        if transform in ("mse", "l1") and (skip[e] or skip[g]):
            continue
        with np.errstate(divide="ignore"):  # log(0) = -inf is the reference's behaviour
            total += f(mins[e] - mins[g]).mean() + f(maxs[e] - maxs[g]).mean()
    return total


def ref_mmd_pair(x, y, mult, num, fix_sigma):
    t = np.concatenate([x, y])
    l2 = ((t[None] - t[:, None]) ** 2).sum(-1)
    n = len(t)
    bw = fix_sigma if fix_sigma else l2.sum() / (n * n - n)
    bw /= mult ** (num // 2)
    k = sum(np.exp(-l2 / (bw * mult**i)) for i in range(num))
    m = len(x)
    return np.mean(k[:m, :m] + k[m:, m:] - k[:m, m:] - k[m:, :m])


def ref_mmd(z, dom, num_domains, d_inv, mult, num, fix_sigma):
    total = 0.0
    for e, g in itertools.combinations(range(num_domains), 2):
        ze, zg = z[dom == e], z[dom == g]
        if len(ze) == 0 or len(zg) == 0:
            continue
        m = min(len(ze), len(zg))
        total += ref_mmd_pair(ze[:m, :d_inv], zg[:m, :d_inv], mult, num, fix_sigma)
    return total


def ref_hinge(z, dom, num_domains, d_inv, gamma, eps):
    total = 0.0
    for e in range(num_domains):
        ze = z[dom == e]
        v = np.var(ze[:, :d_inv], axis=0, ddof=1) if len(ze) > 1 else np.full(d_inv, np.nan)
        total += np.mean(np.maximum(gamma - np.sqrt(v + eps), 0.0))
    return total


def ref_stddev(z, dom, num_domains, d_inv):
    sig = np.array([np.std(z[dom == e][:, :d_inv], axis=0, ddof=1) for e in range(num_domains)])
    return sum(
        ((sig[e] - sig[g]) ** 2).sum() for e, g in itertools.combinations(range(num_domains), 2)
    )


# ----------------------------------------------------------------------------------------------
# jitted wrappers (compiled once per static configuration and shape; eager runs are checked
# against them in the *_matches_loop_reference tests)

MINMAX = jax.jit(
    P.penalty_minmax,
    static_argnames=("num_domains", "d_inv", "top_k", "loss_transform", "skip_small_domains"),
)
MMD = jax.jit(
    mmd_lib.penalty_mmd,
    static_argnames=(
        "num_domains",
        "d_inv",
        "kernel_multiplier",
        "kernel_number",
        "fix_sigma",
        "capacity",
    ),
)
HINGE = jax.jit(
    P.hinge_loss, static_argnames=("num_domains", "d_inv", "gamma", "eps", "skip_degenerate")
)


def minmax(z, dom, nd, d_inv, top_k=5, transform="mse", skip_small_domains=False):
    return float(
        MINMAX(
            z,
            dom,
            num_domains=nd,
            d_inv=d_inv,
            top_k=top_k,
            loss_transform=transform,
            skip_small_domains=skip_small_domains,
        )
    )


def mmd(z, dom, nd, d_inv, mult=1.0, num=1, sigma=1.0, capacity=None):
    return float(
        MMD(
            z,
            dom,
            num_domains=nd,
            d_inv=d_inv,
            kernel_multiplier=mult,
            kernel_number=num,
            fix_sigma=sigma,
            capacity=capacity,
        )
    )


# ----------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def tiny():
    """d_inv = 1 (column 0), second column ignored. top_k = 2, 4 domains:
    domain 0: [1, 2, 3]; domain 1: [0, 5]; domain 2: [7] (< top_k); domain 3: absent."""
    col0 = np.array([1.0, 0.0, 2.0, 7.0, 3.0, 5.0], np.float32)
    dom = np.array([0, 1, 0, 2, 0, 1], np.int32)
    z = np.stack([col0, 100.0 * np.arange(6, dtype=np.float32)], axis=1)
    return jnp.asarray(z), jnp.asarray(dom)


@pytest.fixture(scope="module")
def random_batch():
    rng = np.random.default_rng(0)
    b, num_domains = 40, 5
    dom = rng.integers(0, 3, size=b)  # domains 0..2 present (each >= top_k rows)
    dom[0] = 3  # domain 3 has a single row; domain 4 is absent
    z = rng.normal(size=(b, 4)).astype(np.float32)
    z[:, 0] += np.arange(b) * 1e-3  # no exact ties between domains (log transforms)
    return z, dom.astype(np.int32), num_domains


# ----------------------------------------------------------------------------------------------
# Min-max


def test_minmax_hand_computed(tiny):
    z, dom = tiny
    # pairs (0,1): 5 + 4; (0,2): 2.5 + 6.5; (1,2): 12.5 + 12.5; pairs with absent domain 3 skipped
    assert minmax(z, dom, 4, 1, 2, "mse") == pytest.approx(43.0)
    assert minmax(z, dom, 4, 1, 2, "l1") == pytest.approx(13.0)
    # fix: domain 2 (< top_k rows) left out -> only pair (0, 1)
    assert minmax(z, dom, 4, 1, 2, "mse", skip_small_domains=True) == pytest.approx(9.0)
    assert minmax(z, dom, 4, 1, 2, "l1", skip_small_domains=True) == pytest.approx(4.0)
    # log transforms skip nothing: pair (2, 3) of all-zero extremes gives -inf
    assert minmax(z, dom, 4, 1, 2, "log_mse") == -np.inf
    got = minmax(z, dom, 4, 1, 2, "log_mse", skip_small_domains=True)
    assert got == pytest.approx(math.log(9.0) / 2 + math.log(4.0), rel=1e-6)


def test_minmax_extremes_layout(tiny):
    z, dom = tiny
    mins, maxs, counts = P.domain_extremes(z, dom, 4, 1, 2)
    np.testing.assert_array_equal(np.asarray(counts), [3, 2, 1, 0])
    np.testing.assert_allclose(np.asarray(mins[:, 0]), [[1, 2], [0, 5], [0, 0], [0, 0]])
    np.testing.assert_allclose(np.asarray(maxs[:, 0]), [[3, 2], [5, 0], [0, 0], [0, 0]])


@pytest.mark.parametrize("transform", P.LOSS_TRANSFORMS)
@pytest.mark.parametrize("healthy_only", [False, True])
def test_minmax_matches_loop_reference(random_batch, transform, healthy_only):
    z, dom, nd = random_batch
    if healthy_only:  # drop the one-row domain 3; domain 4 stays absent for mse / l1
        keep = dom < 3
        z, dom, nd = z[keep], dom[keep], (3 if transform.startswith("log") else nd)
    want = ref_minmax(z, dom, nd, 2, 3, transform)
    jit_val = minmax(jnp.asarray(z), jnp.asarray(dom), nd, 2, 3, transform)
    if np.isinf(want):
        assert jit_val == want
    else:
        assert np.isfinite(want)
        assert jit_val == pytest.approx(want, rel=1e-5, abs=1e-6)
    if transform == "mse" and not healthy_only:  # eager (op-by-op) == jit
        eager = float(P.penalty_minmax(jnp.asarray(z), jnp.asarray(dom), nd, 2, 3, transform))
        assert eager == pytest.approx(jit_val, rel=1e-6, abs=1e-7)


def test_minmax_domains_as_float_column_and_single_domain(tiny):
    z, dom = tiny
    assert minmax(z, dom.astype(jnp.float32)[:, None], 4, 1, 2) == pytest.approx(43.0)
    assert minmax(z, jnp.zeros_like(dom), 1, 1, 2) == 0.0


def test_minmax_gradient_only_through_extremes(tiny):
    z, dom = tiny
    g = np.asarray(jax.jit(jax.grad(lambda q: P.penalty_minmax(q, dom, 4, 1, 2)))(z))
    assert np.all(np.isfinite(g))
    assert np.all(g[:, 1] == 0.0)  # non-invariant column
    assert g[3, 0] == 0.0  # the lone row of domain 2 is never selected


# ----------------------------------------------------------------------------------------------
# MMD


def test_mmd_hand_computed():
    # domain 0 rows in batch order: [3, 0]; domain 1: [1]; domain 2 absent
    # -> m = 1, X = [3], Y = [1]
    z = jnp.asarray([[3.0, 9.0], [1.0, 9.0], [0.0, 9.0]])
    dom = jnp.asarray([0, 1, 0])
    assert mmd(z, dom, 3, 1, 1.0, 1, 1.0) == pytest.approx(2 - 2 * math.exp(-4.0), rel=1e-6)
    # adaptive: off-diagonal mean of L2 = (4 + 4) / (4 - 2) = 4
    adaptive = mmd(z, dom, 3, 1, 1.0, 1, None)
    assert adaptive == pytest.approx(2 - 2 * math.exp(-1.0), rel=1e-6)
    # class defaults: bandwidths 4 * {1/4, 1/2, 1, 2, 4}, five kernels
    d = mmd_lib.MMD_CLASS_DEFAULTS
    cls = mmd(z, dom, 3, 1, d["kernel_multiplier"], d["kernel_number"], d["fix_sigma"])
    kxy = sum(math.exp(-4.0 / (4.0 * 2.0**i / 4.0)) for i in range(5))
    assert cls == pytest.approx(2 * 5 - 2 * kxy, rel=1e-6)
    # fix_sigma = 0 is "adaptive" (truthiness, as the reference)
    assert mmd(z, dom, 3, 1, 1.0, 1, 0.0) == pytest.approx(adaptive)


def test_mmd_bandwidth_rule_and_stop_gradient():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(4, 2)) + 1.0, jnp.float32)
    t = np.concatenate([np.asarray(x), np.asarray(y)])
    l2 = ((t[None] - t[:, None]) ** 2).sum(-1)
    bw = l2[~np.eye(8, dtype=bool)].mean()
    val_ad, g_ad = jax.jit(jax.value_and_grad(lambda a: mmd_lib.mmd(a, y, 1.0, 1, None)))(x)
    # the adaptive bandwidth is detached: same value and gradient as with the bandwidth frozen
    val_fix, g_fix = jax.jit(jax.value_and_grad(lambda a: mmd_lib.mmd(a, y, 1.0, 1, float(bw))))(x)
    assert float(val_ad) == pytest.approx(float(val_fix), rel=1e-5)
    np.testing.assert_allclose(np.asarray(g_ad), np.asarray(g_fix), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("opts", [(1.0, 1, 1.0), (1.0, 1, None), (2.0, 5, None), (2.0, 3, 0.5)])
def test_mmd_matches_loop_reference(random_batch, opts):
    z, dom, nd = random_batch
    want = ref_mmd(z.astype(np.float64), dom, nd, 2, *opts)
    jit_val = mmd(jnp.asarray(z), jnp.asarray(dom), nd, 2, *opts)
    assert jit_val == pytest.approx(want, rel=1e-4, abs=1e-6)
    if opts[2] is None:  # eager (op-by-op) == jit
        eager = float(mmd_lib.penalty_mmd(jnp.asarray(z), jnp.asarray(dom), nd, 2, *opts))
        assert eager == pytest.approx(jit_val, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("sigma", [1.0, None])
def test_mmd_capacity(random_batch, sigma):
    z, dom, nd = random_batch
    zj, dj = jnp.asarray(z), jnp.asarray(dom)
    full = mmd(zj, dj, nd, 2, 1.0, 1, sigma)
    second = int(np.sort(np.bincount(dom, minlength=nd))[-2])
    assert mmd_lib.mmd_capacity_is_exact(dom, nd, second) and not mmd_lib.mmd_capacity_is_exact(
        dom, nd, second - 1
    )
    assert mmd(zj, dj, nd, 2, 1.0, 1, sigma, capacity=second) == pytest.approx(full, rel=1e-5)
    # below the second-largest count, rows beyond capacity are dropped: m = capacity
    cap = second - 3
    want = 0.0
    for e, g in itertools.combinations(range(nd), 2):
        ze, zg = z[dom == e], z[dom == g]
        m = min(len(ze), len(zg), cap)
        if m:
            want += ref_mmd_pair(ze[:m, :2], zg[:m, :2], 1.0, 1, sigma)
    assert mmd(zj, dj, nd, 2, 1.0, 1, sigma, capacity=cap) == pytest.approx(want, rel=1e-4)
    # automatic: ceil(mean + 6 sd) of the binomial domain count, capped at batch // 2
    assert mmd_lib.auto_mmd_capacity(1024, 16) == 111 and mmd_lib.auto_mmd_capacity(1024, 2) == 512
    assert mmd_lib.auto_mmd_capacity(1024, 4, 0) is None
    assert mmd_lib.auto_mmd_capacity(1024, 4, 50) == 50


def test_mmd_gradients_finite_with_absent_and_tiny_domains(random_batch):
    z, dom, nd = random_batch
    dj = jnp.asarray(dom)
    grads = jax.jit(
        lambda q: [
            jax.grad(lambda a: mmd_lib.penalty_mmd(a, dj, nd, 2, 1.0, 1, s))(q) for s in (1.0, None)
        ]
    )(jnp.asarray(z))
    for g in map(np.asarray, grads):
        assert np.all(np.isfinite(g)) and np.all(g[:, 2:] == 0.0)


def test_mmd_coincident_points_give_zero_not_nan():
    z = jnp.ones((4, 2))
    assert mmd(z, jnp.asarray([0, 0, 1, 1]), 2, 2, 1.0, 1, None) == 0.0


# ----------------------------------------------------------------------------------------------
# Hinge, std-dev, domain classification, warm-up


def test_hinge_and_stddev(random_batch):
    z, dom, nd = random_batch

    @jax.jit
    def all_variants(q, d):
        h = lambda skip: P.hinge_loss(q, d, nd, 2, 1.5, 1e-4, skip_degenerate=skip)
        s = lambda skip: P.penalty_stddev(q, d, nd, 2, skip_degenerate=skip)
        g = jax.grad(lambda a: P.hinge_loss(a, d, nd, 2, 1.5, 1e-4, skip_degenerate=True))(q)
        return h(False), s(False), h(True), s(True), g

    h_ref, s_ref, h_skip, s_skip, g = all_variants(jnp.asarray(z), jnp.asarray(dom))
    # domains 3 (one row) and 4 (absent) are degenerate -> NaN as in the reference
    assert np.isnan(float(h_ref)) and np.isnan(float(s_ref))
    assert np.isnan(ref_hinge(z, dom, nd, 2, 1.5, 1e-4))
    # skip flag: degenerate domains left out == the loop reference on the healthy domains
    keep = dom < 3
    zk, dk = z[keep], dom[keep]
    assert float(h_skip) == pytest.approx(ref_hinge(zk, dk, 3, 2, 1.5, 1e-4), rel=1e-5)
    assert float(s_skip) == pytest.approx(ref_stddev(zk, dk, 3, 2), rel=1e-4)
    assert np.all(np.isfinite(np.asarray(g)))


def test_hinge_hand_computed():
    # one domain, column values [0, 2]: unbiased var 2 -> relu(2 - sqrt(2 + 0)) with eps 0
    z = jnp.asarray([[0.0], [2.0]])
    got = HINGE(z, jnp.asarray([0, 0]), num_domains=1, d_inv=1, gamma=2.0, eps=0.0)
    assert float(got) == pytest.approx(2.0 - math.sqrt(2.0), rel=1e-6)


def test_domain_classification():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(10, 3)).astype(np.float32)
    dom = rng.integers(0, 4, size=10)
    w = rng.normal(size=(2, 4)).astype(np.float32)
    f = jax.jit(P.penalty_domain_classification, static_argnums=3)
    pen, acc = f(jnp.asarray(z), jnp.asarray(dom), jnp.asarray(w), 2)
    logits = z[:, :2] @ w
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert float(pen) == pytest.approx(np.mean(logp[np.arange(10), dom]), rel=1e-5)
    assert float(acc) == pytest.approx(np.mean(logits.argmax(1) == dom))


def test_warmup_weight():
    f = jax.jit(P.penalty_warmup_weight, static_argnums=(1, 2, 3))
    assert float(f(0, 1.0, 0, 1)) == 0.0  # reference default: step 0 has weight 0
    assert float(f(1, 1.0, 0, 1)) == 1.0
    vals = [float(f(s, 2.0, 2, 4)) for s in range(8)]
    assert vals == pytest.approx([0, 0, 0, 0.5, 1.0, 1.5, 2.0, 2.0])


def test_penalty_terms_total(tiny):
    z, dom = tiny
    terms = jax.jit(
        lambda a, b: P.penalty_terms(a, b, num_domains=4, d_inv=1, minmax=True, mmd=True, top_k=2)
    )
    out = terms(z, dom)
    assert set(out) == {"minmax", "mmd", "total"}
    assert float(out["total"]) == pytest.approx(float(out["minmax"]) + float(out["mmd"]))


def test_fixed_bandwidth_mmd_is_precise_far_from_the_origin():
    """|z| ~ 20 with O(1) spreads: squared distances of centred points keep the value and
    gradient at float32 precision, as the reference's direct differences (uncentred
    |a|^2 + |b|^2 - 2ab: 1.5e-5 relative here, up to ~1e-4)."""
    rng = np.random.default_rng(0)
    dom = np.repeat(np.arange(2), 32)
    z = (20.0 + 0.7 * rng.normal(size=(64, 4)) + 0.5 * dom[:, None]).astype(np.float32)
    want = ref_mmd(z.astype(np.float64), dom, 2, 4, 1.0, 1, 1.0)
    penalty = lambda z: mmd_lib.penalty_mmd(z, jnp.asarray(dom), 2, 4, 1.0, 1, 1.0)  # noqa: E731
    assert float(jax.jit(penalty)(jnp.asarray(z))) == pytest.approx(want, rel=1e-6)
    grad = np.asarray(jax.jit(jax.grad(penalty))(jnp.asarray(z)))
    x64 = jax.enable_x64(True) if hasattr(jax, "enable_x64") else jax.experimental.enable_x64()
    with x64:
        grad64 = np.asarray(jax.grad(penalty)(jnp.asarray(z, jnp.float64)))
    assert np.max(np.abs(grad - grad64)) <= 1e-5 * np.max(np.abs(grad64))
