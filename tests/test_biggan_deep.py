"""BigGAN-deep (BigGAN-PyTorch's BigGANdeep.py): parameter counts of launch_BigGAN_deep.sh, the official module
layout, the bottleneck blocks' shortcuts by hand, the whole z beside the embedding, config refusals, and a tiny run
that trains and resumes to identical weights. Outputs and training steps equal the official code's in float64
(benchmarks/oracle_vs_reference.py --preset deep, in tests/test_oracle_vs_reference.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

import ganforge
from ganforge.config import ConfigError, read_config_file
from ganforge.families.biggan import BigGANConfig
from ganforge.models.biggan import BigGANArch, Discriminator, Generator, discriminator_stages
from ganforge.nn.biggan_layers import DeepDiscriminatorBlock, DeepGeneratorBlock

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# launch_BigGAN_deep.sh: ch 128, depth 2, dim_z 128, shared 128, attention 64, ImageNet 128
DEEP128 = BigGANArch(g_ch=128, d_ch=128, dim_z=128, shared_dim=128, deep=True)


def tiny(**overrides) -> BigGANArch:
    base = dict(resolution=32, n_classes=5, g_ch=8, d_ch=8, dim_z=12, shared_dim=8, g_attention=(16,),
                d_attention=(16,), deep=True)
    return BigGANArch(**{**base, **overrides})


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_launch_script_parameter_counts_and_official_layout():
    """50,244,484 / 34,590,210: BigGANdeep.py's counts at launch_BigGAN_deep.sh's flags (the paper: 50.4M / 34.6M)."""
    with torch.device("meta"):
        generator, discriminator = Generator(DEEP128), Discriminator(DEEP128)
    assert (_count(generator), _count(discriminator)) == (50_244_484, 34_590_210)
    g = {k: tuple(v.shape) for k, v in generator.state_dict().items()}
    d = {k: tuple(v.shape) for k, v in discriminator.state_dict().items()}
    # G: the embedding joined to the whole z (128 + 128) feeds the linear and every CBN; each block its own group,
    # the stage's first keeps 16·ch channels, its second narrows and upsamples; attention after the 64 px block
    assert g["linear.weight"] == (16 * 128 * 16, 256) and g["blocks.0.0.bn1.gain.weight"] == (2048, 256)
    assert g["blocks.0.0.conv1.weight"] == (512, 2048, 1, 1) and g["blocks.3.0.conv4.weight"] == (1024, 512, 1, 1)
    assert len(generator.blocks) == 10 and [len(group) for group in generator.blocks].count(2) == 1
    assert g["blocks.7.1.gamma"] == () and "blocks.7.1.theta.weight" in g  # stage 3 (64 px), second block
    assert not any(".conv_sc." in key for key in g)  # G's shortcut drops channels, it has no conv
    # D: a 3×3 stem, blocks grouped by stage, the stage's first block widens with a conv for the missing channels
    assert d["input_conv.weight"] == (128, 3, 3, 3) and d["blocks.0.0.conv_sc.weight"] == (128, 128, 1, 1)
    assert "blocks.0.1.conv_sc.weight" not in d and d["blocks.0.2.gamma"] == ()  # attention at 64 px
    assert d["blocks.4.0.conv1.weight"] == (512, 2048, 1, 1)  # hidden = out / 4
    assert discriminator_stages(128, 1, deep=True).out_channels == (2, 4, 8, 16, 16)


def test_the_generator_block_s_shortcut_is_its_input_s_leading_channels_upsampled():
    torch.manual_seed(0)
    block = DeepGeneratorBlock(16, 8, 6, upsample=True, sn=None, bn_eps=1e-5)
    x, condition = torch.randn(3, 16, 4, 4), torch.randn(3, 6)
    with torch.no_grad():
        block.conv4.weight.zero_()
        block.conv4.bias.zero_()
    expected = F.interpolate(x[:, :8], scale_factor=2, mode="nearest")
    torch.testing.assert_close(block(x, condition), expected, rtol=0, atol=0)


def test_the_discriminator_block_s_shortcut_appends_a_conv_for_the_missing_channels():
    torch.manual_seed(0)
    block = DeepDiscriminatorBlock(4, 12, downsample=True, sn=None)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        block.conv4.weight.zero_()
        block.conv4.bias.zero_()
        pooled = F.avg_pool2d(x, 2)
        expected = torch.cat([pooled, F.conv2d(pooled, block.conv_sc.weight, block.conv_sc.bias)], dim=1)
        torch.testing.assert_close(block(x), expected, rtol=1e-6, atol=1e-6)
    assert DeepDiscriminatorBlock(12, 12, downsample=False, sn=None).conv_sc is None


def test_every_block_sees_the_whole_z_beside_the_class_embedding():
    torch.manual_seed(0)
    generator = Generator(tiny()).eval()
    z, y = torch.randn(4, 12), torch.tensor([0, 1, 2, 3])
    seen = []
    hooks = [group[0].bn1.register_forward_hook(lambda _m, args, _out: seen.append(args[1]))
             for group in generator.blocks]
    with torch.no_grad():
        images = generator(z, y)
    for hook in hooks:
        hook.remove()
    joined = torch.cat([generator.shared(y), z], dim=1)
    assert len(seen) == 6 and all(torch.equal(condition, joined) for condition in seen)  # 3 stages × depth 2
    assert images.shape == (4, 3, 32, 32) and images.abs().max() <= 1
    assert tiny().g_dim_z == 12 and tiny().num_slots == 1  # no chunks
    logits = Discriminator(tiny())(images, y)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()


def test_depth_changes_the_blocks_per_stage():
    generator, discriminator = Generator(tiny(g_depth=3, d_depth=1)), Discriminator(tiny(g_depth=3, d_depth=1))
    assert len(generator.blocks) == 9
    assert [sum(isinstance(m, DeepDiscriminatorBlock) for m in group) for group in discriminator.blocks] == [1, 1, 1]
    assert [group[0].upsample for group in generator.blocks] == [False, False, True] * 3


@pytest.mark.parametrize(("overrides", "message"), [
    ({"hier": False}, "'deep' needs 'hier' and 'g_shared'"),
    ({"deep": False, "g_depth": 3}, "without 'deep' they would do nothing"),
    ({"resolution": 64, "d_ch": 1, "g_attention": (), "d_attention": ()}, "at least 4 channels wide, got 2"),
    ({"d_wide": False}, "'d_wide': false has no meaning for BigGAN-deep"),
])
def test_architecture_refusals(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_family_config_takes_depths_only_with_deep():
    with pytest.raises(ConfigError, match=r"model.g_depth: 3 counts BigGAN-deep's blocks per stage; without "
                                          r"model.deep: true it would do nothing"):
        BigGANConfig(g_depth=3)
    with pytest.raises(ConfigError, match="model.d_depth: expected a positive integer, got 0"):
        BigGANConfig(deep=True, d_depth=0)
    arch = BigGANConfig(deep=True, g_depth=3).arch(128, 4)
    assert (arch.deep, arch.g_depth, arch.d_depth) == (True, 3, 2)


@pytest.mark.slow
def test_a_tiny_deep_run_trains_and_resumes_to_identical_weights(tmp_path):
    config = read_config_file(CONFIGS / "biggan_tiny.yaml")
    config["model"].update(deep=True, g_ch=8, d_ch=8)
    config.update(sample_every=100)
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    ganforge.train(config, straight)
    assert ganforge.train(config, pieces, until=2).step == 2
    ganforge.train(config, pieces)
    a, b = (safetensors.torch.load_file(run / "checkpoints" / "00000004.safetensors") for run in (straight, pieces))
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    assert {"net/G/blocks.1.0.conv4.weight", "net/D/input_conv.weight", "net/D/blocks.2.1.conv4.weight"} <= set(a)
