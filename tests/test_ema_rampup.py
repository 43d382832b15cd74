"""EMA ramp-up (stylegan2-ada's `ema_rampup`): the averaging half-life in images is capped by a fraction of the
images seen, so short runs get a usable EMA generator while long runs keep the configured decay."""

import math

import pytest

from ganforge.config import ConfigError
from ganforge.data.store import open_dataset
from ganforge.families import get_family, resolve_run_config
from ganforge.nn.ema import ramped_ema_decay


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
