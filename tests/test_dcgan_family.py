"""DCGAN / WGAN / WGAN-GP family: losses against hand computations, configs per objective, clipping, critic step
counts, fresh noise per critic step, and sampling that leaves training untouched."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganforge.config import ConfigError, read_config_file, to_dict
from ganforge.data.loader import Batch
from ganforge.data.store import open_dataset
from ganforge.distributed import DistInfo
from ganforge.evaluation.run_metrics import generated_batches
from ganforge.families import get_family, resolve_run_config
from ganforge.families.base import sample_batches
from ganforge.families.dcgan import DCGANConfig, DCGANFamily, WGANConfig, WGANFamily, WGANGPConfig, WGANGPFamily
from ganforge.losses import gradient_penalty
from ganforge.nn.cross_replica import CrossReplicaBatchNorm2d
from ganforge.training.engine import Trainer

SHAPES = "builtin:shapes?count=64&resolution=32"
TINY = {"features_g": 2, "features_d": 2, "latent_dim": 8, "batch_size": 4}


@pytest.fixture(scope="module")
def shapes():
    return open_dataset(SHAPES)


def build(name: str, dataset, **model: Any) -> DCGANFamily:
    config = resolve_run_config(name, {"data": SHAPES, "model": {**TINY, **model}})
    torch.manual_seed(0)
    return get_family(name)(config.model, dataset, torch.device("cpu"), DistInfo())


def tiny_run_config(name: str, **model: Any):
    return resolve_run_config(name, {"data": SHAPES, "progress": False, "tensorboard": False, "sample_every": 1000,
                                     "model": {**TINY, "steps": 2, **model}})


# --- the shared gradient penalty against hand computations -----------------------------------------------------

def test_gradient_penalty_of_a_linear_critic_is_the_weight_norm_error() -> None:
    w = torch.tensor([[[[3.0, 0.0], [0.0, 4.0]]]])  # ‖w‖ = 5 everywhere, whatever x̂ is
    critic = lambda x: (w * x).flatten(1).sum(1)  # noqa: E731
    real, fake = torch.randn(3, 1, 2, 2), torch.randn(3, 1, 2, 2)
    gp = gradient_penalty(critic, real, fake, torch.rand(3, 1, 1, 1))
    assert gp.item() == pytest.approx((5.0 - 1.0) ** 2)


def test_gradient_penalty_value_and_critic_gradient_match_a_hand_derivation() -> None:
    # D(x) = ½ Σ a·x², so ∇ₓD(x̂) = a·x̂, n = ‖a·x̂‖, P = mean (n − 1)², ∂P/∂a = mean 2(n − 1)·a·x̂²/n
    a = torch.tensor([0.5, -2.0, 1.5, 3.0], requires_grad=True)
    critic = lambda x: 0.5 * (a * x.square()).flatten(1).sum(1)  # noqa: E731
    real = torch.tensor([[1.0, 2.0, -1.0, 0.5], [0.0, -1.0, 2.0, 1.0]])
    fake = torch.tensor([[-1.0, 0.0, 1.0, 1.0], [2.0, 1.0, 0.0, -0.5]])
    mix = torch.tensor([[0.25], [0.75]])
    gp = gradient_penalty(critic, real, fake, mix)
    gp.backward()

    x_hat = (mix * real + (1 - mix) * fake).tolist()
    a_ = a.detach().tolist()
    norms = [sum((ai * xi) ** 2 for ai, xi in zip(a_, row, strict=True)) ** 0.5 for row in x_hat]
    assert gp.item() == pytest.approx(sum((n - 1) ** 2 for n in norms) / 2, rel=1e-6)
    grad = [sum(2 * (n - 1) * a_[j] * row[j] ** 2 / n for n, row in zip(norms, x_hat, strict=True)) / 2
            for j in range(4)]
    assert a.grad.tolist() == pytest.approx(grad, rel=1e-5)


def test_wgan_gp_critic_loss_is_wasserstein_plus_lambda_times_the_shared_penalty(shapes) -> None:
    family = build("wgan-gp", shapes, lambda_gp=7.0)
    reals, fakes = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    torch.manual_seed(5)
    loss, logs = family.critic_objective(reals, fakes, None)
    torch.manual_seed(5)
    D = family.nets["D"]
    gp = gradient_penalty(D, reals, fakes, torch.rand(4, 1, 1, 1))  # the family draws u the same way
    wdist = D(reals).mean() - D(fakes).mean()
    torch.testing.assert_close(logs["gp"], gp.detach())
    torch.testing.assert_close(logs["wdist"], wdist.detach())
    torch.testing.assert_close(loss, -wdist + 7.0 * gp)


def test_dcgan_losses_are_bce_on_logits(shapes) -> None:
    family = build("dcgan", shapes)
    D = family.nets["D"].eval()  # fixed BatchNorm statistics: D gives the same logits in both computations
    reals, fakes = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1
    loss, _ = family.critic_objective(reals, fakes, None)
    d_real, d_fake = D(reals), D(fakes)
    expected = (F.binary_cross_entropy_with_logits(d_real, torch.ones(4))
                + F.binary_cross_entropy_with_logits(d_fake, torch.zeros(4))) / 2
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(family.generator_objective(d_fake),
                               F.binary_cross_entropy_with_logits(d_fake, torch.ones(4)))


def test_wgan_losses(shapes) -> None:
    family = build("wgan", shapes)
    D = family.nets["D"]
    reals, fakes = torch.rand(4, 3, 32, 32), -torch.rand(4, 3, 32, 32)
    loss, logs = family.critic_objective(reals, fakes, None)
    torch.testing.assert_close(loss, D(fakes).mean() - D(reals).mean())
    torch.testing.assert_close(logs["wdist"], -loss.detach())
    torch.testing.assert_close(family.generator_objective(D(fakes)), -D(fakes).mean())


# --- configs per objective --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "config_class", "norm", "optimizer", "lr", "betas", "critic_steps"), [
    ("dcgan", DCGANConfig, CrossReplicaBatchNorm2d, torch.optim.Adam, 2e-4, (0.5, 0.999), 1),  # nn.BatchNorm2d
    ("wgan", WGANConfig, None, torch.optim.RMSprop, 5e-5, None, 5),
    ("wgan-gp", WGANGPConfig, nn.InstanceNorm2d, torch.optim.Adam, 1e-4, (0.0, 0.9), 5),
])
def test_each_name_presets_its_objective(shapes, name, config_class, norm, optimizer, lr, betas,
                                         critic_steps) -> None:
    config = resolve_run_config(name, {})
    assert config.family == name and type(config.model) is config_class
    assert config.model.critic_steps == critic_steps
    family = build(name, shapes)
    norms = [m for m in family.nets["D"].modules() if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d))]
    if norm is None:
        assert norms == []
    else:
        assert norms and all(type(m) is norm and m.affine for m in norms)
    assert any(isinstance(m, nn.BatchNorm2d) for m in family.nets["G"].modules())
    for opt in family.optimizers.values():
        assert type(opt) is optimizer
        assert opt.param_groups[0]["lr"] == lr
        if betas is not None:
            assert opt.param_groups[0]["betas"] == betas
    assert "G_ema" not in family.nets  # EMA is off unless ema_decay is set


def test_saved_config_resolves_back_to_the_same_objective() -> None:
    for name in ("dcgan", "wgan", "wgan-gp"):
        saved = to_dict(resolve_run_config(name, {"model": {"lr": 3e-4}}))
        again = resolve_run_config(None, saved)
        assert again.family == name and again.model == resolve_run_config(name, {"model": {"lr": 3e-4}}).model


@pytest.mark.parametrize(("name", "model", "message"), [
    ("wgan-gp", {"critic_norm": "batch"}, "model.critic_norm: 'batch'"),
    ("dcgan", {"clip": 0.01}, "unknown config key 'model.clip'"),
    ("dcgan", {"lambda_gp": 10}, "unknown config key 'model.lambda_gp'"),
    ("wgan", {"clip": 0}, "model.clip: expected a positive clipping bound, got 0"),
    ("wgan-gp", {"lambda_gp": -1}, "model.lambda_gp: expected a number ≥ 0, got -1"),
    ("dcgan", {"critic_steps": 0}, "model.critic_steps: expected a positive integer, got 0"),
    ("dcgan", {"resolution": 48}, "model.resolution: resolution must be a power of two ≥ 8 .* got 48"),
    ("dcgan", {"ema_decay": 1.0}, r"model.ema_decay: expected null \(off\) or a number in \[0, 1\), got 1.0"),
    ("dcgan", {"betas": [0.5]}, r"model.betas: expected two numbers in \[0, 1\), got \[0.5\]"),
    ("wgan", {"optimizer": "sgd"}, "model.optimizer: 'sgd' is not one of 'adam', 'rmsprop'"),
    ("dcgan", {"lr": 0}, "model.lr: expected a positive learning rate, got 0"),
    ("wgan", {"betas": [0.5, 0.999]}, r"model.betas: \[0.5, 0.999\] would do nothing: RMSprop .* has no betas"),
    ("dcgan", {"optimizer": "rmsprop", "betas": [0.0, 0.9]}, "model.betas: .* would do nothing: RMSprop"),
    ("wgan-gp", {"critic_batches": "same"}, "model.critic_batches: 'same' is not one of 'fresh', 'reuse'"),
    ("wgan-gp", {"critic_schedule": "official"}, "unknown config key 'model.critic_schedule'"),
    ("wgan", {"critic_schedule": "official", "critic_steps": 100},
     "model.critic_schedule: 'official' raises the critic steps to 100 .* model.critic_steps 100 already reaches: "
     "it would do nothing"),
])
def test_bad_settings_name_key_and_value(name: str, model: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_run_config(name, {"model": model})


def test_betas_are_the_objectives_adam_preset_unless_set_and_absent_for_rmsprop() -> None:
    model = lambda name, **m: resolve_run_config(name, {"model": m}).model  # noqa: E731
    assert model("dcgan").betas == [0.5, 0.999] and model("wgan-gp").betas == [0.0, 0.9]
    assert model("wgan").betas is None and model("dcgan", optimizer="rmsprop").betas is None
    assert model("wgan", optimizer="adam").betas == [0.5, 0.999]
    assert model("wgan", optimizer="adam", betas=[0.1, 0.9]).betas == [0.1, 0.9]


def test_a_wgan_config_saved_before_betas_became_optional_still_loads() -> None:
    saved = to_dict(resolve_run_config("wgan", {"model": {"lr": 3e-4}}))
    for key in ("critic_batches", "ema_rampup", "critic_schedule", "conditions", "label_embedding"):  # added since
        del saved["model"][key]
    saved["model"]["z_dim"] = saved["model"].pop("latent_dim")  # the spelling of that time
    saved["model"]["betas"] = [0.5, 0.999]  # what every wgan run saved then: DCGAN's Adam betas, unused by RMSprop
    loaded = resolve_run_config(None, saved)
    assert loaded.model.betas is None and loaded.model.lr == 3e-4 and loaded.model.critic_batches == "fresh"
    saved["model"]["critic_batches"] = "fresh"  # a key set of today: a user's betas, refused
    with pytest.raises(ConfigError, match="model.betas"):
        resolve_run_config(None, saved)


def test_resolution_beyond_the_dataset_is_an_error(shapes) -> None:
    with pytest.raises(ConfigError, match="model.resolution: 64 but the dataset .* only goes up to 32"):
        build("dcgan", shapes, resolution=64)


def test_resolution_defaults_to_the_dataset_and_a_lower_level_can_be_chosen(shapes) -> None:
    assert build("wgan", shapes).resolution == 32
    family = build("wgan", shapes, resolution=16)
    assert family.plan(0).resolution == 16
    assert family.generate({"z": torch.randn(2, 8)}, "G", family.plan(0)).shape == (2, 3, 16, 16)


# --- one step: clipping, critic step counts, fresh noise -----------------------------------------------------------

def count_optimizer_steps(trainer: Trainer) -> dict[str, int]:
    counts = {name: 0 for name in trainer.family.optimizers}
    for name, optimizer in trainer.family.optimizers.items():
        original = optimizer.step

        def counted(*args: Any, _name: str = name, _original=original, **kwargs: Any) -> Any:
            counts[_name] += 1
            return _original(*args, **kwargs)

        optimizer.step = counted
    return counts


@pytest.mark.parametrize(("name", "critic_steps"), [("dcgan", None), ("wgan", None), ("wgan-gp", None),
                                                    ("wgan-gp", 3), ("dcgan", 2)])
def test_critic_optimiser_steps_per_generator_step(tmp_path, name: str, critic_steps: int | None) -> None:
    model = {} if critic_steps is None else {"critic_steps": critic_steps}
    config = tiny_run_config(name, steps=3, **model)
    expected = config.model.critic_steps
    trainer = Trainer(config, tmp_path / "run")
    counts = count_optimizer_steps(trainer)
    trainer.train()
    assert counts == {"G": 3, "D": 3 * expected}
    assert trainer.images_seen == 3 * expected * config.model.batch_size  # a fresh real batch per critic step


def test_the_official_wgan_schedule_runs_100_critic_steps_at_the_start_and_every_500th_step(shapes, tmp_path):
    """martinarjovsky/WassersteinGAN's main.py: Diters = 100 while gen_iterations < 25 or gen_iterations % 500 == 0,
    else --Diters (5); the paper's Algorithm 1 (the default) keeps critic_steps throughout."""
    official = build("wgan", shapes, critic_schedule="official")
    repeats = {step: official.phases(step, official.plan(step))[0].repeats
               for step in (0, 1, 24, 25, 26, 499, 500, 501, 999, 1000, 1500)}
    assert repeats == {0: 100, 1: 100, 24: 100, 25: 5, 26: 5, 499: 5, 500: 100, 501: 5, 999: 5, 1000: 100, 1500: 100}
    fixed = build("wgan", shapes)
    assert {fixed.phases(step, fixed.plan(step))[0].repeats for step in (0, 24, 500)} == {5}
    assert official.describe()["critic_schedule"] == "official" and "critic_schedule" not in build(
        "wgan-gp", shapes).describe()
    config = tiny_run_config("wgan", steps=2, critic_schedule="official")
    trainer = Trainer(config, tmp_path / "run")
    counts = count_optimizer_steps(trainer)
    trainer.train()
    assert counts == {"G": 2, "D": 200} and trainer.images_seen == 200 * config.model.batch_size


