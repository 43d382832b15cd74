"""BigGAN building blocks: (class-)conditional batch norm, SAGAN self-attention, up- and down-ResBlocks (BigGAN's and
BigGAN-deep's bottleneck ones).

Shapes and the order of operations follow BigGAN-PyTorch so that its checkpoints reproduce exactly; the module
names match its state-dict keys except the batch-norm statistics, which use torch's ``running_mean`` /
``running_var`` names (the importer renames ``stored_mean`` / ``stored_var``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.nn.cross_replica import across_ranks, cross_replica_batch_norm
from ganforge.nn.resample import conv_downsample, upsample_conv, upsample_nearest_2x
from ganforge.nn.spectral_norm import SNSettings, conv2d, linear

BN_MOMENTUM = 0.1
DEEP_CHANNEL_RATIO = 4  # BigGAN-deep's bottleneck: hidden width = block width / 4


class _BatchStatistics(nn.Module):
    """Running mean/variance of a batch-norm layer (batch statistics in training, running ones in eval).

    With `cross_replica` set (torchrun runs), training statistics are summed over all ranks, as BigGAN's
    cross-replica BN on TPUs: the layer then sees the global batch, and a multi-process run computes what a
    single process would on the whole batch.
    """

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.momentum = BN_MOMENTUM
        self.cross_replica = False
        self.bn_groups = 1  # > 1: training statistics per block of the batch (`use_batch_norm_groups`)
        # False: training mode normalises by the batch and leaves the running statistics alone (nn.BatchNorm2d's
        # flag of the same name): an exported graph of batch-statistics sampling holds no buffer updates
        self.track_running_stats = True
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def _normalize(self, x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        if self.training and across_ranks(self):
            return cross_replica_batch_norm(x, self.running_mean, self.running_var, weight, bias, self.momentum,
                                            self.eps)
        if self.training and self.bn_groups > 1:
            return grouped_batch_norm(x, self.bn_groups, self.running_mean, self.running_var, weight, bias,
                                      self.momentum, self.eps)
        tracked = self.track_running_stats or not self.training
        return F.batch_norm(x, self.running_mean if tracked else None, self.running_var if tracked else None, weight,
                            bias, self.training, self.momentum, self.eps)


def grouped_batch_norm(x: Tensor, groups: int, running_mean: Tensor, running_var: Tensor, weight: Tensor | None,
                       bias: Tensor | None, momentum: float, eps: float) -> Tensor:
    """Training-mode batch norm of each of `groups` consecutive equal blocks of the batch on its own statistics,
    the running statistics updated by the first block alone: what DataParallel over `groups` GPUs computes (each
    replica normalises the block scattered to it; only the first replica's buffers are the module's)."""
    if x.shape[0] % groups:
        raise ValueError(f"model.bn_groups: a batch of {x.shape[0]} does not split into {groups} equal blocks")
    blocks = x.chunk(groups)
    first = F.batch_norm(blocks[0], running_mean, running_var, weight, bias, True, momentum, eps)
    return torch.cat([first, *(F.batch_norm(block, None, None, weight, bias, True, momentum, eps)
                                for block in blocks[1:])])


def use_batch_norm_groups(module: nn.Module, groups: int) -> None:
    """Every BigGAN batch norm in `module` normalises `groups` blocks of each training batch apart
    (`grouped_batch_norm`: DataParallel's per-GPU batch norm in one process); 1: the whole batch."""
    for layer in module.modules():
        if isinstance(layer, _BatchStatistics):
            layer.bn_groups = groups

class BatchNorm2d(_BatchStatistics):
    """Unconditional BN with a learnable per-channel gain and bias (G's output layer)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, eps)
        self.gain = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return self._normalize(x, self.gain, self.bias)


class ConditionalBatchNorm2d(_BatchStatistics):
    """BN without own affine parameters, scaled by 1 + gain(c) and shifted by bias(c) per sample.

    With ``from_labels`` the condition c is a class index and gain/bias are plain embedding tables of
    ``condition`` classes (BigGAN without a shared embedding); otherwise c is a ``condition``-dim vector (shared
    embedding, possibly with a z chunk) and gain/bias are bias-free linears, spectrally normalised when `sn` is
    given. The "1 +" keeps a freshly initialised layer close to plain BN.
    """

    def __init__(self, channels: int, condition: int, *, from_labels: bool, sn: SNSettings | None,
                 eps: float = 1e-5) -> None:
        super().__init__(channels, eps)
        if from_labels:
            self.gain: nn.Module = nn.Embedding(condition, channels)
            self.bias: nn.Module = nn.Embedding(condition, channels)
        else:
            self.gain = linear(condition, channels, sn=sn, bias=False)
            self.bias = linear(condition, channels, sn=sn, bias=False)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        scale = 1 + self.gain(condition)
        shift = self.bias(condition)
        return self._normalize(x) * scale[:, :, None, None] + shift[:, :, None, None]


class SelfAttention(nn.Module):
    """SAGAN non-local block: every position attends to a 2×2-max-pooled key/value grid.

    θ, φ, g project to C/8, C/8 and C/2 channels; the output conv maps back to C and is added to the input with
    a learnable scalar ``gamma`` that starts at 0, so the block begins as the identity and learns how much
    long-range mixing to use.
    """

    def __init__(self, channels: int, *, sn: SNSettings | None) -> None:
        super().__init__()
        if channels % 8 != 0:
            raise ValueError(f"self-attention needs channels divisible by 8, got {channels}")
        self.channels = channels
        self.theta = conv2d(channels, channels // 8, 1, sn=sn, bias=False)
        self.phi = conv2d(channels, channels // 8, 1, sn=sn, bias=False)
        self.g = conv2d(channels, channels // 2, 1, sn=sn, bias=False)
        self.o = conv2d(channels // 2, channels, 1, sn=sn, bias=False)
        self.gamma = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"self-attention pools keys 2x2 and needs even height and width, got {h}x{w}")
        queries = self.theta(x).reshape(n, c // 8, h * w)
        keys = F.max_pool2d(self.phi(x), 2).reshape(n, c // 8, h * w // 4)
        values = F.max_pool2d(self.g(x), 2).reshape(n, c // 2, h * w // 4)
        attended = attend(queries, keys, values, fused=x.is_cuda)
        return self.gamma * self.o(attended.reshape(n, c // 2, h, w)) + x


def attend(queries: Tensor, keys: Tensor, values: Tensor, *, fused: bool) -> Tensor:
    """values · softmax(queriesᵀ · keys)ᵀ, unscaled as in BigGAN, for [n, channels, positions] inputs (keys and
    values at the pooled positions). `fused`: torch's attention kernels (CUDA), which need not hold the [positions,
    keys] map (4 GB in float32 at 64×64 and batch 256); else the map itself, computed as BigGAN-PyTorch does (bit
    for bit with its checkpoints' outputs on the CPU, where torch's fused kernel rounds differently)."""
    if fused:
        # [n, one head, positions, channels], contiguous: torch's fused kernels need unit stride in the last dimension
        # (else SDPA silently falls back to the map)
        heads = [t.transpose(1, 2).contiguous()[:, None] for t in (queries, keys, values)]
        return F.scaled_dot_product_attention(*heads, scale=1.0)[:, 0].transpose(1, 2)
    attention = torch.softmax(queries.transpose(1, 2) @ keys, dim=-1)  # [n, query positions, keys]
    return values @ attention.transpose(1, 2)


class GeneratorBlock(nn.Module):
    """Pre-activation up-ResBlock: CBN → ReLU → ×2 nearest → conv3×3 → CBN → ReLU → conv3×3, plus a 1×1 shortcut.

    Both CBNs see the same condition (BigGAN feeds block i its own z chunk with the class embedding).
    """

    def __init__(self, in_channels: int, out_channels: int, condition: int, *, from_labels: bool,
                 sn: SNSettings | None, bn_eps: float) -> None:
        super().__init__()
        self.conv1 = conv2d(in_channels, out_channels, 3, sn=sn)
        self.conv2 = conv2d(out_channels, out_channels, 3, sn=sn)
        self.conv_sc = conv2d(in_channels, out_channels, 1, sn=sn)
        self.bn1 = ConditionalBatchNorm2d(in_channels, condition, from_labels=from_labels, sn=sn, eps=bn_eps)
        self.bn2 = ConditionalBatchNorm2d(out_channels, condition, from_labels=from_labels, sn=sn, eps=bn_eps)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        h = upsample_conv(self.conv1, F.relu(self.bn1(x, condition)))
        h = self.conv2(F.relu(self.bn2(h, condition)))
        return h + upsample_conv(self.conv_sc, x)


class DiscriminatorBlock(nn.Module):
    """Down-ResBlock: [ReLU] → conv3×3 → ReLU → conv3×3 → [avg-pool 2×2], plus a shortcut.

    The first block of D is not pre-activated (its input is the image) and pools its shortcut before the 1×1 conv;
    later blocks convolve first, as BigGAN's, except on the strided route of `conv_downsample` (the same linear map,
    a quarter of the multiply-adds). The shortcut conv exists only when the channel count changes or the block
    downsamples. ``wide`` (BigGAN's default) makes the hidden width the output width; otherwise the input width
    (SNGAN).
    """

    def __init__(self, in_channels: int, out_channels: int, *, sn: SNSettings | None, preactivation: bool,
                 downsample: bool, wide: bool = True) -> None:
        super().__init__()
        hidden = out_channels if wide else in_channels
        self.preactivation = preactivation
        self.downsample = downsample
        self.conv1 = conv2d(in_channels, hidden, 3, sn=sn)
        self.conv2 = conv2d(hidden, out_channels, 3, sn=sn)
        self.conv_sc = conv2d(in_channels, out_channels, 1, sn=sn) if in_channels != out_channels or downsample \
            else None

    def _shortcut(self, x: Tensor) -> Tensor:
        if self.downsample and not self.preactivation:
            x = F.avg_pool2d(x, 2)
        elif self.downsample:
            return F.avg_pool2d(x, 2) if self.conv_sc is None else conv_downsample(self.conv_sc, x)
        return self.conv_sc(x) if self.conv_sc is not None else x

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(x) if self.preactivation else x  # out of place: the shortcut needs the raw x
        h = F.relu(self.conv1(h))
        h = conv_downsample(self.conv2, h) if self.downsample else self.conv2(h)
        return h + self._shortcut(x)


class DeepGeneratorBlock(nn.Module):
    """BigGAN-deep's bottleneck up-block: CBN → ReLU → conv1×1 (to in/4) → CBN → ReLU → [×2 nearest] → conv3×3 →
    CBN → ReLU → conv3×3 → CBN → ReLU → conv1×1 (to out), plus the input itself as shortcut, its surplus channels
    dropped and [×2 nearest]: no shortcut conv. Every CBN sees the same condition (the embedding and the whole z)."""

    def __init__(self, in_channels: int, out_channels: int, condition: int, *, upsample: bool,
                 sn: SNSettings | None, bn_eps: float) -> None:
        super().__init__()
        if out_channels > in_channels:
            raise ValueError(f"a BigGAN-deep G block keeps or drops channels, got {in_channels} -> {out_channels}")
        hidden = in_channels // DEEP_CHANNEL_RATIO
        self.out_channels = out_channels
        self.upsample = upsample
        self.conv1 = conv2d(in_channels, hidden, 1, sn=sn)
        self.conv2 = conv2d(hidden, hidden, 3, sn=sn)
        self.conv3 = conv2d(hidden, hidden, 3, sn=sn)
        self.conv4 = conv2d(hidden, out_channels, 1, sn=sn)
        self.bn1, self.bn2, self.bn3, self.bn4 = (
            ConditionalBatchNorm2d(width, condition, from_labels=False, sn=sn, eps=bn_eps)
            for width in (in_channels, hidden, hidden, hidden))

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        h = F.relu(self.bn2(self.conv1(F.relu(self.bn1(x, condition))), condition))
        x = x[:, :self.out_channels]
        if self.upsample:
            h, x = upsample_conv(self.conv2, h), upsample_nearest_2x(x)
        else:
            h = self.conv2(h)
        h = self.conv3(F.relu(self.bn3(h, condition)))
        return self.conv4(F.relu(self.bn4(h, condition))) + x


class DeepDiscriminatorBlock(nn.Module):
    """BigGAN-deep's bottleneck down-block: ReLU → conv1×1 (to out/4) → ReLU → conv3×3 → ReLU → conv3×3 → ReLU →
    [avg-pool 2×2] → conv1×1 (to out), plus a shortcut: the input [avg-pooled], with a 1×1 conv's output appended
    for the channels it lacks (the input's own channels pass unchanged)."""

    def __init__(self, in_channels: int, out_channels: int, *, downsample: bool, sn: SNSettings | None) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"a BigGAN-deep D block keeps or adds channels, got {in_channels} -> {out_channels}")
        hidden = out_channels // DEEP_CHANNEL_RATIO
        self.downsample = downsample
        self.conv1 = conv2d(in_channels, hidden, 1, sn=sn)
        self.conv2 = conv2d(hidden, hidden, 3, sn=sn)
        self.conv3 = conv2d(hidden, hidden, 3, sn=sn)
        self.conv4 = conv2d(hidden, out_channels, 1, sn=sn)
        self.conv_sc = conv2d(in_channels, out_channels - in_channels, 1, sn=sn) if out_channels > in_channels \
            else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        h = F.relu(self.conv3(F.relu(h)))
        if self.downsample:
            h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
        shortcut = x if self.conv_sc is None else torch.cat([x, self.conv_sc(x)], dim=1)
        return self.conv4(h) + shortcut


def standing_statistics(generator: nn.Module, forward: Callable[[], Tensor], batches: int) -> None:
    """Replace every BN layer's running statistics by the plain average over `batches` fresh batches.

    ``forward`` runs the generator once on fresh inputs. Batch i is weighted 1/(i+1), so the result is the exact
    mean of the per-batch statistics (variance: unbiased per batch), whatever the earlier running values were.
    Only the BN layers run in training mode: spectral-norm vectors and every other buffer stay as they were,
    and the train/eval flags are restored (BigGAN-PyTorch needs its separate myBN for this, and without it
    silently does only a few momentum updates).
    """
    if batches < 1:
        raise ValueError(f"standing statistics need at least 1 batch, got {batches}")
    norms = [m for m in generator.modules() if isinstance(m, _BatchStatistics)]
    if not norms:
        raise ValueError("standing statistics: the network has no batch-norm layers")
    modes = [(m, m.training) for m in generator.modules()]
    try:
        generator.eval()
        for norm in norms:
            norm.training = True  # not .train(): a CBN's own (SN) projections must stay in eval mode
        for index in range(batches):
            for norm in norms:
                norm.momentum = 1.0 / (index + 1)
            forward()
    finally:
        for norm in norms:
            norm.momentum = BN_MOMENTUM
        for module, training in modes:
            module.training = training
