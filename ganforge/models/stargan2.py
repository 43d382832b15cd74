"""StarGAN v2 networks (Choi et al., CVPR 2020) — networks only: generator, mapping network, style encoder and
multi-task discriminator, equal to the official clovaai/stargan-v2 ones layer for layer.

Module and parameter names match the official state-dict keys (``from_rgb``, ``encode.N``, ``decode.N``,
``to_rgb``, ``shared``, ``unshared.N``, ``main``) so official checkpoints load by name (see interop.stargan2).

Widths: the image-side networks start at ``base_dim`` channels (official: 2^14 / img_size, i.e. 64 at 256 px) and
double at every downsampling up to ``max_conv_dim``. ``base_dim`` can be set smaller for tiny test runs, where the
official formula gives huge widths (512 at 32 px); ``mapping_dim`` (hard-coded 512 officially) likewise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.nn.stargan_layers import LRELU_SLOPE, AdainResBlk, HighPass, ResBlk

HPF_SIZES = (32, 64, 128)  # feature sizes where masked high-pass source features are injected (w_hpf > 0)
COARSE_MASK_SIZE = 32  # this size uses masks[0] (coarse); the others use masks[1] (fine)
# what the encoder makes of a source: bottleneck features and, with masks, the features the high-pass path adds
Encoding = tuple[Tensor, dict[int, Tensor]]


def official_base_dim(img_size: int) -> int:
    """The official first width 2^14 / img_size: it keeps per-level FLOPs roughly constant across resolutions."""
    return 2**14 // img_size


@dataclass(frozen=True)
class StarGAN2Arch:
    """Everything that fixes the shapes of the four StarGAN v2 networks."""

    img_size: int = 256
    num_domains: int = 2
    latent_dim: int = 16
    style_dim: int = 64
    max_conv_dim: int = 512
    w_hpf: float = 1.0
    base_dim: int | None = None  # None: official 2^14 / img_size
    mapping_dim: int = 512

    def __post_init__(self) -> None:
        size = self.img_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 16 or size & (size - 1):
            raise ValueError(f"img_size must be a power of two >= 16, got {size!r}")
        for name in ("num_domains", "latent_dim", "style_dim", "max_conv_dim", "mapping_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.base_dim is not None and (not isinstance(self.base_dim, int) or self.base_dim < 1):
            raise ValueError(f"base_dim must be a positive int or None, got {self.base_dim!r}")
        if not math.isfinite(self.w_hpf) or self.w_hpf < 0:
            raise ValueError(f"w_hpf must be a finite number >= 0, got {self.w_hpf!r}")

    @property
    def first_dim(self) -> int:
        return self.base_dim if self.base_dim is not None else official_base_dim(self.img_size)

    def generator(self) -> Generator:
        return Generator(self.img_size, self.style_dim, self.max_conv_dim, self.w_hpf, base_dim=self.first_dim)

    def mapping_network(self) -> MappingNetwork:
        return MappingNetwork(self.latent_dim, self.style_dim, self.num_domains, hidden_dim=self.mapping_dim)

    def style_encoder(self) -> StyleEncoder:
        return StyleEncoder(self.img_size, self.style_dim, self.num_domains, self.max_conv_dim,
                            base_dim=self.first_dim)

    def discriminator(self) -> Discriminator:
        return Discriminator(self.img_size, self.num_domains, self.max_conv_dim, base_dim=self.first_dim)


def _widths(first: int, blocks: int, max_dim: int) -> list[tuple[int, int]]:
    """(in, out) widths of `blocks` consecutive downsampling blocks: doubling, capped at max_dim."""
    pairs, dim_in = [], first
    for _ in range(blocks):
        dim_out = min(dim_in * 2, max_dim)
        pairs.append((dim_in, dim_out))
        dim_in = dim_out
    return pairs


def _select(per_domain: Tensor, domain: Tensor) -> Tensor:
    """Row i of the result is per_domain[i, domain[i]]: each sample uses its own domain's head."""
    if domain.shape != per_domain.shape[:1]:
        raise ValueError(f"domain labels must have shape ({per_domain.shape[0]},), got {tuple(domain.shape)}")
    return per_domain[torch.arange(per_domain.shape[0], device=per_domain.device), domain]


