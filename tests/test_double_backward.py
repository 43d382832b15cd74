"""ganforge.nn.double_backward: the penalty route of convolutions gives autograd's derivatives, first order bit for
bit, second order to float64 rounding, and skips the gradients a penalty's ∇ₓ does not ask for."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reliability_runs import tiny_run
from torch import nn

from ganforge.families import resolve_run_config
from ganforge.losses import gradient_penalty, r1_penalty
from ganforge.models.dcgan import DCGANCritic
from ganforge.models.pgan import PGANArch, PGANDiscriminator
from ganforge.models.stargan2 import Discriminator as StarGAN2Discriminator
from ganforge.nn import double_backward
from ganforge.nn.double_backward import (
    MIN_MULTIPLY_ADDS,
    PenalisedConvolutions,
    conv2d,
    multiply_adds,
    penalised_convolutions,
)
from ganforge.training.engine import Trainer

# (in, out, kernel, stride, padding, dilation, groups, bias)
CONVS = [(3, 4, 3, 1, 1, 1, 1, True), (4, 6, 4, 2, 1, 1, 1, False), (4, 4, 3, 1, (2, 1), 2, 2, True),
         (6, 3, 1, 1, 0, 1, 1, True), (4, 4, (3, 1), (2, 1), (1, 0), 1, 4, False)]


def _penalty_grads(layer: nn.Module, x: torch.Tensor, routed: bool) -> tuple[torch.Tensor, ...]:
    """The output, ∇ₓ, and the gradients of a penalty-like loss (f(∇ₓ) plus the output) for input and parameters."""
    x = x.clone().requires_grad_(True)
    layer.zero_grad()
    with PenalisedConvolutions(0) if routed else torch.enable_grad():
        out = layer(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    loss = grad.square().sum() + (grad * x).sum() + out.sum()
    (x_grad,) = torch.autograd.grad(loss, x, retain_graph=True)
    loss.backward()
    return out.detach(), grad.detach(), x_grad, *[p.grad for p in layer.parameters()]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("spec", CONVS)
def test_convolution_derivatives_equal_autograds(spec: tuple, layout: torch.memory_format) -> None:
    torch.manual_seed(0)
    cin, cout, kernel, stride, padding, dilation, groups, bias = spec
    conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, groups, bias).double().to(memory_format=layout)
    layer = nn.Sequential(conv, nn.Softplus())  # curved, so the second derivative reaches every term
    x = torch.randn(3, cin, 9, 8, dtype=torch.float64).contiguous(memory_format=layout)
    native, routed = _penalty_grads(layer, x, False), _penalty_grads(layer, x, True)
    assert torch.equal(native[0], routed[0]) and torch.equal(native[1], routed[1])  # the same aten calls
    for a, b in zip(native[2:], routed[2:], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_first_order_backward_is_autograds_bit_for_bit() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 7, dtype=torch.float32, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    grads = []
    for fn in (F.conv2d, conv2d):
        out = F.leaky_relu(fn(x, w, b, 1, 1), 0.2)
        grads.append(torch.autograd.grad(out.square().sum(), (x, w, b)))
    for a, b_ in zip(*grads, strict=True):
        assert torch.equal(a, b_)


def test_second_derivatives_by_finite_differences() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w, b: conv2d(x, w, b, 2, 1), (x, w, b))


def test_penalty_gradient_leaves_weight_gradients_uncomputed(monkeypatch: pytest.MonkeyPatch) -> None:
    """∇ₓ with create_graph (the penalty) asks for no weight gradient; a full create_graph backward does."""
    masks: list[list[bool]] = []
    original = double_backward._convolution_backward

    def recording(grad, x, weight, params, mask, bias=False):  # noqa: ANN001, ANN202
        masks.append(list(mask))
        return original(grad, x, weight, params, mask, bias)

    monkeypatch.setattr(double_backward, "_convolution_backward", recording)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    with PenalisedConvolutions(0):
        out = conv(x)
    torch.autograd.grad(out.square().sum(), x, create_graph=True)
    assert masks == [[True, False, False]]
    masks.clear()
    weight_grad, bias_grad = torch.autograd.grad(out.square().sum(), (conv.weight, conv.bias), create_graph=True)
    assert masks == [[False, True, False]] and weight_grad.requires_grad and bias_grad.requires_grad
    masks.clear()
    with warnings.catch_warnings():  # torch's note on the reference cycle, broken below
        warnings.simplefilter("ignore")
        out.square().sum().backward(create_graph=True)
    assert masks == [[True, False, False], [False, True, False]]
    assert conv.weight.grad.requires_grad and conv.bias.grad.requires_grad
    conv.zero_grad(set_to_none=True)


def test_multiply_adds_by_hand() -> None:
    assert multiply_adds((16, 64, 32, 32), torch.empty(64, 64, 3, 3)) == 16 * 32 * 32 * 64 * 64 * 9
    assert multiply_adds((16, 64, 32, 31), torch.empty(32, 64, 4, 4), (2, 1)) == 16 * 16 * 31 * 32 * 64 * 16
    assert multiply_adds((4, 8, 9, 9), torch.empty(8, 2, 3, 3), 2) == 4 * 5 * 5 * 8 * 2 * 9  # groups: 4


def test_route_taken_by_size_inside_the_mode_only() -> None:
    """The PGAN zoo D's 32 px convolutions at widths / 8 and batch 16 take the route, its 4 px ones not."""
    conv = nn.Conv2d(64, 64, 3, padding=1)
    large, small = torch.randn(16, 64, 32, 32), torch.randn(16, 64, 4, 4)
    assert multiply_adds(small.shape, conv.weight) < MIN_MULTIPLY_ADDS <= multiply_adds(large.shape, conv.weight)
    with PenalisedConvolutions():
        assert type(conv(large).grad_fn).__name__ == "_Conv2dBackward"
        assert type(conv(small).grad_fn).__name__ == "ConvolutionBackward0"
        assert type(F.conv2d(input=large, weight=conv.weight).grad_fn).__name__ == "_Conv2dBackward"
        with torch.no_grad():
            assert conv(large).grad_fn is None
    assert type(conv(large).grad_fn).__name__ == "ConvolutionBackward0"


