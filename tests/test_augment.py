"""DiffAugment and ADA: each transform's values and probabilities, identity at p = 0, gradients, seeds, sharding,
and ADA's controller against a hand computation."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ganforge.augment import AugmentConfig, Augmenter, GlobalNoise
from ganforge.augment.ada import AdaPipeline, apply_color, scale2d, translate2d, warp
from ganforge.augment.diffaugment import (
    DiffAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    cut_out,
    translate,
    uniform_int,
)
from ganforge.config import ConfigError, from_dict
from ganforge.distributed import DistInfo


def make(**augment) -> Augmenter:
    return Augmenter(from_dict(AugmentConfig, augment, "augment"), generator=torch.Generator().manual_seed(0))


def images(n: int = 4, channels: int = 3, size: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


class ConstantNoise(GlobalNoise):
    """Every uniform draw is `u`, every normal draw `z`: transforms with hand-computable parameters."""

    def __init__(self, u: float, z: float) -> None:
        super().__init__()
        self.u, self.z = u, z

    def uniform(self, shape, device):
        return torch.full(shape, self.u, device=device)

    def normal(self, shape, device):
        return torch.full(shape, self.z, device=device)


# --- config -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("augment", "message"), [
    ({"kind": "ada", "policy": "color"}, "augment.policy: does nothing with augment.kind 'ada'"),
    ({"kind": "diffaugment", "target": 0.5}, "augment.target: does nothing with augment.kind 'diffaugment'"),
    ({"kind": "none", "p": 0.2}, "augment.p: does nothing with augment.kind 'none'"),
    ({"kind": "ada", "p": 0.2, "speed_kimg": 100}, "augment.speed_kimg: does nothing with a fixed augment.p"),
    ({"kind": "diffaugment", "policy": "color,flip"}, "augment.policy: 'color,flip' is not"),
    ({"kind": "diffaugment", "policy": "color,color"}, "augment.policy: 'color,color' is not"),
    ({"kind": "ada", "pipeline": "bgcfnc"}, "augment.pipeline: 'bgcfnc' is not one of blit, geom, color, bg, bgc"),
    ({"kind": "ada", "p": 1.5}, "augment.p: expected a probability in (0, 1], got 1.5"),
    ({"kind": "ada", "p": 0}, "augment.p: expected a probability in (0, 1], got 0.0 (0 augments nothing: augment.kind "
                              "none)"),
    ({"kind": "ada", "target": 1.0}, "augment.target: expected a value in [0, 1), got 1.0 (r_t is at most 1: p "
                                      "would never rise)"),
    ({"kind": "ada", "target": -0.1}, "augment.target: expected a value in [0, 1), got -0.1"),
    ({"kind": "ada", "interval": 0}, "augment.interval: expected a positive integer"),
    ({"kind": "ada", "speed_kimg": 0}, "augment.speed_kimg: expected a positive finite number"),
    ({"kind": "ada", "speed_kimg": math.inf}, "augment.speed_kimg: expected a finite number, got inf"),
    ({"kind": "adaa"}, "augment.kind: 'adaa' is not one of 'none', 'diffaugment', 'ada'"),
])
def test_config_rejects_keys_that_do_nothing_and_bad_values(augment, message):
    with pytest.raises(ConfigError) as err:
        from_dict(AugmentConfig, augment, "augment")
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_a_target_of_0_is_accepted_as_the_official_code_accepts_it():
    """p then rises whenever more reals score positive than negative: not a setting that does nothing."""
    assert from_dict(AugmentConfig, {"kind": "ada", "target": 0}, "augment").target == 0


def test_defaults_are_the_papers():
    assert make(kind="diffaugment").describe() == {"kind": "diffaugment", "policy": "color,translation,cutout"}
    assert make(kind="ada").describe() == {"kind": "ada", "pipeline": "bgc", "p": 0.0, "target": 0.6,
                                           "speed_kimg": 500.0, "interval": 4}
    assert make(kind="ada", p=0.25).describe() == {"kind": "ada", "pipeline": "bgc", "p": 0.25}
    assert make().describe() == {"kind": "none"} and make().p is None


# --- DiffAugment ------------------------------------------------------------------------------------------------
def test_diffaugment_colour_values_by_hand():
    x = torch.tensor([[[[0.5]], [[-0.1]], [[0.2]]]])  # one RGB pixel
    assert torch.allclose(adjust_brightness(x, torch.tensor([0.9])), x + 0.4)
    mean = x.mean()  # channel mean of the pixel = image mean here
    assert torch.allclose(adjust_saturation(x, torch.tensor([0.75])), (x - mean) * 1.5 + mean)
    y = torch.tensor([[[[0.0, 1.0], [-1.0, 0.2]]]])
    assert torch.allclose(adjust_contrast(y, torch.tensor([0.0])), (y - 0.05) * 0.5 + 0.05)


def test_diffaugment_brightness_shift_is_uniform_within_half():
    grey = torch.full((512, 3, 8, 8), 0.3)  # saturation and contrast leave a constant grey image alone
    shift = (DiffAugment(("color",), GlobalNoise(generator=torch.Generator().manual_seed(0)))(grey) - grey)[:, 0, 0, 0]
    assert shift.min() >= -0.5 and shift.max() < 0.5
    assert shift.min() < -0.45 and shift.max() > 0.45 and abs(shift.mean()) < 0.05


def test_translate_moves_by_whole_pixels_with_zeros():
    x = torch.arange(1.0, 65.0).view(1, 1, 8, 8)
    out = translate(x, torch.tensor([2]), torch.tensor([-1]))
    expected = torch.zeros_like(x)
    expected[0, 0, :6, 1:] = x[0, 0, 2:, :7]  # out[i, j] = x[i + 2, j - 1]
    assert torch.equal(out, expected)


def test_diffaugment_translation_draws_every_shift_up_to_an_eighth():
    x = torch.arange(1.0, 65.0).view(1, 1, 8, 8).expand(300, 1, 8, 8)
    out = DiffAugment(("translation",), GlobalNoise(generator=torch.Generator().manual_seed(0)))(x)
    seen = set()
    for sample in out:  # each sample is x shifted by (r, c) in [-1, 1]^2 (int(8/8 + 0.5) = 1), zeros shifted in
        found = [(r, c) for r in (-1, 0, 1) for c in (-1, 0, 1)
                 if torch.equal(sample, translate(x[:1], torch.tensor([r]), torch.tensor([c]))[0])]
        assert len(found) == 1
        seen.add(found[0])
    assert len(seen) == 9


def test_cutout_square_by_hand_and_its_draws():
    x = torch.ones(1, 1, 8, 8)
    out = cut_out(x, torch.tensor([-2]), torch.tensor([6]), (4, 4))
    expected = torch.ones_like(x)
    expected[0, 0, :2, 6:] = 0
    assert torch.equal(out, expected)
    drawn = DiffAugment(("cutout",), GlobalNoise(generator=torch.Generator().manual_seed(0)))(torch.ones(200, 1, 8, 8))
    zeros = (drawn == 0).sum(dim=(1, 2, 3))
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4x4 square (int(8/2 + 0.5)), at least 2x2 of it inside
    assert (drawn[:, 0].sum(dim=1) < 8).any(dim=1).all()  # every sample lost some pixels


def test_uniform_int_covers_the_range_and_never_reaches_high():
    u = torch.tensor([0.0, 0.2, 0.5, 1 - 2**-24])
    assert uniform_int(u, -1, 2).tolist() == [-1, -1, 0, 1]


# --- ADA ----------------------------------------------------------------------------------------------------------
def test_ada_identity_at_p_zero_is_exact():
    x = images()
    assert torch.equal(make(kind="ada")(x), x)  # the adaptive p starts at 0
    assert torch.equal(AdaPipeline("bgc", GlobalNoise(generator=torch.Generator().manual_seed(0)))(x, 0.0), x)


def test_warp_integer_translation_is_an_exact_shift_with_reflection():
    x = images(n=1, channels=2)
    one = torch.ones(1)
    taps = AdaPipeline("bg", GlobalNoise()).taps
    shifted = warp(x, translate2d(one * 2, -one), translate2d(one * 2, -one), taps)
    padded = F.pad(x, [3, 3, 3, 3], mode="reflect")
    # out(x, y) = in(x + 2, y - 1): out[i, j] = in[i - 1, j + 2], reflected at the border
    assert torch.allclose(shifted, padded[:, :, 2:18, 5:21], atol=1e-5)
    # a mirror goes through the same resampler; the Symlet-6 pair is asymmetric, so a mirrored image comes out
    # slightly low-passed across x (as in the official pipeline), but one that is constant along x is untouched
    rows = x[..., :1].expand_as(x)
    assert torch.allclose(warp(rows, scale2d(-one, 1.0), scale2d(-one, 1.0), taps), rows, atol=1e-5)


def test_ada_integer_translation_at_p_one_by_hand():
    # u = 0.2 everywhere: no x-flip (floor(0.4) = 0), no quarter turn (floor(0.8) = 0), integer translation
    # t = (0.4 - 1) * 0.125 * 16 = -1.2 -> -1 pixel, so out(x, y) = in(x + 1, y + 1)
    x = images(n=2)
    out = AdaPipeline("blit", ConstantNoise(0.2, 0.0))(x, 1.0)
    assert torch.allclose(out[:, :, :15, :15], x[:, :, 1:, 1:], atol=1e-5)


class ScriptedNoise(GlobalNoise):
    """Returns the given values, one per draw, in the order the pipeline draws (uniform or normal alike)."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = iter(values)

    def uniform(self, shape, device):
        return torch.full(shape, next(self.values), device=device)

    normal = uniform


