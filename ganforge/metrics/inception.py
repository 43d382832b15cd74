"""FID Inception-v3 (TF "2015-12-05" graph) in plain torch, loading the standard weights file strictly.

Module names, order and shapes follow torch-fidelity's `FeatureExtractorInceptionV3` (identical to pytorch-fid's
FID Inception), so `pt_inception-2015-12-05-6726825d.pth` loads without renaming, with or without the
BatchNorm `num_batches_tracked` entries. Preprocessing depends on the FID mode. "legacy-tf" is torch-fidelity's
(the TTUR / TF-FID numbers papers report): uint8 RGB -> float32 -> resize to 299x299 with TF1 `resize_bilinear`
semantics (align_corners=False, no half-pixel offset, no antialiasing). "clean" is clean-fid's mode "clean": each
channel of each uint8 image becomes a float32 PIL 'F' image, is resized to 299x299 by PIL's bicubic filter
(anti-aliased when downsampling) and clipped to [0, 255], not quantised. Both then feed (x - 128) / 128.
"pytorch-fid" is mseitzer/pytorch-fid's InceptionV3 input: uint8 / 255 (torchvision's ToTensor), torch's bilinear
resize to 299x299 (align_corners=False, no antialiasing), then 2x - 1.
The TF-port details: BatchNorm eps 1e-3, average pools in the A/C/E_1 blocks exclude padding
from the count, and Mixed_7c pools with max instead of average.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ganforge.config import FidMode
from ganforge.download import WeightsFile, locate_weights
from ganforge.errors import ConfigError
from ganforge.metrics._images import ImageSource, iter_image_batches
from ganforge.metrics.float32 import reference_float32
from ganforge.safe_load import check_layout, load_state_dict_file

WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_SIZE = 95_628_359
WEIGHTS_ENV = "GANFORGE_INCEPTION_WEIGHTS"
FID_MODES: tuple[str, ...] = typing.get_args(FidMode)
DEFAULT_FID_MODE = "legacy-tf"


class InceptionWeightsError(ValueError):
    """The Inception weights are missing, cannot be fetched, or are not the FID weights' layout."""


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3, inference) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_no_pad(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool_no_pad(x)),
        ], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            self.branch7x7dbl_5(self.branch7x7dbl_4(dbl)),
            self.branch_pool(_avg_pool_no_pad(x)),
        ], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))),
            F.max_pool2d(x, 3, stride=2),
        ], 1)


class InceptionE(nn.Module):
    """Mixed_7b (average pool without padding count) and Mixed_7c (max pool: the TF graph's quirk)."""

    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool_no_pad(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
            self.branch_pool(pooled),
        ], 1)


