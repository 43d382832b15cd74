"""Equalized-learning-rate layers (Karras et al. 2018, section 4.1).

Weights are stored as N(0, 1) samples and scaled at run time by the He constant c = gain / sqrt(fan_in),
so Adam sees every parameter on the same scale. Two conventions exist for the bias:

- ``scale_bias=False`` (paper / official TF): y = (c·W) x + b — only the weight is scaled.
- ``scale_bias=True`` (pytorch_GAN_zoo): y = c·(W x + b) — the wrapped layer's whole output is scaled,
  so the stored bias is c times smaller than its effect. Needed to load zoo checkpoints unchanged; computed as
  (c·W) x + c·b, the same function with the multiply on the parameters instead of the output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SQRT2 = math.sqrt(2.0)


def _he_constant(weight_shape: torch.Size, gain: float) -> float:
    fan_in = math.prod(weight_shape[1:])
    return gain / math.sqrt(fan_in)


class _EqualizedBase(nn.Module):
    """Holds the N(0,1) weight, the zero bias and the run-time scaling shared by conv and linear."""

    def __init__(self, weight_shape: tuple[int, ...], *, gain: float, scale_bias: bool, bias: bool) -> None:
        super().__init__()
        if any(size <= 0 for size in weight_shape):
            raise ValueError(f"{type(self).__name__}: every dimension must be positive, got {weight_shape}")
        self.weight = nn.Parameter(torch.empty(weight_shape))
        nn.init.normal_(self.weight)
        self.bias = nn.Parameter(torch.zeros(weight_shape[0])) if bias else None
        self.gain = float(gain)
        self.scale_bias = scale_bias
        self.he_constant = _he_constant(self.weight.shape, self.gain)

    def applied_parameters(self) -> tuple[Tensor, Tensor | None]:
        """The weight and bias the plain op runs with: the He constant folded into the (small) parameters.

        Paper: c·W and b. Zoo: c·W and c·b, which is c·(W x + b) as the zoo computes it, up to float rounding
        (the zoo multiplies the whole output; scaling the parameters instead saves an activation-sized multiply
        forward and backward on every layer).
        """
        bias = self.bias * self.he_constant if self.scale_bias and self.bias is not None else self.bias
        return self.weight * self.he_constant, bias

    def extra_repr(self) -> str:
        return (
            f"gain={self.gain:.4g}, he_constant={self.he_constant:.4g}, "
            f"scale_bias={self.scale_bias}, bias={self.bias is not None}"
        )


class EqualizedConv2d(_EqualizedBase):
    """2-D convolution with equalized learning rate (see module docstring for the bias convention)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        *,
        padding: int = 0,
        gain: float = SQRT2,
        scale_bias: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__(
            (out_ch, in_ch, kernel_size, kernel_size), gain=gain, scale_bias=scale_bias, bias=bias
        )
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, *self.applied_parameters(), padding=self.padding)

    def extra_repr(self) -> str:
        out_ch, in_ch, k, _ = self.weight.shape
        return f"{in_ch}, {out_ch}, kernel_size={k}, padding={self.padding}, " + super().extra_repr()


class EqualizedLinear(_EqualizedBase):
    """Fully connected layer with equalized learning rate (see module docstring for the bias convention)."""

    def __init__(
        self,
        in_f: int,
        out_f: int,
        *,
        gain: float = SQRT2,
        scale_bias: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__((out_f, in_f), gain=gain, scale_bias=scale_bias, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, *self.applied_parameters())

    def extra_repr(self) -> str:
        out_f, in_f = self.weight.shape
        return f"{in_f}, {out_f}, " + super().extra_repr()
