"""Feature networks run in the precision the reference tools ran them in, whatever training chose.

pytorch-fid, torch-fidelity, clean-fid, dgm-eval and the official evaluation scripts run under PyTorch's defaults:
float32 matmuls in full float32, cuDNN convolutions allowed TF32. The training engine allows TF32 matmuls on CUDA for
speed, and training-time metrics run in its process: without this, DINOv2 (all matmuls) and Inception's logits would
be computed from 10-bit mantissas there, and the same checkpoint would score differently in training and in
`ganforge evaluate`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def reference_float32() -> Iterator[None]:
    """PyTorch's default float32 settings inside the block (usable as a decorator), the caller's restored after.
    Set through the API the caller used: torch refuses to read its legacy `allow_tf32` flags once its newer
    `fp32_precision` settings were written."""
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn
    try:
        saved = matmul.allow_tf32, conv.allow_tf32
    except RuntimeError:  # the newer API is in use
        saved_precision = matmul.fp32_precision, conv.conv.fp32_precision
        matmul.fp32_precision, conv.conv.fp32_precision = "ieee", "tf32"
        try:
            yield
        finally:
            matmul.fp32_precision, conv.conv.fp32_precision = saved_precision
        return
    matmul.allow_tf32, conv.allow_tf32 = False, True
    try:
        yield
    finally:
        matmul.allow_tf32, conv.allow_tf32 = saved
