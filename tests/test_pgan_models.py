"""PGAN networks: widths, config validation, exact parameter counts, variants and fade continuity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ganforge.models.pgan import PGANArch, PGANDiscriminator, PGANGenerator, pgan_widths

TINY_WIDTHS = [8, 8, 6, 4]  # scales 4, 8, 16, 32


def tiny_arch(variant: str, **kwargs: object) -> PGANArch:
    return PGANArch(32, list(TINY_WIDTHS), latent_dim=12, variant=variant, **kwargs)


def test_widths_follow_official_formula() -> None:
    assert pgan_widths(4) == [512]
    assert pgan_widths(128) == [512, 512, 512, 512, 256, 128]
    assert pgan_widths(1024) == [512, 512, 512, 512, 256, 128, 64, 32, 16]
    assert pgan_widths(64, fmap_base=512, fmap_max=128) == [128, 128, 64, 32, 16]
    with pytest.raises(ValueError, match="power of two"):
        pgan_widths(96)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resolution": 48, "widths": [8, 8, 8, 8]}, "resolution must be a power of two >= 4, got 48"),
        ({"resolution": 2, "widths": []}, "resolution must be a power of two >= 4, got 2"),
        ({"resolution": 32, "widths": [8, 8]}, r"widths must list one width per scale 4\.\.32 \(4 entries\)"),
        ({"resolution": 8, "widths": [8, 0]}, r"widths\[1\] must be a positive int, got 0"),
        ({"resolution": 8, "widths": [8, 8], "latent_dim": -3}, "latent_dim must be a positive int, got -3"),
        ({"resolution": 8, "widths": [8, 8], "variant": "tf"}, "variant must be one of"),
        (
            {"resolution": 8, "widths": [8, 8], "mbstd_group_size": 0},
            "mbstd_group_size must be a positive int",
        ),
        ({"resolution": 8, "widths": [8, 8], "mapping_layers": 2}, "mapping_layers: 2 does nothing without styles"),
        ({"resolution": 8, "widths": [8, 8], "styles": True, "mapping_layers": -1}, "mapping_layers must be an int"),
    ],
)
def test_arch_validation_names_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PGANArch(**kwargs)


def test_arch_num_scales() -> None:
    assert PGANArch(128, pgan_widths(128)).num_scales == 6
    assert tiny_arch("zoo").num_scales == 4


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    ("resolution", "variant", "g_params", "d_params"),
    [
        (128, "paper", 22_933_394, 22_941_313),
        (128, "zoo", 22_941_074, 22_941_313),
        (1024, "paper", 23_079_115, 23_087_249),
        (1024, "zoo", 23_086_795, 23_087_249),
    ],
)
def test_parameter_counts(resolution: int, variant: str, g_params: int, d_params: int) -> None:
    arch = PGANArch(resolution, pgan_widths(resolution), variant=variant)
    with torch.device("meta"):
        assert _count(PGANGenerator(arch)) == g_params
        assert _count(PGANDiscriminator(arch)) == d_params


def test_small_zoo_parameter_counts_match_fixture_checkpoint() -> None:
    arch = PGANArch(32, [32, 32, 32, 16], latent_dim=32, variant="zoo")
    assert _count(PGANGenerator(arch)) == 70_428
    assert _count(PGANDiscriminator(arch)) == 70_385


def test_variant_gains_and_bias_layout() -> None:
    paper_g, zoo_g = PGANGenerator(tiny_arch("paper")), PGANGenerator(tiny_arch("zoo"))
    assert paper_g.blocks[0].dense.he_constant == pytest.approx(math.sqrt(2) / 4 / math.sqrt(12))
    assert zoo_g.blocks[0].dense.he_constant == pytest.approx(math.sqrt(2) / math.sqrt(12))
    assert paper_g.blocks[0].dense.bias is None and paper_g.blocks[0].bias.shape == (8,)
    assert zoo_g.blocks[0].dense.bias.shape == (16 * 8,) and zoo_g.blocks[0].bias is None
    assert paper_g.to_rgb[3].he_constant == pytest.approx(1 / 2)  # gain 1, fan_in 4
    assert zoo_g.to_rgb[3].he_constant == pytest.approx(math.sqrt(2) / 2)
    assert not paper_g.to_rgb[3].scale_bias and zoo_g.to_rgb[3].scale_bias
    paper_d, zoo_d = PGANDiscriminator(tiny_arch("paper")), PGANDiscriminator(tiny_arch("zoo"))
    assert paper_d.blocks[0].dense1.he_constant == pytest.approx(1 / math.sqrt(8))
    assert zoo_d.blocks[0].dense1.he_constant == pytest.approx(math.sqrt(2) / math.sqrt(8))
    assert zoo_d.blocks[0].conv.weight.shape == (8, 9, 3, 3)


def test_paper_dense_reshape_order_and_per_channel_bias() -> None:
    """Unit k of the 4×4 dense layer lands at (c, h, w) with k = c·16 + h·4 + w; the bias is per channel."""
    arch = PGANArch(4, [2], latent_dim=1, variant="paper")
    g = PGANGenerator(arch)
    dense = g.blocks[0].dense
    with torch.no_grad():
        dense.weight.copy_(torch.arange(32.0).view(32, 1) / dense.he_constant)
        g.blocks[0].bias.copy_(torch.tensor([-40.0, 5.0]))
    captured = {}
    g.blocks[0].conv.register_forward_hook(lambda _m, inputs, _o: captured.update(x=inputs[0]))
    g(torch.ones(1, 1), 0)
    latent = 1 / math.sqrt(1 + 1e-8)  # pixel-normed z = [1]
    expected = torch.zeros(1, 2, 4, 4)
    for c in range(2):
        for h in range(4):
            for w in range(4):
                value = (c * 16 + h * 4 + w) * latent + [-40.0, 5.0][c]
                expected[0, c, h, w] = value if value > 0 else 0.2 * value
    expected = expected / expected.square().mean(dim=1, keepdim=True).add(1e-8).sqrt()
    torch.testing.assert_close(captured["x"], expected)


@pytest.mark.parametrize("variant", ["paper", "zoo"])
def test_discriminator_block_pools_where_its_reference_does(variant: str, resampling_route: str) -> None:
    """The official TF code (its default fused_scale) pools D's second convolution before the bias and LReLU: one
    stride-2 convolution with the 3×3 kernel's four shifts averaged; the zoo pools the activations. By hand, from
    the block's stored weights, on either route of the strided convolution."""
    torch.manual_seed(0)
    block = PGANDiscriminator(tiny_arch(variant)).blocks[3].double()
    for conv in (block.conv0, block.conv1):
        torch.nn.init.normal_(conv.bias)
    x = torch.randn(4, TINY_WIDTHS[3], 32, 32, dtype=torch.float64)
    zoo = variant == "zoo"

    def conv(layer: torch.nn.Module, t: torch.Tensor, *, with_bias: bool = True) -> torch.Tensor:
        bias = layer.bias * (layer.he_constant if zoo else 1.0)
        return F.conv2d(t, layer.weight * layer.he_constant, bias if with_bias else None, padding=1)

    hidden = F.leaky_relu(conv(block.conv0, x), 0.2)
    if zoo:
        expected = F.avg_pool2d(F.leaky_relu(conv(block.conv1, hidden), 0.2), 2)
    else:
        pooled = F.avg_pool2d(conv(block.conv1, hidden, with_bias=False), 2)
        expected = F.leaky_relu(pooled + block.conv1.bias.view(1, -1, 1, 1), 0.2)
    torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)


