"""Which memory layout a tensor is in, for layers whose fastest route depends on it."""

from __future__ import annotations

from torch import Tensor, channels_last


def is_channels_last(tensor: Tensor) -> bool:
    """Stored NHWC and not also NCHW: tensors with one channel or a 1×1 image are both, and go the NCHW way."""
    return tensor.dim() == 4 and tensor.is_contiguous(memory_format=channels_last) and not tensor.is_contiguous()
