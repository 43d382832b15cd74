"""Progressive GAN generator and discriminator (Karras et al., ICLR 2018) — networks only.

Both networks are built for every scale up front (every toRGB/fromRGB exists from the start, as in the
official TF code), and `forward` takes the current scale s (resolution 4·2^s) and the fade weight alpha.

alpha is the weight of the OLD, lower-resolution path (pytorch_GAN_zoo semantics): 1 = old path only,
0 = new block only. Two variants keep fidelity with the two reference codes:

- ``"paper"`` (official TF): He gain sqrt(2)/4 on the 4×4 dense layer with one bias per channel, gain 1 on
  toRGB and on D's last dense layer, biases added after the weight scaling, biased strided minibatch stddev, D's
  blocks pooling before their second activation.
- ``"zoo"`` (pytorch_GAN_zoo): gain sqrt(2) everywhere, one bias per dense output unit, the He constant also
  scales the bias, unbiased consecutive-group minibatch stddev, D's blocks pooling their activations. Loads zoo
  checkpoints (interop.pgan_zoo).

``styles=True`` (off in both references; ganforge's option) feeds the latent to every layer of G, as StyleGAN does:
a small mapping network turns the normalised latent into w, an affine of w scales and shifts each channel after
every pixel norm (StyleGAN's AdaIN with PGAN's pixel norm in place of instance norm) and scales toRGB's input
channels (StyleGAN2's modulated toRGB without demodulation). Without it, the colour of a shape or a background has
to survive every upsampling from the 4×4 block; with it, one affine sets it for the whole image.

``label_sizes`` (the AC-GAN conditioning of both references; empty: unconditional): G's input is the latent followed by
one one-hot vector per label column (normalised together, as both references normalise their input), and D's last
dense layer has one logit per class of every column after the score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.nn.equalized import SQRT2, EqualizedConv2d, EqualizedLinear
from ganforge.nn.norm import minibatch_stddev, pixel_norm
from ganforge.nn.resample import conv_downsample, upsample_conv, upsample_nearest_2x

LRELU_SLOPE = 0.2
VARIANTS = ("paper", "zoo")


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def _check_resolution(resolution: object, field: str) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, int):
        raise ValueError(f"{field} must be an int power of two >= 4, got {resolution!r}")
    if resolution < 4 or not _is_power_of_two(resolution):
        raise ValueError(f"{field} must be a power of two >= 4, got {resolution}")
    return resolution


def pgan_widths(resolution: int, fmap_base: int = 8192, fmap_max: int = 512) -> list[int]:
    """Widths for scales 4, 8, ..., resolution as in the official code: min(base / 2^(log2 res - 1), max)."""
    _check_resolution(resolution, "resolution")
    levels = int(math.log2(resolution))
    return [min(fmap_base // 2 ** (level - 1), fmap_max) for level in range(2, levels + 1)]


@dataclass
class PGANArch:
    """Shape of a PGAN: final resolution, widths per scale (4×4 first) and the reference variant."""

    resolution: int
    widths: list[int]
    latent_dim: int = 512
    variant: str = "paper"
    channels: int = 3
    mbstd_group_size: int = 4
    zoo_skip_first_d_fade: bool = False
    styles: bool = False
    mapping_layers: int = 0  # of the styles' mapping network; must be 0 without styles
    label_sizes: list[int] = field(default_factory=list)  # classes per conditioning label column (AC-GAN)

    def __post_init__(self) -> None:
        _check_resolution(self.resolution, "PGANArch.resolution")
        expected = int(math.log2(self.resolution)) - 1
        if not isinstance(self.widths, (list, tuple)) or len(self.widths) != expected:
            raise ValueError(
                f"PGANArch.widths must list one width per scale 4..{self.resolution} ({expected} entries), "
                f"got {self.widths!r}"
            )
        self.widths = list(self.widths)
        for name, value in [(f"widths[{i}]", w) for i, w in enumerate(self.widths)] + [
            ("latent_dim", self.latent_dim),
            ("channels", self.channels),
            ("mbstd_group_size", self.mbstd_group_size),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"PGANArch.{name} must be a positive int, got {value!r}")
        if isinstance(self.mapping_layers, bool) or not isinstance(self.mapping_layers, int) or (
                self.mapping_layers < 0):
            raise ValueError(f"PGANArch.mapping_layers must be an int >= 0, got {self.mapping_layers!r}")
        if self.mapping_layers and not self.styles:
            raise ValueError(f"PGANArch.mapping_layers: {self.mapping_layers} does nothing without styles")
        if self.variant not in VARIANTS:
            raise ValueError(f"PGANArch.variant must be one of {VARIANTS}, got {self.variant!r}")
        self.label_sizes = list(self.label_sizes)
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in self.label_sizes):
            raise ValueError(f"PGANArch.label_sizes must list integers >= 2 (classes per label column), got "
                             f"{self.label_sizes!r}")
        if self.label_sizes and self.styles:
            raise ValueError("PGANArch.label_sizes: label conditioning is offered for the references' G, not with "
                             "styles")

    @property
    def label_dim(self) -> int:
        """Width of the one-hot label input of G and of D's class logits (0: unconditional)."""
        return sum(self.label_sizes)

    @property
    def num_scales(self) -> int:
        return len(self.widths)

    @property
    def is_zoo(self) -> bool:
        return self.variant == "zoo"


