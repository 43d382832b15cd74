"""PGAN trains as its references do: TF's full-resolution gradient penalty (paper), the zoo's GDPP weight, schedule
keys that would do nothing refused (old run configs still resume), and TF's CelebA preset as a shipped config."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pgan_tiny import TINY_PGAN

import ganforge
from ganforge.cli import main
from ganforge.config import ConfigError, read_config_file, to_dict
from ganforge.data.loader import Batch
from ganforge.families import resolve_run_config
from ganforge.families.base import Phase, StepPlan
from ganforge.families.pgan import PGANFamily, compile_schedule, resolution_lr
from ganforge.losses import gdpp_loss
from ganforge.models.pgan import pgan_widths
from ganforge.training.engine import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny_family(tmp_path: Path, **model) -> PGANFamily:
    config = copy.deepcopy(TINY_PGAN)
    config["model"].update(model)
    return Trainer(resolve_run_config(None, config), tmp_path / "run").family


def phases_at(family: PGANFamily, scale: int, alpha: float, batch: int = 4) -> list[Phase]:
    """The family's phases at an arbitrary schedule position (the family reads it from its segment: set here)."""
    family.position = lambda step: (scale, alpha)
    return family.phases(0, StepPlan(batch_size=batch, resolution=4 * 2**scale, real_blend=alpha))


# --- 1. gradient penalty: TF differentiates w.r.t. images upscaled to the final resolution ----------------------

