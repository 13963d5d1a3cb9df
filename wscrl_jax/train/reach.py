"""Which parameter arrays a loss reaches: those torch would give a gradient.

torch's backward pass leaves `grad = None` on a parameter it never reaches (not used, or used
only through `detach`), and its Adam skips such a parameter. JAX gives those arrays a zero
gradient instead; `reached_params` tells them apart, from the loss's jaxpr, so that the step can
skip them as torch does (`train/optim.py`). It is traced once per phase, when the step
compiles.

A parameter counts as reached when a path of floating-point values leads from it to the loss
without passing through `stop_gradient`. Any operation with a sub-program (a nested jit, a
custom derivative, a loop) is taken to connect all its floating-point inputs to all its outputs,
so a parameter is called unreached only where its gradient is zero by construction.
"""

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core


def reached_params(loss_fn, params, *args):
    """A pytree of Python bools shaped as `params`: True where `loss_fn(params, *args)`, whose
    first output is the scalar loss, reaches the array (see the module docstring). Arguments
    may be tracers of an enclosing trace: only their shapes and dtypes are used."""
    spec = lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))  # noqa: E731
    closed = jax.make_jaxpr(lambda p, a: loss_fn(p, *a)[0])(
        jax.tree_util.tree_map(spec, params), jax.tree_util.tree_map(spec, args))
    jaxpr = closed.jaxpr
    num_params = len(jax.tree_util.tree_leaves(params))
    floating = lambda v: jnp.issubdtype(v.aval.dtype, jnp.inexact)  # noqa: E731
    variables = lambda vs: [v for v in vs if not isinstance(v, jex_core.Literal)]  # noqa: E731

    # each variable's set of parameter indices, forward through differentiable operations
    sources = {v: {i} for i, v in enumerate(jaxpr.invars[:num_params])}
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "stop_gradient":
            continue
        found = set().union(*(sources.get(v, set()) for v in variables(eqn.invars)
                              if floating(v)))
        if found:
            for out in eqn.outvars:
                if floating(out):
                    sources[out] = sources.get(out, set()) | found
    loss = jaxpr.outvars[0]
    hit = set() if isinstance(loss, jex_core.Literal) else sources.get(loss, set())
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params),
                                        [i in hit for i in range(num_params)])
