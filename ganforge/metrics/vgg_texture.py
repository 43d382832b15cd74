"""The texture descriptor pytorch_GAN_zoo's inspirational generation compares pictures with (its `LossTexture`, made by
`save_feature_extractor.py vgg19` or `vgg16`, after the style loss of Huang & Belongie 2017, arXiv:1703.06868).

Images in [-1, 1] are resized bilinearly to `size`×`size` (the zoo's `--size`, 128), normalised with ImageNet's
mean and std carried to [-1, 1] (mean 2p − 1, std 2σ) and run through VGG's convolutional `features`; the first
ReLU output of blocks 3, 4 and 5 (relu3_1, relu4_1, relu5_1) each gives its per-channel mean over pixels and
variance (E[x²] − mean², the zoo's form), concatenated: [N, 2·(256 + 512 + 512)].

The network is our own module in torchvision's `features` layout, so torchvision's ImageNet files
(`vgg19-dcbb9e9d.pth`, `vgg16-397923af.pth`) load as they are; each is taken from an argument, an environment
variable (`$GANFORGE_VGG19_WEIGHTS`, `$GANFORGE_VGG16_WEIGHTS`) or the cache (downloaded once, checked against the
sha256 prefix in its name).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.download import WeightsFile, locate_weights
from ganforge.metrics.inception import default_cache_dir
from ganforge.safe_load import check_layout, load_state_dict_file

# torchvision's ImageNet files; torch hub's convention: the file name carries its sha256 prefix
VGG_FILES = {"vgg19": "vgg19-dcbb9e9d.pth", "vgg16": "vgg16-397923af.pth"}
VGG_BLOCKS = {"vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
              "vgg16": ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3)}
TEXTURE_BLOCKS = (3, 4, 5)  # the zoo's default layers: the first ReLU of each of these blocks
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 128  # the zoo's --size
MIN_SIZE = 32  # five VGG blocks halve it four times before relu5_1


class VGGWeightsError(ValueError):
    """VGG weights are missing, unreadable, or not in torchvision's layout."""


def tapped_outputs(layers: nn.Sequential, x: torch.Tensor, taps: Sequence[int]) -> list[torch.Tensor]:
    """The outputs of `layers` at the indices `taps` (a torchvision `features` stack read at chosen ReLUs); the
    layers after the last tap are not run."""
    outputs = []
    for index, layer in enumerate(layers[:max(taps) + 1]):
        x = layer(x)
        if index in taps:
            outputs.append(x)
    return outputs


def vgg_layers(arch: str) -> list[nn.Module]:
    """torchvision's `vgg19().features` or `vgg16().features`, layer by layer (the same indices, so its state dict
    loads): each block's 3×3 convolutions with their ReLUs, then a 2×2 max pool."""
    if arch not in VGG_BLOCKS:
        raise ValueError(f"VGG: arch must be one of {', '.join(VGG_BLOCKS)}, got {arch!r}")
    layers: list[nn.Module] = []
    channels = 3
    for widths in VGG_BLOCKS[arch]:
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
        layers.append(nn.MaxPool2d(2, 2))
    return layers


class VGGFeatures(nn.Module):
    """torchvision's VGG-19 or VGG-16 `features` up to the last ReLU read; returns the first ReLU output of each
    block in `blocks` (1-based)."""

    def __init__(self, arch: str = "vgg19", blocks: tuple[int, ...] = TEXTURE_BLOCKS) -> None:
        super().__init__()
        layers = vgg_layers(arch)
        if not blocks or any(b not in range(1, 6) for b in blocks) or list(blocks) != sorted(set(blocks)):
            raise ValueError(f"VGG blocks must be increasing numbers from 1 to 5, got {blocks}")
        self.arch = arch
        # a block starts after the previous blocks' convolution/ReLU pairs and pools; its first ReLU is its 2nd layer
        starts = [sum(2 * len(widths) + 1 for widths in VGG_BLOCKS[arch][:block - 1]) for block in range(1, 6)]
        self.taps = [starts[block - 1] + 1 for block in blocks]
        self.features = nn.Sequential(*layers[:self.taps[-1] + 1])  # nothing after the last tap is read

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return tapped_outputs(self.features, x, self.taps)