def tf_full_resolution_penalty(family: PGANFamily, reals: torch.Tensor, z: torch.Tensor, mix: torch.Tensor,
                               scale: int, alpha: float) -> torch.Tensor:
    """What loss.D_wgangp_acgan computes: reals and fakes nearest-upscaled by k to the final resolution (as
    process_reals and G_paper hand them over), mixed there, D box-downscaling by k first, gradient w.r.t. the mix."""
    G, D = family.nets["G"], family.nets["D"]
    k = family.config.resolution // reals.shape[-1]

    def upscale(x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(k, 2).repeat_interleave(k, 3)

    with torch.no_grad():
        fakes = G(z, scale, alpha)
    real_full, fake_full = upscale(reals), upscale(fakes)
    mixed = (real_full + (fake_full - real_full) * (1 - mix)).requires_grad_(True)  # TF lerp(reals, fakes, u)
    scores = D(F.avg_pool2d(mixed, k) if k > 1 else mixed, scale, alpha)
    (grad,) = torch.autograd.grad(scores.sum(), mixed)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def ganforge_penalty(family: PGANFamily, reals: torch.Tensor, scale: int, alpha: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The D phase's logged penalty, with the latents and mixing factors it drew."""
    d_phase = phases_at(family, scale, alpha)[0]
    torch.manual_seed(7)
    _, logs = d_phase.loss(Batch(reals, None))
    torch.manual_seed(7)
    z, mix = torch.randn(4, family.config.latent_dim), torch.rand(4, 1, 1, 1)  # the phase's draws, in order
    return logs["gp"], z, mix


@pytest.mark.parametrize(("scale", "alpha"), [(0, 0.0), (1, 0.0), (1, 0.4), (2, 0.3)],
                         ids=["4px-k4", "8px-k2", "fade-to-8px-k2", "fade-to-16px-k1"])
def test_paper_penalty_equals_tfs_penalty_on_full_resolution_images(tmp_path, scale, alpha):
    family = tiny_family(tmp_path)
    reals = torch.randn(4, 3, 4 * 2**scale, 4 * 2**scale, generator=torch.Generator().manual_seed(scale))
    penalty, z, mix = ganforge_penalty(family, reals, scale, alpha)
    expected = tf_full_resolution_penalty(family, reals, z, mix, scale, alpha)
    torch.testing.assert_close(penalty, expected, atol=1e-6, rtol=1e-6)
    family.config.variant = "zoo"  # the native-resolution penalty, which `paper` used before
    native, _, _ = ganforge_penalty(family, reals, scale, alpha)
    if reals.shape[-1] < 16:  # below the final resolution it is a different regulariser
        assert not torch.allclose(native, expected, atol=1e-3)
    else:
        torch.testing.assert_close(native, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("scale", "alpha"), [(0, 0.0), (1, 0.4)])
def test_zoo_penalty_stays_at_the_native_resolution(tmp_path, scale, alpha):
    family = tiny_family(tmp_path, variant="zoo")
    reals = torch.randn(4, 3, 4 * 2**scale, 4 * 2**scale, generator=torch.Generator().manual_seed(1))
    penalty, z, mix = ganforge_penalty(family, reals, scale, alpha)
    G, D = family.nets["G"], family.nets["D"]
    with torch.no_grad():
        fakes = G(z, scale, alpha)
    mixed = (mix * reals + (1 - mix) * fakes).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(mixed, scale, alpha).sum(), mixed)
    torch.testing.assert_close(penalty, (grad.flatten(1).norm(dim=1) - 1).square().mean(), atol=1e-6, rtol=1e-6)


def test_the_d_phase_logs_the_parts_the_zoo_logs(tmp_path):
    """pytorch_GAN_zoo logs lossD_real, lossD_fake and lossD_Epsilon apart (sums over the batch there, unweighted
    penalty apart): the D phase logs the same parts as means, and its loss is their sum with the penalties."""
    family = tiny_family(tmp_path, variant="zoo")
    reals = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(5)
    loss, logs = phases_at(family, 1, 0.0)[0].loss(Batch(reals, None))
    torch.manual_seed(5)
    G, D = family.nets["G"], family.nets["D"]
    with torch.no_grad():
        fakes = G(torch.randn(4, family.config.latent_dim), 1, 0.0)
        d_real, d_fake = D(reals, 1, 0.0), D(fakes, 1, 0.0)
    expected = {"loss_D_real": -d_real.mean(), "loss_D_fake": d_fake.mean(), "drift": d_real.square().mean()}
    for key, value in expected.items():
        torch.testing.assert_close(logs[key], value, atol=1e-6, rtol=1e-6, msg=key)
    assert set(logs) == {"loss_D", "wdist", "gp", "drift", "loss_D_real", "loss_D_fake"}
    config = family.config
    torch.testing.assert_close(loss.detach(), logs["loss_D_fake"] + logs["loss_D_real"] + config.lambda_gp * logs["gp"]
                               + config.drift * logs["drift"])
    torch.testing.assert_close(logs["wdist"], -(logs["loss_D_fake"] + logs["loss_D_real"]))


# --- 2. GDPP against the zoo's batch-summed generator loss ---------------------------------------------------

def g_loss_and_grads(family: PGANFamily, reals: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], dict]:
    g_phase = phases_at(family, 1, 0.0)[1]
    assert g_phase.data == "previous"  # handed the D phase's real batch, as in a step
    torch.manual_seed(3)
    family.nets["G"].zero_grad()
    loss, logs = g_phase.loss(Batch(reals, None))
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in family.nets["G"].parameters() if p.grad is not None], logs


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_zoo_gdpp_weighs_against_the_summed_adversarial_loss_as_in_the_zoo(tmp_path, weight):
    family = tiny_family(tmp_path, variant="zoo", gdpp=weight)
    reals = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    loss, grads, logs = g_loss_and_grads(family, reals)
    # the zoo's G step: -sum over the batch of D(G(z)), then GDPP (weight 1 for `GDPP: true`) on the same graph
    G, D = family.nets["G"], family.nets["D"]
    torch.manual_seed(3)
    G.zero_grad()
    d_fake, fake_features = D(G(torch.randn(4, family.config.latent_dim), 1, 0.0), 1, 0.0, return_features=True)
    with torch.no_grad():
        _, real_features = D(reals, 1, 0.0, return_features=True)
    zoo_loss = -d_fake.sum() + weight * gdpp_loss(fake_features, real_features)
    zoo_loss.backward()
    zoo_grads = [p.grad for p in G.parameters() if p.grad is not None]
    batch = 4
    torch.testing.assert_close(loss * batch, zoo_loss.detach(), atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(grads, zoo_grads, strict=True):  # same direction; the zoo's is N times larger
        torch.testing.assert_close(ours * batch, theirs, atol=1e-5, rtol=1e-4)
    assert logs["gdpp"].abs() > 0.1  # the term is really there, not vanishingly small


@pytest.mark.parametrize(("variant", "divided"), [("zoo", True), ("paper", False)])
def test_zoo_variant_divides_adams_eps_by_each_scales_batch(tmp_path, variant, divided):
    """The zoo sums its losses over the batch (N-times larger gradients), the TF code averages as ganforge does."""
    family = tiny_family(tmp_path, variant=variant, adam_eps=1e-6, schedule={
        "max_iter_at_scale": [4, 8, 8], "alpha_jumps": 2, "alpha_jump_size": 2, "batch_size": 4,
        "batch_per_resolution": {8: 2}})
    for segment in family.segments:
        family.begin_step(segment.start + 1, family.plan(segment.start + 1))
        for optimizer in family.optimizers.values():
            assert optimizer.param_groups[0]["eps"] == (1e-6 / segment.batch_size if divided else 1e-6)


def test_adam_with_eps_over_n_on_mean_gradients_takes_the_steps_of_adam_on_summed_gradients():
    """Why the zoo variant divides ε by N: Adam's lr · m / (√v + ε) is the same for gradients g with ε / N as for
    N · g with ε (float64, three steps, a coordinate whose gradient is near ε)."""
    batch = 16
    gradients = torch.tensor([[3e-2, 2e-9, -1e-10], [1e-2, -3e-9, 4e-10], [-2e-2, 1e-9, 2e-10]], dtype=torch.float64)
    mean = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    summed = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    on_mean = torch.optim.Adam([mean], lr=1e-3, betas=(0.0, 0.99), eps=1e-8 / batch)
    on_sum = torch.optim.Adam([summed], lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
    for gradient in gradients:
        mean.grad, summed.grad = gradient.clone(), batch * gradient
        on_mean.step()
        on_sum.step()
    torch.testing.assert_close(mean, summed, rtol=1e-12, atol=0)
    same_eps = torch.zeros(3, dtype=torch.float64, requires_grad=True)  # without dividing: visibly other steps
    plain = torch.optim.Adam([same_eps], lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
    for gradient in gradients:
        same_eps.grad = gradient.clone()
        plain.step()
    assert (same_eps - summed).abs().max() > 1e-4


def test_paper_variant_adds_gdpp_to_the_mean_loss_with_its_weight(tmp_path):
    family = tiny_family(tmp_path, gdpp=1.0)
    reals = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    loss, _, logs = g_loss_and_grads(family, reals)
    torch.manual_seed(3)
    with torch.no_grad():
        d_fake = family.nets["D"](family.nets["G"](torch.randn(4, family.config.latent_dim), 1, 0.0), 1, 0.0)
    torch.testing.assert_close(loss, -d_fake.mean() + logs["gdpp"], atol=1e-6, rtol=1e-6)


# --- 2b. StyleGAN's logistic loss with R1 on these networks (model.loss: logistic-r1) -------------------------

def logistic_r1_by_hand(family: PGANFamily, reals: torch.Tensor, z: torch.Tensor, scale: int, alpha: float
                        ) -> tuple[torch.Tensor, ...]:
    """StyleGAN's D_logistic_simplegp per sample, averaged: softplus(D(G(z))) + softplus(−D(x)) + γ/2·‖∇ₓD(x)‖²,
    with R1 and the real and fake parts apart,
    the gradient taken at the images D is handed: the native ones (zoo) or upscaled to the final resolution (paper,
    as StyleGAN's process_reals does), which divides the squared norm by k²."""
    G, D = family.nets["G"], family.nets["D"]
    k = family.config.resolution // reals.shape[-1] if family.config.variant == "paper" else 1
    with torch.no_grad():
        fakes = G(z, scale, alpha)
    full = reals.repeat_interleave(k, 2).repeat_interleave(k, 3).requires_grad_(True)
    d_real = D(F.avg_pool2d(full, k) if k > 1 else full, scale, alpha)
    (grad,) = torch.autograd.grad(d_real.sum(), full)
    r1 = 0.5 * grad.square().flatten(1).sum(1)
    fake_part, real_part = torch.log1p(torch.exp(D(fakes, scale, alpha))), torch.log1p(torch.exp(-d_real))
    loss = fake_part + real_part
    return (loss.flatten() + family.config.r1_gamma * r1).mean().detach(), r1.mean(), real_part.mean().detach(), \
        fake_part.mean().detach()


@pytest.mark.parametrize(("variant", "scale", "alpha"), [("zoo", 1, 0.0), ("zoo", 2, 0.5), ("paper", 1, 0.4),
                                                         ("paper", 2, 0.0)])
def test_logistic_r1_d_loss_is_stylegans(tmp_path, variant, scale, alpha):
    family = tiny_family(tmp_path, variant=variant, loss="logistic-r1", r1_gamma=3.0)
    reals = torch.randn(4, 3, 4 * 2**scale, 4 * 2**scale, generator=torch.Generator().manual_seed(scale))
    torch.manual_seed(7)
    loss, logs = phases_at(family, scale, alpha)[0].loss(Batch(reals, None))
    torch.manual_seed(7)
    expected, r1, real_part, fake_part = logistic_r1_by_hand(family, reals, torch.randn(4, family.config.latent_dim),
                                                             scale, alpha)
    torch.testing.assert_close(loss.detach(), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(logs["r1"], r1, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(logs["loss_D_real"], real_part, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(logs["loss_D_fake"], fake_part, atol=1e-6, rtol=1e-5)
    assert logs["r1"] > 1e-4 and "gp" not in logs  # the penalty is really there, the WGAN one is not


def test_logistic_r1_g_loss_is_the_nonsaturating_one(tmp_path):
    family = tiny_family(tmp_path, loss="logistic-r1")
    torch.manual_seed(3)
    loss, _ = phases_at(family, 1, 0.0)[1].loss(None)
    torch.manual_seed(3)
    G, D = family.nets["G"], family.nets["D"]
    d_fake = D(G(torch.randn(4, family.config.latent_dim), 1, 0.0), 1, 0.0)
    torch.testing.assert_close(loss, torch.log1p(torch.exp(-d_fake)).mean())


@pytest.mark.parametrize(("variant", "scale", "alpha"), [("zoo", 2, 0.5), ("paper", 1, 0.4)])
def test_lazy_r1_is_stylegan2s_dreg_every_interval_steps(tmp_path, variant, scale, alpha):
    """r1_interval k: D's loss without the penalty on every step, and on steps 0, k, 2k, … a D_r1 phase on the same
    reals whose loss is k·γ·R1 (StyleGAN2's Dreg); D's Adam takes lr·k/(k+1) and betas^(k/(k+1)), G's is unchanged."""
    family = tiny_family(tmp_path, variant=variant, loss="logistic-r1", r1_gamma=3.0, r1_interval=4)
    family.position = lambda step: (scale, alpha)
    plan = StepPlan(batch_size=4, resolution=4 * 2**scale, real_blend=alpha)
    assert [[p.name for p in family.phases(step, plan)] for step in (0, 1, 3, 4)] == [
        ["D", "D_r1", "G"], ["D", "G"], ["D", "G"], ["D", "D_r1", "G"]]
    d_phase, r1_phase, _ = family.phases(8, plan)
    assert r1_phase.data == "previous" and r1_phase.trains == ("D",)
    reals = torch.randn(4, 3, 4 * 2**scale, 4 * 2**scale, generator=torch.Generator().manual_seed(scale))
    torch.manual_seed(7)
    loss, logs = d_phase.loss(Batch(reals, None))
    r1_loss, r1_logs = r1_phase.loss(Batch(reals, None))
    torch.manual_seed(7)
    expected, r1, *_ = logistic_r1_by_hand(family, reals, torch.randn(4, family.config.latent_dim), scale, alpha)
    torch.testing.assert_close(loss.detach(), expected - 3.0 * r1, atol=1e-6, rtol=1e-5)
    assert "r1" not in logs and r1 > 1e-4
    torch.testing.assert_close(r1_logs["r1"], r1, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(r1_loss.detach(), 4 * 3.0 * r1, atol=1e-6, rtol=1e-5)
    family.begin_step(0, plan)
    d_group, g_group = family.optimizers["D"].param_groups[0], family.optimizers["G"].param_groups[0]
    lr = family.config.lr
    assert d_group["lr"] == pytest.approx(lr * 0.8) and d_group["betas"] == pytest.approx((0.0, 0.99**0.8))
    assert g_group["lr"] == lr and g_group["betas"] == (0.0, 0.99)


def test_lazy_r1_trains_and_logs_r1_averaged_over_the_steps_that_measured_it(tmp_path):
    config = copy.deepcopy(TINY_PGAN)
    config["model"].update(loss="logistic-r1", r1_interval=3)
    trainer = Trainer(resolve_run_config(None, config), tmp_path / "run")
    steps = []
    for _ in range(6):
        steps.append(trainer.train_step(trainer.family.plan(trainer.step)))
        trainer.pending.add_step(steps[-1])
        trainer.step += 1
    assert ["r1" in logs for logs in steps] == [True, False, False, True, False, False]
    means = trainer.read_pending(logs=True)
    assert means["r1"] == pytest.approx((float(steps[0]["r1"]) + float(steps[3]["r1"])) / 2) and means["r1"] > 1e-5
    assert means["loss_D"] == pytest.approx(sum(float(logs["loss_D"]) for logs in steps) / 6)
    order = list(means)
    assert order == ["loss_D", "loss_D_real", "loss_D_fake", "r1", "loss_G"]  # the phases' order: D, D_r1, G
    for logs in steps[1:3] + steps[:1]:  # an interval whose first steps measure no R1 keeps the run's order
        trainer.pending.add_step(logs)
    assert list(trainer.read_pending(logs=True)) == order


@pytest.mark.parametrize(("model", "message"), [
    ({"loss": "logistic-r1", "lambda_gp": 10.0}, r"^model\.lambda_gp: a `loss: wgan-gp` setting, but this config has "
                                                 r"`loss: logistic-r1`, where it would do nothing"),
    ({"loss": "logistic-r1", "drift": 0.001}, r"^model\.drift: a `loss: wgan-gp` setting"),
    ({"r1_gamma": 1.0}, r"^model\.r1_gamma: a `loss: logistic-r1` setting, but this config has `loss: wgan-gp`"),
    ({"loss": "hinge"}, r"^model\.loss: 'hinge' is not one of 'wgan-gp', 'logistic-r1'"),
    ({"loss": "logistic-r1", "r1_gamma": -1.0}, r"^model\.r1_gamma: expected a number >= 0, got -1\.0"),
    ({"r1_interval": 16}, r"^model\.r1_interval: a `loss: logistic-r1` setting, but this config has `loss: wgan-gp`"),
    ({"loss": "logistic-r1", "r1_interval": 0}, r"^model\.r1_interval: expected an integer >= 1, got 0$"),
    ({"loss": "logistic-r1", "r1_interval": 2.5}, r"^model\.r1_interval: expected an integer, got 2\.5$"),
])
def test_a_loss_setting_that_would_do_nothing_or_is_invalid_is_refused(model, message):
    config = copy.deepcopy(TINY_PGAN)
    config["model"].update(model)
    with pytest.raises(ConfigError, match=message):
        resolve_run_config(None, config)


def test_each_loss_fills_in_its_own_defaults_only():
    wgan = resolve_run_config(None, TINY_PGAN).model
    assert (wgan.loss, wgan.lambda_gp, wgan.drift, wgan.r1_gamma) == ("wgan-gp", 10.0, 0.001, None)
    logistic = resolve_run_config(None, {**TINY_PGAN, "model": {**TINY_PGAN["model"], "loss": "logistic-r1"}}).model
    assert (logistic.lambda_gp, logistic.drift, logistic.r1_gamma, logistic.r1_interval) == (None, None, 10.0, 1)
    assert wgan.r1_interval is None


# --- 3. keys that would do nothing ----------------------------------------------------------------------------

@pytest.mark.parametrize(("unit", "key", "value"), [
    ("kimg", "alpha_jumps", 600), ("kimg", "alpha_jump_size", 32), ("kimg", "max_iter_at_scale", [4, 8, 8]),
    ("iterations", "stable_kimg", 600), ("iterations", "transition_kimg", 600), ("iterations", "total_kimg", 12000),
])
def test_a_key_of_the_other_unit_is_a_one_line_error_naming_key_and_unit(unit, key, value):
    config = copy.deepcopy(TINY_PGAN)
    config["model"]["schedule"] = {"unit": unit, key: value}
    with pytest.raises(ConfigError, match=rf"^model\.schedule\.{key}: a `unit: \w+` key, but this schedule has "
                                          rf"`unit: {unit}`[^\n]*do nothing") as err:
        resolve_run_config(None, config)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("change", "message"), [
    ({"fmap_base": 4096}, r"model\.fmap_base: does nothing when model\.widths is given"),
    ({"fmap_max": 512}, r"model\.fmap_max: does nothing when model\.widths is given"),
    ({"schedule": {"batch_size": 8, "batch_per_resolution": {4: 4, 8: 4, 16: 2}}},
     r"model\.schedule\.batch_size: does nothing, batch_per_resolution names every resolution \[4, 8, 16\]"),
    ({"schedule": {"alpha_jumps": [3, 2, 2]}}, r"model\.schedule\.alpha_jumps\[0\]: scale 0 .* must be 0, got 3"),
    # jumps of no iterations: the zoo would hold alpha at 1 (the new scale unused) for the whole scale
    ({"schedule": {"alpha_jumps": [0, 2, 2], "alpha_jump_size": [0, 0, 2]}},
     r"model\.schedule\.alpha_jump_size\[1\]: 0 iterations per jump for alpha_jumps\[1\] = 2 jumps does nothing"),
    ({"schedule": {"alpha_jumps": [0, 0, 2], "alpha_jump_size": [0, 7, 2]}},
     r"model\.schedule\.alpha_jump_size\[1\]: 7 does nothing, alpha_jumps\[1\] is 0"),
])
def test_other_inert_settings_are_refused(change, message):
    config = copy.deepcopy(TINY_PGAN)
    for key, value in change.items():
        config["model"][key] = {**config["model"][key], **value} if key == "schedule" else value
    with pytest.raises(ConfigError, match=message):
        compile_schedule(resolve_run_config(None, config).model)  # the networks' scales are known there


def test_zoo_json_with_a_scale_zero_alpha_entry_names_the_zoo_key():
    with pytest.raises(ConfigError, match=r"config\.alphaNJumps\[0\]: scale 0 has nothing to fade from.*got 5"):
        resolve_run_config(None, {"pathDB": "builtin:shapes", "config": {"maxIterAtScale": [4, 8],
                                                                         "alphaNJumps": [5, 2]}})


def test_alpha_jumps_of_0_keep_the_default_jump_size_without_a_word():
    """One jump size for every scale is used wherever a scale fades: not inert where one scale does not."""
    config = copy.deepcopy(TINY_PGAN)
    config["model"]["schedule"] = {**config["model"]["schedule"], "alpha_jumps": [0, 0, 2], "alpha_jump_size": 2}
    segments = compile_schedule(resolve_run_config(None, config).model)
    assert [segment.fade_steps for segment in segments] == [0, 0, 2 * 2]


@pytest.mark.parametrize(("jumps", "sizes", "migrated"), [
    ([0, 2, 2], [0, 0, 2], ([0, 0, 2], [0, 0, 2])), ([0, 0, 2], [0, 7, 2], ([0, 0, 2], [0, 0, 2])),
    (2, 0, (0, 0)), (2, [0, 0, 2], ([0, 0, 2], [0, 0, 2])),
    (0, 5, (0, 5)), ([0, 0, 2], 2, ([0, 0, 2], 2)),  # accepted for new runs: kept as written (a -c resume matches)
])
def test_runs_saved_with_an_idle_jump_pair_load_as_the_no_fade_they_trained(jumps, sizes, migrated):
    """Such pairs were a fade of no iterations before they were refused: a saved run's config reads as (0, 0)."""
    from ganforge.families import migrated_saved_config

    config = copy.deepcopy(TINY_PGAN)
    config["model"]["schedule"].update(alpha_jumps=jumps, alpha_jump_size=sizes)
    schedule = migrated_saved_config(config)["model"]["schedule"]
    assert (schedule["alpha_jumps"], schedule["alpha_jump_size"]) == migrated
    segments = compile_schedule(resolve_run_config(None, migrated_saved_config(config)).model)
    assert segments[1].fade_steps == 0


@pytest.mark.parametrize(("zoo", "message"), [
    ({"baseLearningRate": 0.003, "learningRate": 0.002},
     r"^config: baseLearningRate 0\.003 and learningRate 0\.002 both set the learning rate; keep one"),
    ({"configScheduler": {"1": {"learningRate": 0.002, "baseLearningRate": 0.003}}},
     r"^configScheduler\.1: baseLearningRate 0\.003 and learningRate 0\.002 both set"),
    ({"miniBatchSize": 8, "miniBatchScheduler": {"0": 4, "1": 2}},
     r"^config\.miniBatchSize: 8 does nothing, miniBatchScheduler gives every scale of maxIterAtScale \(2\)"),
    # jumps of no iterations: the zoo holds alpha at 1 (the new scale unused) for the whole scale
    ({"alphaNJumps": [0, 2], "alphaSizeJumps": [0, 0]},
     r"^config\.alphaSizeJumps\[1\]: 0 with alphaNJumps\[1\] = 2: the zoo puts every jump at iteration 0"),
    ({"alphaSizeJumps": 0}, r"^config\.alphaSizeJumps\[1\]: 0 with alphaNJumps\[1\] = 600"),
    ({"alphaNJumps": None, "alphaSizeJumps": 0}, r"^config\.alphaSizeJumps\[1\]: 0 with alphaNJumps\[1\] = 600"),
])
def test_zoo_json_keys_one_of_which_the_zoo_ignores_are_refused_by_their_zoo_names(zoo, message):
    """Key order would otherwise pick the rate (the zoo reads baseLearningRate in config, learningRate in a
    scheduler entry); a batch size every scale overrides does nothing."""
    schedulers = {key: zoo.pop(key) for key in ("configScheduler", "miniBatchScheduler") if key in zoo}
    with pytest.raises(ConfigError, match=message):
        resolve_run_config(None, {"pathDB": "builtin:shapes", "config": {"maxIterAtScale": [4, 8], **zoo},
                                  **schedulers})


def old_saved_model(unit: str, **extra) -> dict:
    """A `model:` mapping as the code before this check wrote it into config.json and checkpoints: every key,
    the other unit's and fmap_base/fmap_max (beside explicit widths) at their old defaults."""
    schedule = {"unit": unit, "max_iter_at_scale": [48000, 96000, 96000, 96000, 96000, 96000], "alpha_jumps": 600,
                "alpha_jump_size": 32, "stable_kimg": 600.0, "transition_kimg": 600.0, "total_kimg": None,
                "batch_size": 16, "batch_per_resolution": {}, "lr_per_resolution": {}}
    if unit == "iterations":
        schedule.update(max_iter_at_scale=[4, 8, 8], alpha_jumps=2, alpha_jump_size=2, batch_size=4)
    else:
        schedule.update(stable_kimg=0.016, transition_kimg=0.008, total_kimg=0.1, batch_size=4)
    schedule.update(extra)
    return {"variant": "paper", "resolution": 16, "latent_dim": 16, "widths": [16, 16, 8], "fmap_base": 8192,
            "fmap_max": 512, "mbstd_group_size": 4, "lambda_gp": 10.0, "drift": 0.001, "gdpp": 0.0, "lr": 0.001,
            "betas": [0.0, 0.99], "adam_eps": 1e-08, "ema_decay": 0.999, "mirror": None, "schedule": schedule}


@pytest.mark.parametrize("unit", ["iterations", "kimg"])
def test_an_old_saved_run_config_still_loads_and_counts_as_unchanged(unit):
    old = old_saved_model(unit)
    config = resolve_run_config(None, {**TINY_PGAN, "model": copy.deepcopy(old)})
    new = to_dict(config.model)
    inert = ["stable_kimg", "transition_kimg", "total_kimg"] if unit == "iterations" else [
        "max_iter_at_scale", "alpha_jumps", "alpha_jump_size"]
    assert [new["schedule"][k] for k in inert] == [None] * 3 and new["fmap_base"] is None
    assert new["schedule"]["batch_size"] == 4 and new["widths"] == [16, 16, 8]
    assert PGANFamily.extends_schedule(old, new)  # a resume compares the checkpoint's old dump with this
    if unit == "kimg":  # and a longer total is still a lengthening
        assert PGANFamily.extends_schedule(old, {**new, "schedule": {**new["schedule"], "total_kimg": 0.2}})


def test_an_old_run_config_with_an_ignored_value_names_it_but_the_run_stays_resumable():
    old = old_saved_model("iterations", total_kimg=200.0)  # accepted and ignored by the old code
    with pytest.raises(ConfigError, match=r"model\.schedule\.total_kimg: a `unit: kimg` key"):
        resolve_run_config(None, {**TINY_PGAN, "model": copy.deepcopy(old)})
    fixed = copy.deepcopy(old)
    fixed["schedule"]["total_kimg"] = None  # the user removes it; the checkpoints still hold 200
    new = to_dict(resolve_run_config(None, {**TINY_PGAN, "model": fixed}).model)
    assert PGANFamily.extends_schedule(old, new)


@pytest.mark.slow
def test_resume_refuses_total_kimg_on_an_iterations_run_and_resumes_an_old_config(tmp_path):
    run = tmp_path / "run"
    ganforge.train(TINY_PGAN, run)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    longer = copy.deepcopy(TINY_PGAN)
    longer["model"]["schedule"]["total_kimg"] = 1.0  # did nothing on this run; accepted by the old code
    with pytest.raises(ConfigError, match=r"total_kimg: a `unit: kimg` key, but this schedule has `unit: iterations`"):
        ganforge.train(longer, run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    # the run's config.json and checkpoints as the old code wrote them: resuming needs no edit
    saved = json.loads((run / "config.json").read_text())
    saved["model"] = old_saved_model("iterations")
    (run / "config.json").write_text(json.dumps(saved))
    for meta_file in (run / "checkpoints").glob("*.json"):
        meta = json.loads(meta_file.read_text())
        meta["config"]["model"] = old_saved_model("iterations")
        meta_file.write_text(json.dumps(meta))
    assert main(["train", "pgan", "--run-dir", str(run)]) == 0


# --- 4. TF's CelebA preset ------------------------------------------------------------------------------------

# preset-v2-1gpu's minibatch_dict, minibatch_base 4 above it; G_lrate_dict / D_lrate_dict {1024: 0.0015}
TF_MINIBATCH = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4, 1024: 4}
TF_PRESETS = {  # config file: (resolution, widths, steps per resolution by hand, as the yaml says)
    "pgan_celeba128_official.yaml": (128, [512, 512, 512, 512, 256, 128], [4688, 9375, 9375, 18750, 37499, 412498]),
    "pgan_celebahq1024_official.yaml": (1024, [512, 512, 512, 512, 256, 128, 64, 32, 16],
                                        [4688, 9375, 9375, 18750, 37499, 74999, 149999, 299999, 749999]),
}


def tf_schedule(nimg: int, resolution_log2: int) -> tuple[int, int, float, float]:
    """(resolution, minibatch, alpha = weight of the old path, learning rate) from train.TrainingSchedule's lod
    formula, initial resolution 4, 600 kimg training + 600 kimg transition."""
    kimg = nimg / 1000
    phase = math.floor(kimg / 1200)
    lod = max(resolution_log2 - 2 - phase - max(kimg - phase * 1200 - 600, 0) / 600, 0.0)
    resolution = 2 ** (resolution_log2 - math.floor(lod))
    return resolution, TF_MINIBATCH[resolution], lod - math.floor(lod), 0.0015 if resolution == 1024 else 0.001


@pytest.mark.parametrize("name", sorted(TF_PRESETS))
def test_official_configs_are_tfs_presets(name):
    config = resolve_run_config(None, read_config_file(CONFIGS / name))
    model = config.model
    resolution, widths, steps = TF_PRESETS[name]
    assert (model.variant, model.resolution, model.latent_dim, model.mirror) == ("paper", resolution, 512, True)
    assert pgan_widths(model.resolution, model.fmap_base, model.fmap_max) == widths
    assert (model.lr, model.betas, model.adam_eps, model.ema_decay) == (0.001, [0.0, 0.99], 1e-8, 0.999)
    assert (model.lambda_gp, model.drift, model.mbstd_group_size, model.gdpp) == (10.0, 0.001, 4, 0.0)
    assert model.schedule.batch_size is None
    segments = compile_schedule(model)
    assert sum(s.steps * s.batch_size for s in segments) == 12_000_000  # TF: while cur_nimg < total_kimg * 1000
    assert [s.steps for s in segments] == steps
    images_before = 0
    for seg in segments:
        checks = sorted({0, seg.fade_steps // 3, seg.fade_steps - 1, seg.fade_steps, seg.steps // 2, seg.steps - 1}
                        - {-1})
        for local in checks:
            nimg = images_before + local * seg.batch_size
            tf_resolution, batch, alpha, lr = tf_schedule(nimg, int(math.log2(resolution)))
            assert (seg.resolution, seg.batch_size, resolution_lr(model, seg.resolution)) == (
                tf_resolution, batch, lr), (seg.scale, local)
            # ganforge's alpha moves every step from the first step past TF's boundary: less than one minibatch
            # (at most 128 images) of the 600 kimg fade apart (TF itself updates it every 4 minibatches)
            assert seg.alpha(local) == pytest.approx(alpha, abs=128 / 600_000), (seg.scale, local)
        images_before += seg.steps * seg.batch_size