def test_every_critic_step_and_the_generator_step_draw_fresh_noise(tmp_path) -> None:
    trainer = Trainer(tiny_run_config("wgan-gp", steps=1, critic_steps=3), tmp_path / "run")
    seen: list[torch.Tensor] = []
    trainer.family.nets["G"].register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    trainer.train()
    assert [tuple(z.shape) for z in seen] == [(4, 8)] * 4 + [(64, 8)]  # 3 critic steps, 1 G step, the grid
    assert all(not torch.equal(seen[i], seen[j]) for i in range(4) for j in range(i))


def count_loader_draws(trainer: Trainer) -> list[torch.Tensor]:
    drawn: list[torch.Tensor] = []
    original = trainer.loader.next

    def recorded(*args: Any, **kwargs: Any) -> Batch:
        batch = original(*args, **kwargs)
        drawn.append(batch.images.clone())
        return batch

    trainer.loader.next = recorded
    return drawn


@pytest.mark.parametrize("name", ["wgan-gp", "wgan", "dcgan"])
def test_reuse_feeds_one_real_batch_to_every_critic_step_and_trains_g_on_the_last_fake(tmp_path, name) -> None:
    trainer = Trainer(tiny_run_config(name, critic_batches="reuse", critic_steps=3), tmp_path / "run")
    G, D = trainer.family.nets["G"], trainer.family.nets["D"]
    drawn = count_loader_draws(trainer)
    critic_reals: list[torch.Tensor] = []
    D.register_forward_pre_hook(lambda module, args: critic_reals.append(args[0].detach().clone()))
    g_calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    G.register_forward_hook(lambda module, args, out: g_calls.append((args[0].clone(), out.detach().clone())))
    at_g_step: dict[str, Any] = {}
    g_step = trainer.family.optimizers["G"].step

    def capture_then_step(*args: Any, **kwargs: Any) -> Any:  # G's gradient and both nets just before G moves
        at_g_step.update(G=copy.deepcopy(G), D=copy.deepcopy(D),
                         grads=[p.grad.clone() for p in G.parameters()])
        return g_step(*args, **kwargs)

    trainer.family.optimizers["G"].step = capture_then_step
    logs = trainer.train_step(trainer.family.plan(0))

    assert len(drawn) == 1 and trainer.images_seen == 4  # one loader draw for the three critic steps
    assert len(g_calls) == 3  # one G forward per critic step, none for the G step: it reuses the last fake
    assert all(not torch.equal(g_calls[i][0], g_calls[j][0]) for i in range(3) for j in range(i))  # fresh z
    n = drawn[0].shape[0]  # a critic without batch norm sees reals and fakes in one call, reals first
    reals_per_step = [x[:n] for x in critic_reals if any(torch.equal(x[:n], r) for r in drawn)]
    assert len(reals_per_step) >= 3 and all(torch.equal(x, drawn[0]) for x in reals_per_step)
    z_last, fake_last = g_calls[-1]
    hand_G, hand_D = at_g_step["G"], at_g_step["D"]
    fake = hand_G(z_last)  # same weights and batch statistics: the same fake
    torch.testing.assert_close(fake.detach(), fake_last)
    scores = hand_D(fake)
    hand_loss = -scores.mean() if name != "dcgan" else F.softplus(-scores).mean()
    hand_loss.backward()
    assert logs["loss_G"] == pytest.approx(hand_loss.item(), rel=1e-6)
    for hand, engine in zip(hand_G.parameters(), at_g_step["grads"], strict=True):
        torch.testing.assert_close(engine, hand.grad)