def test_ada_bgc_matches_the_official_pipeline():
    # stylegan2-ada-pytorch's AugmentPipe (all bgc multipliers 1) with debug_percentile = 0.3 applies every transform
    # at the value of percentile q = 0.3 (normal ones at z = erfinv(2q - 1); the post-rotation at 0). Its output on
    # this image, recorded from the official code, against ours with the same values (gates drawn as 0: open).
    q, z = 0.3, -0.3708071708679199
    values = [q, 0, q, 0, q, 0, z, 0, q, 0, z, 0, 0.5, 0, z, 0, z, 0, z, 0, q, 0, q, 0, z, 0]
    i, j = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    x = torch.stack([torch.sin(0.7 * i + 1.3 * j + c) * 0.8 for c in range(3)])[None]
    out = AdaPipeline("bgc", ScriptedNoise(values))(x, 1.0)
    row3 = [[0.42640796, -0.53675717, -0.53837109, 0.44287115, 0.38736442, -0.66078681, -0.32647243, -0.30426410],
            [-0.31459388, -0.68679744, 0.31513050, 0.51317853, -0.48337480, -0.63035172, 0.43229392, 0.45883268],
            [0.11798948, -0.34443259, -0.22466736, 0.22465450, 0.08076543, -0.39143065, -0.11869189, -0.10587057]]
    assert torch.allclose(out[0, :, 3, :], torch.tensor(row3), atol=2e-5)
    assert torch.allclose(out.sum((2, 3)), torch.tensor([[-8.20159054, -6.29212761, -6.17518187]]), atol=2e-4)