def texture_statistics(taps: list[torch.Tensor]) -> torch.Tensor:
    """Per tap, the per-channel mean over pixels and E[x²] − mean²; concatenated [mean₁, var₁, mean₂, var₂, …]."""
    parts = []
    for tap in taps:
        flat = tap.flatten(2)
        mean = flat.mean(dim=2)
        parts += [mean, flat.square().mean(dim=2) - mean * mean]
    return torch.cat(parts, dim=1)


class VGGTexture(nn.Module):
    """[-1, 1] images → the zoo's texture descriptor (module docstring); grey images are read as RGB."""

    def __init__(self, features: VGGFeatures, size: int = DEFAULT_SIZE) -> None:
        super().__init__()
        if size < MIN_SIZE:
            raise ValueError(f"VGG texture: size {size} is too small for five VGG blocks (at least {MIN_SIZE})")
        self.features = features
        self.size = size
        self.register_buffer("mean", torch.tensor([2 * p - 1 for p in IMAGENET_MEAN]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([2 * s for s in IMAGENET_STD]).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"VGG texture: expected [N, 1 or 3, H, W] images, got {tuple(images.shape)}")
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return texture_statistics(self.features((x - self.mean) / self.std))


def resolve_vgg_weights(arch: str, weights: str | Path | None = None, cache_dir: str | Path | None = None, *,
                        option: str = "--vgg-weights (Python: vgg_weights=)") -> Path:
    """The VGG file: the argument, else $GANFORGE_VGG19_WEIGHTS (or _VGG16_), else the cache (downloaded there
    once); `option` is how the caller's user passes a path ("": through the environment variable only)."""
    name = VGG_FILES[arch]
    spec = WeightsFile(name, f"https://download.pytorch.org/models/{name}", f"GANFORGE_{arch.upper()}_WEIGHTS",
                       option, f"The {arch.upper()} ImageNet weights", name.split("-")[1].removesuffix(".pth"))
    return locate_weights(spec, weights, Path(cache_dir or default_cache_dir() / "weights"), VGGWeightsError)


def load_vgg_weights(module: nn.Module, arch: str, weights: str | Path | None = None,
                     cache_dir: str | Path | None = None, *, option: str = "--vgg-weights (Python: vgg_weights=)"
                     ) -> nn.Module:
    """`module`, whose state dict is part of torchvision's VGG-19 or VGG-16 layout (its `features`, and for the
    fc2 extractor its first classifier layers), with the values of that ImageNet file (see `resolve_vgg_weights`);
    a file of another layout is refused naming what differs."""
    path = resolve_vgg_weights(arch, weights, cache_dir, option=option)
    state = load_state_dict_file(path, what=f"{arch.upper()} weights", error=VGGWeightsError)
    expected = module.state_dict()
    check_layout({k: v for k, v in state.items() if k in expected}, expected, source=f"{arch.upper()} weights {path}",
                 layout=f"torchvision's {arch.upper()} layout", error=VGGWeightsError)
    module.load_state_dict({k: state[k] for k in expected})
    return module


def load_vgg_texture(arch: str = "vgg19", weights: str | Path | None = None, *, size: int = DEFAULT_SIZE,
                     device: torch.device | str | None = None, cache_dir: str | Path | None = None) -> VGGTexture:
    """The texture descriptor with torchvision's ImageNet VGG-19 or VGG-16 (entries past relu5_1 and
    `classifier.*` are not used), in eval mode and without weight gradients."""
    features = load_vgg_weights(VGGFeatures(arch), arch, weights, cache_dir)
    return VGGTexture(features, size).eval().requires_grad_(False).to(device or "cpu")