class Generator(nn.Module):
    """Encoder (IN ResBlks) → bottleneck → decoder (AdaIN ResBlks driven by the style code); no tanh.

    With ``w_hpf > 0`` the encoder has one more downsampling block, decoder blocks drop their skips, and when
    masks are given, high-passed masked encoder features are added after each decoder block of size 32/64/128.
    """

    def __init__(self, img_size: int = 256, style_dim: int = 64, max_conv_dim: int = 512, w_hpf: float = 1.0,
                 *, base_dim: int | None = None) -> None:
        super().__init__()
        first = base_dim if base_dim is not None else official_base_dim(img_size)
        self.img_size = img_size
        self.w_hpf = w_hpf
        self.from_rgb = nn.Conv2d(3, first, 3, 1, 1)
        self.encode = nn.ModuleList()
        self.decode = nn.ModuleList()
        self.to_rgb = nn.Sequential(nn.InstanceNorm2d(first, affine=True), nn.LeakyReLU(LRELU_SLOPE),
                                    nn.Conv2d(first, 3, 1, 1, 0))
        downsamplings = int(math.log2(img_size)) - 4 + (1 if w_hpf > 0 else 0)
        decoder: list[AdainResBlk] = []  # built outside-in, so reversed below
        widths = _widths(first, downsamplings, max_conv_dim)
        for dim_in, dim_out in widths:
            self.encode.append(ResBlk(dim_in, dim_out, normalize=True, downsample=True))
            decoder.append(AdainResBlk(dim_out, dim_in, style_dim, w_hpf=w_hpf, upsample=True))
        bottleneck = widths[-1][1] if widths else first
        for _ in range(2):
            self.encode.append(ResBlk(bottleneck, bottleneck, normalize=True))
            decoder.append(AdainResBlk(bottleneck, bottleneck, style_dim, w_hpf=w_hpf))
        self.decode.extend(reversed(decoder))
        if w_hpf > 0:
            self.hpf = HighPass(w_hpf)

    def forward(self, x: Tensor, style: Tensor, masks: Sequence[Tensor] | None = None, *,
                encoding: Encoding | None = None, return_encoding: bool = False) -> Tensor | tuple[Tensor, Encoding]:
        """Translate images x (N, 3, H, W) to the style codes (N, style_dim).

        masks = (coarse, fine), each (N, 1, h, w) in [0, 1] at any size (resized bilinearly), selects the source
        regions whose edges are kept; only for w_hpf > 0. None runs the decoder without injection.
        The encoder does not see the style: a call with ``return_encoding`` also returns x's encoding, which a
        later call for the same x and masks (under the same weights) takes as ``encoding`` instead of encoding
        x again (x is then not read). Both go through the module's call, so a compiled network stays compiled.
        """
        if encoding is None:
            encoding = self.encode_sources(x, masks)
        out = self.decode_features(*encoding, style, masks)
        return (out, encoding) if return_encoding else out

    def encode_sources(self, x: Tensor, masks: Sequence[Tensor] | None = None) -> Encoding:
        """The style-free half of `forward`: bottleneck features of x and (with masks) the encoder features the
        high-pass path adds back, by size. Sampling many styles of one source encodes it once."""
        self._check_masks(masks)
        x = self.from_rgb(x)
        cache: dict[int, Tensor] = {}
        for block in self.encode:
            if masks is not None and x.shape[2] in HPF_SIZES:
                cache[x.shape[2]] = x
            x = block(x)
        return x, cache

    def _check_masks(self, masks: Sequence[Tensor] | None) -> None:
        if masks is not None:
            if self.w_hpf <= 0:
                raise ValueError("masks were given but this generator has w_hpf = 0 (no high-pass path)")
            if len(masks) != 2:
                raise ValueError(f"masks must be a pair (coarse, fine), got {len(masks)} tensors")

    def decode_features(self, x: Tensor, cache: dict[int, Tensor], style: Tensor,
                        masks: Sequence[Tensor] | None = None) -> Tensor:
        """The styled half of `forward`, from `encode_sources`' outputs (one row per style code); `masks` must be
        those the encoding was made with (its `cache` holds the features they select)."""
        self._check_masks(masks)
        for block in self.decode:
            x = block(x, style)
            size = x.shape[2]
            if masks is not None and size in HPF_SIZES:
                mask = masks[0] if size == COARSE_MASK_SIZE else masks[1]
                mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
                x = x + self.hpf(mask * cache[size])
        return self.to_rgb(x)


