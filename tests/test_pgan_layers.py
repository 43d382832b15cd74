"""Equalized-LR layers, pixel norm and minibatch stddev against hand computations."""

from __future__ import annotations

import contextlib
import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from ganforge.nn.equalized import EqualizedConv2d, EqualizedLinear
from ganforge.nn.norm import PixelNorm, _mean_square_over_channels, minibatch_stddev, pixel_norm


def test_he_constants_follow_gain_over_sqrt_fan_in() -> None:
    assert EqualizedConv2d(3, 16, 3).he_constant == pytest.approx(math.sqrt(2) / math.sqrt(27))
    assert EqualizedConv2d(32, 3, 1, gain=1.0).he_constant == pytest.approx(1 / math.sqrt(32))
    assert EqualizedLinear(512, 8192, gain=math.sqrt(2) / 4).he_constant == pytest.approx(0.015625)
    assert EqualizedLinear(512, 8192).he_constant == pytest.approx(0.0625)
    # zoo fixture meta.json: D's conv over 33 channels has c = 0.08206099398622183
    assert EqualizedConv2d(33, 32, 3, padding=1).he_constant == pytest.approx(0.08206099398622183, abs=1e-15)


def test_init_is_standard_normal_weight_zero_bias_and_seeded() -> None:
    torch.manual_seed(3)
    layer = EqualizedConv2d(64, 64, 3, padding=1)
    torch.manual_seed(3)
    again = EqualizedConv2d(64, 64, 3, padding=1)
    assert torch.equal(layer.weight, again.weight)
    assert torch.equal(layer.bias, torch.zeros(64))
    assert layer.weight.mean().item() == pytest.approx(0.0, abs=0.02)
    assert layer.weight.std().item() == pytest.approx(1.0, abs=0.02)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert EqualizedLinear(4, 2, bias=False).bias is None


@pytest.mark.parametrize(
    ("scale_bias", "expected"), [(False, 4 / math.sqrt(2) + 3), (True, 7 / math.sqrt(2))]
)
def test_conv_bias_convention(scale_bias: bool, expected: float) -> None:
    # 1×1 conv, 4 input channels of ones, weights 1, bias 3, gain √2 → c = √2/2.
    layer = EqualizedConv2d(4, 1, 1, scale_bias=scale_bias)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.fill_(3.0)
    out = layer(torch.ones(1, 4, 2, 2))
    torch.testing.assert_close(out, torch.full((1, 1, 2, 2), expected))


@pytest.mark.parametrize(
    ("scale_bias", "expected"), [(False, 8 / math.sqrt(8) - 1), (True, 7 / math.sqrt(8))]
)
def test_linear_bias_convention(scale_bias: bool, expected: float) -> None:
    layer = EqualizedLinear(8, 2, gain=1.0, scale_bias=scale_bias)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.fill_(-1.0)
    torch.testing.assert_close(layer(torch.ones(3, 8)), torch.full((3, 2), expected))


def test_conv_matches_plain_conv_with_scaled_weight() -> None:
    torch.manual_seed(0)
    layer = EqualizedConv2d(5, 7, 3, padding=1, gain=1.3)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 5, 6, 6)
    c = 1.3 / math.sqrt(45)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight * c, layer.bias, padding=1))
    layer.scale_bias = True
    torch.testing.assert_close(layer(x), c * F.conv2d(x, layer.weight, layer.bias, padding=1))


