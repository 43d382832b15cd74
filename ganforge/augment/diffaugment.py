"""DiffAugment (Zhao et al., NeurIPS 2020): differentiable colour, translation and cutout for every image D sees.

Parameters are the paper's (official DiffAugment_pytorch.py): brightness + U[-0.5, 0.5), saturation x U[0, 2) around
the per-pixel channel mean, contrast x U[0.5, 1.5) around the per-image mean; translation by a whole number of pixels
in [-r, r], r = int(size/8 + 0.5), with zeros shifted in; one zeroed square of int(size/2 + 0.5) pixels at a uniform
position (it may hang over the border). Every sample is augmented (no probability).

Written with plain tensor ops rather than kornia: kornia's colour jitter works in HSV with other ranges, and its
translations resample; these few lines are exactly the paper's transforms, and every draw goes through `GlobalNoise`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganforge.augment.config import POLICIES
from ganforge.augment.noise import GlobalNoise

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def adjust_brightness(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Add u - 0.5 to every pixel of each sample (u: [N] in [0, 1))."""
    return x + (u.to(x.dtype) - 0.5).view(-1, 1, 1, 1)


def adjust_saturation(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Scale each pixel's deviation from its channel mean by 2u."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (u.to(x.dtype) * 2).view(-1, 1, 1, 1) + mean


def adjust_contrast(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Scale each image's deviation from its mean (over channels and pixels) by u + 0.5."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (u.to(x.dtype) + 0.5).view(-1, 1, 1, 1) + mean


def translate(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """out[n, :, i, j] = x[n, :, i + rows[n], j + cols[n]], zero where that falls outside the image."""
    n, _, height, width = x.shape
    src_rows = (torch.arange(height, device=x.device) + rows.view(-1, 1)).clamp(-1, height) + 1  # [N, H] into padded
    src_cols = (torch.arange(width, device=x.device) + cols.view(-1, 1)).clamp(-1, width) + 1
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # one zero row/column on each side catches everything outside
    batch = torch.arange(n, device=x.device).view(-1, 1, 1)
    return padded[batch, src_rows[:, :, None], src_cols[:, None, :]].permute(0, 3, 1, 2)


def cut_out(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero the rows [top, top + size[0]) x columns [left, left + size[1]) of each sample (clipped to the image)."""
    _, _, height, width = x.shape
    r = torch.arange(height, device=x.device)
    c = torch.arange(width, device=x.device)
    in_rows = (r >= top.view(-1, 1)) & (r < (top + size[0]).view(-1, 1))  # [N, H]
    in_cols = (c >= left.view(-1, 1)) & (c < (left + size[1]).view(-1, 1))  # [N, W]
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * keep.unsqueeze(1).to(x.dtype)


def uniform_int(u: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """Integers uniform on [low, high) from U[0, 1) noise (the clamp catches u*(high-low) rounding up to high-low)."""
    return (u * (high - low)).floor().clamp(max=high - low - 1).long() + low


class DiffAugment:
    """The policies in order (each a name of POLICIES); call with a local batch in [-1, 1]."""

    def __init__(self, policies: tuple[str, ...], noise: GlobalNoise) -> None:
        unknown = [p for p in policies if p not in POLICIES]
        if unknown or not policies:
            raise ValueError(f"DiffAugment policies {policies!r}: expected some of {', '.join(POLICIES)}")
        self.policies = policies
        self.noise = noise

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for policy in self.policies:
            x = getattr(self, f"_{policy}")(x)
        return x.contiguous()

    def _draw(self, x: torch.Tensor, columns: int) -> torch.Tensor:
        """This rank's rows of a [global batch, columns] U[0, 1) draw."""
        return self.noise.shard(self.noise.uniform((self.noise.global_size(x.shape[0]), columns), x.device))

    def _color(self, x: torch.Tensor) -> torch.Tensor:
        u = self._draw(x, 3)
        x = adjust_brightness(x, u[:, 0])
        x = adjust_saturation(x, u[:, 1])
        return adjust_contrast(x, u[:, 2])

    def _translation(self, x: torch.Tensor) -> torch.Tensor:
        u = self._draw(x, 2)
        max_rows, max_cols = (int(s * TRANSLATION_RATIO + 0.5) for s in x.shape[2:])
        rows = uniform_int(u[:, 0], -max_rows, max_rows + 1)
        return translate(x, rows, uniform_int(u[:, 1], -max_cols, max_cols + 1))

    def _cutout(self, x: torch.Tensor) -> torch.Tensor:
        u = self._draw(x, 2)
        height, width = x.shape[2:]
        size = (int(height * CUTOUT_RATIO + 0.5), int(width * CUTOUT_RATIO + 0.5))
        # centre drawn on [0, height + 1 - size % 2) as the official code does; the square starts size // 2 before it
        top = uniform_int(u[:, 0], 0, height + 1 - size[0] % 2) - size[0] // 2
        left = uniform_int(u[:, 1], 0, width + 1 - size[1] % 2) - size[1] // 2
        return cut_out(x, top, left, size)
