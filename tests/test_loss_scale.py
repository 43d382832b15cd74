"""fp16 training: dynamic loss scaling skips overflowing updates, and a float16 autocast run trains and resumes."""

import copy
import json

import pytest
import safetensors.torch
import torch
from pgan_tiny import TINY_PGAN

import ganforge
from ganforge.training.loss_scale import DynamicLossScale


def test_overflow_skips_and_backs_off_growth_after_interval():
    scale = DynamicLossScale(initial=8.0, growth_interval=2)
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([8.0, 16.0, -8.0])
    assert scale.unscale([p]) is True
    assert torch.equal(p.grad, torch.tensor([1.0, 2.0, -1.0])) and scale.value == 8.0
    p.grad = torch.tensor([8.0, float("inf"), 0.0])
    assert scale.unscale([p]) is False and scale.value == 4.0 and scale.skipped == 1
    for _ in range(2):
        p.grad = torch.ones(3)
        assert scale.unscale([p])
    assert scale.value == 8.0  # grown after 2 good steps
    restored = DynamicLossScale()
    restored.load_state_dict(json.loads(json.dumps(scale.state_dict())))
    assert restored.state_dict() == scale.state_dict()


@pytest.mark.slow
def test_fp16_autocast_run_trains_checkpoints_its_scale_and_resumes_exactly(tmp_path):
    config = copy.deepcopy(TINY_PGAN)
    config["amp"] = "fp16"
    ganforge.train(config, tmp_path / "straight")
    ganforge.train(config, tmp_path / "pieces", until=9)
    ganforge.train(config, tmp_path / "pieces")
    meta = json.loads((tmp_path / "straight" / "checkpoints" / "00000020.json").read_text())
    assert meta["loss_scale"]["value"] > 0
    a = safetensors.torch.load_file(str(tmp_path / "straight" / "checkpoints" / "00000020.safetensors"))
    b = safetensors.torch.load_file(str(tmp_path / "pieces" / "checkpoints" / "00000020.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.isfinite(v).all() for k, v in a.items() if v.dtype.is_floating_point)