def test_fresh_mode_draws_a_real_batch_per_critic_step_and_a_fresh_fake_for_g(tmp_path) -> None:
    trainer = Trainer(tiny_run_config("wgan-gp", critic_steps=3), tmp_path / "run")
    drawn = count_loader_draws(trainer)
    g_inputs: list[torch.Tensor] = []
    trainer.family.nets["G"].register_forward_pre_hook(lambda module, args: g_inputs.append(args[0]))
    trainer.train_step(trainer.family.plan(0))
    assert len(drawn) == 3 and trainer.images_seen == 12 and len(g_inputs) == 4
    assert not torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[1], drawn[2])


@pytest.mark.parametrize(("norm", "layer"), [("instance", nn.InstanceNorm2d), ("batch", CrossReplicaBatchNorm2d)])
def test_wgan_critic_norm_is_a_choice(shapes, norm: str, layer: type) -> None:
    plain, normed = build("wgan", shapes), build("wgan", shapes, critic_norm=norm)
    layers = [m for m in normed.nets["D"].modules() if isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d))]
    assert [type(m) for m in layers] == [layer, layer] and all(m.affine for m in layers)
    count = lambda family: sum(p.numel() for p in family.nets["D"].parameters())  # noqa: E731
    # 32 px, features 2: blocks of 4 and 8 channels; a norm adds weight + bias (2·c) and removes the conv bias (c)
    assert count(normed) - count(plain) == 4 + 8
    assert not any(isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d)) for m in plain.nets["D"].modules())


