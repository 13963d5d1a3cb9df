"""Linear layers and MLPs with PyTorch default initialisation (`ws_crl/nets.py: make_mlp`)."""

from typing import Callable, Optional, Sequence

import flax.linen as nn

from wscrl_jax.nn.init import torch_uniform


class TorchLinear(nn.Module):
    """Dense layer whose kernel and bias follow `torch.nn.Linear`'s default init.

    Kernel [in, out]; `kernel_init`/`bias_init` override the defaults.
    """

    features: int
    kernel_init: Optional[Callable] = None
    bias_init: Optional[Callable] = None

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        kinit = self.kernel_init or torch_uniform(fan_in)
        binit = self.bias_init or torch_uniform(fan_in)
        kernel = self.param("kernel", kinit, (fan_in, self.features))
        bias = self.param("bias", binit, (self.features,))
        return x @ kernel + bias


class MLP(nn.Module):
    """Linear + ReLU per hidden layer, then an optional output layer.

    `hidden`: widths of the hidden layers (each followed by ReLU).
    `out`: width of the final linear layer, or None for no output layer (the trunk of the
    reference's Gaussian encoders ends with a ReLU).  [..., in] -> [..., out or hidden[-1]].
    """

    hidden: Sequence[int]
    out: Optional[int] = None

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(TorchLinear(width)(x))
        if self.out is not None:
            x = TorchLinear(self.out)(x)
        return x