def test_ada_colour_by_hand():
    # u = 0.25: no luma flip (floor(0.5) = 0), hue rotation -pi/2; z = 1: brightness + 0.2, contrast x 2^0.5,
    # saturation x 2. Grey stays grey: out = sqrt(2) (g + 0.2). Colour: the luma (channel mean) goes the same way,
    # the chroma (deviation from it) is rotated about the grey axis and scaled by 2 sqrt(2)
    pipe = AdaPipeline("color", ConstantNoise(0.25, 1.0))
    x = images(n=3)
    out = pipe(x, 1.0)
    luma, chroma = x.mean(1, keepdim=True), x - x.mean(1, keepdim=True)
    assert torch.allclose(out.mean(1, keepdim=True), math.sqrt(2) * (luma + 0.2), atol=1e-5)
    out_chroma = out - out.mean(1, keepdim=True)
    assert torch.allclose(out_chroma.norm(dim=1), 2 * math.sqrt(2) * chroma.norm(dim=1), atol=1e-4)
    assert torch.allclose((out_chroma * chroma).sum(1), torch.zeros(3, 16, 16), atol=1e-4)  # a quarter turn
    grey = torch.full((1, 1, 4, 4), 0.3)  # one channel: hue and saturation are skipped, as in the official pipe
    assert torch.allclose(AdaPipeline("color", ConstantNoise(0.25, 1.0))(grey, 1.0), math.sqrt(2) * (grey + 0.2))
    assert torch.allclose(apply_color(x, torch.eye(4).expand(3, 4, 4)), x)


