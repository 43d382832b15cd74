"""BigGAN generator and discriminator (Brock et al., ICLR 2019), layer-for-layer as in BigGAN-PyTorch.

G: z (or its first chunk) → linear → 16·ch×4×4 → one up-ResBlock per stage (class-conditional BN) → optional
self-attention after the stages listed in ``g_attention`` → BN → ReLU → conv3×3 → tanh.
D: one down-ResBlock per stage → optional attention → ReLU → global sum pool → linear + projection onto an
embedding of the class.

The channel multipliers and stage resolutions are the official tables, quirks included: the 32×32 D labels all
its blocks "16", so attention at 16 there means attention after every D block.

BigGAN-deep (``deep``, BigGAN-PyTorch's BigGANdeep.py): ``g_depth``/``d_depth`` bottleneck blocks per stage, the
whole z joined to the class embedding for the first linear and every CBN (no chunks), a 3×3 stem conv before D's
blocks and D tables of their own. Modules are grouped as the official ones are (each G block its own group, D
blocks grouped by stage), so state-dict keys match its checkpoints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from ganforge.nn.biggan_layers import (
    DEEP_CHANNEL_RATIO,
    BatchNorm2d,
    DeepDiscriminatorBlock,
    DeepGeneratorBlock,
    DiscriminatorBlock,
    GeneratorBlock,
    SelfAttention,
)
from ganforge.nn.spectral_norm import SNSettings, conv2d, embedding, linear

InitScheme = Literal["ortho", "N02", "xavier"]
INIT_SCHEMES: tuple[str, ...] = ("ortho", "N02", "xavier")
BOTTOM_WIDTH = 4
OUTPUT_BN_EPS = 1e-5  # the official output BN ignores BN_eps


@dataclass(frozen=True)
class StageTable:
    """Per-block channels, output resolution (the official attention labels) and up/down-sampling."""

    in_channels: tuple[int, ...]
    out_channels: tuple[int, ...]
    resolution: tuple[int, ...]
    resample: tuple[bool, ...]


# Multipliers of ch per block: (in, out, resolution labels), from BigGAN-PyTorch's G_arch / D_arch.
_G_TABLES: dict[int, tuple[list[int], list[int], list[int]]] = {
    32: ([4, 4, 4], [4, 4, 4], [8, 16, 32]),
    64: ([16, 16, 8, 4], [16, 8, 4, 2], [8, 16, 32, 64]),
    128: ([16, 16, 8, 4, 2], [16, 8, 4, 2, 1], [8, 16, 32, 64, 128]),
    256: ([16, 16, 8, 8, 4, 2], [16, 8, 8, 4, 2, 1], [8, 16, 32, 64, 128, 256]),
}
_D_TABLES: dict[int, tuple[list[int], list[int], list[int], list[bool]]] = {
    32: ([4, 4, 4], [4, 4, 4, 4], [16, 16, 16, 16], [True, True, False, False]),
    64: ([1, 2, 4, 8], [1, 2, 4, 8, 16], [32, 16, 8, 4, 4], [True] * 4 + [False]),
    128: ([1, 2, 4, 8, 16], [1, 2, 4, 8, 16, 16], [64, 32, 16, 8, 4, 4], [True] * 5 + [False]),
    256: ([1, 2, 4, 8, 8, 16], [1, 2, 4, 8, 8, 16, 16], [128, 64, 32, 16, 8, 4, 4], [True] * 6 + [False]),
}
# BigGAN-deep's D: (in, out, resolution labels, downsampling) per stage, from BigGANdeep.py's D_arch; the input
# reaches the first stage through the stem conv (3 → in[0])
_D_DEEP_TABLES: dict[int, tuple[list[int], list[int], list[int], list[bool]]] = {
    32: ([4, 4, 4], [4, 4, 4], [16, 16, 16], [True, True, False]),
    64: ([1, 2, 4, 8], [2, 4, 8, 16], [32, 16, 8, 4], [True] * 4),
    128: ([1, 2, 4, 8, 16], [2, 4, 8, 16, 16], [64, 32, 16, 8, 4], [True] * 5),
    256: ([1, 2, 4, 8, 8, 16], [2, 4, 8, 8, 16, 16], [128, 64, 32, 16, 8, 4], [True] * 6),
}
RESOLUTIONS: tuple[int, ...] = tuple(sorted(_G_TABLES))


def generator_stages(resolution: int, ch: int) -> StageTable:
    """G's block table at `resolution` (every block upsamples ×2)."""
    ins, outs, res = _G_TABLES[_check_resolution(resolution)]
    return StageTable(tuple(ch * m for m in ins), tuple(ch * m for m in outs), tuple(res), (True,) * len(res))