def _discriminators() -> dict[str, tuple[nn.Module, torch.Tensor, dict]]:
    torch.manual_seed(0)
    pgan = PGANDiscriminator(PGANArch(resolution=16, widths=[8, 8, 8], latent_dim=8, variant="zoo"))
    paper = PGANDiscriminator(PGANArch(resolution=16, widths=[8, 8, 8], latent_dim=8))
    stargan = StarGAN2Discriminator(img_size=16, num_domains=2, max_conv_dim=16, base_dim=8)
    critic = DCGANCritic(features=4, resolution=16, norm="instance")
    return {"pgan-zoo": (pgan, torch.randn(16, 3, 16, 16), {"scale": 2}),
            "pgan-paper": (paper, torch.randn(16, 3, 16, 16), {"scale": 2, "alpha": 0.5}),
            "stargan2": (stargan, torch.randn(16, 3, 16, 16), {"domain": torch.arange(16) % 2}),
            "wgan-gp critic": (critic, torch.randn(16, 3, 16, 16), {})}


@pytest.mark.parametrize("name", list(_discriminators()))
def test_discriminator_penalties_equal_autograds(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each family's D under a penalty (R1 for StarGAN v2's, WGAN-GP for the rest), every convolution on the route
    and on autograd's double backward: the same weight gradients."""
    net, x, kwargs = _discriminators()[name]
    net = net.double()
    x = x.double()
    mix = torch.rand(16, 1, 1, 1, dtype=torch.float64)
    results, routed_calls = [], []
    monkeypatch.setattr(double_backward, "conv2d", lambda *a, **k: routed_calls.append(a[0].shape) or conv2d(*a, **k))
    for routed in (False, True):
        monkeypatch.setattr(double_backward, "MIN_MULTIPLY_ADDS", 0 if routed else 10**15)
        net.zero_grad()
        if name == "stargan2":
            real = x.clone().requires_grad_(True)
            with penalised_convolutions(real.device):
                penalty = r1_penalty(net(real, **kwargs), real)
        else:  # gradient_penalty enters the mode itself
            penalty = gradient_penalty(lambda images: net(images, **kwargs), x, x.flip(0), mix)
        penalty.backward()
        results.append([p.grad for p in net.parameters() if p.grad is not None])
        assert bool(routed_calls) == routed
    assert len(results[0]) > 2
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("family, model", [("pgan", {}), ("pgan", {"variant": "zoo"}),
                                           ("pgan", {"loss": "logistic-r1"}),
                                           ("pgan", {"loss": "logistic-r1", "r1_interval": 2}),
                                           ("wgan-gp", {}), ("stargan2", {})])
