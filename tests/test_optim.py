"""The families' Adam: torch's fused kernel on the CPU too, with the default implementation's updates."""

from __future__ import annotations

import pytest
import torch

from ganforge.nn.optim import adam


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_adam_is_fused_and_steps_as_the_default_implementation(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    shapes = [(8, 4, 3, 3), (8,), (1, 16)]
    ours = [torch.nn.Parameter(torch.randn(shape, dtype=dtype)) for shape in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    start = [p.detach().clone() for p in ours]
    options = {"lr": 1e-3, "betas": (0.0, 0.99), "eps": 1e-8, "weight_decay": 1e-4}
    fused, default = adam(ours, **options), torch.optim.Adam(theirs, foreach=False, **options)
    assert fused.defaults["fused"] is True and not default.defaults["fused"]
    for _ in range(5):
        grads = [torch.randn_like(p) for p in ours]
        for params, optimizer in ((ours, fused), (theirs, default)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            optimizer.step()
    moved = max((p - q).abs().max().item() for p, q in zip(ours, [t.detach() for t in theirs], strict=True))
    tolerance = 1e-6 if dtype == torch.float32 else 1e-14
    assert moved < tolerance
    assert min((p - p0).abs().max().item() for p, p0 in zip(ours, start, strict=True)) > 1e-3  # they moved
    for p, q in zip(ours, theirs, strict=True):
        state, reference = fused.state[p], default.state[q]
        assert float(state["step"]) == float(reference["step"]) == 5
        torch.testing.assert_close(state["exp_avg_sq"], reference["exp_avg_sq"], rtol=tolerance, atol=tolerance)


def test_a_parameter_on_another_device_type_keeps_the_default_implementation() -> None:
    assert not adam([torch.nn.Parameter(torch.zeros(3, device="meta"))], lr=1e-3).defaults["fused"]


def _stepped(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter, grad: torch.Tensor) -> None:
    param.grad = grad.contiguous(memory_format=torch.channels_last)
    optimizer.step()


def test_a_checkpointed_fused_adam_resumes_a_channels_last_weight_exactly(tmp_path) -> None:
    """safetensors gives back contiguous moments; the fused kernel walks memory, so a channels_last weight's moments
    must be restored in its layout, or each weight is updated with another one's moments."""
    import safetensors.torch

    from ganforge.training.checkpoint import optimizer_from_tensors, optimizer_to_tensors

    torch.manual_seed(0)
    start = torch.randn(6, 5, 3, 3).contiguous(memory_format=torch.channels_last)
    grads = [torch.randn(6, 5, 3, 3) for _ in range(4)]
    straight = torch.nn.Parameter(start.clone())
    optimizer = adam([straight], lr=1e-2, betas=(0.5, 0.99))
    for grad in grads:
        _stepped(optimizer, straight, grad)

    resumed = torch.nn.Parameter(start.clone())
    first = adam([resumed], lr=1e-2, betas=(0.5, 0.99))
    for grad in grads[:2]:
        _stepped(first, resumed, grad)
    tensors, record = optimizer_to_tensors("D", first)
    record["param_groups"][0]["fused"] = None  # a checkpoint written by an unfused optimiser
    safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "opt.safetensors"))
    second = adam([resumed], lr=1e-2, betas=(0.5, 0.99))
    optimizer_from_tensors("D", second, safetensors.torch.load_file(str(tmp_path / "opt.safetensors")), record)
    assert second.param_groups[0]["fused"] is True  # this process's implementation, not the checkpoint's
    assert second.state[resumed]["exp_avg"].stride() == resumed.stride()
    for grad in grads[2:]:
        _stepped(second, resumed, grad)
    assert torch.equal(resumed, straight)