def discriminator_stages(resolution: int, ch: int, *, deep: bool = False) -> StageTable:
    """D's block table at `resolution` (input 3 channels; the last block(s) keep the 4×4 size); `deep`: BigGAN-deep's
    stages, which start after the stem conv."""
    if deep:
        ins, outs, res, down = _D_DEEP_TABLES[_check_resolution(resolution)]
        return StageTable(tuple(ch * m for m in ins), tuple(ch * m for m in outs), tuple(res), tuple(down))
    ins, outs, res, down = _D_TABLES[_check_resolution(resolution)]
    return StageTable((3, *(ch * m for m in ins)), tuple(ch * m for m in outs), tuple(res), tuple(down))


def _check_resolution(resolution: int) -> int:
    if resolution not in _G_TABLES:
        raise ValueError(f"BigGAN resolution must be one of {list(RESOLUTIONS)}, got {resolution}")
    return resolution


@dataclass(frozen=True)
class BigGANArch:
    """Architecture settings, named after BigGAN-PyTorch's flags.

    ``g_shared`` adds the shared (non-SN) class embedding of ``shared_dim`` (0 = dim_z) that every CBN projects;
    without it each CBN has its own class tables. ``hier`` splits z into one chunk per block plus one for the
    first linear ("skip-z"); dim_z is then rounded down to a multiple of the chunk count, as the official code
    does. Attention lists stage resolutions (an empty tuple = none). ``deep``: BigGAN-deep (module docstring),
    which needs ``g_shared`` and ``hier`` (the official code fails without them) and takes ``g_depth``/``d_depth``
    blocks per stage.
    """

    resolution: int = 128
    n_classes: int = 1000
    g_ch: int = 96
    d_ch: int = 96
    dim_z: int = 120
    g_shared: bool = True
    shared_dim: int = 128
    hier: bool = True
    g_attention: tuple[int, ...] = (64,)
    d_attention: tuple[int, ...] = (64,)
    g_init: InitScheme = "ortho"
    d_init: InitScheme = "ortho"
    g_spectral_norm: bool = True
    d_spectral_norm: bool = True
    g_sn: SNSettings = field(default_factory=lambda: SNSettings(eps=1e-6))
    d_sn: SNSettings = field(default_factory=lambda: SNSettings(eps=1e-6))
    bn_eps: float = 1e-5
    d_wide: bool = True
    deep: bool = False
    g_depth: int = 2  # BigGAN-deep's blocks per stage
    d_depth: int = 2

    def __post_init__(self) -> None:
        _check_resolution(self.resolution)
        for key in ("n_classes", "g_ch", "d_ch", "dim_z", "g_depth", "d_depth"):
            if getattr(self, key) < 1:
                raise ValueError(f"BigGAN config '{key}' must be >= 1, got {getattr(self, key)}")
        if self.shared_dim < 0:
            raise ValueError(f"BigGAN config 'shared_dim' must be >= 0 (0 = dim_z), got {self.shared_dim}")
        for key in ("g_init", "d_init"):
            if getattr(self, key) not in INIT_SCHEMES:
                raise ValueError(f"BigGAN config '{key}' must be one of {list(INIT_SCHEMES)}, "
                                 f"got {getattr(self, key)!r}")
        if self.hier and not self.g_shared:
            raise ValueError("BigGAN config 'hier' needs 'g_shared' (z chunks join the shared class embedding)")
        if self.deep and not self.hier:
            raise ValueError("BigGAN config 'deep' needs 'hier' and 'g_shared' (BigGAN-deep joins the whole z to the "
                             "shared class embedding)")
        if not self.deep and (self.g_depth, self.d_depth) != (2, 2):
            raise ValueError(f"BigGAN config 'g_depth'/'d_depth' ({self.g_depth}/{self.d_depth}) count BigGAN-deep's "
                             "blocks per stage; without 'deep' they would do nothing")
        if self.deep and not self.d_wide:
            raise ValueError("BigGAN config 'd_wide': false has no meaning for BigGAN-deep's bottleneck D")
        if self.hier and self.dim_z < self.num_slots:
            raise ValueError(f"BigGAN config 'dim_z' = {self.dim_z} is smaller than the {self.num_slots} z chunks "
                             "of 'hier'")
        _check_attention("g_attention", self.g_attention, generator_stages(self.resolution, self.g_ch))
        _check_attention("d_attention", self.d_attention,
                         discriminator_stages(self.resolution, self.d_ch, deep=self.deep))
        if self.deep:
            widths = generator_stages(self.resolution, self.g_ch).in_channels
            widths += discriminator_stages(self.resolution, self.d_ch, deep=True).out_channels
            if min(widths) < DEEP_CHANNEL_RATIO:
                raise ValueError(f"BigGAN config 'g_ch'/'d_ch': BigGAN-deep's bottlenecks need every block at least "
                                 f"{DEEP_CHANNEL_RATIO} channels wide, got {min(widths)}")

    @property
    def num_slots(self) -> int:
        """z chunks: one per G block plus one for the first linear layer (1 without hier, and for BigGAN-deep)."""
        return len(_G_TABLES[self.resolution][0]) + 1 if self.hier and not self.deep else 1

    @property
    def z_chunk(self) -> int:
        """Size of each z chunk (0 without hier and for BigGAN-deep, as officially)."""
        return self.dim_z // self.num_slots if self.hier and not self.deep else 0

    @property
    def g_dim_z(self) -> int:
        """The dim_z G really uses (rounded down to whole chunks under BigGAN's hier)."""
        return self.z_chunk * self.num_slots if self.z_chunk else self.dim_z

    @property
    def embedding_dim(self) -> int:
        """Width of the shared class embedding."""
        return self.shared_dim or self.dim_z