def test_clipping_keeps_every_critic_parameter_within_bounds(tmp_path) -> None:
    trainer = Trainer(tiny_run_config("wgan", steps=2, clip=0.005, lr=0.05), tmp_path / "run")
    D = trainer.family.nets["D"]
    with torch.no_grad():
        for param in D.parameters():
            param.uniform_(-1, 1)  # far outside the bound: clipping has to act
    trainer.train()
    values = torch.cat([p.detach().flatten() for p in D.parameters()])
    assert values.abs().max().item() == pytest.approx(0.005)
    assert (values == 0.005).any() and (values == -0.005).any()


def test_the_other_objectives_do_not_clip(tmp_path) -> None:
    trainer = Trainer(tiny_run_config("wgan-gp", steps=1), tmp_path / "run")
    with torch.no_grad():
        next(trainer.family.nets["D"].parameters()).fill_(0.5)
    trainer.train()
    assert next(trainer.family.nets["D"].parameters()).abs().max() > 0.1


def test_ema_generator_follows_the_decay(tmp_path) -> None:
    trainer = Trainer(tiny_run_config("dcgan", steps=1, ema_decay=0.75), tmp_path / "run")
    G, G_ema = trainer.family.nets["G"], trainer.family.nets["G_ema"]
    before = [p.detach().clone() for p in G.parameters()]
    trainer.train()
    for start, trained, ema in zip(before, G.parameters(), G_ema.parameters(), strict=True):
        torch.testing.assert_close(ema, 0.75 * start + 0.25 * trained.detach())
    assert trainer.family.ema_decay(0) == 0.75