def test_pixel_norm_on_latents_and_feature_maps() -> None:
    x = torch.tensor([[3.0, 4.0]])
    torch.testing.assert_close(pixel_norm(x), torch.tensor([[3.0, 4.0]]) / math.sqrt(12.5 + 1e-8))
    maps = torch.randn(2, 6, 3, 3) * 5
    out = PixelNorm()(maps)
    torch.testing.assert_close(out.square().mean(dim=1), torch.ones(2, 3, 3))
    # Direction per pixel is kept.
    torch.testing.assert_close(
        out * maps.square().mean(dim=1, keepdim=True).sqrt(), maps, rtol=1e-5, atol=1e-5
    )
    assert pixel_norm(torch.zeros(1, 4)).abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_pixel_norm_keeps_low_precision_activations_and_accumulates_in_float32(dtype) -> None:
    """Under autocast the normalised activations stay bf16/fp16 (CUDA's autocast would hand them on in float32) and
    match the float64 computation to that precision, squares above fp16's range included."""
    maps = (torch.randn(4, 64, 8, 8, generator=torch.Generator().manual_seed(0)) * 300).contiguous(
        memory_format=torch.channels_last)
    low = maps.to(dtype)
    expected = pixel_norm(low.double())
    with torch.autocast("cpu", dtype=dtype):
        out = pixel_norm(low)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), expected, rtol=2 ** -7, atol=2 ** -7)
    low.requires_grad_(True)
    pixel_norm(low).square().sum().backward()
    assert low.grad.dtype == dtype and torch.isfinite(low.grad).all()
    torch.testing.assert_close(pixel_norm(maps), maps * torch.rsqrt(maps.square().mean(1, keepdim=True) + 1e-8),
                               rtol=0, atol=0)  # float32: the paper's formula, bit for bit


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_pixel_norm_keeps_the_layout_and_the_formula_bit_for_bit(memory_format: torch.memory_format) -> None:
    """Forward and gradient in the input's own layout, the mean square's own gradient included (autograd's of a
    channels_last tensor's mean over dim 1 is NCHW, and a mixed-layout sum inside the backward was 1.6x slower), and
    equal bit for bit to autograd of the paper's formula."""
    maps = torch.randn(4, 16, 8, 8, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=memory_format)
    upstream = torch.randn(4, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    got_x, formula_x = maps.clone().requires_grad_(True), maps.clone().requires_grad_(True)
    got = pixel_norm(got_x)
    formula = formula_x * torch.rsqrt(formula_x.square().mean(dim=1, keepdim=True) + 1e-8)
    (got * upstream).sum().backward()
    (formula * upstream).sum().backward()
    assert torch.equal(got, formula) and torch.equal(got_x.grad, formula_x.grad)
    assert got.is_contiguous(memory_format=memory_format) and got_x.grad.is_contiguous(memory_format=memory_format)
    squares_x = maps.clone().requires_grad_(True)
    (squares_grad,) = torch.autograd.grad(_mean_square_over_channels(squares_x), squares_x,
                                          torch.ones(4, 1, 8, 8))
    assert squares_grad.is_contiguous(memory_format=memory_format)


def _stat_channel(x: torch.Tensor, **kwargs: object) -> list[float]:
    out = minibatch_stddev(x, **kwargs)
    assert out.shape == (x.shape[0], x.shape[1] + 1, *x.shape[2:])
    torch.testing.assert_close(out[:, :-1], x)
    channel = out[:, -1]
    # One scalar per sample, broadcast over H×W.
    assert torch.equal(channel, channel[:, :1, :1].expand_as(channel))
    return channel[:, 0, 0].tolist()


def test_mbstd_unbiased_zoo_vs_biased_paper() -> None:
    x = torch.arange(4.0).view(4, 1, 1, 1)
    zoo = _stat_channel(x, mode="zoo")
    paper = _stat_channel(x, mode="paper")
    assert zoo == pytest.approx([math.sqrt(5 / 3 + 1e-8)] * 4)  # 1.291
    assert paper == pytest.approx([math.sqrt(1.25 + 1e-8)] * 4)  # 1.118
    assert zoo[0] == pytest.approx(1.291, abs=5e-4) and paper[0] == pytest.approx(1.118, abs=5e-4)


@pytest.mark.parametrize("mode", ["zoo", "paper"])
def test_mbstd_equals_the_references_var_formula_with_its_derivatives(mode: str) -> None:
    """The written-out variance is torch.var's (the zoo's call; TF's mean of squared deviations), through the
    penalty's double backward too, in either memory layout."""
    def reference(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if mode == "zoo":  # consecutive groups of 4, unbiased
            var = x.reshape(n // 4, 4, c, h, w).var(dim=1, unbiased=True)
            stat = torch.sqrt(var + 1e-8).mean(dim=(1, 2, 3)).repeat_interleave(4)
        else:  # strided groups of 4, biased
            var = x.reshape(4, n // 4, c, h, w).var(dim=0, unbiased=False)
            stat = torch.sqrt(var + 1e-8).mean(dim=(1, 2, 3)).repeat(4)
        return torch.cat([x, stat.view(n, 1, 1, 1).expand(n, 1, h, w)], dim=1)

    torch.manual_seed(0)
    base = torch.randn(8, 5, 4, 4, dtype=torch.float64)
    weights = torch.randn(8, 6, 4, 4, dtype=torch.float64)
    for layout in (torch.contiguous_format, torch.channels_last):
        outputs, first, second = [], [], []
        for fn in (lambda x: minibatch_stddev(x, 4, mode=mode), reference):
            x = base.contiguous(memory_format=layout).requires_grad_(True)
            out = fn(x)
            (grad,) = torch.autograd.grad((out * weights).sum(), x, create_graph=True)
            (grad2,) = torch.autograd.grad(grad.square().sum(), x)
            outputs.append(out)
            first.append(grad)
            second.append(grad2)
        for ours, theirs in (outputs, first, second):
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mbstd_reduces_low_precision_activations_in_float32_and_keeps_their_dtype(dtype: torch.dtype) -> None:
    """Deviations of 100s square past fp16's 65,504; the statistic is reduced in float32 (as torch.var accumulates)
    and handed on in the activations' dtype, so D's head input stays in autocast's precision."""
    torch.manual_seed(0)
    x = (torch.randn(16, 64, 4, 4) * 100).to(dtype)
    expected = minibatch_stddev(x.double(), 4, mode="zoo")
    for context in (contextlib.nullcontext(), torch.autocast("cpu", dtype=dtype)):
        with context:
            out = minibatch_stddev(x, 4, mode="zoo")
        assert out.dtype == dtype and torch.isfinite(out).all()
        torch.testing.assert_close(out.double(), expected, rtol=1e-2, atol=0)


def test_mbstd_averages_sqrt_over_features() -> None:
    # Feature 0 varies (0..3), feature 1 is constant → sqrt(1e-8) = 1e-4; the stat is the mean of both.
    x = torch.stack([torch.arange(4.0), torch.full((4,), 7.0)], dim=1).view(4, 2, 1, 1)
    assert _stat_channel(x, mode="zoo") == pytest.approx([(math.sqrt(5 / 3 + 1e-8) + 1e-4) / 2] * 4)
    assert _stat_channel(x, mode="paper") == pytest.approx([(math.sqrt(1.25 + 1e-8) + 1e-4) / 2] * 4)


def _values_8() -> list[float]:
    return [float(i) if i % 2 == 0 else 10.0 * i for i in range(8)]


def test_mbstd_paper_groups_are_strided() -> None:
    values = _values_8()
    x = torch.tensor(values).view(8, 1, 1, 1).expand(8, 2, 3, 3).contiguous()
    got = _stat_channel(x, mode="paper")
    even = statistics.pstdev(values[0::2])  # samples 0,2,4,6 form one group
    odd = statistics.pstdev(values[1::2])
    assert got == pytest.approx([even, odd] * 4, rel=1e-6)


def test_mbstd_zoo_groups_are_consecutive() -> None:
    values = _values_8()
    x = torch.tensor(values).view(8, 1, 1, 1).expand(8, 2, 3, 3).contiguous()
    got = _stat_channel(x, mode="zoo")
    first, second = statistics.stdev(values[:4]), statistics.stdev(values[4:])
    assert got == pytest.approx([first] * 4 + [second] * 4, rel=1e-6)


def test_mbstd_zoo_batch_of_six_is_one_group_and_one_is_zero() -> None:
    values = [0.0, 1.0, 5.0, 2.0, 8.0, 3.0]
    x = torch.tensor(values).view(6, 1, 1, 1)
    assert _stat_channel(x, mode="zoo") == pytest.approx([statistics.stdev(values)] * 6, rel=1e-6)
    assert _stat_channel(torch.full((1, 3, 2, 2), 4.0), mode="zoo") == [0.0]


def test_mbstd_paper_group_size_and_divisibility() -> None:
    x = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1)
    assert _stat_channel(x, mode="paper") == pytest.approx([1.0, 1.0])  # G = min(4, 2)
    values = [0.0, 1.0, 5.0, 2.0, 8.0, 3.0]
    six = torch.tensor(values).view(6, 1, 1, 1)
    assert _stat_channel(six, group_size=2, mode="paper") == pytest.approx(
        [statistics.pstdev(values[0::3]), statistics.pstdev(values[1::3]), statistics.pstdev(values[2::3])]
        * 2,
        rel=1e-6,
    )
    with pytest.raises(ValueError, match=r"N=6.*G=4"):
        minibatch_stddev(six, 4, mode="paper")


@pytest.mark.parametrize(("mode", "group_size", "part_size", "mixes_unsplit"), [
    ("zoo", 4, 8, False),   # consecutive groups: whole groups within each part either way
    ("zoo", 4, 6, True),    # 4 does not divide 6: each part is one group (the concatenated 12 makes groups of 4)
    ("paper", 4, 8, True),  # strided groups: on the concatenation they would mix the two parts
    ("paper", 2, 6, True),
])
def test_mbstd_parts_group_each_part_as_if_alone(mode: str, group_size: int, part_size: int,
                                                 mixes_unsplit: bool) -> None:
    """Reals and fakes concatenated for one D call get the statistic of separate calls, bit for bit."""
    torch.manual_seed(4)
    a, b = torch.randn(part_size, 3, 2, 2), torch.randn(part_size, 3, 2, 2) * 3 + 1
    together = minibatch_stddev(torch.cat([a, b]), group_size, mode=mode, parts=2)
    alone = torch.cat([minibatch_stddev(a, group_size, mode=mode), minibatch_stddev(b, group_size, mode=mode)])
    assert torch.equal(together, alone)
    assert torch.equal(minibatch_stddev(torch.cat([a, b]), group_size, mode=mode), alone) != mixes_unsplit
    with pytest.raises(ValueError, match=r"N=12 does not split into 5 equal parts"):
        minibatch_stddev(torch.zeros(12, 1, 1, 1), mode=mode, parts=5)


def test_mbstd_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="mode"):
        minibatch_stddev(torch.zeros(4, 1, 1, 1), mode="tf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        minibatch_stddev(torch.zeros(4, 1), mode="zoo")