def _check_attention(key: str, resolutions: tuple[int, ...], table: StageTable) -> None:
    unknown = sorted(set(resolutions) - set(table.resolution))
    if unknown:
        raise ValueError(f"BigGAN config '{key}' lists {unknown}; the stages of this resolution are "
                         f"{sorted(set(table.resolution))}")
    for res, width in zip(table.resolution, table.out_channels, strict=True):
        if res in resolutions and width % 8:
            raise ValueError(f"BigGAN config '{key}': attention at {res} needs a width divisible by 8, got {width}")


@torch.no_grad()
def init_weights(module: nn.Module, scheme: InitScheme) -> None:
    """Initialise every conv/linear/embedding weight (SN ones included); biases keep torch's default, as officially."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear, nn.Embedding)):
            if scheme == "ortho":
                nn.init.orthogonal_(layer.weight)
            elif scheme == "N02":
                nn.init.normal_(layer.weight, 0.0, 0.02)
            elif scheme == "xavier":
                nn.init.xavier_uniform_(layer.weight)
            else:
                raise ValueError(f"unknown init scheme {scheme!r}; expected one of {list(INIT_SCHEMES)}")


class Generator(nn.Module):
    """BigGAN G. ``forward(z, y)`` takes class indices; ``synthesize(z, condition)`` takes ``embed(y)``.

    With a shared embedding, ``embed(y)`` is a vector, so class interpolation is ``synthesize`` on a blend of
    two embeddings. Without one, the condition is the class index itself.
    """

    def __init__(self, config: BigGANArch) -> None:
        super().__init__()
        self.config = config
        sn = config.g_sn if config.g_spectral_norm else None
        stages = generator_stages(config.resolution, config.g_ch)
        self.stages = stages
        if config.deep:  # the embedding joined to the whole z feeds the first linear and every CBN
            condition = first_input = config.embedding_dim + config.dim_z
        else:
            condition = config.embedding_dim + config.z_chunk if config.g_shared else config.n_classes
            first_input = config.z_chunk if config.hier else config.dim_z
        self.shared = nn.Embedding(config.n_classes, config.embedding_dim) if config.g_shared else None
        self.linear = linear(first_input, stages.in_channels[0] * BOTTOM_WIDTH**2, sn=sn)
        self.blocks = nn.ModuleList()
        for c_in, c_out, res in zip(stages.in_channels, stages.out_channels, stages.resolution, strict=True):
            if config.deep:  # g_depth blocks, each its own group; the stage's last one upsamples and narrows
                groups: list[list[nn.Module]] = [
                    [DeepGeneratorBlock(c_in, c_out if last else c_in, condition, upsample=last, sn=sn,
                                        bn_eps=config.bn_eps)]
                    for last in (index == config.g_depth - 1 for index in range(config.g_depth))]
            else:
                groups = [[GeneratorBlock(c_in, c_out, condition, from_labels=not config.g_shared, sn=sn,
                                          bn_eps=config.bn_eps)]]
            if res in config.g_attention:
                groups[-1].append(SelfAttention(c_out, sn=sn))
            self.blocks.extend(nn.ModuleList(group) for group in groups)
        width = stages.out_channels[-1]
        self.output_layer = nn.Sequential(BatchNorm2d(width, OUTPUT_BN_EPS), nn.ReLU(), conv2d(width, 3, 3, sn=sn))
        init_weights(self, config.g_init)

    def embed(self, y: Tensor) -> Tensor:
        """The class condition: the shared embedding of `y`, or `y` itself without one."""
        if y.dtype != torch.long or y.ndim != 1:
            raise ValueError(f"class labels must be an int64 [N] tensor, got {y.dtype} {tuple(y.shape)}")
        return self.shared(y) if self.shared is not None else y

    def forward(self, z: Tensor, y: Tensor) -> Tensor:
        return self.synthesize(z, self.embed(y))

    def synthesize(self, z: Tensor, condition: Tensor) -> Tensor:
        """Images in [-1, 1] from latents z [N, g_dim_z] and the class condition [N, embedding_dim] or [N]."""
        cfg = self.config
        if z.ndim != 2 or z.shape[1] != cfg.g_dim_z:
            raise ValueError(f"z must be [N, {cfg.g_dim_z}], got {tuple(z.shape)}")
        if cfg.deep:
            first = torch.cat([condition, z], dim=1)
            conditions = [first] * len(self.blocks)
        elif cfg.hier:
            first, *rest = torch.split(z, cfg.z_chunk, dim=1)
            conditions = [torch.cat([condition, chunk], dim=1) for chunk in rest]
        else:
            first, conditions = z, [condition] * len(self.blocks)
        h = self.linear(first).reshape(z.shape[0], -1, BOTTOM_WIDTH, BOTTOM_WIDTH)
        for block, block_condition in zip(self.blocks, conditions, strict=True):
            h = block[0](h, block_condition)
            for attention in block[1:]:
                h = attention(h)
        return torch.tanh(self.output_layer(h))


class Discriminator(nn.Module):
    """BigGAN D with projection: logit = linear(φ(x)) + ⟨embed(y), φ(x)⟩, φ = sum-pooled ReLU features."""

    def __init__(self, config: BigGANArch) -> None:
        super().__init__()
        self.config = config
        sn = config.d_sn if config.d_spectral_norm else None
        stages = discriminator_stages(config.resolution, config.d_ch, deep=config.deep)
        self.stages = stages
        self.input_conv = conv2d(3, stages.in_channels[0], 3, sn=sn) if config.deep else None
        self.blocks = nn.ModuleList()
        for index, (c_in, c_out, res, down) in enumerate(
            zip(stages.in_channels, stages.out_channels, stages.resolution, stages.resample, strict=True)
        ):
            if config.deep:  # d_depth blocks, one group per stage; the first pools and widens
                block: list[nn.Module] = [DeepDiscriminatorBlock(c_out if depth else c_in, c_out,
                                                                 downsample=down and not depth, sn=sn)
                                          for depth in range(config.d_depth)]
            else:
                block = [DiscriminatorBlock(c_in, c_out, sn=sn, preactivation=index > 0, downsample=down,
                                            wide=config.d_wide)]
            if res in config.d_attention:
                block.append(SelfAttention(c_out, sn=sn))
            self.blocks.append(nn.ModuleList(block))
        width = stages.out_channels[-1]
        self.linear = linear(width, 1, sn=sn)
        self.embed = embedding(config.n_classes, width, sn=sn)
        init_weights(self, config.d_init)

    def features(self, x: Tensor) -> Tensor:
        """Sum-pooled ReLU features [N, C] (the input of the linear head and the projection)."""
        expected = (3, self.config.resolution, self.config.resolution)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"D input must be [N, {', '.join(map(str, expected))}], got {tuple(x.shape)}")
        h = x if self.input_conv is None else self.input_conv(x)
        for block in self.blocks:
            for layer in block:
                h = layer(h)
        return torch.relu(h).sum(dim=(2, 3))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Logits [N, 1]."""
        pooled = self.features(x)
        return self.linear(pooled) + (self.embed(y) * pooled).sum(dim=1, keepdim=True)


