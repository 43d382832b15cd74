"""Two CPU processes under torchrun (gloo) train the same run as one process with the same global batch."""

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import yaml
from pgan_tiny import TINY_PGAN


def pgan_for_two_processes() -> dict[str, Any]:
    """TINY_PGAN with a global batch of 8 (4 per rank, one mbstd group each) and an update ∝ gradient."""
    config = copy.deepcopy(TINY_PGAN)
    config["model"]["schedule"] = {"max_iter_at_scale": [2, 4, 4], "alpha_jumps": 2, "alpha_jump_size": 1,
                                   "batch_size": 8}
    # Adam with a large eps updates ∝ gradient: with the default 1e-8, gradients near zero become ±lr steps whose
    # sign float summation order decides, which hides a real mismatch behind noise
    config["model"].update(adam_eps=1.0, lr=0.1)
    config.update(sample_every=100, checkpoint_every=100, log_every=2)
    return config


def train_one_and_two_processes(config: dict[str, Any], tmp_path: Path, until: int) -> tuple[Path, Path]:
    """Train `config` to step `until` in one process and in two (torchrun, gloo); returns the two run directories
    after checking that both finished and that the weights of their checkpoints at `until` agree."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "ganforge.cli", "train", config["family"], "-c", str(path),
                             "--run", str(tmp_path / "single"), "--until", str(until)],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "ganforge.cli", "train", config["family"], "-c", str(path), "--run-dir",
                          str(tmp_path / "ddp"), "--until", str(until)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # rank 0 wrote the run; the sync check at the checkpoint passed on every rank
    assert ddp.stdout.count(f"stopped at step {until} (--until)") == 2
    name = f"{until:08d}.safetensors"
    a = safetensors.torch.load_file(str(tmp_path / "single" / "checkpoints" / name))
    b = safetensors.torch.load_file(str(tmp_path / "ddp" / "checkpoints" / name))
    for key in a:
        if key.startswith("net/"):
            torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4, msg=key)
    return tmp_path / "single", tmp_path / "ddp"


@pytest.mark.slow
def test_two_process_gloo_run_matches_single_process_run(tmp_path):
    # four steps cover scale 0 and the start of the 8x8 fade; longer GAN runs amplify float summation-order noise
    # beyond any fixed tolerance
    _, ddp = train_one_and_two_processes(pgan_for_two_processes(), tmp_path, until=4)
    logs = (ddp / "log.jsonl").read_text().splitlines()
    assert len(logs) == 2  # only rank 0 logs (steps 2 and 4)
