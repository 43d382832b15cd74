"""ADA (Karras et al., NeurIPS 2020): the `bgc` augmentation pipeline and its overfitting controller.

Probabilities and ranges are the paper's (official stylegan2-ada-pytorch training/augment.py, all multipliers 1):
x-flip, 90-degree rotations and integer translation (uniform, up to 0.125 of the size) each with probability p;
isotropic scaling (2^N(0, 0.2^2)), anisotropic scaling (2^N(0, 0.2^2)) and fractional translation (N(0, 0.125^2) of
the size) with p; a uniform rotation before and one after the anisotropic scaling, each with p_rot = 1 - sqrt(1 - p) so
that at least one happens with p; brightness (+N(0, 0.2^2)), contrast (x 2^N(0, 0.5^2)), luma flip, hue rotation
(uniform angle about the luma axis) and saturation (x 2^N(0, 1)) each with p. A sample draws a value and then a gate
for each transform, in the official order, for the global batch (see GlobalNoise).

The geometric transforms are composed into one 3x3 matrix and the colour ones into one 4x4 matrix, each applied once.
The resampler is written here rather than taken from kornia: kornia's warp_affine/warp_perspective sample the image
bilinearly at its own resolution, whereas the official pipeline reflect-pads, upsamples 2x through the orthogonal
Symlet-6 wavelet low-pass, samples bilinearly there and low-passes back down, which keeps aliasing (a leak the
discriminator could learn) out of the augmented images. kornia has no colour-matrix transform either (its hue and
saturation act in HSV with other ranges), so the 4x4 matrix is built here too.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ganforge.augment.config import BLIT, COLOR, GEOM, PIPELINES
from ganforge.augment.noise import GlobalNoise

XINT_MAX = 0.125  # integer translation range, relative to the size
SCALE_STD = 0.2  # log2 standard deviation of isotropic scaling
ROTATE_MAX = 1.0  # rotation range, 1 = full circle
ANISO_STD = 0.2  # log2 standard deviation of anisotropic scaling
XFRAC_STD = 0.125  # standard deviation of fractional translation, relative to the size
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5  # log2
HUE_MAX = 1.0  # 1 = full circle
SATURATION_STD = 1.0  # log2

# Low-pass taps of the Symlet-6 wavelet: the official geometric resampling filter.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633, 0.4910559419267466,
        0.787641141030194, 0.3379294217276218, -0.07263752278646252, -0.021060292512300564, 0.04472490177066578,
        0.0017677118642428036, -0.007800708325034148)
FILTER_PAD = len(SYM6) // 4  # output margin (in pixels) the filter needs on each side


def _matrix(rows: list[list[torch.Tensor | float]], n: int, device: torch.device) -> torch.Tensor:
    """[n, R, C] float32 matrices from rows whose entries are [n] tensors or constants."""
    entries = [torch.as_tensor(e, dtype=torch.float32, device=device).expand(n) for row in rows for e in row]
    return torch.stack(entries, dim=-1).view(n, len(rows), len(rows[0]))


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx.shape[0], tx.device)


def scale2d(sx: torch.Tensor, sy: torch.Tensor | float) -> torch.Tensor:
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx.shape[0], sx.device)


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta.shape[0], theta.device)


def translate3d(t: torch.Tensor) -> torch.Tensor:
    """Adds t to all three colour channels."""
    return _matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], t.shape[0], t.device)


def scale3d(s: torch.Tensor) -> torch.Tensor:
    return _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], s.shape[0], s.device)


def rotate3d(v: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by theta about the unit axis v (first three entries of v)."""
    vx, vy, vz = (float(c) for c in v[:3])
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    return _matrix([
        [vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
        [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
        [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
        [0, 0, 0, 1],
    ], theta.shape[0], theta.device)


def _fir(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' correlation of every channel with `taps` along width, then height."""
    channels = x.shape[1]
    k = taps.to(x.dtype)
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def upsample2x(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """2x upsampling: zeros between samples, then convolution with `taps` (gain 2 per axis); output 2H x 2W."""
    n, c, h, w = x.shape
    up = torch.zeros(n, c, h, 2, w, 2, dtype=x.dtype, device=x.device)
    up[:, :, :, 0, :, 0] = x
    up = up.view(n, c, 2 * h, 2 * w)
    k = len(taps)
    before, after = (k + 1) // 2, (k - 2) // 2
    up = F.pad(up, [before, after, before, after])
    return _fir(up, taps.flip(0) * 2)  # correlation with the flipped taps = convolution


def downsample2x(x: torch.Tensor, taps: torch.Tensor, crop: int) -> torch.Tensor:
    """Correlation with `taps`, then every other sample, after cropping `crop` output pixels from each side."""
    k = len(taps)
    before, after = (k - 1) // 2 - 2 * crop, (k - 2) // 2 - 2 * crop  # the official downsample2d padding, negative
    x = x[:, :, -before : x.shape[2] + after, -before : x.shape[3] + after]
    return _fir(x, taps)[:, :, ::2, ::2]


def warp(images: torch.Tensor, g_inv: torch.Tensor, g_inv_all: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Resample `images` [N, C, H, W] through the output-to-input pixel maps `g_inv` [N, 3, 3] (origin at the image
    centre), as the official pipeline does: reflect padding, 2x wavelet upsampling, bilinear sampling, 2x wavelet
    downsampling. The padding is sized from `g_inv_all`, the maps of the whole global batch, so every rank pads the same
    and a W-process run resamples exactly like one process."""
    n, channels, height, width = images.shape
    device = images.device
    cx, cy = (width - 1) / 2, (height - 1) / 2
    corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], device=device)
    reach = (g_inv_all @ corners.t())[:, :2, :].permute(1, 0, 2).flatten(1)  # [xy, batch * corner]
    margin = torch.cat([-reach, reach]).max(dim=1).values  # x0, y0, x1, y1 beyond the centre
    margin = margin + torch.tensor([2 * FILTER_PAD - cx, 2 * FILTER_PAD - cy] * 2, device=device)
    limit = torch.tensor([width - 1, height - 1] * 2, device=device, dtype=margin.dtype)
    mx0, my0, mx1, my1 = (int(m) for m in margin.clamp(min=0).minimum(limit).ceil())

    x = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
    g = translate2d(torch.full((n,), (mx0 - mx1) / 2, device=device), torch.full((n,), (my0 - my1) / 2, device=device))
    g = g @ g_inv
    x = upsample2x(x, taps)
    two = torch.full((n,), 2.0, device=device)
    half = torch.full((n,), 0.5, device=device)
    g = scale2d(two, two) @ g @ scale2d(half, half)
    g = translate2d(-half, -half) @ g @ translate2d(half, half)
    out_h, out_w = (height + 2 * FILTER_PAD) * 2, (width + 2 * FILTER_PAD) * 2
    # pixel coordinates -> affine_grid's [-1, 1] ones (input side: the upsampled image; output side: out_h x out_w)
    to_in = scale2d(torch.full((n,), 2 / x.shape[3], device=device), 2 / x.shape[2])
    from_out = scale2d(torch.full((n,), out_w / 2, device=device), out_h / 2)
    g = to_in @ g @ from_out
    grid = F.affine_grid(g[:, :2, :].to(x.dtype), [n, channels, out_h, out_w], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return downsample2x(x, taps, crop=FILTER_PAD)


def apply_color(images: torch.Tensor, color: torch.Tensor) -> torch.Tensor:
    """Apply colour matrices [N, 4, 4] to RGB images; a 1-channel image gets the mean of the matrix's RGB rows."""
    n, channels, height, width = images.shape
    x = images.reshape(n, channels, height * width)
    c = color.to(x.dtype)
    if channels == 3:
        x = c[:, :3, :3] @ x + c[:, :3, 3:]
    else:
        c = c[:, :3, :].mean(dim=1, keepdim=True)
        x = x * c[:, :, :3].sum(dim=2, keepdim=True) + c[:, :, 3:]
    return x.reshape(n, channels, height, width)


def _is_identity(matrices: torch.Tensor) -> torch.Tensor:
    """[N] bool: which matrices are exactly the identity (samples that no transform touched)."""
    eye = torch.eye(matrices.shape[-1], device=matrices.device, dtype=matrices.dtype)
    return (matrices == eye).flatten(1).all(dim=1)


class AdaPipeline:
    """The ADA transforms of `pipeline` at overall probability p; call with a local batch in [-1, 1] (1 or 3
    channels for the colour transforms)."""

    def __init__(self, pipeline: str, noise: GlobalNoise) -> None:
        if pipeline not in PIPELINES:
            raise ValueError(f"ADA pipeline {pipeline!r}: expected one of {', '.join(PIPELINES)}")
        self.transforms = PIPELINES[pipeline]
        self.noise = noise
        taps = torch.tensor(SYM6, dtype=torch.float32)
        self.taps = taps / taps.sum()

    def __call__(self, images: torch.Tensor, p: float) -> torch.Tensor:
        n = self.noise.global_size(images.shape[0])
        channels = images.shape[1]
        if any(t in COLOR for t in self.transforms) and channels not in (1, 3):
            raise ValueError(f"ADA colour transforms need 1 or 3 channels, got images of shape {tuple(images.shape)}")
        g_inv = self.geometry(n, p, images.shape[2], images.shape[3], images.device)
        color = self.color(n, p, channels, images.device)
        x = images
        if g_inv is not None:
            local = self.noise.shard(g_inv)
            warped = warp(x, local, g_inv, self.taps.to(x.device))
            x = torch.where(_is_identity(local).view(-1, 1, 1, 1), x, warped)  # untouched samples stay exact
        if color is not None:
            local = self.noise.shard(color)
            x = torch.where(_is_identity(local).view(-1, 1, 1, 1), x, apply_color(x, local))
        return x

    # --- parameters (global batch) ---------------------------------------------------------------------------
    def _gate(self, value: torch.Tensor, neutral: float, probability: float) -> torch.Tensor:
        """`value` where a fresh U[0, 1) draw is below `probability`, else `neutral` (one gate per sample)."""
        gate = self.noise.uniform((value.shape[0],) + (1,) * (value.ndim - 1), value.device) < probability
        return torch.where(gate, value, torch.full_like(value, neutral))

    def _uniform(self, n: int, device: torch.device, *rest: int) -> torch.Tensor:
        return self.noise.uniform((n, *rest), device)

    def _lognormal(self, n: int, device: torch.device, log2_std: float) -> torch.Tensor:
        return torch.exp2(self.noise.normal((n,), device) * log2_std)

    def geometry(self, n: int, p: float, height: int, width: int, device: torch.device) -> torch.Tensor | None:
        """Output-to-input pixel maps [n, 3, 3] of the geometric transforms, or None when the pipeline has none."""
        if not any(t in BLIT + GEOM for t in self.transforms):
            return None
        on = self.transforms
        g = torch.eye(3, device=device).expand(n, 3, 3)
        if "xflip" in on:
            i = self._gate(torch.floor(self._uniform(n, device) * 2), 0.0, p)
            g = g @ scale2d(1 / (1 - 2 * i), 1.0)
        if "rotate90" in on:
            i = self._gate(torch.floor(self._uniform(n, device) * 4), 0.0, p)
            g = g @ rotate2d(math.pi / 2 * i)
        if "xint" in on:
            t = self._gate((self._uniform(n, device, 2) * 2 - 1) * XINT_MAX, 0.0, p)
            g = g @ translate2d(-torch.round(t[:, 0] * width), -torch.round(t[:, 1] * height))
        if "scale" in on:
            s = self._gate(self._lognormal(n, device, SCALE_STD), 1.0, p)
            g = g @ scale2d(1 / s, 1 / s)
        p_rot = 1 - math.sqrt(min(max(1 - p, 0.0), 1.0))  # P(pre or post rotation) = p
        if "rotate" in on:
            theta = self._gate((self._uniform(n, device) * 2 - 1) * math.pi * ROTATE_MAX, 0.0, p_rot)
            g = g @ rotate2d(theta)
        if "aniso" in on:
            s = self._gate(self._lognormal(n, device, ANISO_STD), 1.0, p)
            g = g @ scale2d(1 / s, s)
        if "rotate" in on:
            theta = self._gate((self._uniform(n, device) * 2 - 1) * math.pi * ROTATE_MAX, 0.0, p_rot)
            g = g @ rotate2d(theta)
        if "xfrac" in on:
            t = self._gate(self.noise.normal((n, 2), device) * XFRAC_STD, 0.0, p)
            g = g @ translate2d(-t[:, 0] * width, -t[:, 1] * height)
        return g

    def color(self, n: int, p: float, channels: int, device: torch.device) -> torch.Tensor | None:
        """Colour matrices [n, 4, 4] acting on (r, g, b, 1), or None when the pipeline has no colour transform."""
        if not any(t in COLOR for t in self.transforms):
            return None
        on = self.transforms
        eye = torch.eye(4, device=device)
        c = eye.expand(n, 4, 4)
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / np.sqrt(3)
        luma_outer = torch.outer(luma, luma)
        if "brightness" in on:
            b = self._gate(self.noise.normal((n,), device) * BRIGHTNESS_STD, 0.0, p)
            c = translate3d(b) @ c
        if "contrast" in on:
            s = self._gate(self._lognormal(n, device, CONTRAST_STD), 1.0, p)
            c = scale3d(s) @ c
        if "lumaflip" in on:
            i = self._gate(torch.floor(self._uniform(n, device) * 2), 0.0, p)
            c = (eye - 2 * luma_outer * i.view(-1, 1, 1)) @ c  # Householder reflection of the luma axis
        if "hue" in on and channels > 1:
            theta = self._gate((self._uniform(n, device) * 2 - 1) * math.pi * HUE_MAX, 0.0, p)
            c = rotate3d(luma, theta) @ c
        if "saturation" in on and channels > 1:
            s = self._gate(self._lognormal(n, device, SATURATION_STD), 1.0, p)
            # = luma_outer + (I - luma_outer) * s, written so that s = 1 gives the identity exactly
            c = (eye + (eye - luma_outer) * (s - 1).view(-1, 1, 1)) @ c
        return c
