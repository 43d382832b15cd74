"""DCGAN networks: the tutorial's layer shapes and parameter counts, sizes 8…128, norms, init, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ganforge.models.dcgan import DCGANCritic, DCGANGenerator, critic_widths, generator_widths


def conv_params(c_in: int, c_out: int, bias: bool, k: int = 4) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_tutorial_generator_parameter_count() -> None:
    # 100×1×1 → 1024@4 → 512@8 → 256@16 → 128@32 → 3@64; no bias before BatchNorm (weight + bias = 2·C)
    expected = (conv_params(100, 1024, False) + 2 * 1024 + conv_params(1024, 512, False) + 2 * 512
                + conv_params(512, 256, False) + 2 * 256 + conv_params(256, 128, False) + 2 * 128
                + conv_params(128, 3, True))
    assert expected == 12_658_435  # the tutorial starts at features·16 (PyTorch's DCGAN example: ·8)
    assert count(DCGANGenerator(z_dim=100, channels=3, features=64, resolution=64)) == expected


@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_tutorial_critic_parameter_count(norm: str) -> None:
    # 3@64 → 64@32 → 128@16 → 256@8 → 512@4 → 1@1; normed blocks drop the conv bias for the norm's 2·C
    blocks = [(64, 128), (128, 256), (256, 512)]
    normed = norm != "none"
    expected = conv_params(3, 64, True) + conv_params(512, 1, True)
    expected += sum(conv_params(c_in, c_out, not normed) + (2 * c_out if normed else 0) for c_in, c_out in blocks)
    assert count(DCGANCritic(channels=3, features=64, resolution=64, norm=norm)) == expected
    if normed:
        assert expected == 2_765_633  # PyTorch's DCGAN example (2 765 568) plus first and last conv biases


@pytest.mark.parametrize(("resolution", "g_widths", "d_widths"), [
    (8, [32], [2]),
    (32, [32, 16, 8], [2, 4, 8]),
    (64, [32, 16, 8, 4], [2, 4, 8, 16]),
    (128, [32, 16, 8, 4, 2], [2, 4, 8, 16, 32]),
])
def test_sizes_add_or_remove_blocks(resolution: int, g_widths: list[int], d_widths: list[int]) -> None:
    assert generator_widths(resolution, 2) == g_widths
    assert critic_widths(resolution, 2) == d_widths
    G = DCGANGenerator(z_dim=8, channels=1, features=2, resolution=resolution)
    D = DCGANCritic(channels=1, features=2, resolution=resolution, norm="instance")
    images = G(torch.randn(3, 8))
    assert images.shape == (3, 1, resolution, resolution)
    assert images.abs().max() <= 1.0  # tanh output
    assert D(images).shape == (3,)
    transposed = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in transposed] == [*g_widths, 1]


def test_generator_accepts_the_tutorials_4d_noise() -> None:
    G = DCGANGenerator(z_dim=8, channels=3, features=2, resolution=16).eval()
    z = torch.randn(2, 8)
    torch.testing.assert_close(G(z), G(z[:, :, None, None]), rtol=0, atol=0)


@pytest.mark.parametrize(("norm", "layer"), [("batch", nn.BatchNorm2d), ("instance", nn.InstanceNorm2d)])
def test_critic_norm_layers_follow_every_block_but_not_the_first_conv(norm: str, layer: type) -> None:
    D = DCGANCritic(channels=3, features=4, resolution=32, norm=norm)
    norms = [m for m in D.modules() if isinstance(m, layer)]
    assert [m.num_features for m in norms] == [8, 16]
    assert all(m.affine for m in norms)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [m.bias is not None for m in convs] == [True, False, False, True]


def test_critic_without_norm_has_biases_everywhere() -> None:
    D = DCGANCritic(channels=3, features=4, resolution=32, norm="none")
    assert not [m for m in D.modules() if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d))]
    assert all(m.bias is not None for m in D.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("family", ["dcgan", "wgan", "wgan-gp"])
def test_the_references_init(family: str) -> None:
    """Conv weights N(0, 0.02); BatchNorm weights N(1, 0.02) for DCGAN (PyTorch's example, the tutorial's DCGAN
    since 2022-12: they were N(0, 0.02), half the channels sign-flipped and 50x down), N(0, 0.02) for the WGAN and
    WGAN-GP tutorials."""
    from ganforge.families import get_family, resolve_run_config
    from ganforge.run_loader import build_family

    mean = get_family(family).batch_norm_weight_mean
    assert mean == (1.0 if family == "dcgan" else 0.0)
    built = build_family(resolve_run_config(family, {"data": "builtin:shapes?count=8&resolution=16",
                                                     "model": {"features_g": 8}}), torch.device("cpu"))
    first = next(m for m in built.nets["G"].modules() if isinstance(m, nn.BatchNorm2d))
    assert abs(first.weight.mean().item() - mean) < 0.01  # what the family builds
    torch.manual_seed(0)
    G = DCGANGenerator(z_dim=100, channels=3, features=16, resolution=64, batch_norm_mean=mean)
    D = DCGANCritic(channels=3, features=16, resolution=64, norm="instance", batch_norm_mean=mean)
    for net in (G, D):
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)) and m.weight.numel() >= 256:
                centre = mean if isinstance(m, nn.BatchNorm2d) else 0.0
                assert abs(m.weight.mean().item() - centre) < 0.01
                assert m.weight.std().item() == pytest.approx(0.02, rel=0.15)
            if isinstance(m, nn.InstanceNorm2d):  # the tutorial's init skips InstanceNorm: identity affine
                assert torch.equal(m.weight, torch.ones_like(m.weight))
                assert torch.equal(m.bias, torch.zeros_like(m.bias))


@pytest.mark.parametrize("resolution", [4, 48, 0])
def test_bad_resolution_names_the_value(resolution: int) -> None:
    with pytest.raises(ValueError, match=f"power of two ≥ 8.*got {resolution}"):
        DCGANGenerator(resolution=resolution)
    with pytest.raises(ValueError, match=f"got {resolution}"):
        DCGANCritic(resolution=resolution)


def test_bad_norm_names_the_value() -> None:
    with pytest.raises(ValueError, match="'layer'"):
        DCGANCritic(channels=1, features=2, resolution=16, norm="layer")
