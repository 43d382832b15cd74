"""EMA ramp-up (stylegan2-ada's `ema_rampup`): the averaging half-life in images is capped by a fraction of the
images seen, so short runs get a usable EMA generator while long runs keep the configured decay. One option with
one meaning in every family that keeps an EMA generator; off (null) in the paper configs."""

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from reliability_runs import tiny_run

from ganforge.config import ConfigError, read_config_file
from ganforge.data.store import open_dataset
from ganforge.distributed import DistInfo
from ganforge.families import get_family, resolve_run_config
from ganforge.nn.ema import EmaPair, ramped_ema_decay
from ganforge.training.engine import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHAPES32 = "builtin:shapes?count=16&resolution=32"


def test_ema_pair_averages_parameters_and_float_buffers_and_copies_integer_buffers():
    torch.manual_seed(0)
    source, ema = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    source(torch.randn(8, 3))  # running statistics and num_batches_tracked move in the source only
    with torch.no_grad():
        source.weight.add_(1.0)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    pair = EmaPair(ema, source)
    pair.update(0.75)
    for key, value in ema.state_dict().items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(value, 0.75 * before[key] + 0.25 * source.state_dict()[key], rtol=0, atol=1e-7)
        else:
            assert value.item() == source.state_dict()[key].item() == 1
    with torch.no_grad():  # the lists follow the tensors' in-place updates (optimisers, load_state_dict)
        source.weight.copy_(torch.full((3,), 5.0))
    pair.update(0.0)
    assert torch.equal(ema.weight, torch.full((3,), 5.0))
    with pytest.raises(ValueError, match="different parameter lists"):
        EmaPair(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2, bias=False))


def test_ramped_decay_caps_the_half_life_at_rampup_times_images_seen():
    # decay 0.999 at batch 16: half-life 16·ln 0.5 / ln 0.999 = 11,083 images; 0.05 × 1,000 images seen = 50
    assert ramped_ema_decay(0.999, 16, 1000, 0.05) == pytest.approx(0.5 ** (16 / 50), rel=1e-12)
    assert ramped_ema_decay(0.999, 16, 1000, 0.05) == pytest.approx(0.80107, abs=1e-5)
    # past 221,660 images the cap no longer binds: the configured decay itself
    assert ramped_ema_decay(0.999, 16, 300_000, 0.05) == pytest.approx(0.999, rel=1e-12)
    assert ramped_ema_decay(0.999, 16, 0, 0.05) == 0.0  # nothing seen yet: the EMA copies G
    assert ramped_ema_decay(0.999, 16, 1000, None) == 0.999  # off: unchanged


def _pgan(**model):
    base = {"resolution": 8, "latent_dim": 8, "widths": [8, 8], "ema_decay": 0.99,
            "schedule": {"max_iter_at_scale": [3, 4], "alpha_jumps": 2, "alpha_jump_size": 1,
                         "batch_per_resolution": {4: 4, 8: 2}}, **model}
    config = resolve_run_config("pgan", {"data": "builtin:shapes?count=16&resolution=8", "model": base})
    return get_family("pgan")(config.model, open_dataset(config.data), "cpu", None)


def test_pgan_decay_ramps_with_the_images_its_schedule_has_shown():
    family = _pgan(ema_rampup=0.5)
    # after step s: 4 images per 4x4 step (steps 0-2), then 2 per 8x8 step; half-life cap 0.5 × images seen
    seen = [4, 8, 12, 14, 16, 18, 20]
    batch = [4, 4, 4, 2, 2, 2, 2]
    half_life_099 = [b * math.log(0.5) / math.log(0.99) for b in batch]  # 275.8 / 137.9 images: the cap binds
    expected = [0.5 ** (b / min(h, 0.5 * s)) for b, h, s in zip(batch, half_life_099, seen, strict=True)]
    assert [family.ema_decay(step) for step in range(7)] == pytest.approx(expected, rel=1e-12)
    assert family.ema_decay(0) == pytest.approx(0.5 ** 2)
    assert [_pgan().ema_decay(step) for step in range(7)] == [0.99] * 7  # default: the paper's constant decay


@pytest.mark.parametrize("key, value, message", [
    ("ema_rampup", 0.0, r"model\.ema_rampup: expected null \(off\) or a positive fraction"),
    ("ema_rampup", -0.05, r"model\.ema_rampup: expected null \(off\) or a positive fraction"),
    ("ema_decay", 1.0, r"model\.ema_decay: expected a number in \[0, 1\), got 1\.0"),
])
def test_pgan_refuses_ema_settings_out_of_range(key, value, message):
    with pytest.raises(ConfigError, match=message):
        _pgan(**{key: value})


# tiny models of the other families (their EMA schedule does not depend on the nets, only on the config)
TINY_MODELS: dict[str, dict[str, Any]] = {
    "dcgan": {"features_g": 2, "features_d": 2, "latent_dim": 8, "batch_size": 4},
    "wgan": {"features_g": 2, "features_d": 2, "latent_dim": 8, "batch_size": 4},
    "wgan-gp": {"features_g": 2, "features_d": 2, "latent_dim": 8, "batch_size": 4},
    "biggan": {"g_ch": 4, "d_ch": 4, "latent_dim": 16, "shared_dim": 8, "g_attention": [], "d_attention": [],
               "batch_size": 4, "num_d_steps": 2, "num_d_accumulations": 1, "num_g_accumulations": 1},
    "stargan2": {"resolution": 32, "base_dim": 4, "max_conv_dim": 8, "mapping_dim": 8, "latent_dim": 4,
                 "style_dim": 8, "w_hpf": 0.0, "batch_size": 4},
}


