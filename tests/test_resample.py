"""upsample_nearest_2x against F.interpolate, which it stands in for in every network and the PGAN real-image blend;
the convolutions beside a resampling against the two steps they stand for."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganforge.nn.equalized import EqualizedConv2d
from ganforge.nn.resample import conv_downsample, upsample_conv, upsample_nearest_2x
from ganforge.nn.spectral_norm import SNConv2d


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 16, 8, 8), (1, 1, 1, 1)])
def test_values_gradients_and_layout_equal_torch_interpolate(shape, layout):
    torch.manual_seed(0)
    x = torch.randn(shape).contiguous(memory_format=layout).requires_grad_(True)
    expected = F.interpolate(x, scale_factor=2.0, mode="nearest")
    got = upsample_nearest_2x(x)
    assert torch.equal(got, expected)
    assert got.stride() == expected.stride()  # no layout flip for the next convolution to undo
    upstream = torch.randn_like(expected)
    (grad_expected,) = torch.autograd.grad(expected, x, upstream)
    (grad_got,) = torch.autograd.grad(got, x, upstream)
    assert torch.equal(grad_got, grad_expected)  # torch's own backward: the same sums in the same order


def test_nchw_on_the_cpu_takes_the_broadcast_route():
    """The route this module exists for (torch's kernel is the one that runs for channels_last and off the CPU)."""
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    assert type(upsample_nearest_2x(x).grad_fn).__name__ == "_NearestUpsample2xBackward"
    cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    assert "UpsampleNearest2D" in type(upsample_nearest_2x(cl).grad_fn).__name__


def test_a_gradient_penalty_can_differentiate_through_it():
    """create_graph through the custom backward: gradcheck and gradgradcheck in float64."""
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(upsample_nearest_2x, (x,))
    assert torch.autograd.gradgradcheck(upsample_nearest_2x, (x,))


def test_torch_func_grad_goes_through_it():
    """torch.func.grad (the route by which a gradient penalty can be compiled, benchmarks/README.md) sees torch's
    values."""
    x = torch.randn(2, 3, 4, 4)

    def total(fn):
        return lambda t: (fn(t) ** 2).sum()

    reference = lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest")  # noqa: E731
    torch.testing.assert_close(torch.func.grad(total(upsample_nearest_2x))(x), torch.func.grad(total(reference))(x))


# --- convolutions next to a resampling: one strided convolution where it pays, the same values either way ---

def _two_step_up(conv, x):
    return conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _two_step_down(conv, x):
    return F.avg_pool2d(conv(x), 2)


def _penalty_gradients(fn, conv, x):
    """Gradients of a gradient penalty through fn (double backward), with respect to the input and parameters."""
    x = x.detach().requires_grad_(True)
    (grad_x,) = torch.autograd.grad(fn(conv, x).square().sum(), x, create_graph=True)
    return torch.autograd.grad(grad_x.square().sum(), [x, *conv.parameters()])


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_resampling_convolutions_equal_the_two_steps(direction, kernel, fused, layout):
    """Values, gradients and a penalty's double-backward gradients in float64, on both routes (a 1×1 kernel's fused
    route moves it to the low-resolution side), for a non-square image with an odd side."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, kernel, padding=kernel // 2).double().to(memory_format=layout)
    x = torch.randn(3, 4, 7, 8, dtype=torch.float64).contiguous(memory_format=layout)
    ours, reference = ((lambda c, t: upsample_conv(c, t, fused=fused), _two_step_up) if direction == "up"
                       else (lambda c, t: conv_downsample(c, t, fused=fused), _two_step_down))
    torch.testing.assert_close(ours(conv, x), reference(conv, x), rtol=1e-12, atol=1e-12)
    for got, expected in zip(_penalty_gradients(ours, conv, x), _penalty_gradients(reference, conv, x), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=1e-11)
    if not fused:  # the separate route is the two steps themselves: the references' rounding
        assert torch.equal(ours(conv, x), reference(conv, x))


def _routes(monkeypatch) -> list[str]:
    """Records which convolution each call of the resampling functions ends in."""
    taken = []
    for name in ("conv2d", "conv_transpose2d"):
        original = getattr(F, name)

        def recording(*args, _name=name, _original=original, **kwargs):
            taken.append(f"{_name} stride {kwargs.get('stride', 1)}")
            return _original(*args, **kwargs)

        monkeypatch.setattr(F, name, recording)
    return taken


def test_the_route_follows_the_pixels_of_the_full_resolution_side(monkeypatch):
    """CPU: one strided convolution from batch × height × width = 4,096 of the full-resolution side up; elsewhere
    (here the meta device) and in exported graphs from 128 px a side, StyleGAN's rule."""
    taken = _routes(monkeypatch)
    conv = nn.Conv2d(2, 2, 3, padding=1)
    cases = [
        (conv_downsample, torch.zeros(3, 2, 32, 32), "conv2d stride 1"),  # 3,072 pixels
        (conv_downsample, torch.zeros(4, 2, 32, 32), "conv2d stride 2"),  # 4,096
        (upsample_conv, torch.zeros(4, 2, 15, 16), "conv2d stride 1"),  # 4 × 30 × 32 = 3,840
        (upsample_conv, torch.zeros(4, 2, 16, 16), "conv_transpose2d stride 2"),
        (conv_downsample, torch.zeros(1, 2, 64, 128, device="meta"), "conv2d stride 1"),
        (conv_downsample, torch.zeros(1, 2, 128, 128, device="meta"), "conv2d stride 2"),
        (upsample_conv, torch.zeros(1, 2, 64, 64, device="meta"), "conv_transpose2d stride 2"),
    ]
    for function, x, route in cases:
        taken.clear()
        function(conv.to(x.device), x)
        assert taken == [route], (function.__name__, tuple(x.shape), x.device)
    # an exported graph serves any batch size: its route goes by the image size alone (ONNX export's dynamic batch)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    for x, route in ((torch.zeros(64, 2, 64, 64), "conv2d stride 1"), (torch.zeros(1, 2, 128, 128), "conv2d stride 2")):
        taken.clear()
        conv_downsample(nn.Conv2d(2, 2, 3, padding=1), x)
        assert taken == [route], tuple(x.shape)


@pytest.mark.parametrize("conv", [nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 3, padding=1, stride=2),
                                  nn.Conv2d(2, 2, 3, padding=2, dilation=2), nn.Conv2d(2, 2, (3, 1), padding=(1, 0)),
                                  nn.Conv2d(2, 2, 2, padding=1), nn.Conv2d(2, 2, 3, padding=1, groups=2),
                                  nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect")])
def test_only_same_convolutions_are_taken(conv):
    for function in (upsample_conv, conv_downsample):
        with pytest.raises(ValueError, match="'same' kernel"):
            function(conv, torch.zeros(1, 2, 4, 4))


@pytest.mark.parametrize("layer", ["equalized-paper", "equalized-zoo", "spectral"])
def test_scaled_layers_resample_with_the_weights_they_apply(layer):
    """Equalized learning rate and spectral norm scale their weights at run time: the strided route uses the
    scaled ones, and a spectral layer in training mode advances its power iteration once, as its forward does."""
    torch.manual_seed(0)
    if layer == "spectral":
        conv = SNConv2d(3, 5, 3, padding=1).double().train()
    else:
        conv = EqualizedConv2d(3, 5, 3, padding=1, scale_bias=layer == "equalized-zoo").double()
        nn.init.normal_(conv.bias)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for ours, reference in ((upsample_conv, _two_step_up), (conv_downsample, _two_step_down)):
        twin = copy.deepcopy(conv)
        torch.testing.assert_close(ours(conv, x, fused=True), reference(twin, x), rtol=1e-12, atol=1e-12)
        assert all(torch.equal(a, b) for a, b in zip(conv.buffers(), twin.buffers(), strict=True))


def _pgan(variant):
    from ganforge.models.pgan import PGANArch, PGANDiscriminator, PGANGenerator

    arch = PGANArch(resolution=16, widths=[8, 6, 4], latent_dim=8, variant=variant)
    return [(PGANGenerator(arch), lambda: (torch.randn(4, 8), 2, 0.3)),
            (PGANDiscriminator(arch), lambda: (torch.randn(4, 3, 16, 16), 2, 0.3))]


def _stargan2(w_hpf):
    from ganforge.models.stargan2 import StarGAN2Arch

    # 32 px: one down- and one up-sampling block in G (16 px has none), with and without the high-pass decoder
    arch = StarGAN2Arch(img_size=32, num_domains=2, max_conv_dim=16, w_hpf=w_hpf, base_dim=4, mapping_dim=8)
    return [(arch.generator(), lambda: (torch.randn(2, 3, 32, 32), torch.randn(2, arch.style_dim))),
            (arch.style_encoder(), lambda: (torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))),
            (arch.discriminator(), lambda: (torch.randn(2, 3, 32, 32), torch.tensor([1, 0])))]


def _biggan(deep):
    from ganforge.models.biggan import BigGANArch, Discriminator, Generator

    arch = BigGANArch(resolution=32, n_classes=3, g_ch=8, d_ch=8, dim_z=12, shared_dim=8, g_attention=(),
                      d_attention=(), deep=deep)
    return [(Generator(arch), lambda: (torch.randn(2, arch.dim_z), torch.tensor([0, 2]))),
            (Discriminator(arch), lambda: (torch.randn(2, 3, 32, 32), torch.tensor([1, 2])))]


@pytest.mark.parametrize("family", ["pgan-paper", "pgan-zoo", "stargan2", "stargan2-hpf", "biggan", "biggan-deep"])
def test_every_network_computes_the_same_on_either_route(family, monkeypatch):
    """The networks' resampling convolutions, forced onto each route, give the same outputs and parameter gradients
    (float64): the separate route is the one the official checkpoints and codes are checked against."""
    from ganforge.nn import resample

    builders = {"pgan-paper": lambda: _pgan("paper"), "pgan-zoo": lambda: _pgan("zoo"),
                "stargan2": lambda: _stargan2(0.0), "stargan2-hpf": lambda: _stargan2(1.0),
                "biggan": lambda: _biggan(False), "biggan-deep": lambda: _biggan(True)}
    torch.manual_seed(0)
    for net, make_inputs in builders[family]():
        net = net.double().train()
        inputs = [t.double() if torch.is_tensor(t) and t.is_floating_point() else t for t in make_inputs()]
        results = []
        for fused in (False, True):
            monkeypatch.setattr(resample, "FUSED_MIN_BATCH_PIXELS_CPU", 0 if fused else 2**62)
            twin = copy.deepcopy(net)
            out = twin(*inputs)
            results.append([out, *torch.autograd.grad(out.square().sum(), list(twin.parameters()), allow_unused=True)])
        for separate, fused in zip(*results, strict=True):
            if separate is None:
                assert fused is None
            else:
                torch.testing.assert_close(fused, separate, rtol=1e-10, atol=1e-12)


def test_a_layer_with_forward_hooks_keeps_its_forward(monkeypatch):
    """A route around `conv.forward` would skip hooks (torch's own spectral norm is a pre-hook): such a layer takes the
    two steps, whatever its size, and its hooks run."""
    taken = _routes(monkeypatch)
    conv = nn.Conv2d(2, 2, 3, padding=1)
    seen = []
    conv.register_forward_pre_hook(lambda module, inputs: seen.append(tuple(inputs[0].shape)))
    conv_downsample(conv, torch.zeros(8, 2, 32, 32), fused=True)
    upsample_conv(conv, torch.zeros(8, 2, 16, 16))
    assert taken == ["conv2d stride 1"] * 2 and seen == [(8, 2, 32, 32)] * 2
