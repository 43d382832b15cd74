"""×2 resampling next to convolutions: nearest-neighbour upsampling as F.interpolate computes it (without torch's
slow CPU path for NCHW tensors), and a 'same' convolution after an upsampling or before a 2×2 average pool computed
as one strided convolution where that is faster.

A convolution and a ×2 resampling are both linear, so their composition is one linear map with fewer
multiply-adds than the two steps: conv3×3 after a nearest upsampling is a stride-2 transposed convolution whose
4×4 kernel sums the four one-pixel shifts of the 3×3 one (4 instead of 9 multiply-adds per output pixel and
channel pair), and a 2×2 average pool after conv3×3 a stride-2 convolution with a quarter of that kernel
(Progressive GAN's official `upscale2d_conv2d` / `conv2d_downscale2d`, its default `fused_scale`); a 1×1
convolution moves to the low-resolution side instead. The values equal the two steps' up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.nn.layout import is_channels_last

# Measured forward + backward (and double backward) on 2 CPU cores (benchmarks/README.md "Convolutions beside a
# resampling as one strided convolution"): one strided convolution is 1.3-2.5x faster from 4,096 pixels (batch ×
# height × width of the full-resolution side) up, and up to 2x slower below, where the convolutions are too small
# to gain from fewer multiply-adds. Elsewhere StyleGAN's rule (its fused_scale 'auto': 128 px and up) until a GPU
# run measures one.
FUSED_MIN_BATCH_PIXELS_CPU = 4096
FUSED_MIN_SIZE = 128


class _NearestUpsample2x(torch.autograd.Function):
    """Forward: each pixel broadcast to a 2×2 block, one contiguous copy. Backward: torch's own nearest-upsampling
    backward (the sum over each block), itself differentiable, so a gradient penalty through it still works."""

    @staticmethod
    def forward(x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        # contiguous: where every merge of the view is possible (a 1×1 input) reshape returns a view of x itself
        return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w).contiguous()

    @staticmethod
    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Tensor], output: Tensor) -> None:
        pass  # the backward needs only the gradient's shape; this form lets torch.func.grad through

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        n, c, h, w = grad.shape
        return torch.ops.aten.upsample_nearest2d_backward(grad, [h, w], [n, c, h // 2, w // 2], 2.0, 2.0)


def upsample_nearest_2x(x: Tensor) -> Tensor:
    """`F.interpolate(x, scale_factor=2, mode="nearest")`, equal values and gradients bit for bit.

    On the CPU, torch's kernel takes an NCHW tensor through channels_last copies: forward and backward of
    [4, 512, 32, 32] (StarGAN v2's G at full widths) took 137 ms against 19 ms this way, and small tensors gain too
    (benchmarks/README.md). Channels_last tensors, other devices and compiled code keep torch's kernel."""
    if x.device.type != "cpu" or is_channels_last(x) or torch.compiler.is_compiling():
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return _NearestUpsample2x.apply(x)


def conv_parameters(conv: nn.Module) -> tuple[Tensor, Tensor | None]:
    """The weight and bias a convolution layer applies: after its spectral or equalized-learning-rate scaling
    where it has one (`applied_parameters`), else its own."""
    applied = getattr(conv, "applied_parameters", None)
    return applied() if applied is not None else (conv.weight, conv.bias)


def _same_kernel_size(conv: nn.Module) -> int:
    height, width = conv.weight.shape[-2:]
    padding = conv.padding if isinstance(conv.padding, tuple) else (conv.padding, conv.padding)
    stride = getattr(conv, "stride", (1, 1))
    if height != width or height % 2 == 0 or padding != (height // 2, height // 2) or tuple(stride) != (1, 1) \
            or getattr(conv, "groups", 1) != 1 or tuple(getattr(conv, "dilation", (1, 1))) != (1, 1) \
            or getattr(conv, "padding_mode", "zeros") != "zeros":
        raise ValueError(f"resampling convolutions need an odd square 'same' kernel with stride 1 and zero padding, "
                         f"got {conv}")
    return height


def fuses_resampling(full_height: int, full_width: int, device_type: str, batch: int | None) -> bool:
    """Whether a k×k convolution beside a ×2 resampling runs as one strided convolution at this size (the
    full-resolution side's) on this kind of device. `batch` None: a graph for any batch size (an export), where
    the route cannot depend on it, goes by the image size alone."""
    if device_type == "cpu" and batch is not None:
        return batch * full_height * full_width >= FUSED_MIN_BATCH_PIXELS_CPU
    return min(full_height, full_width) >= FUSED_MIN_SIZE


def _fused_route(conv: nn.Module, x: Tensor, full_height: int, full_width: int, fused: bool | None) -> bool:
    if conv._forward_hooks or conv._forward_pre_hooks:  # a route around conv.forward would skip them
        return False
    if fused is not None:
        return fused
    return fuses_resampling(full_height, full_width, x.device.type,
                            None if torch.compiler.is_exporting() else len(x))


def _shifted_sum(weight: Tensor) -> Tensor:
    """The (k+1)×(k+1) kernel: the sum of the k×k kernel placed at the four corners."""
    padded = F.pad(weight, (1, 1, 1, 1))
    return padded[..., 1:, 1:] + padded[..., :-1, 1:] + padded[..., 1:, :-1] + padded[..., :-1, :-1]


def upsample_conv(conv: nn.Module, x: Tensor, *, fused: bool | None = None) -> Tensor:
    """`conv(upsample_nearest_2x(x))` for a 'same' convolution layer, in the fewest multiply-adds that pay.
    `fused` forces the route (None: by size, as above); the separate route is the two steps themselves, so it rounds
    as the references do. A layer with forward hooks always takes it."""
    size = _same_kernel_size(conv)
    if not _fused_route(conv, x, 2 * x.shape[-2], 2 * x.shape[-1], fused):
        return conv(upsample_nearest_2x(x))
    if size == 1:
        return upsample_nearest_2x(conv(x))
    weight, bias = conv_parameters(conv)
    kernel = _shifted_sum(weight).flip(-2, -1).transpose(0, 1)
    return F.conv_transpose2d(x, kernel, bias, stride=2, padding=size // 2)


def conv_downsample(conv: nn.Module, x: Tensor, *, fused: bool | None = None) -> Tensor:
    """`F.avg_pool2d(conv(x), 2)` for a 'same' convolution layer, in the fewest multiply-adds that pay.
    `fused` forces the route (None: by size, as above); the separate route is the two steps themselves, so it rounds
    as the references do. A layer with forward hooks always takes it."""
    size = _same_kernel_size(conv)
    if not _fused_route(conv, x, x.shape[-2], x.shape[-1], fused):
        return F.avg_pool2d(conv(x), 2)
    if size == 1:
        return conv(F.avg_pool2d(x, 2))
    weight, bias = conv_parameters(conv)
    return F.conv2d(x, _shifted_sum(weight) * 0.25, bias, stride=2, padding=size // 2)
