"""PyTorch-style optimisers and gradient clipping on optax.

The reference trains with `torch.optim.Adam` / `AdamW` and `clip_grad_norm_`. optax's
`scale_by_adam` is the same moment update; what differs in torch is reproduced here:

* **A step count per parameter array.** torch keeps Adam's step (and its bias correction) per
  parameter, and skips a parameter whose gradient is `None`, i.e. one the backward pass has never
  reached. The reference (torch 1.13, whose `zero_grad` keeps a reached parameter's gradient as
  zeros) thus starts the SCM's and intervention encoder's Adam only when ILCM pretraining ends,
  with a bias correction of a first step. `torch_adam` takes the step's `reached` mask (which
  arrays the loss reaches in this phase, `train/reach.py`): an unreached array whose count is still
  0 is left alone; one reached before takes a step with a zero gradient, as in torch. Where the
  step knows from the run's phase order that an unreached array cannot have started yet
  (`started`, e.g. the SCM all through ILCM pretraining), that array is left alone without any
  arithmetic: the same values, and no per-array Adam kernels for XLA to run.
* Where weight decay enters (L2 into the gradient for `Adam`, into the update for `AdamW`), and
  clipping's `1e-6` in the denominator.

The learning rate is not part of the transformation: methods schedule it per member (it may live
in the model state, e.g. ReduceLROnPlateau), and the step applies it with `apply_learning_rate`.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TorchAdamState(NamedTuple):
    """count: int32 scalar per parameter array (the steps it has taken); mu, nu: the moments,
    shaped as the parameters."""
    count: Any
    mu: Any
    nu: Any


def torch_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.0, decoupled: bool = False
               ) -> optax.GradientTransformationExtraArgs:
    """torch `Adam` (weight decay added to the gradient, L2) or, with `decoupled`, `AdamW`
    (decay added to the update), without the learning rate; steps counted per parameter array.

    update(grads, state, params, reached=None, started=None): reached, a pytree of Python bools
    shaped as the parameters (None: all reached); started, likewise, False where an array cannot
    have taken a step yet (None: any may have); see the module docstring."""
    adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)  # applied per array, with its own count
    wd = float(weight_decay)

    def init(params):
        return TorchAdamState(
            count=jax.tree_util.tree_map(lambda _: jnp.zeros([], jnp.int32), params),
            mu=optax.tree.zeros_like(params), nu=optax.tree.zeros_like(params))

    def leaf_update(grad, count, mu, nu, param, reached, started):
        if not reached and not started:  # count is 0 by construction: nothing to do
            return jnp.zeros_like(param), (count, mu, nu)
        if not reached:
            grad = jnp.zeros_like(param)
        if wd and not decoupled:
            grad = grad + wd * param
        update, new = adam.update(grad, optax.ScaleByAdamState(count, mu, nu))
        if wd and decoupled:
            update = update + wd * param
        if reached:
            return update, (new.count, new.mu, new.nu)
        started = count > 0  # reached in an earlier phase: torch steps it with a zero gradient
        return jnp.where(started, update, 0.0), tuple(
            jnp.where(started, a, b) for a, b in zip((new.count, new.mu, new.nu),
                                                    (count, mu, nu)))

    def update(grads, state, params=None, reached=None, started=None, **extra):
        del extra
        if params is None and wd:
            raise ValueError("torch_adam with weight decay needs the parameters")
        treedef = jax.tree_util.tree_structure(grads)
        leaves = [jax.tree_util.tree_leaves(t) for t in (grads, state.count, state.mu, state.nu)]
        param_leaves = (jax.tree_util.tree_leaves(params) if params is not None
                        else leaves[0])
        flags = [[default] * len(leaves[0]) if tree is None else jax.tree_util.tree_leaves(tree)
                 for tree, default in ((reached, True), (started, True))]
        out = [leaf_update(*args) for args in zip(*leaves, param_leaves, *flags)]
        updates = treedef.unflatten([u for u, _ in out])
        count, mu, nu = (treedef.unflatten([s[i] for _, s in out]) for i in range(3))
        return updates, TorchAdamState(count, mu, nu)

    return optax.GradientTransformationExtraArgs(init, update)


def clip_by_global_norm(grads, max_norm: float):
    """torch `clip_grad_norm_`: scales by min(1, max_norm / (norm + 1e-6)). Returns the clipped
    gradients and the norm before clipping (the step checks it for finiteness)."""
    norm = optax.tree.norm(grads)
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jax.tree_util.tree_map(lambda g: g * scale, grads), norm


def apply_learning_rate(params, updates, learning_rate):
    """params - learning_rate * updates (torch's SGD-style parameter step)."""
    return jax.tree_util.tree_map(lambda p, u: p - learning_rate * u, params, updates)
