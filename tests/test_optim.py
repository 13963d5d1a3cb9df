"""torch-style Adam: a step count per parameter array, arrays the loss does not reach skipped
as torch skips a parameter whose gradient is None; and which arrays a loss reaches."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wscrl_jax.train.optim import torch_adam
from wscrl_jax.train.reach import reached_params
from wscrl_jax.train.step import phases_before


def torch_adam_step(p, g, m, v, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    """torch 1.13 `Adam.step` for one parameter (no weight decay), in float64."""
    t += 1
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    denom = np.sqrt(v) / np.sqrt(1 - b2 ** t) + eps
    return p - lr / (1 - b1 ** t) * m / denom, m, v, t


def test_each_array_counts_its_own_steps_from_its_first_gradient():
    """`b` is unreached for two steps (torch: grad None, skipped), reached for two, then
    unreached again (torch 1.13's zero_grad leaves it zeros: a step with a zero gradient)."""
    rng = np.random.default_rng(0)
    params = {"a": jnp.asarray(rng.normal(size=3), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(2, 2)), jnp.float32)}
    adam = torch_adam()
    state = adam.init(params)
    ref = {k: [np.asarray(v, np.float64), 0.0, 0.0, 0] for k, v in params.items()}
    for reached_b in (False, False, True, True, False):
        grads = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in params.items()}
        if not reached_b:
            grads["b"] = np.zeros((2, 2), np.float32)  # what jax.grad gives an unreached array
        updates, state = adam.update(grads, state, params, reached={"a": True, "b": reached_b})
        params = jax.tree_util.tree_map(lambda p, u: p - 1e-3 * u, params, updates)
        for k in params:
            if k == "b" and not reached_b and ref[k][3] == 0:
                continue  # torch skips it: no state, no change
            ref[k] = list(torch_adam_step(ref[k][0], grads[k].astype(np.float64), *ref[k][1:]))
        for k in params:
            np.testing.assert_allclose(params[k], ref[k][0], rtol=1e-6, atol=1e-7)
            assert int(state.count[k]) == ref[k][3]
    assert int(state.count["a"]) == 5 and int(state.count["b"]) == 3


def test_unreached_array_is_left_exactly_alone_until_its_first_gradient():
    params = {"a": jnp.ones(2), "b": jnp.full(3, 0.5)}
    adam = torch_adam(weight_decay=0.1, decoupled=True)  # AdamW skips the decay too
    state = adam.init(params)
    updates, new = adam.update({"a": jnp.ones(2), "b": jnp.zeros(3)}, state, params,
                               reached={"a": True, "b": False})
    assert np.all(np.asarray(updates["b"]) == 0) and int(new.count["b"]) == 0
    assert np.all(np.asarray(new.mu["b"]) == 0) and np.all(np.asarray(new.nu["b"]) == 0)
    assert int(new.count["a"]) == 1 and np.all(np.asarray(updates["a"]) != 0)


def test_array_that_cannot_have_started_is_passed_through_untouched():
    """`started=False` (the step knows from the run's phases that the array has never been
    reached): the same state arrays come back, no arithmetic on them, and the same values as the
    dynamic check (`count > 0`) gives."""
    params = {"a": jnp.ones(2), "b": jnp.full(3, 0.5)}
    adam = torch_adam()
    state = adam.init(params)
    grads = {"a": jnp.ones(2), "b": jnp.zeros(3)}
    reached = {"a": True, "b": False}
    updates, new = adam.update(grads, state, params, reached=reached,
                               started={"a": True, "b": False})
    assert all(getattr(new, f)["b"] is getattr(state, f)["b"] for f in ("count", "mu", "nu"))
    dynamic_updates, dynamic = adam.update(grads, state, params, reached=reached)
    for tree, other in ((updates, dynamic_updates), (new, dynamic)):
        for x, y in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(other)):
            np.testing.assert_array_equal(x, y)


def test_phases_before_are_those_that_can_precede_a_phase():
    run = ["pre", "pre", "main", "main", "det"]
    assert phases_before("pre", run) == []
    assert phases_before("main", run) == ["pre"]
    assert phases_before("det", run) == ["pre", "main"]
    assert phases_before("a", ["a", "b", "a"]) == ["b"]  # a phase that comes back
    assert phases_before("x", run) is None and phases_before("pre", None) is None


def test_all_reached_is_optax_adam():
    """Every array reached at every step (e.g. MD-CRL): optax's Adam, to float32 rounding
    (XLA may order the arithmetic of one array's program differently from a whole tree's)."""
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=3), jnp.float32)}
    ours, theirs = torch_adam(), jax.jit(optax.scale_by_adam().update)
    s1, s2 = ours.init(params), optax.scale_by_adam().init(params)
    step = jax.jit(ours.update)
    for _ in range(4):
        grads = jax.tree_util.tree_map(
            lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
        (u1, s1), (u2, s2) = step(grads, s1, params), theirs(grads, s2, params)
        for x, y in zip(jax.tree_util.tree_leaves((u1, s1.mu, s1.nu)),
                        jax.tree_util.tree_leaves((u2, s2.mu, s2.nu))):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)


def test_reached_params_follows_torch_backward():
    """A parameter reaches the loss through floating-point values and not through
    stop_gradient (torch: detach) or integers (argmax); one that is not used is unreached."""
    def loss(p, x):
        hidden = jax.jit(jnp.tanh)(p["used"] * x)  # through a nested jit: reached
        frozen = jax.lax.stop_gradient(p["detached"]) * x
        picked = x[jnp.argmax(p["argmax_only"])]
        return jnp.sum(hidden + frozen) + picked, {"aux": p["aux_only"]}

    p = {k: jnp.ones(3) for k in ("used", "detached", "argmax_only", "unused", "aux_only")}
    reached = reached_params(loss, p, jnp.arange(3.0))
    assert reached == {"used": True, "detached": False, "argmax_only": False, "unused": False,
                       "aux_only": False}
    # gradients of the unreached arrays are zero, as their verdict requires
    grads = jax.grad(lambda q: loss(q, jnp.arange(3.0))[0])(p)
    assert all(not np.any(np.asarray(grads[k])) for k, hit in reached.items() if not hit)


def test_reached_params_inside_a_vmapped_trace():
    """As the training step calls it: on tracers of a vmap (shapes of one member)."""
    def loss(p, x):
        return jnp.sum(p["a"] * x), None

    seen = []

    def member(p, x):
        seen.append(reached_params(loss, p, x))
        return loss(p, x)[0]

    jax.vmap(member)({"a": jnp.ones((2, 3)), "b": jnp.ones((2, 4))}, jnp.ones((2, 3)))
    assert seen == [{"a": True, "b": False}]