def _lrelu(x: Tensor) -> Tensor:
    """In place: every call takes a fresh layer output that nothing else reads (the references' values and gradients
    bit for bit, one allocation less per activation). A forward hook that keeps a layer's output sees it activated:
    such a hook should keep a copy."""
    return F.leaky_relu(x, LRELU_SLOPE, inplace=True)


def _normalise(x: Tensor, style: Tensor | None) -> Tensor:
    """Pixel norm, then (with styles) each channel scaled by 1 + y_s and shifted by y_b; style is [N, 2C]."""
    x = pixel_norm(x)
    if style is None:
        return x
    scale, shift = style[:, :, None, None].chunk(2, dim=1)
    return x * (scale + 1.0) + shift


def _check_scale_alpha(arch: PGANArch, scale: int, alpha: float) -> None:
    if not 0 <= scale < arch.num_scales:
        raise ValueError(f"scale must be in [0, {arch.num_scales}), got {scale}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (weight of the old low-res path) must be in [0, 1], got {alpha}")
    if scale == 0 and alpha != 0.0:
        raise ValueError(f"alpha must be 0 at scale 0 (there is no lower scale to fade from), got {alpha}")


def fade_weight(alpha: float) -> Tensor | None:
    """alpha as the 0-dim tensor the networks' compiled regions blend with (None: no fade).

    A Python float reaching torch.compile is a guarded input: inductor specialised it on a cold cache, so every
    alpha step of a fade recompiled (seconds each, then eager past the recompile limit). float64 on the CPU rounds
    the blend as the Python float did, in float32 and float64 networks (CPU and CUDA take it as a scalar)."""
    return None if alpha == 0.0 else torch.tensor(alpha, dtype=torch.float64)


def one_hot_labels(labels: Tensor | None, sizes: list[int], count: int) -> Tensor:
    """Class indices [N, columns] → the concatenated one-hot vectors [N, sum(sizes)], as both references feed
    labels to G."""
    if labels is None or labels.shape != (count, len(sizes)):
        got = None if labels is None else tuple(labels.shape)
        raise ValueError(f"a conditional PGAN expects labels of shape [{count}, {len(sizes)}] (one class index per "
                         f"label column), got {got}")
    return torch.cat([F.one_hot(labels[:, k].long(), size) for k, size in enumerate(sizes)], dim=1)


class _GBase(nn.Module):
    """4×4 block of G: latent → dense → (C0, 4, 4) → LReLU, PN → conv3×3 → LReLU, PN."""

    def __init__(self, arch: PGANArch) -> None:
        super().__init__()
        width = arch.widths[0]
        zoo = arch.is_zoo
        self.width = width
        # The paper's dense layer has one bias per channel, added after the reshape; the zoo's nn.Linear
        # has one per output unit, inside the He scaling.
        self.dense = EqualizedLinear(
            arch.latent_dim + arch.label_dim, 16 * width, gain=SQRT2 if zoo else SQRT2 / 4, scale_bias=zoo, bias=zoo
        )
        self.bias = None if zoo else nn.Parameter(torch.zeros(width))
        self.conv = EqualizedConv2d(width, width, 3, padding=1, scale_bias=zoo)

    def forward(self, latent: Tensor, style: Tensor | None = None) -> Tensor:
        """style: [N, 4·C] (styles of the two normalisations) or None."""
        x = self.dense(latent).view(-1, self.width, 4, 4)
        if self.bias is not None:
            x = x + self.bias.view(1, -1, 1, 1)
        first, second = style.chunk(2, dim=1) if style is not None else (None, None)
        x = _normalise(_lrelu(x), first)
        return _normalise(_lrelu(self.conv(x)), second)


