"""LPIPS v0.1 (Zhang et al., CVPR 2018): with the AlexNet backbone, as StarGAN v2 measures diversity; with VGG-16,
as the perceptual path length measures a generator's smoothness (StyleGAN's "vgg16_zhang_perceptual").

d(x0, x1) = Σ_l mean_hw( w_l · (n(f_l(x0)) − n(f_l(x1)))² ), where f_l are five ReLU outputs of the backbone's
`features` (AlexNet: 64, 192, 384, 256, 256 channels; VGG-16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 with 64,
128, 256, 512, 512) on inputs in [-1, 1] shifted and scaled by the LPIPS constants, n() divides each feature vector
by its L2 norm over channels (+1e-10), and w_l are the v0.1 1×1 "lin" heads.

Weights: the heads are the data files `lpips/weights/v0.1/alex.pth` and `vgg.pth` of the `lpips` wheel (BSD), read
through the installed distribution's file list without importing `lpips` (which needs torchvision). The backbones
are our own modules in torchvision's `features` layout, so torchvision's ImageNet files (`alexnet-owt-7be5be79.pth`,
`vgg16-397923af.pth`) load as they are; each is taken from an argument, its environment variable, or the cache
(downloaded once, checked).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ganforge.download import WeightsFile, locate_weights
from ganforge.metrics.inception import default_cache_dir
from ganforge.metrics.vgg_texture import load_vgg_weights, tapped_outputs, vgg_layers
from ganforge.safe_load import check_layout, load_state_dict_file, load_weights_only

ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
ALEXNET_SHA256_PREFIX = "7be5be79"  # torch hub's convention: the file name carries its sha256 prefix
ALEXNET_ENV = "GANFORGE_ALEXNET_WEIGHTS"
# each backbone's heads in the lpips wheel, and the channels of the five feature maps they weigh
HEADS = {"alex": ("lpips/weights/v0.1/alex.pth", (64, 192, 384, 256, 256)),
         "vgg": ("lpips/weights/v0.1/vgg.pth", (64, 128, 256, 512, 512))}
LPIPS_VGG_SMALLEST = 16  # px: VGG-16's relu5_3 follows four 2×2 max poolings
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10


class LPIPSWeightsError(ValueError):
    """LPIPS heads or AlexNet weights are missing, unreadable, or not in the expected layout."""


class AlexNetFeatures(nn.Module):
    """torchvision's AlexNet `features` (same indices, so its state dict loads); returns the five ReLU outputs."""

    TAPS = (1, 4, 7, 9, 11)  # indices of the ReLUs whose outputs LPIPS compares

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return tapped_outputs(self.features, x, self.TAPS)


class VGG16Features(nn.Module):
    """torchvision's VGG-16 `features` (same indices, so its state dict loads); returns the outputs of relu1_2,
    relu2_2, relu3_3, relu4_3 and relu5_3, the layers LPIPS compares (the lpips package's `vgg16` slices)."""

    TAPS = (3, 8, 15, 22, 29)

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*vgg_layers("vgg16")[:max(self.TAPS) + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return tapped_outputs(self.features, x, self.TAPS)


def _unit_channels(x: torch.Tensor) -> torch.Tensor:
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS)


