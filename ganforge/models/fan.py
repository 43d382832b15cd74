"""The face-mask network of StarGAN v2 (official `core/wing.py`): a FAN landmark network and its mask recipe.

With w_hpf > 0 (the CelebA-HQ model) the official code turns 98 facial-landmark heatmaps into two masks that tell
the generator which source regions (eyes, nose, mouth) to carry over through its high-pass path. The network is
the AdaptiveWingLoss FAN: a CoordConv stem, three bottleneck blocks, one depth-4 hourglass with a CoordConv input,
and a 1×1 head giving 98 landmark heatmaps plus one boundary map at 64×64 (6,333,603 parameters, BatchNorm in
inference mode, frozen). Module names follow the official state dict, so its `wing.ckpt` loads by name.

`face_masks(fan, x)` is the official `get_heatmap`: resize to 256, map [-1, 1] → [0, 1], run the FAN, drop the
boundary map, upsample ×4 (bilinear, corners aligned), then the hand-tuned recipe of `preprocess`: heatmaps below
0.1 are cut, each is min-max normalised, face parts are shifted vertically (cyclically, as `torch.roll`) and
raised to part-specific powers, the outer chin, eyebrow and lip edge maps are dropped, and the maps are summed
into the coarse mask (every part) and the fine mask (without chin, lips and eyebrows), each clamped to [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.download import LayoutCheckedFile
from ganforge.nn.resample import upsample_nearest_2x
from ganforge.safe_load import check_layout, load_weights_only

NUM_LANDMARKS = 98
HEATMAP_INPUT_SIZE = 256  # get_heatmap resizes every input to this size
MASK_THRESHOLD = 0.1  # heatmap values below it are cut before normalisation
NORMALISE_EPS = 1e-6

# Landmark channel ranges [start, end) of the 98-point (WFLW) layout, as the official index map.
CHIN = (8, 25)  # the inner chin; 0..7 and 25..32 (the outer face line) are dropped
EYEBROWS = (33, 51)
EYEBROW_EDGES = (33, 46)
NOSE = (51, 55)
NOSTRILS = (55, 60)
EYES = (60, 76)
LIP_EDGES = (76, 82)
LIP_UPPER = (77, 82)
LIP_LOWER = (83, 88)
LIP_INNER = (88, 96)
# (channels, upward shift in pixels at 256 px, power), applied in this order
PART_SHAPING = ((CHIN, 0, 3), (EYEBROWS, -7, 2), (NOSTRILS, 8, 4), (LIP_UPPER, -8, 4), (LIP_LOWER, 8, 4),
                (LIP_INNER, -2, 3))


class FanWeightsError(ValueError):
    """Face-mask network weights that cannot be found or used; the message names the file and what is wrong."""


def coordinate_channels(size: int) -> Tensor:
    """(1, 3, size, size): row and column coordinates in [-1, 1] and their radius scaled to max 1 (CoordConv)."""
    line = torch.arange(size, dtype=torch.float32) / (size - 1) * 2 - 1
    rows, cols = line[:, None].expand(size, size), line[None, :].expand(size, size)
    radius = torch.sqrt(rows.square() + cols.square())
    return torch.stack([rows, cols, radius / radius.max()])[None]


class CoordConv(nn.Module):
    """A convolution that also sees the three coordinate channels of a fixed input size."""

    def __init__(self, size: int, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0) -> None:
        super().__init__()
        self.register_buffer("coords", coordinate_channels(size), persistent=False)
        self.conv = nn.Conv2d(in_channels + 3, out_channels, kernel_size, stride, padding)

    def forward(self, x: Tensor) -> Tensor:
        # x.shape[0], not len(x): an exported graph keeps its batch size free (len is a Python int)
        return self.conv(torch.cat([x, self.coords.expand(x.shape[0], -1, -1, -1)], dim=1))


class ConvBlock(nn.Module):
    """Pre-activation bottleneck: three BN-ReLU-conv3×3 stages of widths out/2, out/4, out/4, concatenated, plus the
    input (through BN-ReLU-conv1×1 when the widths differ)."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        half, quarter = out_planes // 2, out_planes // 4
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, half, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, quarter, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = nn.Conv2d(quarter, quarter, 3, 1, 1, bias=False)
        self.downsample = None
        if in_planes != out_planes:
            self.downsample = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(),
                                            nn.Conv2d(in_planes, out_planes, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat([out1, out2, out3], dim=1) + residual


class HourGlass(nn.Module):
    """A CoordConv 1×1 input, then a recursive hourglass: at each level a full-size branch (b1) plus a branch that
    average-pools, recurses (b2, then the next level or b2_plus at the bottom, b3) and upsamples ×2 (nearest)."""

    def __init__(self, depth: int = 4, features: int = 256, size: int = 64) -> None:
        super().__init__()
        self.depth = depth
        self.coordconv = CoordConv(size, features, features, 1)
        for level in range(depth, 0, -1):
            self.add_module(f"b1_{level}", ConvBlock(features, features))
            self.add_module(f"b2_{level}", ConvBlock(features, features))
            if level == 1:
                self.add_module("b2_plus_1", ConvBlock(features, features))
            self.add_module(f"b3_{level}", ConvBlock(features, features))

    def _level(self, level: int, x: Tensor) -> Tensor:
        low = self.get_submodule(f"b2_{level}")(F.avg_pool2d(x, 2, stride=2))
        low = self._level(level - 1, low) if level > 1 else self.b2_plus_1(low)
        low = self.get_submodule(f"b3_{level}")(low)
        return self.get_submodule(f"b1_{level}")(x) + upsample_nearest_2x(low)

    def forward(self, x: Tensor) -> Tensor:
        return self._level(self.depth, self.coordconv(x))


class FAN(nn.Module):
    """Images in [0, 1] at 256×256 → 98 landmark heatmaps + 1 boundary map at 64×64 (raw, no activation)."""

    def __init__(self, num_landmarks: int = NUM_LANDMARKS) -> None:
        super().__init__()
        self.conv1 = CoordConv(HEATMAP_INPUT_SIZE, 3, 64, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, 256)
        self.m0 = HourGlass(depth=4, features=256, size=HEATMAP_INPUT_SIZE // 4)
        self.top_m_0 = ConvBlock(256, 256)
        self.conv_last0 = nn.Conv2d(256, 256, 1)
        self.bn_end0 = nn.BatchNorm2d(256)
        self.l0 = nn.Conv2d(256, num_landmarks + 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.conv4(self.conv3(F.avg_pool2d(self.conv2(x), 2, stride=2)))
        x = self.top_m_0(self.m0(x))
        return self.l0(F.relu(self.bn_end0(self.conv_last0(x))))


def _shift_up(x: Tensor, pixels: int) -> Tensor:
    """Rows move up by `pixels` (down when negative), wrapping around, as the official `shift`."""
    return torch.roll(x, -pixels, dims=2)


def _span(part: tuple[int, int]) -> slice:
    return slice(*part)


def masks_from_heatmaps(heatmaps: Tensor) -> tuple[Tensor, Tensor]:
    """98 landmark heatmaps (N, 98, H, W) → (coarse, fine) masks (N, 1, H, W) in [0, 1] (official `preprocess`)."""
    x = torch.where(heatmaps < MASK_THRESHOLD, torch.zeros_like(heatmaps), heatmaps)
    flat = x.flatten(2)
    low, high = flat.amin(dim=2, keepdim=True), flat.amax(dim=2, keepdim=True)
    x = ((flat - low) / (high - low + NORMALISE_EPS)).view_as(x)
    scale = x.shape[2] // HEATMAP_INPUT_SIZE
    for part, shift, power in PART_SHAPING:
        x[:, _span(part)] = _shift_up(x[:, _span(part)], shift * scale) ** power
    dropped = [*range(CHIN[0]), *range(CHIN[1], EYEBROWS[0]), EYEBROW_EDGES[0], EYEBROW_EDGES[1], LIP_EDGES[0],
               LIP_EDGES[1]]
    x[:, dropped] = 0
    x[:, NOSE[0] + 1:NOSE[1]] = _shift_up(x[:, NOSE[0] + 1:NOSE[1]], 4 * scale)
    eyes = x[:, _span(EYES)]
    x[:, _span(EYES)] = _shift_up(eyes, -8) ** 3 + _shift_up(eyes, -24)  # unscaled, as officially
    fine = x.clone()
    fine[:, _span(CHIN)] = 0
    fine[:, LIP_EDGES[0]:LIP_INNER[1]] = 0
    fine[:, _span(EYEBROWS)] = 0
    coarse, fine = x.sum(dim=1, keepdim=True), fine.sum(dim=1, keepdim=True)
    invalid = torch.isnan(coarse)
    return coarse.masked_fill(invalid, 0).clamp(0, 1), fine.masked_fill(invalid, 0).clamp(0, 1)


@torch.no_grad()
def face_masks(fan: FAN, x: Tensor) -> tuple[Tensor, Tensor]:
    """Images in [-1, 1] of any size → (coarse, fine) masks at 256×256, as the official `get_heatmap`."""
    x = F.interpolate(x, size=HEATMAP_INPUT_SIZE, mode="bilinear", align_corners=False)
    heatmaps = fan(x * 0.5 + 0.5)[:, :-1]
    heatmaps = F.interpolate(heatmaps, scale_factor=x.shape[2] // heatmaps.shape[2], mode="bilinear",
                             align_corners=True)
    return masks_from_heatmaps(heatmaps)


def landmarks_from_heatmaps(heatmaps: Tensor) -> Tensor:
    """Heatmaps (N, L, h, w) → landmark positions (N, L, 2) as (x, y) in heatmap pixels, as the official
    `get_preds_fromhm`: the centre of each map's (first) largest cell, moved a quarter pixel along each axis towards
    the larger of its two neighbours (not on the border rows and columns)."""
    n, count, h, w = heatmaps.shape
    flat = heatmaps.flatten(2)
    index = flat.argmax(dim=2)
    row, col = index // w, index % w
    inner = (col > 0) & (col < w - 1) & (row > 0) & (row < h - 1)

    def at(dy: int, dx: int) -> Tensor:
        neighbour = ((row + dy).clamp(0, h - 1) * w + (col + dx).clamp(0, w - 1)).unsqueeze(2)
        return flat.gather(2, neighbour).squeeze(2)

    dx = torch.where(inner, torch.sign(at(0, 1) - at(0, -1)), 0.0)
    dy = torch.where(inner, torch.sign(at(1, 0) - at(-1, 0)), 0.0)
    return torch.stack([col + 0.5 + 0.25 * dx, row + 0.5 + 0.25 * dy], dim=2)


@torch.no_grad()
def face_landmarks(fan: FAN, x: Tensor) -> Tensor:
    """Images in [-1, 1] (N, 3, S, S) → the 98 (WFLW) landmarks (N, 98, 2) as (x, y) in pixels of x, as the
    official `get_landmark` (heatmaps of the image resized to 256, scaled by S / 64)."""
    resized = F.interpolate(x, size=HEATMAP_INPUT_SIZE, mode="bilinear", align_corners=False)
    heatmaps = fan(resized * 0.5 + 0.5)[:, :-1]
    return landmarks_from_heatmaps(heatmaps.float()) * (x.shape[3] / heatmaps.shape[3])


def read_fan_state(path: str | Path) -> dict[str, Tensor]:
    """The FAN tensors of an official `wing.ckpt` ({'state_dict': ...}), read weights-only and checked against
    the network's layout; keys the network does not have are ignored, as the official loader does."""
    checkpoint = load_weights_only(path, what="StarGAN v2 face-mask (FAN, wing.ckpt) weights", error=FanWeightsError)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise FanWeightsError(f"{path}: expected the wing.ckpt layout {{'state_dict': {{name: tensor}}}}, got "
                              f"{sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__}")
    with torch.device("meta"):
        expected = FAN().state_dict()
    check_layout(state, expected, source=path, layout="the FAN layout of core/wing.py", error=FanWeightsError,
                 allow_unexpected=True)  # the official loader ignores keys the network does not have
    return {k: state[k] for k in expected if k in state}


def load_fan(path: str | Path, device: torch.device | str = "cpu") -> FAN:
    """The frozen FAN in inference mode (BatchNorm running statistics) from a wing.ckpt file."""
    fan = FAN()
    state = read_fan_state(path)
    fan.load_state_dict({**fan.state_dict(), **state})
    return fan.to(device).eval().requires_grad_(False)


WING_WEIGHTS = LayoutCheckedFile(
    name="wing.ckpt", url="https://www.dropbox.com/s/tjxpypwpt38926e/wing.ckpt?dl=1", env="GANFORGE_WING_WEIGHTS",
    option="--wing-weights (config: model.wing_weights)",
    description="The StarGAN v2 face-mask network (FAN) weights", sha256="", read=read_fan_state,
    layout="the FAN layout of core/wing.py, 6,333,603 parameters")
