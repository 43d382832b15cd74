"""Batch norm over the whole batch of a multi-process run: each rank's sums are all-reduced, so W processes normalise
as one process does on the global batch (BigGAN's cross-replica BN on TPUs; DCGAN's BatchNorm under torchrun)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn


def across_ranks(layer: nn.Module) -> bool:
    """Whether a cross-replica-capable layer normalises over all ranks now: switched on, and a process group up."""
    return bool(getattr(layer, "cross_replica", False)) and torch.distributed.is_initialized()


class _SummedOverRanks(torch.autograd.Function):
    """A differentiable all-reduce (sum): each rank's gradient is the sum of every rank's, since each rank's input
    reaches every rank's output. torch.distributed.nn.functional.all_reduce does the same but is deprecated."""

    @staticmethod
    def forward(ctx: object, tensor: Tensor) -> Tensor:
        summed = tensor.clone(memory_format=torch.contiguous_format)
        torch.distributed.all_reduce(summed)
        return summed

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return _SummedOverRanks.apply(grad)


@torch.compiler.disable
def summed_over_ranks(tensor: Tensor) -> Tensor:
    """`tensor` summed over every rank, differentiably. Kept out of torch.compile's graphs (a graph break, the
    collective runs eagerly): traced by dynamo (torch 2.13), its gradient came out wrong."""
    return _SummedOverRanks.apply(tensor)


def cross_replica_batch_norm(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                             weight: Tensor | None, bias: Tensor | None, momentum: float, eps: float) -> Tensor:
    """Training-mode batch norm of [N, C, H, W] `x` with statistics summed over every rank (differentiably: each
    rank's gradient sees the others' samples), updating the running statistics, where given, as F.batch_norm does
    (the variance as its unbiased estimate). One all-reduce of the sums and squared sums, as BigGAN's cross-replica BN
    takes them; they are taken around the running mean (the same on every rank), which keeps E[x²] − mean² precise
    for activations far from zero once the running mean has found their level."""
    channels = x.shape[1]
    shift = (running_mean.detach().clone() if running_mean is not None else x.new_zeros(channels)).float()[
        None, :, None, None]  # a copy: the running mean is updated in place below
    centred = x.float() - shift
    sums = summed_over_ranks(torch.cat([centred.sum((0, 2, 3)), centred.square().sum((0, 2, 3)),
                                 centred.new_full((1,), centred.numel() / channels)]))
    count = sums[-1]
    mean_centred = sums[:channels] / count
    var = (sums[channels:2 * channels] / count - mean_centred.square()).clamp_min(0)
    mean = mean_centred + shift.view(-1)
    if running_mean is not None:
        with torch.no_grad():
            running_mean.lerp_(mean.to(running_mean.dtype), momentum)  # the statistics are float32 (a float64 or
            running_var.lerp_((var * count / (count - 1)).to(running_var.dtype), momentum)  # bf16 net's buffers)
    out = (centred - mean_centred[None, :, None, None]) * torch.rsqrt(var + eps)[None, :, None, None]
    if weight is not None:
        out = out * weight[None, :, None, None] + bias[None, :, None, None]
    return out.to(x.dtype)


class CrossReplicaBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d (the same parameters, buffers and state-dict keys) whose training statistics span every rank
    when `cross_replica` is set and a process group exists; torch's own batch norm otherwise."""

    cross_replica = False

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and across_ranks(self)):
            return super().forward(x)
        self._check_input_dim(x)
        if self.momentum is None:
            raise ValueError("CrossReplicaBatchNorm2d: momentum None (a cumulative average) is not supported")
        if x.numel() // x.shape[1] < 2 and torch.distributed.get_world_size() < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {tuple(x.shape)}")
        tracking = self.track_running_stats and self.running_mean is not None  # as torch: no buffers, no updates
        if tracking and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        return cross_replica_batch_norm(x, self.running_mean if tracking else None,
                                        self.running_var if tracking else None, self.weight, self.bias,
                                        self.momentum, self.eps)


def use_cross_replica_batch_norm(module: nn.Module, enabled: bool = True) -> None:
    """Switch every cross-replica-capable batch norm in `module` on or off (off where a rank samples on its own:
    sample grids, metric batches)."""
    for layer in module.modules():
        if hasattr(layer, "cross_replica"):
            layer.cross_replica = enabled


@contextlib.contextmanager
def one_rank_batch_norm(module: nn.Module) -> Iterator[None]:
    """Batch norm on this rank's whole batch inside the block: no collective calls (sample grids are rank 0's
    alone, and a metric tick's ranks generate different numbers of batches) and no blocks of it apart (BigGAN's
    `bn_groups` are training's), each layer's settings restored after it."""
    layers = [layer for layer in module.modules() if hasattr(layer, "cross_replica")]
    saved = [(layer.cross_replica, getattr(layer, "bn_groups", None)) for layer in layers]
    try:
        for layer in layers:
            layer.cross_replica = False
            if hasattr(layer, "bn_groups"):
                layer.bn_groups = 1
        yield
    finally:
        for layer, (enabled, groups) in zip(layers, saved, strict=True):
            layer.cross_replica = enabled
            if groups is not None:
                layer.bn_groups = groups