def test_families_route_their_penalised_calls(family: str, model: dict, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Every family's penalty (WGAN-GP's interpolates, R1's reals, lazy R1 too) differentiates its D call inside
    the mode: with the threshold at 0 a training step routes convolutions of D's input size."""
    config = tiny_run(family)
    config["model"].update(model)
    trainer = Trainer(resolve_run_config(None, config), tmp_path / "run")
    routed: list[torch.Size] = []
    monkeypatch.setattr(double_backward, "conv2d", lambda *a, **k: routed.append(a[0].shape) or conv2d(*a, **k))
    monkeypatch.setattr(double_backward, "MIN_MULTIPLY_ADDS", 0)
    plan = trainer.family.plan(trainer.step)
    trainer.train_step(plan)
    assert routed and all(shape[0] == config["model"].get("batch_size", 4) for shape in routed)
    assert max(shape[-1] for shape in routed) == (plan.resolution if family == "pgan" else 32)  # D's input size


def test_penalised_convolutions_where_measured_only() -> None:
    assert isinstance(penalised_convolutions(torch.device("cpu")), PenalisedConvolutions)
    assert isinstance(penalised_convolutions(torch.device("cuda")), contextlib.nullcontext)


def test_mode_keeps_frozen_weights_and_other_argument_forms() -> None:
    """A weight that does not train has no weight gradient to speed up (a frozen D, augmentation filters); strides
    and paddings as F.conv2d takes them all work; string paddings keep F.conv2d."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3)
    with PenalisedConvolutions(0):
        assert type(F.conv2d(x, weight, padding=1).grad_fn).__name__ == "ConvolutionBackward0"
        weight.requires_grad_(True)
        for stride, padding in [((2,), [1]), (np.int64(2), (np.int64(1), 0)), (2, (1, 1))]:
            out = F.conv2d(x, weight, None, stride, padding)
            assert type(out.grad_fn).__name__ == "_Conv2dBackward"
            assert torch.equal(out, F.conv2d(x.detach(), weight.detach(), None, stride, padding))
        assert type(F.conv2d(x, weight, padding="same").grad_fn).__name__ == "ConvolutionBackward0"


def test_route_under_autocast_casts_as_autocast_does() -> None:
    """amp: bf16 runs penalties under autocast: the route convolves in bf16 as autocast's own conv2d, and its backward
    (outside autocast) gets the dtypes it saved. Its second-order weight gradient is held to float32's within
    bf16's rounding; torch's own (oneDNN's bf16 kernels on a CPU with AMX) was found 50% off, so it is no oracle."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(4, 8, 16, 16)
    results = []
    for mode in ("float32", "autocast", "routed"):
        conv.zero_grad()
        images = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "float32"):
            with PenalisedConvolutions(0 if mode == "routed" else 10**15):
                out = conv(images)
            (grad,) = torch.autograd.grad(out.float().square().sum(), images, create_graph=True)
        grad.square().sum().backward()
        assert out.dtype == (torch.float32 if mode == "float32" else torch.bfloat16)
        assert conv.weight.grad.dtype == torch.float32
        assert type(out.grad_fn).__name__ == ("_Conv2dBackward" if mode == "routed" else "ConvolutionBackward0")
        results.append((out, grad, conv.weight.grad.clone(), conv.bias.grad.clone()))
    exact, autocast, routed = results
    assert torch.equal(autocast[0], routed[0]) and torch.equal(autocast[1], routed[1])
    for ours, truth in zip(routed[2:], exact[2:], strict=True):
        assert (ours - truth).abs().max() <= 2e-2 * truth.abs().max()


def test_route_under_autocast_leaves_float64_alone() -> None:
    conv = nn.Conv2d(2, 2, 3, padding=1).double()
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16), PenalisedConvolutions(0):
        out = conv(x)
    assert type(out.grad_fn).__name__ == "_Conv2dBackward" and out.dtype == torch.float64
    assert torch.equal(out, conv(x))
