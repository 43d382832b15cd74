"""Feature networks run in the precision the reference tools ran them in, whatever training chose.

pytorch-fid, torch-fidelity, clean-fid, dgm-eval and the official evaluation scripts run under PyTorch's defaults:
float32 matmuls in full float32 (cuDNN convolutions allowed TF32, PyTorch's default, which the engine keeps). The
training engine allows TF32 matmuls on CUDA for speed, and training-time metrics run in its process, on its GPU:
without this, DINOv2 (all matmuls) and Inception's logits would be computed from 10-bit mantissas there, and the same
checkpoint would score differently in training and in `ganforge evaluate`. A caller's reduced CPU matmul precision
(`set_float32_matmul_precision("medium")`: bf16 in oneDNN) is lifted the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def reference_float32() -> Iterator[None]:
    """Full float32 matmuls inside the block (usable as a decorator), the caller's setting restored after, through
    the API the caller used: torch's `set_float32_matmul_precision` (which the legacy `allow_tf32` flags map onto),
    or, once a backend's own `fp32_precision` was written (torch then refuses the global query), those settings."""
    try:
        saved = torch.get_float32_matmul_precision()
    except RuntimeError:  # per-backend settings in use
        backends = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)
        saved_backends = [backend.fp32_precision for backend in backends]
        for backend in backends:
            backend.fp32_precision = "ieee"
        try:
            yield
        finally:
            for backend, precision in zip(backends, saved_backends, strict=True):
                backend.fp32_precision = precision
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved)


@contextlib.contextmanager
def no_tf32_convolutions() -> Iterator[None]:
    """cuDNN convolutions in full float32 inside the block (PyTorch's default lets them use TF32), the caller's
    setting restored after, through the API the caller used: the legacy `cudnn.allow_tf32` flag (which the engine
    sets), or, where torch refuses to read it because a per-backend precision was written, `cudnn.conv`'s. For
    measurements finer than TF32's rounding (the perceptual path length's steps of 1e-4)."""
    try:
        saved = torch.backends.cudnn.allow_tf32
    except RuntimeError:  # per-backend settings in use
        conv = torch.backends.cudnn.conv
        saved_precision = conv.fp32_precision
        conv.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision = saved_precision
        return
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved
