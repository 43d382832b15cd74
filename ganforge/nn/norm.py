"""Pixel-wise feature normalisation and minibatch standard deviation (Karras et al. 2018, §3 and §4.2)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ganforge.nn.layout import is_channels_last

STDDEV_EPS = 1e-8


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Normalise each feature vector (dim 1) to unit RMS; keeps G's signal magnitudes from escalating.

    Works on [N, C] latents as well as [N, C, H, W] feature maps (per pixel). Low-precision activations (autocast's
    bf16/fp16) keep their precision, their mean square accumulated in float32: CUDA's autocast would run the square
    and rsqrt in float32 and hand every normalised activation of G on as a float32 tensor, cast back at the next
    convolution (and fp16 squares overflow above 256).
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        with torch.autocast(x.device.type, enabled=False):
            norm = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float32)
            return x * torch.rsqrt(norm.square() / x.shape[1] + eps).to(x.dtype)
    return x * torch.rsqrt(_mean_square_over_channels(x) + eps)


def _mean_square_over_channels(x: Tensor) -> Tensor:
    """Mean of x² over dim 1, reduced in memory order. The values are the same either way, but autograd's backward
    of a channels_last tensor reduced over dim 1 comes out NCHW and meets the channels_last gradient of the product
    in a mixed-layout sum: at [16, 64, 32, 32] on 2 CPU cores pixel_norm's forward and backward took 4.5 ms that way
    and 2.8 ms this way (an NCHW tensor the other way round), with equal first-order gradients bit for bit (a second
    derivative through it, which no ganforge loss takes, rounds differently)."""
    if is_channels_last(x):
        return x.movedim(1, -1).square().mean(dim=-1, keepdim=True).movedim(-1, 1)
    return x.square().mean(dim=1, keepdim=True)


class PixelNorm(nn.Module):
    """Module form of :func:`pixel_norm`."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return pixel_norm(x, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


def _group_stddev(members: Tensor, dim: int, correction: int) -> Tensor:
    """Mean over features of sqrt(variance over the group's members (`dim`) + ε), per group, in `members`' dtype.

    Written out as mean, squared deviations and sum: `Tensor.var` over a batch dimension took 1 ms for a 4×4 head's
    16 × 64 × 4 × 4 activations on a 2-core CPU (15× this form; four calls per PGAN step, as many as its 4 px
    convolutions). Equal to it within float rounding. Low-precision activations (autocast's bf16/fp16) are reduced
    in float32, as `var` accumulates: fp16 squares overflow above 256, and CUDA's autocast would hand the statistic
    on as float32 and promote D's whole head input with it.
    """
    if members.dtype in (torch.float16, torch.bfloat16):
        with torch.autocast(members.device.type, enabled=False):
            return _group_stddev(members.float(), dim, correction).to(members.dtype)
    deviations = members - members.mean(dim=dim, keepdim=True)
    variance = deviations.square().sum(dim=dim) / (members.shape[dim] - correction)
    return torch.sqrt(variance + STDDEV_EPS).mean(dim=-1)


def minibatch_stddev(x: Tensor, group_size: int = 4, *, mode: Literal["paper", "zoo"], parts: int = 1) -> Tensor:
    """Append one channel holding the average per-feature stddev across a group of samples.

    It lets D see batch-level variation and so discourages mode collapse. The two reference codes group
    differently and both behaviours are kept for fidelity:

    - ``"paper"`` (official TF): G = min(group_size, N) must divide N; group members are strided (sample i
      belongs to group i mod N/G); biased variance.
    - ``"zoo"`` (pytorch_GAN_zoo): groups of consecutive samples; if min(group_size, N) does not divide N the
      whole batch is one group; unbiased variance; a batch of one gets a zero channel.

    `parts` > 1 splits the batch into that many equal consecutive slices (e.g. reals then fakes sent through D in
    one call) and groups each slice as if it had gone through D alone, so one call equals separate ones.
    """
    if x.ndim != 4:
        raise ValueError(f"minibatch_stddev expects [N, C, H, W], got shape {tuple(x.shape)}")
    if group_size < 1:
        raise ValueError(f"minibatch_stddev group_size must be >= 1, got {group_size}")
    if parts < 1 or x.shape[0] % parts != 0:
        raise ValueError(f"minibatch_stddev: batch size N={x.shape[0]} does not split into {parts} equal parts")
    channels = [_stddev_channel(part, group_size, mode) for part in x.chunk(parts)]
    return torch.cat([x, *channels], dim=1) if parts == 1 else torch.cat([x, torch.cat(channels)], dim=1)


def _stddev_channel(x: Tensor, group_size: int, mode: Literal["paper", "zoo"]) -> Tensor:
    """The [N, 1, H, W] channel `minibatch_stddev` appends to one batch."""
    n, c, h, w = x.shape
    if mode == "paper":
        group = min(group_size, n)
        if n % group != 0:
            raise ValueError(
                f"minibatch_stddev (paper): batch size N={n} must be divisible by the group size G={group}"
            )
        groups = n // group
        # [G, M, features]: member g of group m is sample g*M + m, i.e. strided groups.
        stat = _group_stddev(x.flatten(1).reshape(group, groups, -1), dim=0, correction=0)  # [M]
        channel = stat.reshape(1, groups, 1, 1, 1).expand(group, groups, 1, h, w).reshape(n, 1, h, w)
    elif mode == "zoo":
        group = min(group_size, n)
        if n % group != 0:
            group = n
        if group == 1:
            channel = x.new_zeros(n, 1, h, w)
        else:
            groups = n // group
            stat = _group_stddev(x.flatten(1).reshape(groups, group, -1), dim=1, correction=1)  # [groups]
            channel = stat.reshape(groups, 1, 1, 1, 1).expand(groups, group, 1, h, w).reshape(n, 1, h, w)
    else:
        raise ValueError(f"minibatch_stddev mode must be 'paper' or 'zoo', got {mode!r}")
    return channel
