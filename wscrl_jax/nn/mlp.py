"""Linear layers and MLPs with PyTorch default initialisation (`ws_crl/nets.py: make_mlp`)."""

from typing import Callable, Optional, Sequence

import flax.linen as nn

from wscrl_jax.nn.init import torch_uniform


class TorchLinear(nn.Module):
    """Dense layer whose kernel and bias follow `torch.nn.Linear`'s default init.

    [..., in] -> [..., features]; kernel [in, features]; `kernel_init`/`bias_init` override
    the defaults; `use_bias=False` is torch's `bias=False`.
    """

    features: int
    use_bias: bool = True
    kernel_init: Optional[Callable] = None
    bias_init: Optional[Callable] = None

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        kinit = self.kernel_init or torch_uniform(fan_in)
        kernel = self.param("kernel", kinit, (fan_in, self.features))
        if not self.use_bias:
            return x @ kernel
        binit = self.bias_init or torch_uniform(fan_in)
        bias = self.param("bias", binit, (self.features,))
        return x @ kernel + bias


class MLP(nn.Module):
    """Linear + activation per hidden layer, then an optional output layer.

    `hidden`: widths of the hidden layers (each followed by `activation`, ReLU by default).
    `out`: width of the final linear layer, or None for no output layer (the trunk of the
    reference's Gaussian encoders ends with a ReLU).  [..., in] -> [..., out or hidden[-1]].
    `kernel_init`/`bias_init`: as `TorchLinear` (torch's defaults when None).
    """

    hidden: Sequence[int]
    out: Optional[int] = None
    activation: Callable = nn.relu
    kernel_init: Optional[Callable] = None
    bias_init: Optional[Callable] = None

    @nn.compact
    def __call__(self, x):
        dense = lambda width: TorchLinear(width, kernel_init=self.kernel_init,  # noqa: E731
                                          bias_init=self.bias_init)
        for width in self.hidden:
            x = self.activation(dense(width)(x))
        if self.out is not None:
            x = dense(self.out)(x)
        return x
