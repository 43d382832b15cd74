"""Building blocks of the StarGAN v2 networks (Choi et al., CVPR 2020).

Submodule names (conv1, conv2, norm1, norm2, conv1x1, fc, filter) follow the official code's state-dict keys on
purpose: official checkpoints then load by name, and the importer only has to check shapes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.nn.resample import conv_downsample, upsample_conv, upsample_nearest_2x

LRELU_SLOPE = 0.2
SQRT2 = math.sqrt(2.0)


class ResBlk(nn.Module):
    """Pre-activation residual block: [IN] → LReLU → conv3×3 → [avg-pool] → [IN] → LReLU → conv3×3.

    The shortcut is a bias-free 1×1 conv only when the width changes, then the same pooling. The sum is scaled by
    1/√2 so a block keeps unit variance (two unit-variance branches would otherwise double it).
    """

    def __init__(self, dim_in: int, dim_out: int, *, normalize: bool = False, downsample: bool = False) -> None:
        super().__init__()
        self.normalize = normalize
        self.downsample = downsample
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(dim_in, affine=True)
        self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False) if dim_in != dim_out else None

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.conv1x1 is None:
            return F.avg_pool2d(x, 2) if self.downsample else x
        return conv_downsample(self.conv1x1, x) if self.downsample else self.conv1x1(x)

    def _residual(self, x: Tensor) -> Tensor:
        if self.normalize:
            x = self.norm1(x)
        x = F.leaky_relu(x, LRELU_SLOPE)
        x = conv_downsample(self.conv1, x) if self.downsample else self.conv1(x)
        if self.normalize:
            x = self.norm2(x)
        return self.conv2(F.leaky_relu(x, LRELU_SLOPE))

    def forward(self, x: Tensor) -> Tensor:
        return (self._shortcut(x) + self._residual(x)) / SQRT2


class AdaIN(nn.Module):
    """Adaptive instance norm: (1 + γ)·IN(x) + β with [γ, β] = fc(style).

    The "1 +" centres the scale at one, so a zero style leaves the normalised features unscaled.
    """

    def __init__(self, style_dim: int, num_features: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(num_features, affine=False)
        self.fc = nn.Linear(style_dim, num_features * 2)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        gamma, beta = self.fc(style)[:, :, None, None].chunk(2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk(nn.Module):
    """Decoder block: AdaIN → LReLU → [nearest ×2] → conv3×3 → AdaIN → LReLU → conv3×3.

    With ``w_hpf > 0`` the block returns the residual alone: the source's high-frequency details are injected by
    the generator's high-pass path instead of a skip. The 1×1 shortcut conv still exists then (unused), because
    official checkpoints carry it.
    """

    def __init__(self, dim_in: int, dim_out: int, style_dim: int = 64, *, w_hpf: float = 0.0,
                 upsample: bool = False) -> None:
        super().__init__()
        self.w_hpf = w_hpf
        self.upsample = upsample
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = AdaIN(style_dim, dim_in)
        self.norm2 = AdaIN(style_dim, dim_out)
        self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False) if dim_in != dim_out else None

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.conv1x1 is None:
            return upsample_nearest_2x(x) if self.upsample else x
        return upsample_conv(self.conv1x1, x) if self.upsample else self.conv1x1(x)

    def _residual(self, x: Tensor, style: Tensor) -> Tensor:
        x = F.leaky_relu(self.norm1(x, style), LRELU_SLOPE)
        x = upsample_conv(self.conv1, x) if self.upsample else self.conv1(x)
        x = F.leaky_relu(self.norm2(x, style), LRELU_SLOPE)
        return self.conv2(x)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        out = self._residual(x, style)
        if self.w_hpf == 0:
            out = (out + self._shortcut(x)) / SQRT2
        return out


def laplacian_kernel(w_hpf: float) -> Tensor:
    """The 3×3 Laplacian high-pass kernel divided by w_hpf (a larger w_hpf injects weaker source edges)."""
    kernel = torch.full((3, 3), -1.0)
    kernel[1, 1] = 8.0
    return kernel / w_hpf


class HighPass(nn.Module):
    """Depthwise 3×3 Laplacian filter; keeps the edges of masked source features for the decoder.

    The kernel is a constant of w_hpf, so it is a non-persistent buffer: our checkpoints do not carry it, and
    official files with or without ``hpf.filter`` (the released CelebA-HQ file lacks it) import alike.
    """

    def __init__(self, w_hpf: float) -> None:
        super().__init__()
        if w_hpf <= 0:
            raise ValueError(f"w_hpf must be > 0 for a high-pass filter, got {w_hpf}")
        self.register_buffer("filter", laplacian_kernel(w_hpf), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        weight = self.filter.to(x.dtype)[None, None].expand(channels, 1, 3, 3)
        return F.conv2d(x, weight, padding=1, groups=channels)