def resize_bilinear_tf1(x: torch.Tensor, size: int = 299) -> torch.Tensor:
    """TF1 `resize_bilinear` (align_corners=False, no half-pixel centres, no antialias) of float N x C x H x W."""

    def axis(length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = np.float32(length / size)
        src = torch.arange(size, dtype=torch.float32, device=x.device) * torch.tensor(scale, device=x.device)
        lo = src.long()
        hi = (lo + 1).clamp(max=length - 1)
        return lo, hi, src - lo

    y_lo, y_hi, dy = axis(x.shape[2])
    x_lo, x_hi, dx = axis(x.shape[3])
    dx = dx.view(1, 1, 1, -1)
    top_left, top_right = x[:, :, y_lo][..., x_lo], x[:, :, y_lo][..., x_hi]
    bottom_left, bottom_right = x[:, :, y_hi][..., x_lo], x[:, :, y_hi][..., x_hi]
    top = top_left + (top_right - top_left) * dx
    bottom = bottom_left + (bottom_right - bottom_left) * dx
    return top + (bottom - top) * dy.view(1, 1, -1, 1)


def check_fid_mode(mode: str) -> str:
    """`mode` if it is an FID mode, else a one-line ConfigError listing them."""
    if mode not in FID_MODES:
        raise ConfigError(f"fid_mode: {mode!r} is not one of {', '.join(FID_MODES)}")
    return mode


def resize_pil_bicubic(images: torch.Tensor, size: int = 299) -> torch.Tensor:
    """clean-fid's "clean" resize of uint8 N x C x H x W images: per channel a float32 PIL 'F' image, PIL bicubic
    (anti-aliased) to size x size, clipped to [0, 255] and kept float32 (no quantisation); on the input's device."""
    pixels = images.cpu().numpy()
    out = np.empty((*pixels.shape[:2], size, size), dtype=np.float32)
    for index, image in enumerate(pixels):
        for channel, plane in enumerate(image):
            resized = Image.fromarray(plane.astype(np.float32)).resize((size, size), Image.Resampling.BICUBIC)
            out[index, channel] = np.asarray(resized)
    return torch.from_numpy(out.clip(0, 255)).to(images.device)


class InceptionV3FID(nn.Module):
    """The FID Inception network; `forward(uint8 images)` -> pool features [N, 2048], logits_unbiased [N, 1008].
    `fid_mode` chooses how images are resized to 299x299 (see the module docstring)."""

    def __init__(self, fid_mode: str = DEFAULT_FID_MODE) -> None:
        super().__init__()
        self.fid_mode = check_fid_mode(fid_mode)
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """All torch-fidelity outputs: '64', '192', '768', '2048', 'logits_unbiased', 'logits' (float32)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Inception: expected uint8 N x 3 x H x W images, got {images.dtype} "
                             f"{tuple(images.shape)}")
        device = self.fc.weight.device  # a PIL resize on the CPU first, the others on the network's device
        if self.fid_mode == "pytorch-fid":
            unit = images.to(device).float() / 255.0
            x = 2.0 * F.interpolate(unit, size=(299, 299), mode="bilinear", align_corners=False) - 1.0
        elif self.fid_mode == "clean":
            x = (resize_pil_bicubic(images).to(device) - 128.0) / 128.0
        else:
            x = (resize_bilinear_tf1(images.to(device).float()) - 128.0) / 128.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        out = {"64": x.mean(dim=(2, 3))}
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        out["192"] = x.mean(dim=(2, 3))
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
                      self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e):
            x = block(x)
        out["768"] = x.mean(dim=(2, 3))
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        pool = x.mean(dim=(2, 3))
        out["2048"] = pool
        out["logits_unbiased"] = pool @ self.fc.weight.T
        out["logits"] = out["logits_unbiased"] + self.fc.bias
        return out

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.features(images)
        return out["2048"], out["logits_unbiased"]


def default_cache_dir() -> Path:
    """`$GANFORGE_CACHE` or ~/.cache/ganforge (weights go in its `weights/` folder, statistics in `stats/`)."""
    return Path(os.environ.get("GANFORGE_CACHE") or Path.home() / ".cache" / "ganforge")


def resolve_weights_path(weights: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """Where the weights are: the argument, else $GANFORGE_INCEPTION_WEIGHTS, else the cache file (downloaded once)."""
    spec = WeightsFile(WEIGHTS_FILE, WEIGHTS_URL, WEIGHTS_ENV, "--inception-weights (Python: inception_weights=)",
                       "The FID Inception weights", WEIGHTS_SHA256, WEIGHTS_SIZE)
    return locate_weights(spec, weights, Path(cache_dir or default_cache_dir() / "weights"), InceptionWeightsError)


def load_inception(weights: str | Path | None = None, device: torch.device | str | None = None,
                   cache_dir: str | Path | None = None, fid_mode: str = DEFAULT_FID_MODE) -> InceptionV3FID:
    """The FID Inception network in eval mode, weights loaded strictly and without running pickled code."""
    model = InceptionV3FID(fid_mode)
    path = resolve_weights_path(weights, cache_dir)
    state = load_state_dict_file(path, what="FID Inception weights", error=InceptionWeightsError)
    expected = model.state_dict()
    check_layout(state, expected, source=f"Inception weights {path}", layout="the FID Inception layout",
                 error=InceptionWeightsError)
    full = {**{k: v for k, v in expected.items() if k.endswith("num_batches_tracked")}, **state}
    model.load_state_dict(full, strict=True)
    return model.eval().requires_grad_(False).to(device or "cpu")


def iter_features(model: InceptionV3FID, images: ImageSource, *, batch_size: int = 64,
                  n: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(pool features [B, 2048], logits_unbiased [B, 1008]) (float32, CPU) of a uint8 image set, a batch at a time
    (the first `n` images): what streams into running statistics needs no whole feature array."""
    seen = 0
    batches: Iterable[torch.Tensor] = iter_image_batches(images, batch_size=batch_size, name="Inception images")
    for batch in batches:
        if n is not None:
            batch = batch[: n - seen]
        if batch.shape[0] == 0:
            break
        for start in range(0, batch.shape[0], batch_size):
            with torch.no_grad(), reference_float32():  # not held across the yield: the caller's settings between
                pool, logit = model(batch[start : start + batch_size])
            yield pool.cpu(), logit.cpu()
        seen += batch.shape[0]


def extract_features(model: InceptionV3FID, images: ImageSource, *, batch_size: int = 64,
                     n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool features [N, 2048] and logits_unbiased [N, 1008] (float32, CPU) of a uint8 image set, batch by batch."""
    pools, logits = [], []
    with torch.no_grad(), reference_float32():  # the image source too (a generator's batches) runs under them
        for pool, logit in iter_features(model, images, batch_size=batch_size, n=n):
            pools.append(pool)
            logits.append(logit)
    if not pools:
        raise ValueError("Inception: the image set is empty")
    return torch.cat(pools), torch.cat(logits)
