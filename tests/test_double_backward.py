"""ganforge.nn.double_backward: the penalty route of convolutions gives autograd's derivatives, first order bit for
bit, second order to float64 rounding, and skips the gradients a penalty's ∇ₓ does not ask for."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganforge.losses import gradient_penalty, r1_penalty
from ganforge.models.dcgan import DCGANCritic
from ganforge.models.pgan import PGANArch, PGANDiscriminator
from ganforge.models.stargan2 import Discriminator as StarGAN2Discriminator
from ganforge.nn import double_backward
from ganforge.nn.double_backward import MIN_MULTIPLY_ADDS, conv2d, multiply_adds, penalised_convolutions

# (in, out, kernel, stride, padding, dilation, groups, bias)
CONVS = [(3, 4, 3, 1, 1, 1, 1, True), (4, 6, 4, 2, 1, 1, 1, False), (4, 4, 3, 1, (2, 1), 2, 2, True),
         (6, 3, 1, 1, 0, 1, 1, True), (4, 4, (3, 1), (2, 1), (1, 0), 1, 4, False)]


def _penalty_grads(layer: nn.Module, x: torch.Tensor, routed: bool) -> tuple[torch.Tensor, ...]:
    """The output, ∇ₓ, and the gradients of a penalty-like loss (f(∇ₓ) plus the output) for input and parameters."""
    x = x.clone().requires_grad_(True)
    layer.zero_grad()
    with penalised_convolutions(0) if routed else torch.enable_grad():
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
    with penalised_convolutions(0):
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
    with penalised_convolutions():
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
    """Each family's D under its penalty (WGAN-GP or R1), every convolution on the route and on autograd's double
    backward: the same weight gradients."""
    net, x, kwargs = _discriminators()[name]
    net = net.double()
    x = x.double()
    mix = torch.rand(16, 1, 1, 1, dtype=torch.float64)
    results, routed_calls = [], []
    monkeypatch.setattr(double_backward, "conv2d", lambda *a, **k: routed_calls.append(a[0].shape) or conv2d(*a, **k))
    for routed in (False, True):
        monkeypatch.setattr(double_backward, "MIN_MULTIPLY_ADDS", 0 if routed else 10**15)
        net.zero_grad()
        if name == "stargan2":  # the family enters the mode around D's call on the reals
            real = x.clone().requires_grad_(True)
            with penalised_convolutions():
                penalty = r1_penalty(net(real, **kwargs), real)
        else:  # gradient_penalty enters it itself
            penalty = gradient_penalty(lambda images: net(images, **kwargs), x, x.flip(0), mix)
        penalty.backward()
        results.append([p.grad for p in net.parameters() if p.grad is not None])
        assert bool(routed_calls) == routed
    assert len(results[0]) > 2
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-13)


def test_route_under_autocast_casts_as_autocast_does() -> None:
    """amp: bf16 runs penalties under autocast: the route convolves in bf16 as autocast's own conv2d, and its backward
    (outside autocast) gets the dtypes it saved."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(4, 8, 16, 16)
    results = []
    for routed in (False, True):
        conv.zero_grad()
        images = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with penalised_convolutions(0 if routed else 10**15):
                out = conv(images)
            (grad,) = torch.autograd.grad(out.float().square().sum(), images, create_graph=True)
        grad.square().sum().backward()
        assert out.dtype == torch.bfloat16 and conv.weight.grad.dtype == torch.float32
        assert type(out.grad_fn).__name__ == ("_Conv2dBackward" if routed else "ConvolutionBackward0")
        results.append((out, grad, conv.weight.grad.clone(), conv.bias.grad.clone()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    for a, b in zip(results[0][2:], results[1][2:], strict=True):
        torch.testing.assert_close(b, a, rtol=2e-2, atol=1e-2)
