"""Metrics run in PyTorch's default float32 (no TF32 matmuls) whichever TF32 API the caller used."""

import subprocess
import sys

import pytest
import torch
from reliability_runs import child_env

from ganforge.metrics.float32 import reference_float32


def test_the_legacy_flags_are_switched_inside_and_restored_after_an_error():
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = matmul.allow_tf32, cudnn.allow_tf32
    matmul.allow_tf32, cudnn.allow_tf32 = True, False  # as a caller might have them
    try:
        with pytest.raises(KeyError), reference_float32():
            assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, True)  # PyTorch's defaults
            raise KeyError("inside")
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (True, False)
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


# torch refuses to read the legacy flags once the newer API was written, for the rest of the process: in a child
NEWER_API = """
import torch
from ganforge.metrics.float32 import reference_float32
matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
matmul.fp32_precision, conv.fp32_precision = "tf32", "ieee"
with reference_float32():
    assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "tf32")
assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "ieee")
print("restored")
"""


def test_a_caller_of_torchs_newer_fp32_precision_api_is_served_through_it():
    done = subprocess.run([sys.executable, "-c", NEWER_API], env=child_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "restored", done.stderr[-2000:]
