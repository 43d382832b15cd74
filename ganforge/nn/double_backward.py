"""Convolutions whose input gradient is differentiated again: WGAN-GP's and R1's penalties train D through ∇ₓD.

torch's second derivative of a convolution computes the weight gradient of the input gradient as one convolution of
the batch-transposed tensors, with a kernel as large as the image (`_convolution_double_backward`); oneDNN runs that
slowly, after copying both tensors into the transposed layout. It is the weight gradient of an ordinary convolution
(input: the incoming gradient of ∇ₓ; output gradient: the first backward's), which the weight-gradient kernels
compute directly. Same function and first derivatives (the same aten calls); the penalty's weight gradients differ by
float rounding (their sums run in another order).

`penalised_convolutions(device)` routes the trained 2-d convolutions called inside it (nn.Conv2d, the equalized and
spectral-norm layers, the strided resampling convolutions) that are large enough to pay for the route's Python
calls; the families enter it around the D calls a penalty differentiates through.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# From this many multiply-adds a convolution's penalty step is faster on the route (benchmarks/README.md, "Penalty
# convolutions", on the CPU: 0.83-0.96x below 9.4M multiply-adds, 0.97-1.08x at 9.4M, 1.03-1.31x from 16.8M but for
# one case at 0.98x)
MIN_MULTIPLY_ADDS = 2**24
# where that was measured; elsewhere autograd's own until gpu_check.py's penalty/routes case measures the route
MEASURED_DEVICES = ("cpu",)


def _pair(value: Any) -> tuple[int, int] | None:
    """A stride, padding or dilation as F.conv2d takes it (an int, or one or two ints), as two ints; None for
    anything else (a string padding), which keeps F.conv2d."""
    try:
        if isinstance(value, Sequence) and not isinstance(value, str):
            if len(value) not in (1, 2):
                return None
            return operator.index(value[0]), operator.index(value[-1])
        return operator.index(value), operator.index(value)
    except TypeError:
        return None


def _convolution_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, params: tuple,
                          mask: list[bool], bias: bool = False) -> tuple[torch.Tensor | None, ...]:
    """aten's convolution backward: the kernels autograd calls for a convolution's first derivative."""
    stride, padding, dilation, groups = params
    return torch.ops.aten.convolution_backward(grad, x, weight, [weight.shape[0]] if bias else None, stride, padding,
                                               dilation, False, [0, 0], groups, mask)


def _wanted(ctx: Any, index: int, node: Any) -> bool:
    """Whether this backward pass needs the gradient of input `index`, whose autograd node is `node`: autograd.grad
    (..., inputs=x) leaves the weights out, and autograd's own convolution node skips what nobody asked for. A leaf's
    node cannot be asked during autograd.grad: its gradient is computed (conv2d makes weights and inputs views)."""
    if not ctx.needs_input_grad[index]:
        return False
    return node is None or torch._C._will_engine_execute_node(node)


def _with_node(tensor: torch.Tensor | None) -> torch.Tensor | None:
    """A leaf that needs gradients as a view of itself, whose node `_wanted` can ask about."""
    if tensor is None or not tensor.requires_grad or tensor.grad_fn is not None:
        return tensor
    return tensor.view_as(tensor)


class _InputGradient(torch.autograd.Function):
    """∇ₓ of a convolution (the transposed convolution of the output gradient), differentiated towards the output
    gradient by the convolution itself and towards the weight by the ordinary weight-gradient kernel. `x` gives the
    shape only."""

    @staticmethod
    def forward(ctx: Any, grad: torch.Tensor, weight: torch.Tensor, x: torch.Tensor, params: tuple) -> torch.Tensor:
        ctx.save_for_backward(grad, weight)
        ctx.params, ctx.nodes = params, (grad.grad_fn, weight.grad_fn)
        return _convolution_backward(grad, x, weight, params, [True, False, False])[0]

    @staticmethod
    def backward(ctx: Any, outer: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad, weight = ctx.saved_tensors
        towards_grad = towards_weight = None
        if _wanted(ctx, 0, ctx.nodes[0]):
            stride, padding, dilation, groups = ctx.params
            towards_grad = F.conv2d(outer, weight, None, stride, padding, dilation, groups)
        if _wanted(ctx, 1, ctx.nodes[1]):
            towards_weight = _convolution_backward(grad, outer, weight, ctx.params, [False, True, False])[1]
        return towards_grad, towards_weight, None, None


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, params: tuple
                ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.params, ctx.has_bias = params, bias is not None
        ctx.nodes = (x.grad_fn, weight.grad_fn, None if bias is None else bias.grad_fn)
        stride, padding, dilation, groups = params
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = (_wanted(ctx, index, node) for index, node in enumerate(ctx.nodes))
        if not torch.is_grad_enabled():  # a plain backward: the one call autograd makes
            mask = [need_x, need_weight, need_bias]
            return (*_convolution_backward(grad, x, weight, ctx.params, mask, ctx.has_bias), None)
        # create_graph (the penalty's ∇ₓ): ∇ₓ through _InputGradient, the weight's as autograd differentiates it
        grad_x = _InputGradient.apply(grad, weight, x.detach(), ctx.params) if need_x else None
        grad_weight = _convolution_backward(grad, x, weight, ctx.params, [False, True, False])[1] if need_weight \
            else None
        return grad_x, grad_weight, grad.sum((0, 2, 3)) if need_bias else None, None


def conv2d(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> torch.Tensor:
    """F.conv2d (same arguments), twice differentiable through the weight-gradient kernels. String paddings and
    unbatched inputs go to F.conv2d (aten's backward takes numbers and batches). Under autocast the tensors are cast
    as autocast casts a convolution's and the Function runs with autocast off (its backward computes in the dtypes
    the forward saved)."""
    params = (_pair(stride), _pair(padding), _pair(dilation), groups)
    if None in params or input.dim() != 4:
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    device = input.device.type
    if not torch.is_autocast_enabled(device):
        return _Conv2d.apply(_with_node(input), _with_node(weight), _with_node(bias), params)
    dtype = torch.get_autocast_dtype(device)  # autocast leaves float64 alone
    input, weight, bias = (t if t is None or t.dtype == torch.float64 else _with_node(t.to(dtype))
                           for t in (input, weight, bias))
    with torch.autocast(device, enabled=False):
        return _Conv2d.apply(input, weight, bias, params)


def multiply_adds(input_shape: Sequence[int], weight: torch.Tensor, stride: Any = 1) -> int:
    """A convolution's multiply-adds, near enough for the size rule: output pixels (the input's over the stride)
    times the weight's elements."""
    stride_h, stride_w = _pair(stride) or (1, 1)
    batch, _, height, width = input_shape
    return batch * -(-height // stride_h) * -(-width // stride_w) * weight.numel()


class PenalisedConvolutions(TorchFunctionMode):
    """Inside, while grad mode is on: F.conv2d of a weight that trains, with at least `min_multiply_adds` (default
    MIN_MULTIPLY_ADDS) multiply-adds, runs as `conv2d` above (on any device: benchmarks force it to time it)."""

    def __init__(self, min_multiply_adds: int | None = None) -> None:
        super().__init__()
        self.min_multiply_adds = MIN_MULTIPLY_ADDS if min_multiply_adds is None else min_multiply_adds

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.conv2d and torch.is_grad_enabled():
            # F.conv2d(input, weight, bias, stride, ...), positional or named
            x, weight = args[0] if args else kwargs["input"], args[1] if len(args) > 1 else kwargs["weight"]
            stride = args[3] if len(args) > 3 else kwargs.get("stride", 1)
            # a weight that does not train (a frozen D, augmentation filters) has no weight gradient to speed up
            if weight.requires_grad and x.dim() == 4 and multiply_adds(x.shape, weight, stride) >= \
                    self.min_multiply_adds:
                return conv2d(*args, **kwargs)
        return func(*args, **kwargs)


def penalised_convolutions(device: torch.device) -> contextlib.AbstractContextManager:
    """Enter around a D call whose input gradient a loss trains: PenalisedConvolutions on the devices the route was
    measured faster on, nothing elsewhere."""
    return PenalisedConvolutions() if device.type in MEASURED_DEVICES else contextlib.nullcontext()
