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
    optimizer = torch.optim.SGD([p], lr=1.0)

    def update(grad: list[float]) -> bool:
        p.grad = torch.tensor(grad)
        found_inf = scale.unscale([p])
        stepped = scale.step(optimizer, found_inf)
        scale.update(found_inf)
        return stepped

    assert update([8.0, 16.0, -8.0]) is True
    assert torch.equal(p.detach(), torch.tensor([-1.0, -2.0, 1.0])) and scale.value == 8.0
    assert update([8.0, float("inf"), 0.0]) is False
    assert torch.equal(p.detach(), torch.tensor([-1.0, -2.0, 1.0]))  # skipped: the weights did not move
    assert scale.value == 4.0 and scale.state_dict()["skipped"] == 1
    for _ in range(2):
        assert update([1.0, 1.0, 1.0])
    assert scale.value == 8.0  # grown after 2 good steps
    restored = DynamicLossScale()
    restored.load_state_dict(json.loads(json.dumps(scale.state_dict())))
    assert restored.state_dict() == scale.state_dict() == {"value": 8.0, "good_steps": 0, "skipped": 1}


def test_an_optimiser_that_takes_the_overflow_flag_skips_without_a_host_read(monkeypatch):
    """Fused Adam's contract (as torch's GradScaler drives it): found_inf set on the optimiser, no `.item()`."""
    scale = DynamicLossScale(initial=4.0)
    p = torch.nn.Parameter(torch.zeros(2))
    seen = []

    class FlagTakingSGD(torch.optim.SGD):
        _step_supports_amp_scaling = True

        def step(self, closure=None):
            seen.append((self.grad_scale, self.found_inf.clone()))

    p.grad = torch.tensor([4.0, float("nan")])
    found_inf = scale.unscale([p])
    monkeypatch.setattr(torch.Tensor, "item", lambda self: pytest.fail("host read"))
    assert scale.step(FlagTakingSGD([p], lr=1.0), found_inf) is True
    scale.update(found_inf)
    monkeypatch.undo()
    assert seen == [(None, torch.tensor(1.0))] and scale.value == 2.0


def test_old_checkpoints_count_of_good_steps_reads_as_the_growth_tracker():
    scale = DynamicLossScale(growth_interval=2000)
    scale.load_state_dict({"value": 1024.0, "good_steps": 4500, "skipped": 3})
    assert scale.state_dict() == {"value": 1024.0, "good_steps": 500, "skipped": 3}


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


def test_a_skipped_fp16_update_still_ends_its_phase(tmp_path, monkeypatch):
    """The official StarGAN v2 decays λ_ds every iteration: an update skipped for overflow still counts. Fused Adam
    skips on the device and always went on to the phase's end; an optimiser without a fused kernel (here Adam made
    unfused) skips on the host and did not. Every update overflows here; λ_ds decays all the same."""
    from stargan2_tiny_run import train_tiny_run

    import ganforge.nn.optim
    from ganforge.training.loss_scale import DynamicLossScale

    monkeypatch.setattr(ganforge.nn.optim, "fused_devices", lambda: set())

    unscale = DynamicLossScale.unscale
    monkeypatch.setattr(DynamicLossScale, "unscale",
                        lambda self, params: torch.ones_like(unscale(self, params)))
    run, _ = train_tiny_run(tmp_path, steps=3, amp="fp16", log_every=1)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [row["lambda_ds"] for row in rows] == pytest.approx([1.0, 0.998, 0.996], rel=0, abs=1e-6)  # 1 / ds_iter 500
