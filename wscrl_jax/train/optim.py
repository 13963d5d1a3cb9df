"""PyTorch-style optimisers and gradient clipping on optax.

The reference trains with `torch.optim.Adam` / `AdamW` and `clip_grad_norm_`; optax's
`scale_by_adam` is the same Adam moment update, and the two small pieces below reproduce what
differs in torch: where weight decay enters, and clipping's `1e-6` in the denominator. The
learning rate is not part of the transformation: methods schedule it per member (it may live
in the model state, e.g. ReduceLROnPlateau), and the step applies it with `apply_learning_rate`.
"""

import jax
import jax.numpy as jnp
import optax


def torch_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.0, decoupled: bool = False) -> optax.GradientTransformation:
    """torch `Adam` (weight decay added to the gradient, L2) or, with `decoupled`, `AdamW`
    (decay added to the update), without the learning rate. State: `optax.scale_by_adam`'s."""
    base = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    wd = float(weight_decay)
    if not wd:
        return base

    def update(grads, state, params=None):
        if not decoupled:
            grads = jax.tree_util.tree_map(lambda g, p: g + wd * p, grads, params)
        updates, state = base.update(grads, state, params)
        if decoupled:
            updates = jax.tree_util.tree_map(lambda u, p: u + wd * p, updates, params)
        return updates, state

    return optax.GradientTransformation(base.init, update)


def clip_by_global_norm(grads, max_norm: float):
    """torch `clip_grad_norm_`: scales by min(1, max_norm / (norm + 1e-6)). Returns the clipped
    gradients and the norm before clipping (the step checks it for finiteness)."""
    norm = optax.tree.norm(grads)
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jax.tree_util.tree_map(lambda g: g * scale, grads), norm


def apply_learning_rate(params, updates, learning_rate):
    """params - learning_rate * updates (torch's SGD-style parameter step)."""
    return jax.tree_util.tree_map(lambda p, u: p - learning_rate * u, params, updates)
