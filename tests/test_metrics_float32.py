"""Metrics run with full float32 matmuls whichever precision API the caller used, which gets its setting back."""

import subprocess
import sys

import pytest
from reliability_runs import child_env

# each case in a child process: torch's precision settings are process-wide, and once its per-backend API is
# written it refuses the global query for the rest of the process
CASES = {
    # the engine on CUDA (legacy flag), then an error inside the block
    "legacy": """
torch.backends.cuda.matmul.allow_tf32 = True
try:
    with reference_float32():
        inside()
        raise KeyError("inside")
except KeyError:
    pass
assert torch.get_float32_matmul_precision() == "high" and torch.backends.cuda.matmul.allow_tf32 is True
""",
    # Lightning's advice: bf16 matmuls in oneDNN on the CPU
    "medium": """
torch.set_float32_matmul_precision("medium")
with reference_float32():
    inside()
assert torch.get_float32_matmul_precision() == "medium"
assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
""",
    "per-backend": """
torch.backends.cuda.matmul.fp32_precision = "tf32"
with reference_float32():
    inside()
assert torch.backends.cuda.matmul.fp32_precision == "tf32"
""",
}
PRELUDE = """
import torch
from ganforge.metrics.float32 import reference_float32
def inside():
    assert torch.backends.cuda.matmul.fp32_precision == "ieee", torch.backends.cuda.matmul.fp32_precision
    assert torch.backends.mkldnn.matmul.fp32_precision == "ieee", torch.backends.mkldnn.matmul.fp32_precision
"""


@pytest.mark.parametrize("case", CASES)
def test_full_float32_inside_and_the_callers_setting_after(case):
    done = subprocess.run([sys.executable, "-c", PRELUDE + CASES[case] + 'print("restored")'], env=child_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "restored", done.stderr[-2000:]
