"""BigGAN networks: official parameter counts and key shapes, stage tables, conditioning, attention, init, latents."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_path

from ganforge.families.biggan_flags import config_from_official
from ganforge.models.biggan import (
    BigGANArch,
    Discriminator,
    Generator,
    discriminator_stages,
    generator_stages,
    init_weights,
    sample_latents,
)
from ganforge.nn.biggan_layers import ConditionalBatchNorm2d, SelfAttention, standing_statistics

I128 = BigGANArch()  # the defaults are launch_BigGAN_bs256x8.sh
CIFAR = BigGANArch(resolution=32, n_classes=10, g_ch=64, d_ch=64, dim_z=128, g_shared=False, shared_dim=0,
                     hier=False, g_attention=(), d_attention=(), g_init="N02", d_init="N02")


def tiny(**overrides) -> BigGANArch:
    base = dict(resolution=32, n_classes=5, g_ch=4, d_ch=4, dim_z=16, shared_dim=8, g_attention=(16,),
                d_attention=(16,))
    return BigGANArch(**{**base, **overrides})


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _meta_nets(config: BigGANArch) -> tuple[Generator, Discriminator]:
    with torch.device("meta"):
        return Generator(config), Discriminator(config)


@pytest.mark.parametrize(("config", "g_params", "d_params"), [(I128, 70_433_988, 87_982_370),
                                                              (CIFAR, 4_304_387, 4_207_361)], ids=["I128", "CIFAR"])
def test_full_size_parameter_counts(config, g_params, d_params):
    generator, discriminator = _meta_nets(config)
    assert _count(generator) == g_params
    assert _count(discriminator) == d_params


def _meta() -> dict:
    return json.loads(shared_path("fixtures", "official", "biggan", "meta.json").read_text())


def _official_shapes(state: dict) -> dict[str, tuple[int, ...]]:
    rename = {"stored_mean": "running_mean", "stored_var": "running_var"}
    return {".".join(rename.get(p, p) for p in key.split(".")): tuple(shape) for key, shape in state.items()}


@pytest.mark.parametrize(("name", "config"), [("I128_launch_BigGAN_bs256x8", I128), ("C10_launch_cifar_ema", CIFAR)])
def test_full_size_state_matches_official_keys_and_shapes(name, config):
    official = _meta()["official_full_size"][name]
    generator, discriminator = _meta_nets(config)
    for net, key in ((generator, "G"), (discriminator, "D")):
        ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        assert ours == _official_shapes(official[f"{key}_state_dict"])
        assert sum(b.numel() for b in net.buffers()) == official[f"{key}_buffers_numel"]


@pytest.mark.parametrize("cfg", ["c32", "r64", "i128"])
def test_fixture_configs_match_official_counts_and_keys(cfg):
    entry = _meta()["configs"][cfg]
    config = config_from_official(entry["config_model"])
    derived = entry["derived"]
    assert config.g_dim_z == derived["G.dim_z"] and config.z_chunk == derived["G.z_chunk_size"]
    assert config.num_slots == derived["G.num_slots"] and config.embedding_dim == derived["G.shared_dim"]
    generator, discriminator = _meta_nets(config)
    assert _count(generator) == entry["param_counts"]["G"]
    assert _count(discriminator) == entry["param_counts"]["D"]
    assert {k: tuple(v.shape) for k, v in generator.state_dict().items()} == _official_shapes(entry["G_state_dict"])
    assert {k: tuple(v.shape) for k, v in discriminator.state_dict().items()} == _official_shapes(
        entry["D_state_dict"])
    g_arch, d_arch = derived["G.arch"], derived["D.arch"]
    assert list(generator.stages.in_channels) == g_arch["in_channels"]
    assert list(discriminator.stages.out_channels) == d_arch["out_channels"]
    assert list(discriminator.stages.resample) == d_arch["downsample"]


def test_stage_tables_and_attention_placement():
    g128 = generator_stages(128, 96)
    assert g128.in_channels == (1536, 1536, 768, 384, 192) and g128.out_channels == (1536, 768, 384, 192, 96)
    d128 = discriminator_stages(128, 96)
    assert d128.in_channels == (3, 96, 192, 384, 768, 1536) and d128.resample == (True,) * 5 + (False,)
    generator, discriminator = _meta_nets(I128)
    assert [len(block) for block in generator.blocks] == [1, 1, 1, 2, 1]  # attention after the 64×64 block
    assert [len(block) for block in discriminator.blocks] == [2, 1, 1, 1, 1, 1]
    # official quirk: the 32×32 D labels every block 16, so D attention at 16 follows all four blocks
    assert discriminator_stages(32, 4).resolution == (16, 16, 16, 16)
    assert [len(block) for block in Discriminator(tiny()).blocks] == [2, 2, 2, 2]
    assert generator_stages(256, 1).out_channels == (16, 8, 8, 4, 2, 1)


def test_shortcut_convs_only_where_needed():
    discriminator = Discriminator(tiny(d_attention=()))
    assert [block[0].conv_sc is not None for block in discriminator.blocks] == [True, True, False, False]
    assert [block[0].preactivation for block in discriminator.blocks] == [False, True, True, True]


def test_forward_shapes_range_and_eval_independence():
    torch.manual_seed(0)
    config = tiny()
    generator, discriminator = Generator(config).eval(), Discriminator(config).eval()
    z, y = torch.randn(3, config.g_dim_z), torch.tensor([0, 4, 2])
    with torch.no_grad():
        images = generator(z, y)
        logits = discriminator(images, y)
        single = generator(z[1:2], y[1:2])
    assert images.shape == (3, 3, 32, 32) and images.abs().max() <= 1
    assert logits.shape == (3, 1)
    torch.testing.assert_close(single, images[1:2], atol=1e-5, rtol=1e-5)


def test_hierarchical_z_feeds_each_block_its_chunk():
    torch.manual_seed(1)
    config = tiny(dim_z=18)  # 3 blocks + 1 → chunks of 4; dim_z is rounded down to 16 as officially
    assert (config.num_slots, config.z_chunk, config.g_dim_z) == (4, 4, 16)
    generator = Generator(config).eval()
    seen: list[torch.Tensor] = []
    for block in generator.blocks:
        block[0].register_forward_pre_hook(lambda _m, args: seen.append(args[1]))
    z, y = torch.randn(2, 16), torch.tensor([1, 3])
    with torch.no_grad():
        generator(z, y)
        embedded = generator.shared(y)
    for index, condition in enumerate(seen):
        torch.testing.assert_close(condition, torch.cat([embedded, z[:, 4 * (index + 1): 4 * (index + 2)]], 1))
    assert generator.linear.in_features == 4
    assert generator.blocks[0][0].bn1.gain.in_features == 8 + 4


def test_without_shared_embedding_cbn_uses_class_tables():
    generator = Generator(tiny(g_shared=False, hier=False, shared_dim=0, g_attention=()))
    assert generator.shared is None
    assert isinstance(generator.blocks[0][0].bn1.gain, torch.nn.Embedding)
    assert generator.blocks[0][0].bn1.gain.weight.shape == (5, 16)
    assert generator.linear.in_features == 16


def test_conditional_bn_scales_by_one_plus_gain():
    torch.manual_seed(2)
    layer = ConditionalBatchNorm2d(3, 2, from_labels=False, sn=None).train()
    x, condition = torch.randn(4, 3, 5, 5), torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    with torch.no_grad():
        layer.gain.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]]))
        layer.bias.weight.copy_(torch.tensor([[0.0, 1.0], [0.0, 0.0], [3.0, 0.0]]))
    normalized = F.batch_norm(x, None, None, training=True, eps=1e-5)
    scale = 1 + condition @ layer.gain.weight.t()
    shift = condition @ layer.bias.weight.t()
    torch.testing.assert_close(layer(x, condition), normalized * scale[:, :, None, None] + shift[:, :, None, None])
    torch.testing.assert_close(layer.running_mean, 0.1 * x.mean(dim=(0, 2, 3)))


def test_self_attention_starts_as_identity_and_matches_definition():
    torch.manual_seed(3)
    attention = SelfAttention(16, sn=None)
    x = torch.randn(2, 16, 4, 6)
    assert attention.gamma.item() == 0.0
    torch.testing.assert_close(attention(x), x)
    with torch.no_grad():
        attention.gamma.fill_(0.7)
    q = attention.theta(x).flatten(2)  # [n, 2, 24]
    k = F.max_pool2d(attention.phi(x), 2).flatten(2)  # [n, 2, 6]
    v = F.max_pool2d(attention.g(x), 2).flatten(2)  # [n, 8, 6]
    weights = torch.softmax(torch.einsum("ncq,nck->nqk", q, k), dim=-1)
    mixed = torch.einsum("nck,nqk->ncq", v, weights).reshape(2, 8, 4, 6)
    torch.testing.assert_close(attention(x), 0.7 * attention.o(mixed) + x)
    with pytest.raises(ValueError, match="even"):
        attention(torch.randn(1, 16, 3, 4))


def test_self_attention_gradients_match_the_explicit_attention_map():
    """The fused attention (no [positions, positions / 4] map held) gives the explicit map's values and gradients,
    in float64 and for channels_last inputs."""
    torch.manual_seed(5)
    attention = SelfAttention(16, sn=None).double()
    with torch.no_grad():
        attention.gamma.fill_(0.3)
    x = torch.randn(2, 16, 8, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)

    def explicit(x: torch.Tensor) -> torch.Tensor:
        q = attention.theta(x).flatten(2)
        k = F.max_pool2d(attention.phi(x), 2).flatten(2)
        v = F.max_pool2d(attention.g(x), 2).flatten(2)
        weights = torch.softmax(torch.einsum("ncq,nck->nqk", q, k), dim=-1)
        return attention.gamma * attention.o(torch.einsum("nck,nqk->ncq", v, weights).reshape(2, 8, 8, 6)) + x

    grads = []
    for forward in (attention, explicit):
        inputs = x.clone().requires_grad_(True)
        attention.zero_grad()
        forward(inputs).square().sum().backward()
        grads.append([inputs.grad, *(p.grad.clone() for p in attention.parameters())])
    for fused, reference in zip(*grads, strict=True):
        torch.testing.assert_close(fused, reference, rtol=1e-12, atol=1e-12)


def test_the_fused_attention_of_cuda_computes_the_attention_map_s_result():
    """`attend(fused=True)` (torch's attention kernels, what CUDA runs) against the map, here on the CPU's kernel."""
    from ganforge.nn.biggan_layers import attend

    generator = torch.Generator().manual_seed(6)
    q = torch.randn(3, 4, 48, dtype=torch.float64, generator=generator, requires_grad=True)  # [n, C/8, positions]
    k = torch.randn(3, 4, 12, dtype=torch.float64, generator=generator, requires_grad=True)
    v = torch.randn(3, 16, 12, dtype=torch.float64, generator=generator, requires_grad=True)
    results = []
    for fused in (True, False):
        out = attend(q, k, v, fused=fused)
        results.append([out, *torch.autograd.grad(out.sin().sum(), (q, k, v))])
    assert results[0][0].shape == (3, 16, 48)
    for fused, explicit in zip(*results, strict=True):
        torch.testing.assert_close(fused, explicit, rtol=1e-12, atol=1e-12)
    # a fused kernel takes the inputs as `attend` lays them out (strided ones would make SDPA fall back to the map
    # without a word); the CPU's flash kernel also wants the values as wide as the queries, CUDA's memory-efficient
    # one (BigGAN's C/8 and C/2) only both widths aligned
    from torch.nn.attention import SDPBackend, sdpa_kernel

    narrow = v[:, :4].float()
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        fused = attend(q.float(), k.float(), narrow, fused=True)
    torch.testing.assert_close(fused, attend(q.float(), k.float(), narrow, fused=False), rtol=1e-5, atol=1e-5)


def test_init_schemes():
    torch.manual_seed(4)
    layer = torch.nn.Linear(64, 32)
    init_weights(layer, "ortho")
    torch.testing.assert_close(layer.weight @ layer.weight.t(), torch.eye(32), atol=1e-5, rtol=0)
    assert layer.bias.abs().max() > 0  # biases keep torch's default, as officially
    big = torch.nn.Linear(400, 300)
    init_weights(big, "N02")
    assert big.weight.std().item() == pytest.approx(0.02, rel=0.02)
    init_weights(big, "xavier")
    bound = math.sqrt(6 / (400 + 300))
    assert big.weight.abs().max() <= bound and big.weight.abs().max() > 0.95 * bound
    with pytest.raises(ValueError, match="init"):
        init_weights(big, "kaiming")


def test_truncated_normal_resamples_into_bounds():
    generator = torch.Generator().manual_seed(5)
    z = sample_latents(4000, 16, truncation=1.0, generator=generator)
    assert z.shape == (4000, 16) and z.abs().max() <= 1.0
    # a truncated N(0,1) on [-1, 1] has std sqrt(1 - 2φ(1)/(2Φ(1) - 1)) ≈ 0.5396; clamping would give ≈ 0.80
    assert z.std().item() == pytest.approx(0.5396, abs=0.01)
    assert (z.abs() > 0.999).float().mean() < 0.001  # no pile-up at the bounds
    tight = sample_latents(500, 8, truncation=0.05, generator=generator)
    assert tight.abs().max() <= 0.05


def test_variance_scaling_is_a_plain_scaled_normal():
    z = sample_latents(20000, 4, truncation=0.5, method="scale", generator=torch.Generator().manual_seed(6))
    assert z.std().item() == pytest.approx(0.5, rel=0.02)
    assert z.abs().max() > 1.0  # unbounded, unlike the truncated normal
    with pytest.raises(ValueError, match="truncation"):
        sample_latents(2, 4, truncation=0.0)
    with pytest.raises(ValueError, match="method"):
        sample_latents(2, 4, truncation=0.5, method="clip")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"resolution": 48}, "resolution"), ({"g_attention": (4,)}, "g_attention"),
     ({"d_attention": (128,)}, "d_attention"), ({"g_shared": False}, "hier"), ({"g_init": "he"}, "g_init"),
     ({"n_classes": 0}, "n_classes"),
     ({"g_ch": 1, "g_attention": (32,)}, "divisible by 8")],
)
def test_config_errors_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_input_errors():
    config = tiny()
    generator, discriminator = Generator(config), Discriminator(config)
    with pytest.raises(ValueError, match=r"z must be \[N, 16\]"):
        generator(torch.randn(2, 15), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="int64"):
        generator(torch.randn(2, 16), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\]"):
        discriminator(torch.randn(2, 3, 16, 16), torch.tensor([0, 1]))


def test_standing_statistics_average_fresh_batches_and_touch_nothing_else():
    torch.manual_seed(7)
    generator = Generator(tiny()).train()
    generator.blocks[0][0].bn1.running_mean.fill_(5.0)  # stale values must not leak into the result
    batches = [(torch.randn(3, 16), torch.randint(5, (3,))) for _ in range(4)]
    seen: list[torch.Tensor] = []
    bn = generator.blocks[1][0].bn2
    bn.register_forward_pre_hook(lambda _m, args: seen.append(args[0].mean(dim=(0, 2, 3))))
    sn_before = {k: v.clone() for k, v in generator.state_dict().items() if k.endswith(("u0", "sv0"))}
    draws = iter(batches)
    standing_statistics(generator, lambda: generator(*next(draws)), 4)
    torch.testing.assert_close(bn.running_mean, torch.stack(seen).mean(0))
    assert generator.blocks[0][0].bn1.running_mean.abs().max() < 5.0
    assert all(torch.equal(generator.state_dict()[k], v) for k, v in sn_before.items())
    assert generator.training and bn.momentum == 0.1
    with pytest.raises(ValueError, match="at least 1 batch"):
        standing_statistics(generator, lambda: None, 0)
    with pytest.raises(ValueError, match="no batch-norm"):
        standing_statistics(Discriminator(tiny()), lambda: None, 1)
