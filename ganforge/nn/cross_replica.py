"""Batch norm over the whole batch of a multi-process run: each rank's sums are all-reduced, so W processes normalise
as one process does on the global batch (BigGAN's cross-replica BN on TPUs; DCGAN's BatchNorm under torchrun)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def cross_replica_batch_norm(x: Tensor, running_mean: Tensor, running_var: Tensor, weight: Tensor | None,
                             bias: Tensor | None, momentum: float, eps: float) -> Tensor:
    """Training-mode batch norm of [N, C, H, W] `x` with statistics summed over every rank (differentiably: each
    rank's gradient sees the others' samples), updating the running statistics as F.batch_norm does (the variance
    as its unbiased estimate)."""
    from torch.distributed.nn.functional import all_reduce  # differentiable: gradients flow to every rank

    channels = x.shape[1]
    local = x.float()
    sums = all_reduce(torch.cat([local.sum((0, 2, 3)), local.square().sum((0, 2, 3)),
                                 local.new_full((1,), local.numel() / channels)]))
    count = sums[-1]
    mean = sums[:channels] / count
    var = (sums[channels:2 * channels] / count - mean.square()).clamp_min(0)
    with torch.no_grad():
        running_mean.lerp_(mean, momentum)
        running_var.lerp_(var * count / (count - 1), momentum)
    out = (local - mean[None, :, None, None]) * torch.rsqrt(var + eps)[None, :, None, None]
    if weight is not None:
        out = out * weight[None, :, None, None] + bias[None, :, None, None]
    return out.to(x.dtype)


class CrossReplicaBatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d (the same parameters, buffers and state-dict keys) whose training statistics span every rank
    when `cross_replica` is set and a process group exists; torch's own batch norm otherwise."""

    cross_replica = False

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.cross_replica and torch.distributed.is_initialized():
            if self.momentum is None:
                raise ValueError("CrossReplicaBatchNorm2d: momentum None (a cumulative average) is not supported")
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
            return cross_replica_batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            self.momentum, self.eps)
        return super().forward(x)


def use_cross_replica_batch_norm(module: nn.Module, enabled: bool = True) -> None:
    """Switch every cross-replica-capable batch norm in `module` on or off (off where one rank runs alone: samples,
    metrics)."""
    for layer in module.modules():
        if hasattr(layer, "cross_replica"):
            layer.cross_replica = enabled