class MappingNetwork(nn.Module):
    """Latent z → style code of the requested domain: a shared ReLU MLP, then one MLP head per domain."""

    def __init__(self, latent_dim: int = 16, style_dim: int = 64, num_domains: int = 2, *,
                 hidden_dim: int = 512) -> None:
        super().__init__()
        trunk: list[nn.Module] = [nn.Linear(latent_dim, hidden_dim), nn.ReLU()]
        for _ in range(3):
            trunk += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
        self.shared = nn.Sequential(*trunk)
        self.unshared = nn.ModuleList()
        for _ in range(num_domains):
            head: list[nn.Module] = []
            for _ in range(3):
                head += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
            self.unshared.append(nn.Sequential(*head, nn.Linear(hidden_dim, style_dim)))

    def forward(self, z: Tensor, domain: Tensor) -> Tensor:
        hidden = self.shared(z)
        return _select(torch.stack([head(hidden) for head in self.unshared], dim=1), domain)


def _image_trunk(img_size: int, max_conv_dim: int, base_dim: int | None) -> tuple[list[nn.Module], int]:
    """The shared conv trunk of E and D: conv3×3, ResBlks down to 4×4, LReLU, conv4×4 valid (→ 1×1), LReLU."""
    first = base_dim if base_dim is not None else official_base_dim(img_size)
    layers: list[nn.Module] = [nn.Conv2d(3, first, 3, 1, 1)]
    widths = _widths(first, int(math.log2(img_size)) - 2, max_conv_dim)
    layers += [ResBlk(dim_in, dim_out, downsample=True) for dim_in, dim_out in widths]
    last = widths[-1][1]
    layers += [nn.LeakyReLU(LRELU_SLOPE), nn.Conv2d(last, last, 4, 1, 0), nn.LeakyReLU(LRELU_SLOPE)]
    return layers, last


class StyleEncoder(nn.Module):
    """Image → style code of the requested domain (one linear head per domain on a shared conv trunk)."""

    def __init__(self, img_size: int = 256, style_dim: int = 64, num_domains: int = 2, max_conv_dim: int = 512,
                 *, base_dim: int | None = None) -> None:
        super().__init__()
        layers, width = _image_trunk(img_size, max_conv_dim, base_dim)
        self.shared = nn.Sequential(*layers)
        self.unshared = nn.ModuleList(nn.Linear(width, style_dim) for _ in range(num_domains))

    def forward(self, x: Tensor, domain: Tensor) -> Tensor:
        hidden = self.shared(x).flatten(1)
        return _select(torch.stack([head(hidden) for head in self.unshared], dim=1), domain)


class Discriminator(nn.Module):
    """Multi-task discriminator: one real/fake logit per domain; each sample is judged by its domain's output."""

    def __init__(self, img_size: int = 256, num_domains: int = 2, max_conv_dim: int = 512, *,
                 base_dim: int | None = None) -> None:
        super().__init__()
        layers, width = _image_trunk(img_size, max_conv_dim, base_dim)
        self.main = nn.Sequential(*layers, nn.Conv2d(width, num_domains, 1, 1, 0))

    def forward(self, x: Tensor, domain: Tensor) -> Tensor:
        return _select(self.main(x).flatten(1), domain)


@torch.no_grad()
def he_init_(module: nn.Module) -> nn.Module:
    """Official initialisation: He-normal (fan_in, ReLU gain) conv/linear weights, zero biases; IN affine kept."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
    return module
