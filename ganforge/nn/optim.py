"""Adam built once for every family: the fused CUDA kernel where every parameter allows it.

Fused Adam computes the same update as the default (foreach) implementation in one kernel launch per parameter
group instead of several per tensor; it needs every parameter on CUDA and floating point, so CPU runs keep the
default implementation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def adam(params: Iterable[torch.nn.Parameter], **options: Any) -> torch.optim.Adam:
    """`torch.optim.Adam(params, **options)`, fused when all parameters are CUDA floating-point tensors."""
    params = list(params)
    fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, fused=fused or None, **options)