class LPIPS(nn.Module):
    """LPIPS distance between two [-1, 1] image batches → one value per pair, shape [N].

    `backbone` maps a scaled image batch to a list of feature maps (AlexNet's five ReLUs for the real metric);
    `heads` are the per-layer channel weights of shape [1, C, 1, 1].
    """

    def __init__(self, backbone: nn.Module, heads: Sequence[torch.Tensor]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleList()
        for weight in heads:
            head = nn.Conv2d(weight.shape[1], 1, 1, bias=False)
            head.weight.data.copy_(weight)
            self.heads.append(head)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        if x0.shape != x1.shape or x0.ndim != 4 or x0.shape[1] != 3:
            raise ValueError(f"LPIPS: expected two N x 3 x H x W batches of one shape, got {tuple(x0.shape)} and "
                             f"{tuple(x1.shape)}")
        f0 = self.backbone((x0 - self.shift) / self.scale)
        f1 = self.backbone((x1 - self.shift) / self.scale)
        if len(f0) != len(self.heads):
            raise ValueError(f"LPIPS: the backbone gave {len(f0)} feature maps for {len(self.heads)} heads")
        total = x0.new_zeros(x0.shape[0])
        for head, a, b in zip(self.heads, f0, f1, strict=True):
            total = total + head((_unit_channels(a) - _unit_channels(b)) ** 2).mean(dim=(1, 2, 3))
        return total


def load_lpips_heads(net: str = "alex") -> list[torch.Tensor]:
    """The five v0.1 heads [1, C, 1, 1] of backbone `net` ("alex", "vgg") from the installed `lpips` distribution's
    data files."""
    heads_file, channels = HEADS[net]
    try:
        files = importlib.metadata.files("lpips") or []
    except importlib.metadata.PackageNotFoundError:
        raise LPIPSWeightsError("LPIPS needs the linear heads shipped in the `lpips` package, which is not "
                                "installed: run `pip install --no-deps lpips` (only its data files are used; "
                                "it is never imported)") from None
    matches = [f for f in files if str(f).replace("\\", "/") == heads_file]
    path = Path(matches[0].locate()) if matches else None
    if path is None or not path.is_file():
        raise LPIPSWeightsError(f"the installed `lpips` package has no {heads_file}; reinstall it with "
                                "`pip install --no-deps --force-reinstall lpips`")
    state = load_weights_only(path, what="LPIPS heads", error=LPIPSWeightsError)
    heads = [state.get(f"lin{k}.model.1.weight") for k in range(len(channels))]
    for k, (head, width) in enumerate(zip(heads, channels, strict=True)):
        if head is None or tuple(head.shape) != (1, width, 1, 1):
            got = None if head is None else tuple(head.shape)
            raise LPIPSWeightsError(f"{path}: lin{k}.model.1.weight should be [1, {width}, 1, 1], got {got} "
                                    f"(keys {sorted(state)})")
    return [head.float() for head in heads]


def resolve_alexnet_weights(weights: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """The AlexNet file: the argument, else $GANFORGE_ALEXNET_WEIGHTS, else the cache (downloaded there once)."""
    spec = WeightsFile(ALEXNET_FILE, ALEXNET_URL, ALEXNET_ENV, "--alexnet-weights (Python: alexnet_weights=)",
                       "The AlexNet weights for LPIPS", ALEXNET_SHA256_PREFIX)
    return locate_weights(spec, weights, Path(cache_dir or default_cache_dir() / "weights"), LPIPSWeightsError)


def load_alexnet(weights: str | Path | None = None, cache_dir: str | Path | None = None) -> AlexNetFeatures:
    """AlexNet features with torchvision's ImageNet weights (its `classifier.*` entries are ignored)."""
    path = resolve_alexnet_weights(weights, cache_dir)
    state = load_state_dict_file(path, what="AlexNet weights", error=LPIPSWeightsError)
    model = AlexNetFeatures()
    expected = model.state_dict()
    features = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    check_layout(features, expected, source=f"AlexNet weights {path}", layout="torchvision's AlexNet layout",
                 error=LPIPSWeightsError)
    model.load_state_dict(features)
    return model


def load_lpips(alexnet_weights: str | Path | None = None, device: torch.device | str | None = None,
               cache_dir: str | Path | None = None) -> LPIPS:
    """The LPIPS v0.1 AlexNet metric in eval mode, without gradients."""
    model = LPIPS(load_alexnet(alexnet_weights, cache_dir), load_lpips_heads())
    return model.eval().requires_grad_(False).to(device or "cpu")


def load_lpips_vgg(vgg16_weights: str | Path | None = None, device: torch.device | str | None = None) -> LPIPS:
    """The LPIPS v0.1 VGG-16 metric in eval mode, without gradients: torchvision's ImageNet VGG-16 (`vgg16_weights`,
    else $GANFORGE_VGG16_WEIGHTS, else the cache, where precision/recall reads it too) and the wheel's heads."""
    backbone = load_vgg_weights(VGG16Features(), "vgg16", vgg16_weights, option="")
    return LPIPS(backbone, load_lpips_heads("vgg")).eval().requires_grad_(False).to(device or "cpu")


def pairwise_diversity(lpips: LPIPS, outputs: Sequence[torch.Tensor]) -> float:
    """Mean LPIPS over all pairs of K output batches (45 pairs for 10), each pair averaged over the batch —
    StarGAN v2's diversity score of one source batch."""
    if len(outputs) < 2:
        raise ValueError(f"diversity needs at least 2 outputs per source, got {len(outputs)}")
    values = [lpips(outputs[i], outputs[j]).mean() for i in range(len(outputs)) for j in range(i + 1, len(outputs))]
    return float(torch.stack(values).mean())