def test_same_seed_same_weights() -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        arch = tiny_arch("paper")
        return [*PGANGenerator(arch).state_dict().values(), *PGANDiscriminator(arch).state_dict().values()]

    first, again, other = weights(5), weights(5), weights(6)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("variant", ["paper", "zoo"])
def test_output_shapes_and_features(variant: str) -> None:
    torch.manual_seed(0)
    arch = tiny_arch(variant)
    g, d = PGANGenerator(arch), PGANDiscriminator(arch)
    z = torch.randn(4, 12)
    for scale in range(arch.num_scales):
        image = g(z, scale)
        assert image.shape == (4, 3, 4 * 2**scale, 4 * 2**scale)
        out, features = d(image, scale, return_features=True)
        assert out.shape == (4, 1) and features.shape == (4, 8)
        # features are the input of D's last dense layer
        torch.testing.assert_close(out, d.blocks[0].dense1(features))
        torch.testing.assert_close(d(image, scale), out)


@pytest.mark.parametrize("variant", ["paper", "zoo"])
def test_discriminator_scores_concatenated_batches_as_separate_calls(variant: str) -> None:
    """`batch_parts`: reals and fakes in one D call (the D phase's) score as in two calls, gradients included."""
    torch.manual_seed(5)
    d = PGANDiscriminator(tiny_arch(variant, label_sizes=[3]))
    for scale, alpha in ((0, 0.0), (2, 0.3)):
        size = 4 * 2**scale
        reals, fakes = torch.randn(8, 3, size, size), torch.randn(8, 3, size, size) * 0.5
        score, logits = d(torch.cat([reals, fakes]), scale, alpha, batch_parts=2, return_label_logits=True)
        for part, images in zip((slice(0, 8), slice(8, 16)), (reals, fakes), strict=True):
            alone_score, alone_logits = d(images, scale, alpha, return_label_logits=True)
            torch.testing.assert_close(score[part], alone_score, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(logits[part], alone_logits, rtol=1e-5, atol=1e-6)
        d.zero_grad()
        (score[8:].mean() - score[:8].mean()).backward()
        together = [p.grad.clone() for p in d.parameters() if p.grad is not None]
        d.zero_grad()
        (d(fakes, scale, alpha).mean() - d(reals, scale, alpha).mean()).backward()
        alone = [p.grad for p in d.parameters() if p.grad is not None]
        assert len(together) == len(alone) > 0
        for g_together, g_alone in zip(together, alone, strict=True):
            torch.testing.assert_close(g_together, g_alone, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["paper", "zoo"])
def test_generator_fade(variant: str) -> None:
    torch.manual_seed(1)
    g = PGANGenerator(tiny_arch(variant))
    z = torch.randn(4, 12)
    for scale in (1, 2, 3):
        old = F.interpolate(g(z, scale - 1), scale_factor=2.0, mode="nearest")
        new = g(z, scale, 0.0)
        torch.testing.assert_close(g(z, scale, 1.0), old)
        torch.testing.assert_close(g(z, scale, 0.25), 0.25 * old + 0.75 * new)


def test_generator_skips_old_path_at_alpha_zero() -> None:
    g = PGANGenerator(tiny_arch("paper"))
    calls = []
    g.to_rgb[1].register_forward_hook(lambda *_: calls.append(1))
    g(torch.randn(2, 12), 2, 0.0)
    assert calls == []
    g(torch.randn(2, 12), 2, 0.5)
    assert calls == [1]


@pytest.mark.parametrize(("variant", "scales"), [("paper", (1, 2, 3)), ("zoo", (1, 2, 3))])
def test_discriminator_fade(variant: str, scales: tuple[int, ...]) -> None:
    torch.manual_seed(2)
    d = PGANDiscriminator(tiny_arch(variant))
    for scale in scales:
        x = torch.randn(4, 3, 4 * 2**scale, 4 * 2**scale)
        low = F.avg_pool2d(x, 2)
        torch.testing.assert_close(d(x, scale, 1.0), d(low, scale - 1, 0.0))
        # linear in alpha between the two paths, blended right after block s's pool
        blended = d(x, scale, 0.5, return_features=True)[1]
        assert not torch.allclose(blended, d(x, scale, 0.0, return_features=True)[1])


def test_zoo_first_d_fade_quirk_only_on_request() -> None:
    torch.manual_seed(3)
    quirky = PGANDiscriminator(tiny_arch("zoo", zoo_skip_first_d_fade=True))
    fixed = PGANDiscriminator(tiny_arch("zoo"))
    fixed.load_state_dict(quirky.state_dict())
    x8, x16 = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(quirky(x8, 1, 0.5), quirky(x8, 1, 0.0))
    assert not torch.allclose(fixed(x8, 1, 0.5), fixed(x8, 1, 0.0))
    torch.testing.assert_close(quirky(x16, 2, 0.5), fixed(x16, 2, 0.5))
    torch.testing.assert_close(quirky(x16, 2, 1.0), quirky(F.avg_pool2d(x16, 2), 1, 0.0))


def test_out_of_range_scale_alpha_and_shapes_raise() -> None:
    arch = tiny_arch("paper")
    g, d = PGANGenerator(arch), PGANDiscriminator(arch)
    z = torch.randn(4, 12)
    with pytest.raises(ValueError, match=r"scale must be in \[0, 4\), got 4"):
        g(z, 4)
    with pytest.raises(ValueError, match=r"scale must be in \[0, 4\), got -1"):
        d(torch.zeros(4, 3, 4, 4), -1)
    with pytest.raises(ValueError, match=r"alpha .* must be in \[0, 1\], got 1.5"):
        g(z, 1, 1.5)
    with pytest.raises(ValueError, match="alpha must be 0 at scale 0"):
        d(torch.zeros(4, 3, 4, 4), 0, 0.5)
    with pytest.raises(ValueError, match=r"z of shape \[N, 12\]"):
        g(torch.randn(4, 10), 0)
    with pytest.raises(ValueError, match=r"expects images \[N, 3, 16, 16\], got \(4, 3, 8, 8\)"):
        d(torch.zeros(4, 3, 8, 8), 2)
    with pytest.raises(ValueError, match=r"N=6.*G=4"):
        d(torch.zeros(6, 3, 4, 4), 0)  # paper mbstd needs a divisible batch
    assert PGANDiscriminator(tiny_arch("paper", mbstd_group_size=2))(torch.zeros(6, 3, 4, 4), 0).shape == (
        6,
        1,
    )


@pytest.mark.parametrize("mapping_layers", [0, 2])
def test_styled_generator_parameter_count(mapping_layers: int) -> None:
    plain = _count(PGANGenerator(tiny_arch("zoo")))
    styled = _count(PGANGenerator(tiny_arch("zoo", styles=True, mapping_layers=mapping_layers)))
    # per scale: 4 styles per channel (scale and shift of two normalisations) and one toRGB scale per channel, each
    # an affine of the 12-d w with a bias; the mapping layers are 12 -> 12 with biases
    extra = sum((12 + 1) * 5 * width for width in TINY_WIDTHS) + mapping_layers * (12 * 12 + 12)
    assert styled == plain + extra


def test_styled_generator_by_hand() -> None:
    """Zero style weights leave G as it was; a style's bias scales and shifts exactly the channels it names."""
    torch.manual_seed(4)
    plain = PGANGenerator(tiny_arch("zoo"))
    styled = PGANGenerator(tiny_arch("zoo", styles=True, mapping_layers=1))
    styled.load_state_dict(plain.state_dict(), strict=False)
    z = torch.randn(3, 12)
    with torch.no_grad():
        for layer in [*styled.block_styles, *styled.rgb_styles]:
            layer.weight.zero_()
            layer.bias.zero_()
    for scale in range(4):
        torch.testing.assert_close(styled(z, scale), plain(z, scale))
    with torch.no_grad():  # the zoo variant's He constant (gain 1 / sqrt(12) here) also scales the biases
        styled.block_styles[0].bias[8:16] = 0.5 * math.sqrt(12)  # shifts of the first normalisation at 4x4
        styled.rgb_styles[0].bias[:] = math.sqrt(12)  # toRGB's inputs doubled
    base = plain.blocks[0]
    x = base.dense(F.normalize(z, dim=1) * math.sqrt(12)).view(3, 8, 4, 4)
    x = F.leaky_relu(x, 0.2)
    x = x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8) + 0.5
    x = F.leaky_relu(base.conv(x), 0.2)
    x = x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)
    torch.testing.assert_close(styled(z, 0), plain.to_rgb[0](2.0 * x))


def test_styled_generator_uses_the_mapping_and_fades() -> None:
    torch.manual_seed(5)
    g = PGANGenerator(tiny_arch("paper", styles=True, mapping_layers=2))
    z = torch.randn(4, 12)
    for scale in (1, 2, 3):
        old = F.interpolate(g(z, scale - 1), scale_factor=2.0, mode="nearest")
        torch.testing.assert_close(g(z, scale, 1.0), old)
        torch.testing.assert_close(g(z, scale, 0.25), 0.25 * old + 0.75 * g(z, scale, 0.0))
    before = g(z, 3)
    with torch.no_grad():
        g.mapping[1].weight.mul_(-1.0)
    assert (g(z, 3) - before).abs().max() > 1e-3