def test_ada_probabilities():
    pipe = AdaPipeline("bg", GlobalNoise(generator=torch.Generator().manual_seed(0)))
    n, p = 20000, 0.4
    det = torch.linalg.det(pipe.geometry(n, p, 16, 16, torch.device("cpu"))[:, :2, :2])
    # only the x-flip (probability p, then a fair coin) reverses orientation; only the isotropic scaling
    # (probability p) changes the area (rotations and the anisotropic scaling keep it)
    assert abs((det < 0).float().mean() - p / 2) < 0.015
    assert abs(((det.abs() - 1).abs() > 1e-4).float().mean() - p) < 0.015
    scale = det.abs()[(det.abs() - 1).abs() > 1e-4].log2() / -2  # log2 of the isotropic scale: N(0, 0.2^2)
    assert abs(scale.std() - 0.2) < 0.01


def test_ada_rotation_probability_is_p_for_pre_or_post():
    pipe = AdaPipeline("geom", GlobalNoise(generator=torch.Generator().manual_seed(0)))
    n, p = 20000, 0.5
    g = pipe.geometry(n, p, 16, 16, torch.device("cpu"))
    # with scale, aniso and xfrac also drawn, rotation shows as an off-diagonal term (scalings are diagonal)
    rotated = (g[:, 0, 1].abs() > 1e-6) | (g[:, 1, 0].abs() > 1e-6)
    assert abs(rotated.float().mean() - p) < 0.015


# --- shared properties ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("augment", [{"kind": "diffaugment"}, {"kind": "ada", "p": 1.0}, {"kind": "ada", "p": 0.5}])
def test_gradients_flow_to_the_input_including_double_backward(augment):
    x = images().requires_grad_(True)
    weight = torch.randn(1, 3, 3, 3, generator=torch.Generator().manual_seed(2))
    logits = F.conv2d(make(**augment)(x), weight).tanh().sum()  # a tiny nonlinear "D"
    (grad,) = torch.autograd.grad(logits, x, create_graph=True)  # R1-style penalty through the augmentation
    assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    grad.square().sum().backward()
    assert x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("augment", [{"kind": "diffaugment"}, {"kind": "ada", "p": 0.7}])
def test_same_seed_same_output_other_seed_other_output(augment):
    x = images(n=6)
    config = from_dict(AugmentConfig, augment, "augment")
    a, b, c = (Augmenter(config, generator=torch.Generator().manual_seed(s)) for s in (5, 5, 6))
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), c(x))


@pytest.mark.parametrize("augment", [{"kind": "diffaugment"}, {"kind": "ada", "p": 0.7}])
def test_two_ranks_augment_their_shards_as_one_process_does(augment):
    x = images(n=8)
    config = from_dict(AugmentConfig, augment, "augment")
    whole = Augmenter(config, generator=torch.Generator().manual_seed(3))(x)
    for rank in (0, 1):
        dist = DistInfo(rank=rank, world_size=2)
        part = Augmenter(config, dist, generator=torch.Generator().manual_seed(3))(x[rank::2])
        assert torch.equal(part, whole[rank::2])  # the pad margin comes from the global batch: bit for bit


def test_ada_keeps_the_dtype():
    x = images().to(torch.bfloat16)
    assert make(kind="ada", p=1.0)(x).dtype == torch.bfloat16