class _GBlock(nn.Module):
    """Growth block of G: nearest ×2 → conv3×3 → LReLU, PN → conv3×3 → LReLU, PN."""

    def __init__(self, in_ch: int, out_ch: int, zoo: bool) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_ch, out_ch, 3, padding=1, scale_bias=zoo)
        self.conv1 = EqualizedConv2d(out_ch, out_ch, 3, padding=1, scale_bias=zoo)

    def forward(self, x: Tensor, style: Tensor | None = None) -> Tensor:
        """style: [N, 4·C] (styles of the two normalisations) or None."""
        first, second = style.chunk(2, dim=1) if style is not None else (None, None)
        x = _normalise(_lrelu(upsample_conv(self.conv0, x)), first)
        return _normalise(_lrelu(self.conv1(x)), second)


class PGANGenerator(nn.Module):
    """G: blocks[0] is the 4×4 base, blocks[s] grows to 4·2^s; to_rgb[s] turns block s's features into RGB."""

    def __init__(self, arch: PGANArch) -> None:
        super().__init__()
        self.arch = arch
        zoo = arch.is_zoo
        widths = arch.widths
        self.blocks = nn.ModuleList(
            [_GBase(arch)] + [_GBlock(widths[s - 1], widths[s], zoo) for s in range(1, arch.num_scales)]
        )
        self.to_rgb = nn.ModuleList(
            EqualizedConv2d(width, arch.channels, 1, gain=SQRT2 if zoo else 1.0, scale_bias=zoo)
            for width in widths
        )
        if arch.styles:  # in this order: a seed gives the weights the quick start's figures were measured with
            self.block_styles = nn.ModuleList(
                EqualizedLinear(arch.latent_dim, 4 * width, gain=1.0, scale_bias=zoo) for width in widths
            )
            self.rgb_styles = nn.ModuleList(
                EqualizedLinear(arch.latent_dim, width, gain=1.0, scale_bias=zoo) for width in widths
            )
            self.mapping = nn.ModuleList(
                EqualizedLinear(arch.latent_dim, arch.latent_dim, scale_bias=zoo) for _ in range(arch.mapping_layers)
            )

    def _to_rgb(self, scale: int, x: Tensor, w: Tensor | None) -> Tensor:
        if w is not None:
            x = x * (self.rgb_styles[scale](w)[:, :, None, None] + 1.0)
        return self.to_rgb[scale](x)

    compile_region = "synthesize"  # what `compile: true` compiles: forward's checks and float alpha stay eager

    def forward(self, z: Tensor, scale: int, alpha: float = 0.0, labels: Tensor | None = None) -> Tensor:
        """Image [N, channels, 4·2^scale, 4·2^scale] (linear, no tanh) from latents z [N, latent_dim] and, for a
        conditional G, class indices `labels` [N, label columns]."""
        _check_scale_alpha(self.arch, scale, alpha)
        if z.ndim != 2 or z.shape[1] != self.arch.latent_dim:
            raise ValueError(
                f"PGANGenerator expects z of shape [N, {self.arch.latent_dim}], got {tuple(z.shape)}"
            )
        if self.arch.label_sizes:
            z = torch.cat([z, one_hot_labels(labels, self.arch.label_sizes, z.shape[0]).to(z.dtype)], dim=1)
        elif labels is not None:
            raise ValueError("PGANGenerator: labels given to an unconditional generator (label_sizes is empty)")
        return self.synthesize(z, scale, fade_weight(alpha))

    def synthesize(self, z: Tensor, scale: int, fade: Tensor | None) -> Tensor:
        """forward's image from checked latents (one-hot labels appended) and its fade_weight."""
        x = pixel_norm(z)
        w = None
        if self.arch.styles:
            w = x
            for layer in self.mapping:
                w = _lrelu(layer(w))

        def block(index: int, x: Tensor) -> Tensor:
            return self.blocks[index](x, None if w is None else self.block_styles[index](w))

        for index in range(scale):  # indexing, not slicing: a ModuleList slice builds a new module
            x = block(index, x)
        old = self._to_rgb(scale - 1, x, w) if fade is not None else None
        out = self._to_rgb(scale, block(scale, x), w)
        if old is not None:
            out = fade * upsample_nearest_2x(old) + (1.0 - fade) * out
        return out


class _DHead(nn.Module):
    """4×4 head of D: mbstd → conv3×3 → LReLU → flatten → dense → LReLU (= features) → dense → score."""

    def __init__(self, arch: PGANArch) -> None:
        super().__init__()
        width = arch.widths[0]
        zoo = arch.is_zoo
        self.mbstd_mode = arch.variant
        self.mbstd_group_size = arch.mbstd_group_size
        self.conv = EqualizedConv2d(width + 1, width, 3, padding=1, scale_bias=zoo)
        self.dense0 = EqualizedLinear(16 * width, width, scale_bias=zoo)
        self.dense1 = EqualizedLinear(width, 1 + arch.label_dim, gain=SQRT2 if zoo else 1.0, scale_bias=zoo)

    def forward(self, x: Tensor, batch_parts: int = 1) -> tuple[Tensor, Tensor]:
        x = minibatch_stddev(x, self.mbstd_group_size, mode=self.mbstd_mode, parts=batch_parts)
        x = _lrelu(self.conv(x))
        features = _lrelu(self.dense0(x.flatten(1)))
        return self.dense1(features), features