def _family(name: str, **model: Any):
    config = resolve_run_config(name, {"data": SHAPES32, "model": {**TINY_MODELS[name], **model}})
    return get_family(name)(config.model, open_dataset(config.data), torch.device("cpu"), DistInfo())


def _ramped_per_step(decay: float, rampup: float, step: int) -> float:
    """The hand computation at a constant batch size, in steps (the batch cancels): half-life ln ½ / ln decay
    steps, capped at rampup × (step + 1) steps."""
    return 0.5 ** (1 / min(math.log(0.5) / math.log(decay), rampup * (step + 1)))


@pytest.mark.parametrize("name", ["dcgan", "wgan", "wgan-gp", "stargan2"])
def test_each_family_ramps_its_constant_decay_the_same_way(name):
    family = _family(name, ema_decay=0.9, ema_rampup=0.5)
    # decay 0.9: half-life 6.58 steps; the cap 0.5 × (step + 1) binds through step 12, then 0.9 itself
    expected = [_ramped_per_step(0.9, 0.5, step) for step in range(16)]
    assert expected[:3] == [0.25, 0.5, pytest.approx(0.5 ** (1 / 1.5))] and expected[15] == pytest.approx(0.9)
    assert [family.ema_decay(step) for step in range(16)] == pytest.approx(expected, rel=1e-12)
    assert [_family(name, ema_decay=0.9).ema_decay(step) for step in range(3)] == [0.9] * 3  # off by default


def test_biggan_warm_up_starts_at_ema_start_and_counts_images_from_the_run_start():
    family = _family("biggan", ema_decay=0.9, ema_start=3, ema_rampup=0.5)
    # iterations 1 and 2 (steps 0, 1) copy G as officially; from step 2 on, the cap 0.5 × (step + 1) steps
    expected = [0.0, 0.0] + [_ramped_per_step(0.9, 0.5, step) for step in range(2, 16)]
    assert [family.ema_decay(step) for step in range(16)] == pytest.approx(expected, rel=1e-12)
    assert family.ema_decay(2) == pytest.approx(0.5 ** (1 / 1.5))  # not 0.25: images count from step 0
    official = _family("biggan", ema_decay=0.9, ema_start=3)
    assert [official.ema_decay(step) for step in range(4)] == [0.0, 0.0, 0.9, 0.9]


@pytest.mark.parametrize("name, model, message", [
    ("dcgan", {"ema_rampup": 0.05}, r"^model\.ema_rampup: 0\.05 is set but model\.ema_decay is null \(no EMA "
                                     r"generator\), so it would do nothing; remove it$"),
    ("wgan-gp", {"ema_decay": 0.9, "ema_rampup": 0}, r"^model\.ema_rampup: expected null \(off\) or a positive"),
    ("biggan", {"ema": False, "ema_rampup": 0.05}, r"^model\.ema_rampup: 0\.05 is set but model\.ema is false, so it "
                                                   r"would do nothing; remove it or set model\.ema: true$"),
    ("biggan", {"ema_rampup": -1.0}, r"^model\.ema_rampup: expected null \(off\) or a positive"),
    ("stargan2", {"ema_rampup": 0.0}, r"^model\.ema_rampup: expected null \(off\) or a positive"),
    ("stargan2", {"ema_decay": 0.0, "ema_rampup": 0.05}, r"^model\.ema_rampup: 0\.05 is set but model\.ema_decay is 0 "
                                                         r"\(the EMA copy is G itself at every step\)"),
    ("wgan-gp", {"ema_decay": 0.0, "ema_rampup": 0.05}, r"^model\.ema_rampup: 0\.05 is set but model\.ema_decay is 0"),
])
def test_a_warm_up_out_of_range_or_without_an_ema_is_refused(name, model, message):
    with pytest.raises(ConfigError, match=message):
        resolve_run_config(name, {"data": SHAPES32, "model": {**TINY_MODELS[name], **model}})


def test_paper_configs_keep_the_papers_ema_and_the_tiny_ones_warm_up():
    rampups = {path.name: resolve_run_config(None, read_config_file(path)).model.ema_rampup
               for path in sorted(CONFIGS.glob("*.yaml"))}
    warm = {"biggan_tiny.yaml": 0.05, "stargan2_tiny.yaml": 0.05, "quickstart_pgan.yaml": 0.02}
    assert {name: rampup for name, rampup in rampups.items() if rampup is not None} == warm
    assert len(rampups) > len(warm) + 8  # every paper config was read


def test_tiny_configs_keep_progress_output_on():
    for name in ("biggan_tiny.yaml", "stargan2_tiny.yaml", "quickstart_pgan.yaml"):
        assert resolve_run_config(None, read_config_file(CONFIGS / name)).progress is True, name


@pytest.mark.parametrize("family", ["biggan", "stargan2"])
def test_a_resumed_run_with_the_warm_up_ends_on_the_uninterrupted_weights(tmp_path, family):
    config = tiny_run(family, sample_every=1000)
    config["model"].update(steps=4)
    assert config["model"]["ema_rampup"] == 0.5
    straight = Trainer(resolve_run_config(None, json.loads(json.dumps(config))), tmp_path / "straight")
    straight.train()
    Trainer(resolve_run_config(None, json.loads(json.dumps(config))), tmp_path / "pieces").train(until=2)
    resumed = Trainer(resolve_run_config(None, json.loads(json.dumps(config))), tmp_path / "pieces")
    assert resumed.step == 2
    resumed.train()
    for name, net in straight.family.nets.items():
        for key, value in net.state_dict().items():
            assert torch.equal(value, resumed.family.nets[name].state_dict()[key]), f"{name}.{key}"
    ema, g = straight.family.nets["G_ema"].state_dict(), straight.family.nets["G"].state_dict()
    assert any(not torch.equal(ema[key], g[key]) for key in g)  # the EMA did average (decay > 0 at the end)
