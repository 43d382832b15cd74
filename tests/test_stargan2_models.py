"""StarGAN v2 networks: official parameter counts and key layouts, block arithmetic, masks, domain selection."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from ganforge.models.stargan2 import (
    Discriminator,
    Generator,
    MappingNetwork,
    StarGAN2Arch,
    StyleEncoder,
    he_init_,
    official_base_dim,
)
from ganforge.nn.stargan_layers import AdaIN, AdainResBlk, HighPass, ResBlk, laplacian_kernel

NETS = ("generator", "mapping_network", "style_encoder", "discriminator")
CELEBA_HQ = StarGAN2Arch(img_size=256, num_domains=2, w_hpf=1.0)
AFHQ = StarGAN2Arch(img_size=256, num_domains=3, w_hpf=0.0)
SMALL = StarGAN2Arch(img_size=128, num_domains=3, max_conv_dim=16, w_hpf=0.0)
TINY = StarGAN2Arch(img_size=32, num_domains=2, max_conv_dim=16, base_dim=4, mapping_dim=8, style_dim=8,
                    latent_dim=4, w_hpf=1.0)


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def build_meta(arch: StarGAN2Arch) -> dict[str, torch.nn.Module]:
    with torch.device("meta"):
        return {name: getattr(arch, name)() for name in NETS}


@pytest.mark.parametrize(("arch", "expected"), [
    (CELEBA_HQ, (43_467_395, 2_438_272, 20_916_928, 20_852_290)),
    (AFHQ, (33_892_995, 3_259_072, 20_949_760, 20_852_803)),
    (StarGAN2Arch(img_size=128, num_domains=2, w_hpf=1.0), (43_206_403, 2_438_272, 20_799_744, 20_735_106)),
    (StarGAN2Arch(img_size=64, num_domains=3, w_hpf=0.0), (32_634_883, 3_259_072, 20_360_640, 20_263_683)),
    (SMALL, (413_747, 3_259_072, 197_600, 194_387)),
    (StarGAN2Arch(img_size=128, num_domains=3, max_conv_dim=16, w_hpf=1.0), (427_251, 3_259_072, 197_600, 194_387)),
])
def test_parameter_counts_equal_the_official_networks(arch: StarGAN2Arch, expected: tuple[int, ...]) -> None:
    nets = build_meta(arch)
    assert tuple(count(nets[name]) for name in NETS) == expected


@pytest.mark.parametrize("config", ["celeba_hq", "afhq"])
def test_state_dict_layout_equals_the_official_real_configs(config: str) -> None:
    meta = json.loads(shared_path("fixtures", "official", "stargan_v2", "meta.json").read_text())
    real = meta["real_configs"][config]
    arch = StarGAN2Arch(img_size=256, num_domains=real["config"]["num_domains"], w_hpf=float(real["config"]["w_hpf"]))
    for name, net in build_meta(arch).items():
        ours = {key: list(t.shape) for key, t in net.state_dict().items()}
        official = {key: shape for key, shape, _ in real["state_dict_keys"][name]}
        buffers = {key for key, _, kind in real["state_dict_keys"][name] if kind == "buffer"}
        assert buffers <= {"hpf.filter"}
        assert ours == {k: v for k, v in official.items() if k not in buffers}, name
    unused = real["generator_unused_params"]
    generator = build_meta(arch)["generator"]
    assert all(key in generator.state_dict() for key in unused)


def test_small_fixture_layout_equals_ours() -> None:
    meta = json.loads(shared_path("fixtures", "official", "stargan_v2", "meta.json").read_text())
    nets = build_meta(SMALL)
    nets["generator_hpf"] = build_meta(StarGAN2Arch(img_size=128, num_domains=3, max_conv_dim=16, w_hpf=1.0))[
        "generator"]
    for name, net in nets.items():
        official = {key: shape for key, shape, kind in meta["state_dict_keys_small"][name] if kind == "param"}
        assert {key: list(t.shape) for key, t in net.state_dict().items()} == official, name
        assert count(net) == meta["param_counts_small"][name]


def test_generator_block_layout() -> None:
    with torch.device("meta"):
        g0, g1 = Generator(256, w_hpf=0.0), Generator(256, w_hpf=1.0)
    assert (len(g0.encode), len(g0.decode), len(g1.encode), len(g1.decode)) == (6, 6, 7, 7)
    assert [b.conv2.out_channels for b in g1.encode] == [128, 256, 512, 512, 512, 512, 512]
    assert [b.conv2.out_channels for b in g1.decode] == [512, 512, 512, 512, 256, 128, 64]
    assert [b.upsample for b in g1.decode] == [False, False, True, True, True, True, True]
    assert official_base_dim(256) == 64 and official_base_dim(32) == 512
    assert Generator(32, max_conv_dim=16, base_dim=4).from_rgb.out_channels == 4


@pytest.mark.parametrize("kwargs", [
    {"img_size": 48}, {"img_size": 8}, {"img_size": True}, {"num_domains": 0}, {"style_dim": 2.5},
    {"base_dim": 0}, {"w_hpf": -1.0}, {"w_hpf": math.nan},
])
def test_arch_rejects_bad_values_naming_them(kwargs: dict) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        StarGAN2Arch(**kwargs)


def test_resblk_is_scaled_sum_of_shortcut_and_residual() -> None:
    torch.manual_seed(0)
    block = ResBlk(4, 8, normalize=True, downsample=True)
    x = torch.randn(2, 4, 8, 8)
    residual = block.conv2(F.leaky_relu(block.norm2(F.avg_pool2d(
        block.conv1(F.leaky_relu(block.norm1(x), 0.2)), 2)), 0.2))
    shortcut = F.avg_pool2d(block.conv1x1(x), 2)
    torch.testing.assert_close(block(x), (shortcut + residual) / math.sqrt(2))
    same = ResBlk(4, 4)
    assert same.conv1x1 is None and not hasattr(same, "norm1")
    expected = (x + same.conv2(F.leaky_relu(same.conv1(F.leaky_relu(x, 0.2)), 0.2))) / math.sqrt(2)
    torch.testing.assert_close(same(x), expected)


def test_adain_scales_around_one() -> None:
    layer = AdaIN(style_dim=3, num_features=2)
    with torch.no_grad():
        layer.fc.weight.zero_()
        layer.fc.bias.copy_(torch.tensor([1.0, -0.5, 2.0, 3.0]))  # gamma = (1, -0.5), beta = (2, 3)
    x = torch.randn(2, 2, 4, 4)
    normed = F.instance_norm(x)
    out = layer(x, torch.randn(2, 3))
    torch.testing.assert_close(out[:, 0], 2.0 * normed[:, 0] + 2.0)
    torch.testing.assert_close(out[:, 1], 0.5 * normed[:, 1] + 3.0)


def test_adain_resblk_drops_the_skip_when_high_pass_is_on() -> None:
    torch.manual_seed(1)
    x, style = torch.randn(2, 4, 4, 4), torch.randn(2, 8)
    plain = AdainResBlk(4, 2, 8, w_hpf=0.0, upsample=True)
    hpf = AdainResBlk(4, 2, 8, w_hpf=1.0, upsample=True)
    hpf.load_state_dict(plain.state_dict())
    residual = plain._residual(x, style)
    shortcut = plain.conv1x1(F.interpolate(x, scale_factor=2, mode="nearest"))
    assert residual.shape == (2, 2, 8, 8)
    torch.testing.assert_close(plain(x, style), (residual + shortcut) / math.sqrt(2))
    torch.testing.assert_close(hpf(x, style), residual)


def test_high_pass_is_a_depthwise_laplacian_over_w_hpf() -> None:
    layer = HighPass(w_hpf=2.0)
    assert layer.state_dict() == {}  # a constant of w_hpf, not saved
    impulse = torch.zeros(1, 2, 5, 5)
    impulse[0, 1, 2, 2] = 1.0
    out = layer(impulse)
    assert out[0, 0].abs().max() == 0
    torch.testing.assert_close(out[0, 1, 1:4, 1:4], laplacian_kernel(2.0))
    assert laplacian_kernel(1.0).sum() == 0 and laplacian_kernel(1.0)[1, 1] == 8
    assert layer(torch.full((1, 1, 5, 5), 3.0))[0, 0, 1:4, 1:4].abs().max() == 0  # flat regions vanish
    with pytest.raises(ValueError, match="w_hpf"):
        HighPass(0.0)


def test_generator_masks() -> None:
    torch.manual_seed(2)
    arch = TINY
    g = he_init_(arch.generator()).eval()
    x, style = torch.randn(2, 3, 32, 32), torch.randn(2, arch.style_dim)
    out = g(x, style)
    assert out.shape == (2, 3, 32, 32)
    zeros = torch.zeros(2, 1, 64, 64)
    torch.testing.assert_close(g(x, style, (zeros, zeros)), out)  # nothing masked in: nothing injected
    ones = torch.ones(2, 1, 16, 16)
    assert (g(x, style, (ones, ones)) - out).abs().max() > 1e-3
    with pytest.raises(ValueError, match="pair"):
        g(x, style, (ones,))
    no_hpf = Generator(32, 8, 16, 0.0, base_dim=4)
    with pytest.raises(ValueError, match="w_hpf = 0"):
        no_hpf(x, style, (ones, ones))


def test_heads_select_each_samples_domain() -> None:
    torch.manual_seed(3)
    mapping = MappingNetwork(4, 8, 3, hidden_dim=16)
    encoder = StyleEncoder(16, 8, 3, 16, base_dim=4)
    disc = Discriminator(16, 3, 16, base_dim=4)
    z, x = torch.randn(3, 4), torch.randn(3, 3, 16, 16)
    y = torch.tensor([2, 0, 1])
    hidden = mapping.shared(z)
    for i, domain in enumerate(y.tolist()):
        torch.testing.assert_close(mapping(z, y)[i], mapping.unshared[domain](hidden)[i])
        torch.testing.assert_close(encoder(x, y)[i], encoder.unshared[domain](encoder.shared(x).flatten(1))[i])
        assert disc(x, y)[i] == disc.main(x)[i, domain, 0, 0]
    assert disc(x, y).shape == (3,) and encoder(x, y).shape == (3, 8)
    with pytest.raises(ValueError, match=r"domain labels must have shape \(3,\)"):
        disc(x, torch.tensor([0, 1]))


def test_he_init_zero_bias_and_fan_in_scale() -> None:
    torch.manual_seed(4)
    net = he_init_(Discriminator(16, 2, 64, base_dim=64))
    conv = net.main[2].conv1  # 64 → 64, 3×3: fan_in 576
    assert conv.bias.abs().max() == 0
    assert abs(conv.weight.std().item() - math.sqrt(2 / 576)) < 0.003
    norm = Generator(16, 8, 16, 0.0, base_dim=4)
    he_init_(norm)
    assert torch.equal(norm.encode[0].norm1.weight, torch.ones(4))  # IN affine keeps its defaults