class _DBlock(nn.Module):
    """Block of D at one scale: conv3×3 → LReLU → conv3×3 (to the lower width) → avgpool 2×2 → LReLU (paper) or
    conv3×3 → LReLU → avgpool 2×2 (zoo).

    The official TF code pools before the activation: its default `fused_scale` makes the second convolution and the
    pooling one strided convolution, with the bias and LReLU after it. The zoo pools the activations."""

    def __init__(self, in_ch: int, out_ch: int, zoo: bool) -> None:
        super().__init__()
        self.zoo = zoo
        self.conv0 = EqualizedConv2d(in_ch, in_ch, 3, padding=1, scale_bias=zoo)
        self.conv1 = EqualizedConv2d(in_ch, out_ch, 3, padding=1, scale_bias=zoo)

    def forward(self, x: Tensor) -> Tensor:
        x = _lrelu(self.conv0(x))
        if self.zoo:
            return F.avg_pool2d(_lrelu(self.conv1(x)), 2)
        return _lrelu(conv_downsample(self.conv1, x))


class PGANDiscriminator(nn.Module):
    """D: from_rgb[s] reads an image at 4·2^s; blocks[s] (s >= 1) halves it; blocks[0] is the 4×4 head."""

    def __init__(self, arch: PGANArch) -> None:
        super().__init__()
        self.arch = arch
        zoo = arch.is_zoo
        widths = arch.widths
        self.from_rgb = nn.ModuleList(
            EqualizedConv2d(arch.channels, width, 1, scale_bias=zoo) for width in widths
        )
        self.blocks = nn.ModuleList(
            [_DHead(arch)] + [_DBlock(widths[s], widths[s - 1], zoo) for s in range(1, arch.num_scales)]
        )

    compile_region = "score"  # what `compile: true` compiles: forward's checks and float alpha stay eager

    def forward(
        self, x: Tensor, scale: int, alpha: float = 0.0, *, return_features: bool = False,
        return_label_logits: bool = False, batch_parts: int = 1
    ) -> Tensor | tuple[Tensor, ...]:
        """Score [N, 1]; with return_features also the [N, C0] input of the last dense layer (for GDPP), with
        return_label_logits the class logits [N, label_dim] of a conditional D (AC-GAN), in that order.

        `batch_parts` > 1: `x` is that many batches concatenated (reals and fakes), scored in one call as each
        would be alone (the minibatch stddev groups within each): fewer, larger kernels than one call per batch."""
        if return_label_logits and not self.arch.label_sizes:
            raise ValueError("PGANDiscriminator: label logits asked of an unconditional D (label_sizes is empty)")
        _check_scale_alpha(self.arch, scale, alpha)
        size = 4 * 2**scale
        if x.ndim != 4 or x.shape[1] != self.arch.channels or x.shape[2] != size or x.shape[3] != size:
            raise ValueError(
                f"PGANDiscriminator at scale {scale} expects images "
                f"[N, {self.arch.channels}, {size}, {size}], got {tuple(x.shape)}"
            )
        return self.score(x, scale, fade_weight(alpha), return_features, return_label_logits, batch_parts)

    def score(self, x: Tensor, scale: int, fade: Tensor | None, return_features: bool, return_label_logits: bool,
              batch_parts: int = 1) -> Tensor | tuple[Tensor, ...]:
        """forward's outputs for checked images and their fade_weight."""
        h = _lrelu(self.from_rgb[scale](x))
        if scale > 0:
            h = self.blocks[scale](h)
            # The zoo only blends once two scales have been added; reproduce that only on request.
            skip_fade = self.arch.zoo_skip_first_d_fade and scale == 1
            if fade is not None and not skip_fade:
                old = _lrelu(self.from_rgb[scale - 1](F.avg_pool2d(x, 2)))
                h = fade * old + (1.0 - fade) * h
            for index in range(scale - 1, 0, -1):
                h = self.blocks[index](h)
        out, features = self.blocks[0](h, batch_parts)
        score = out[:, :1] if self.arch.label_sizes else out
        extra = ((features,) if return_features else ()) + ((out[:, 1:],) if return_label_logits else ())
        return (score, *extra) if extra else score