def test_ada_computes_in_float32_under_autocast():
    """The engine's bf16 autocast would round the transform matrices, the sampling grid and the wavelet filters
    (pixel copies of the blit group off by up to 0.5); the stage turns it off, as stylegan2-ada runs in float32."""
    x = images()
    plain = make(kind="ada", p=1.0)(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = make(kind="ada", p=1.0)(x)
    assert autocast.dtype == torch.float32 and torch.equal(autocast, plain)


def test_ada_statistic_is_summed_across_ranks_on_the_run_device(monkeypatch):
    """A rank with no signs since the last adjustment (a checkpoint right after one) still joins the sum, with a
    zero statistic on the run's device: NCCL refuses host tensors."""
    config = from_dict(AugmentConfig, {"kind": "ada"}, "augment")
    augmenter = Augmenter(config, DistInfo(rank=0, world_size=2), device="meta")
    summed = []

    def all_reduce(tensor):
        summed.append(tensor.device)
        raise StopIteration  # a meta tensor has no values to read on

    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    with pytest.raises(StopIteration):
        augmenter.flush()
    assert summed == [torch.device("meta")]


def test_none_passes_images_and_ignores_logits():
    augmenter, x = make(), images()
    assert augmenter(x) is x
    augmenter.update(torch.ones(4))
    augmenter.end_step(4)
    assert augmenter.state_dict() == {} and augmenter.p is None


# --- ADA controller -----------------------------------------------------------------------------------------------
def signs(positive: int, negative: int) -> torch.Tensor:
    return torch.tensor([1.0] * positive + [-1.0] * negative)


def test_controller_matches_a_hand_computation():
    # target 0.6, interval 2, batch 4, speed 0.02 kimg: each adjustment moves p by 4 * 2 / 20 = 0.4
    augmenter = make(kind="ada", target=0.6, speed_kimg=0.02, interval=2)
    history = []
    for positive in (4, 4, 3, 3, 1, 1, 4, 4, 4, 4, 4, 4, 4, 4):  # per step: r = 1, 1 | .5, .5 | -.5 | 1 ...
        augmenter.update(signs(positive, 4 - positive))
        augmenter.end_step(4)
        history.append(augmenter.p)
    expected = [0, 0.4, 0.4, 0.0, 0.0, 0.0, 0.0, 0.4, 0.4, 0.8, 0.8, 1.2, 1.2, 1.6]  # floored at 0, not capped
    assert history == pytest.approx(expected, abs=1e-6)


def test_controller_averages_every_evaluation_of_reals_in_the_interval():
    # two evaluations in step 1 (D phase and R1 phase), none in step 2: r = (8 - 4 + 2 - 2) / 16 = 0.25 < 0.6
    augmenter = make(kind="ada", target=0.6, speed_kimg=0.02, interval=2)
    augmenter.controller.p = 1.0
    augmenter.update(signs(6, 2)[None].expand(1, 8))
    augmenter.update(torch.tensor([[0.5, 2.0], [-1.0, -3.0]]))
    augmenter.end_step(4)
    augmenter.update(torch.tensor([]))
    augmenter.end_step(4)
    assert augmenter.p == pytest.approx(0.6, abs=1e-6)


def test_fixed_p_does_not_move():
    augmenter = make(kind="ada", p=0.3)
    for _ in range(8):
        augmenter.update(torch.ones(4))
        augmenter.end_step(4)
    assert augmenter.p == 0.3 and augmenter.state_dict() == {}


def test_controller_state_round_trips_through_json_mid_interval():
    run = make(kind="ada", target=0.6, speed_kimg=0.05, interval=3)
    logits = [signs(k, 4 - k) for k in (4, 4, 3, 4, 2, 4, 4, 4)]
    for step in logits[:4]:
        run.update(step)
        run.end_step(4)
    run.flush()  # what the engine does on every rank before a checkpoint: the interval's signs join the state
    saved = json.loads(json.dumps(run.state_dict()))
    resumed = make(kind="ada", target=0.6, speed_kimg=0.05, interval=3)
    resumed.load_state_dict(saved)
    assert resumed.state_dict() == run.state_dict()
    for step in logits[4:]:
        for augmenter in (run, resumed):
            augmenter.update(step)
            augmenter.end_step(4)
        assert resumed.state_dict() == run.state_dict()
    assert run.p == pytest.approx(0.48, abs=1e-6)  # (10 / 12 and 8 / 12 > 0.6: two steps of 12 / 50)
    with pytest.raises(ValueError, match="no ADA controller state"):
        resumed.load_state_dict({})
