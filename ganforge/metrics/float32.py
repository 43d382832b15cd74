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
    """PyTorch's default float32 settings inside the block (usable as a decorator), the caller's restored after."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