def sample_classes(n: int, n_classes: int, *, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> Tensor:
    """`n` classes drawn uniformly from [0, n_classes), as BigGAN-PyTorch's categorical sampler (`y_.sample_()`)
    draws them for training, fixed samples and metrics: every class appears, in proportion."""
    return torch.randint(n_classes, (n,), generator=generator, device=device)


def sample_latents(n: int, dim_z: int, *, truncation: float | None = None,
                   method: Literal["resample", "scale"] = "resample", generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> Tensor:
    """z ~ N(0, I) [n, dim_z], optionally truncated at ψ = `truncation` (`truncate_latents`)."""
    return truncate_latents(torch.randn(n, dim_z, generator=generator, device=device), truncation, method)


def truncate_latents(z: Tensor, truncation: float | None, method: Literal["resample", "scale"] = "resample") -> Tensor:
    """Normal draws `z` truncated at ψ = `truncation` (None: as they are).

    ``"resample"`` is the paper's truncation trick, a true truncated normal on [−ψ, ψ] (what redrawing entries
    with |z| > ψ until none is left gives), made by its inverse CDF from the draws themselves: each entry maps on
    its own, so a sample stays one sample whatever else was drawn, and every ψ maps the same draws (common random
    numbers across a truncation sweep). ``"scale"`` is what BigGAN-PyTorch's sampler calls truncation: z·ψ, i.e. a
    normal of standard deviation ψ, unbounded.
    """
    if truncation is None:
        return z
    if not (truncation > 0 and math.isfinite(truncation)):
        raise ValueError(f"truncation must be a finite ψ > 0, got {truncation}")
    if method == "scale":
        return z * truncation
    if method != "resample":
        raise ValueError(f"truncation method must be 'resample' or 'scale', got {method!r}")
    low = torch.special.ndtr(torch.tensor(-float(truncation), dtype=torch.float64))
    share = torch.special.ndtr(z.double())  # uniform on (0, 1), squeezed into the CDF's mass inside ±ψ
    truncated = torch.special.ndtri(low + share * (1 - 2 * low)).clamp(-truncation, truncation)
    return truncated.to(z.dtype)
