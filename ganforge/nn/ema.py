"""Exponential moving average of a module's weights (the generator that samples and metrics use)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ganforge.errors import ConfigError


class EmaPair:
    """An EMA copy and its source network, their tensors listed once: walking both module trees at every step costs
    host time that a GPU step at small resolutions (launch-bound) pays in full. The lists stay valid because
    training updates parameters and buffers in place (optimisers, `load_state_dict`, batch-norm statistics)."""

    def __init__(self, ema: nn.Module, source: nn.Module) -> None:
        self.ema_params = list(ema.parameters())
        self.source_params = list(source.parameters())
        if len(self.ema_params) != len(self.source_params):
            raise ValueError("EMA and source modules have different parameter lists")
        self.buffers = list(zip(ema.buffers(), source.buffers(), strict=True))

    @torch.no_grad()
    def update(self, decay: float) -> None:
        """ema ← decay·ema + (1 − decay)·source for parameters; buffers (BN statistics, SN vectors) are averaged
        too when floating point, copied otherwise."""
        torch._foreach_lerp_(self.ema_params, self.source_params, 1.0 - decay)
        for ema_buf, src_buf in self.buffers:
            if ema_buf.dtype.is_floating_point:
                ema_buf.lerp_(src_buf, 1.0 - decay)
            else:
                ema_buf.copy_(src_buf)


def ramped_ema_decay(decay: float, batch_size: int, images_seen: int, rampup: float | None) -> float:
    """Per-step decay under stylegan2-ada's EMA ramp-up (`ema_rampup`): the averaging half-life, counted in images,
    is that of `decay` at `batch_size`, but at most `rampup` × the images seen so far. Early in a run the EMA then
    follows G instead of averaging in the random initial weights; long runs reach `decay` itself. None: `decay`."""
    if rampup is None:
        return decay
    half_life = batch_size * math.log(0.5) / math.log(decay) if decay > 0 else 0.0
    half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch_size / half_life) if half_life > 0 else 0.0


def check_ema_rampup(rampup: float | None, ema_off: str | None = None, decay: float | None = None) -> None:
    """Refuse a `model.ema_rampup` that is not a positive fraction, or one set where the run keeps no EMA generator
    (`ema_off` says why, naming the key) or where its `decay` is 0 (the copy is G at every step): the warm-up would
    then do nothing."""
    if rampup is None:
        return
    if ema_off is None and decay == 0:
        ema_off = "model.ema_decay is 0 (the EMA copy is G itself at every step)"
    if ema_off is not None:
        raise ConfigError(f"model.ema_rampup: {rampup} is set but {ema_off}, so it would do nothing; remove it")
    if not rampup > 0:
        raise ConfigError(f"model.ema_rampup: expected null (off) or a positive fraction of the images seen, "
                          f"got {rampup}")


@torch.no_grad()
def copy_weights(target: nn.Module, source: nn.Module) -> None:
    """Reset an EMA module to its source (zoo-style EMA restart at growth)."""
    target.load_state_dict(source.state_dict())