# --- sampling never touches training --------------------------------------------------------------------------

def state_copy(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("stats", ["batch", "running"])
def test_sampling_leaves_buffers_modes_and_rng_alone(shapes, stats: str) -> None:
    family = build("dcgan", shapes, sample_norm_stats=stats)
    G = family.nets["G"]
    G(torch.randn(4, 8))  # move the running statistics away from their initial values
    z = torch.randn(5, 8)
    before, rng = state_copy(G), torch.get_rng_state()
    family.generate({"z": z}, "G", family.plan(0))
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(rng, torch.get_rng_state())
    assert G.training and all(m.track_running_stats for m in G.modules() if isinstance(m, nn.BatchNorm2d))


def test_batch_statistics_sampling_matches_the_generator_in_training(shapes) -> None:
    family = build("dcgan", shapes)  # default: batch statistics, as the generator trains
    G = family.nets["G"]
    z = torch.randn(6, 8)
    images = family.generate({"z": z}, "G", family.plan(0))
    with torch.no_grad():
        torch.testing.assert_close(images, G(z))  # the same numbers (this call also moves the buffers)
    first_alone = family.generate({"z": z[:1].repeat(2, 1)}, "G", family.plan(0))
    assert not torch.allclose(first_alone[0], images[0])  # batch statistics: an image depends on its batch


def test_sample_sets_are_drawn_in_batches_of_equal_size(shapes) -> None:
    """A batch-normalised generator's last samples of a set never come out of a batch of their own (65 = 64 + 1
    would normalise one image by itself): the set is split into batches as equal as possible."""
    sizes = {n: [part.stop - part.start for part in sample_batches(n, equal=True)] for n in (1, 64, 65, 100, 129)}
    assert sizes == {1: [1], 64: [64], 65: [32, 33], 100: [50, 50], 129: [43, 43, 43]}
    assert [s.start for s in sample_batches(129, equal=True)] == [0, 43, 86] and sample_batches(0, equal=True) == []
    # batch-independent generators keep full batches: their latent draws, and so their metrics, stay as they were
    assert [(s.start, s.stop) for s in sample_batches(65)] == [(0, 64), (64, 65)]
    family = build("dcgan", shapes)
    assert family.batch_dependent_samples
    assert not build("dcgan", shapes, sample_norm_stats="running").batch_dependent_samples
    drawn = [len(images) for images in generated_batches(family, family.plan(0), 65, seed=0)]
    assert drawn == [32, 33]  # the evaluation's sets: no image normalised on its own


def test_running_statistics_sampling_is_per_image(shapes) -> None:
    family = build("dcgan", shapes, sample_norm_stats="running")
    G = family.nets["G"]
    z = torch.randn(6, 8)
    images = family.generate({"z": z}, "G", family.plan(0))
    torch.testing.assert_close(family.generate({"z": z[2:3]}, "G", family.plan(0))[0], images[2])
    G.eval()
    with torch.no_grad():
        torch.testing.assert_close(images, G(z))


def test_latents_and_generate_for_every_net(shapes) -> None:
    family = build("wgan-gp", shapes, ema_decay=0.9)
    latents = family.sample_latents(3, torch.Generator().manual_seed(1))
    assert latents["z"].shape == (3, 8)
    assert torch.equal(latents["z"], torch.randn(3, 8, generator=torch.Generator().manual_seed(1)))
    for net in ("G", "G_ema"):
        images = family.generate(latents, net, family.plan(0))
        assert images.shape == (3, 3, 32, 32) and images.abs().max() <= 1
    assert family.describe() == {"objective": "wgan-gp", "resolution": 32, "critic_norm": "instance",
                                 "critic_steps": 5, "critic_batches": "fresh", "optimizer": "adam", "ema": True}


def test_phases_of_a_step(shapes) -> None:
    family = build("wgan", shapes, critic_steps=4)
    d_phase, g_phase = family.phases(0, family.plan(0))
    assert (d_phase.name, d_phase.trains, d_phase.repeats, d_phase.data) == ("D", ("D",), 4, "fresh")
    assert d_phase.after_step is not None
    assert (g_phase.name, g_phase.trains, g_phase.repeats, g_phase.data) == ("G", ("G",), 1, "none")
    loss, logs = d_phase.loss(Batch(images=torch.zeros(4, 3, 32, 32), labels=None))
    assert loss.requires_grad and set(logs) == {"loss_D", "wdist", "loss_D_real", "loss_D_fake"}
    loss, logs = g_phase.loss(None)
    assert loss.requires_grad and set(logs) == {"loss_G"}


@pytest.mark.parametrize("name", ["dcgan", "wgan", "wgan-gp"])
def test_the_d_phase_logs_its_loss_in_the_parts_the_references_print(shapes, name) -> None:
    """By hand from D's scores on the same reals and fakes: WassersteinGAN's errD_real / errD_fake (as −E[D(x)]
    and E[D(G(z))]), PyTorch's DCGAN example's BCE terms with D(x) and D(G(z)), the tutorial's halved loss."""
    family = build(name, shapes)
    d_phase = family.phases(0, family.plan(0))[0]
    reals = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.manual_seed(4)
    loss, logs = d_phase.loss(Batch(images=reals, labels=None))
    torch.manual_seed(4)
    with torch.no_grad():
        d_real = family.nets["D"](reals).flatten()
        d_fake = family.nets["D"](family.nets["G"](torch.randn(4, TINY["latent_dim"]))).flatten()
    close = functools.partial(torch.testing.assert_close, atol=1e-6, rtol=1e-6)
    if name == "dcgan":
        real_part = F.binary_cross_entropy_with_logits(d_real, torch.ones(4))
        fake_part = F.binary_cross_entropy_with_logits(d_fake, torch.zeros(4))
        close(loss.detach(), (real_part + fake_part) / 2)
        close(logs["D_x"], torch.sigmoid(d_real).mean())
        close(logs["D_G_z"], torch.sigmoid(d_fake).mean())
    else:
        real_part, fake_part = -d_real.mean(), d_fake.mean()
        close(logs["wdist"], d_real.mean() - d_fake.mean())
    close(logs["loss_D_real"], real_part)
    close(logs["loss_D_fake"], fake_part)
    if name == "wgan-gp":
        close(loss.detach(), fake_part + real_part + family.config.lambda_gp * logs["gp"])
    close(logs["loss_D"], loss.detach())


def test_family_classes_are_registered() -> None:
    assert get_family("dcgan") is DCGANFamily
    assert get_family("wgan") is WGANFamily
    assert get_family("wgan-gp") is WGANGPFamily


def test_the_tutorial_config_holds_the_tutorials_constants() -> None:
    path = Path(__file__).resolve().parents[1] / "configs" / "wgan_gp_tutorial_celeba64.yaml"
    config = resolve_run_config(None, read_config_file(path))
    model = config.model
    assert (config.family, config.amp, config.model.resolution, model.latent_dim, model.features_g, model.features_d,
            model.batch_size) == ("wgan-gp", "off", 64, 100, 16, 16, 64)
    assert (model.critic_steps, model.critic_batches, model.critic_norm, model.lambda_gp) == (5, "reuse", "instance",
                                                                                              10.0)
    assert (model.optimizer, model.lr, model.betas, model.ema_decay) == ("adam", 1e-4, [0.0, 0.9], None)
    assert model.steps == 100 * -(-202_599 // 64)  # 100 epochs of CelebA at the tutorial's batches per epoch


@pytest.mark.parametrize(("name", "critic_norm", "calls"), [
    ("dcgan", "batch", [4, 4, 4]),  # batch norm: reals and fakes each alone, then G's fakes
    ("dcgan", "instance", [8, 4]),  # per-sample norm: both in one call
    ("wgan", "none", [8, 4]),
    ("wgan-gp", "instance", [8, 4, 4]),  # then the penalty's mix and G's fakes
])
def test_critic_scores_reals_and_fakes_together_unless_it_has_batch_norm(tmp_path, name, critic_norm, calls) -> None:
    trainer = Trainer(tiny_run_config(name, critic_norm=critic_norm, critic_steps=1), tmp_path / "run")
    seen: list[int] = []
    trainer.family.nets["D"].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    trainer.train_step(trainer.family.plan(0))
    assert seen == calls
    family = trainer.family
    reals, fakes = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32) * 0.5
    torch.testing.assert_close(family.real_and_fake_scores(reals, fakes, None),
                               (family.nets["D"](reals), family.nets["D"](fakes)), rtol=1e-5, atol=1e-6)
