"""Class-conditional DCGAN / WGAN / WGAN-GP (`model.conditions`), as the WGAN-GP tutorial's conditional GAN: G reads
z beside a class embedding, the critic the image beside a learnt map of its class; the critic scores reals and fakes
in the reals' classes, and the penalty differentiates the critic of those classes. Layer shapes and parameter counts
by hand, the step against a hand-written one, refusals, and an end-to-end run that resumes exactly and samples by
class."""

from __future__ import annotations

import pytest
import torch
from test_dcgan_family import SHAPES, TINY, build, count_optimizer_steps, tiny_run_config

import ganforge
from ganforge.cli import main
from ganforge.config import ConfigError
from ganforge.data.loader import Batch
from ganforge.data.store import open_dataset
from ganforge.losses import gradient_penalty, wgan_critic_loss
from ganforge.models.dcgan import DCGANCritic, DCGANGenerator
from ganforge.run_loader import load_run
from ganforge.training.engine import Trainer


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_the_conditional_networks_add_the_tutorials_embeddings_and_nothing_else():
    """The tutorial's conditional WGAN-GP at 64 px on MNIST (10 classes, z 100, embedding 100, features 16): G's
    first transposed convolution reads 100 + 100 channels, and its embedding is 10 × 100; the critic's first
    convolution reads 1 + 1 channels, and its embedding is 10 × 64·64."""
    G, G0 = DCGANGenerator(100, 1, 16, 64, label_sizes=[10], embed_size=100), DCGANGenerator(100, 1, 16, 64)
    D, D0 = DCGANCritic(1, 16, 64, "instance", label_sizes=[10]), DCGANCritic(1, 16, 64, "instance")
    assert G.net[0].weight.shape == (200, 256, 4, 4) and G.embeddings[0].weight.shape == (10, 100)
    assert count(G) - count(G0) == 10 * 100 + 100 * 256 * 4 * 4
    assert D.net[0].weight.shape == (16, 2, 4, 4) and D.embeddings[0].weight.shape == (10, 64 * 64)
    assert count(D) - count(D0) == 10 * 64 * 64 + 16 * 4 * 4
    z, labels, images = torch.randn(3, 100), torch.tensor([[4], [0], [9]]), torch.randn(3, 1, 64, 64)
    G.eval(), D.eval()
    with torch.no_grad():  # by hand: the embeddings concatenated where the tutorial concatenates them
        assert torch.equal(G(z, labels), G.net(torch.cat([z, G.embeddings[0](labels[:, 0])], 1)[:, :, None, None]))
        maps = D.embeddings[0](labels[:, 0]).view(3, 1, 64, 64)
        assert torch.equal(D(images, labels), D.net(torch.cat([images, maps], 1)).flatten())
    G.train()  # on batch statistics, as the tutorial samples: another class, another image
    with torch.no_grad():
        assert not torch.allclose(G(z, labels), G(z, (labels + 1) % 10))
    with pytest.raises(ValueError, match=r"takes labels \[N, 1\], got none"):
        G(z)
    with pytest.raises(ValueError, match=r"takes labels \[N, 1\], got shape \(3, 2\)"):
        D(images, torch.zeros(3, 2, dtype=torch.long))


@pytest.mark.parametrize("critic_batches", ["reuse", "fresh"])
def test_the_wgan_gp_step_scores_both_sets_in_the_reals_classes(shapes_dataset, critic_batches):
    """One critic loss against a hand computation: the fakes are drawn in the real batch's classes, and the critic
    scores reals, fakes and their mixes (the penalty) in those classes."""
    family = build("wgan-gp", shapes_dataset, conditions=["shape"], critic_batches=critic_batches)
    batch = Batch(images=torch.randn(4, 3, 32, 32), labels=torch.tensor([[0, 1], [3, 0], [2, 2], [1, 0]]))
    d_phase, g_phase = family.phases(0, family.plan(0))
    torch.manual_seed(5)
    loss, logs = d_phase.loss(batch)
    torch.manual_seed(5)
    classes = batch.labels[:, :1]
    fakes = family.nets["G"](torch.randn(4, TINY["latent_dim"]), classes)
    critic = family.nets["D"]
    real_part, fake_part = wgan_critic_loss(critic(batch.images, classes), critic(fakes, classes))
    penalty = gradient_penalty(lambda mixed: critic(mixed, classes), batch.images, fakes, torch.rand(4, 1, 1, 1))
    torch.testing.assert_close(loss, real_part + fake_part + 10 * penalty)
    torch.testing.assert_close(logs["gp"], penalty.detach())
    # G: reuse trains on that same fake in the reals' classes; fresh on new fakes in classes of training images
    torch.manual_seed(6)
    g_loss, _ = g_phase.loss(None)
    if critic_batches == "reuse":
        torch.testing.assert_close(g_loss, -critic(fakes, classes).mean())
    else:
        torch.manual_seed(6)
        rows = torch.randint(len(shapes_dataset.labels), (4,))
        drawn = torch.as_tensor(shapes_dataset.labels[:, :1])[rows]
        z = torch.randn(4, TINY["latent_dim"])
        torch.testing.assert_close(g_loss, -critic(family.nets["G"](z, drawn), drawn).mean())


def test_config_refusals_name_the_key(shapes_dataset):
    with pytest.raises(ConfigError, match="model.label_embedding: does nothing without model.conditions"):
        build("dcgan", shapes_dataset, label_embedding=32)
    with pytest.raises(ConfigError, match=r"model.conditions: expected a list of distinct label column names"):
        build("wgan", shapes_dataset, conditions=["shape", "shape"])
    with pytest.raises(ConfigError, match=r"model.conditions: no label column 'digit' in the dataset"):
        build("wgan-gp", shapes_dataset, conditions=["digit"])
    with pytest.raises(ConfigError, match=r"model.label_embedding: expected a positive integer, got 0"):
        build("dcgan", shapes_dataset, conditions=["shape"], label_embedding=0)
    assert build("dcgan", shapes_dataset, conditions=["shape"]).config.label_embedding == 100
    family = build("wgan", shapes_dataset, conditions=["background", "shape"])
    assert family.describe()["conditions"] == {"background": 4, "shape": 4}
    with pytest.raises(ConfigError, match="latent search"):
        family.critic_score(torch.zeros(2, 3, 32, 32), family.plan(0))


def test_clipping_bounds_the_critics_layers_not_its_class_maps(shapes_dataset, tmp_path):
    """A class map is an input beside the image: clipped to ±0.01 it would leave the class channel a hundredth of
    the pixels' scale. Every layer of the critic is clipped; its embeddings keep their N(0, 1) scale."""
    trainer = Trainer(tiny_run_config("wgan", steps=1, critic_steps=2, conditions=["shape"]), tmp_path / "run")
    trainer.train()
    critic = trainer.family.nets["D"]
    assert all(float(p.abs().max()) <= 0.01 for p in critic.net.parameters())
    assert float(critic.embeddings[0].weight.abs().max()) > 1.0


@pytest.fixture(scope="module")
def shapes_dataset():
    return open_dataset(SHAPES)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dcgan", "wgan-gp"])
def test_a_conditional_run_trains_resumes_exactly_and_samples_by_class(tmp_path, name):
    config = {"data": SHAPES, "progress": False, "tensorboard": False, "sample_every": 2, "family": name,
              "model": {**TINY, "steps": 4, "conditions": ["shape"], "ema_decay": 0.9}}
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    ganforge.train(config, straight)
    ganforge.train(config, pieces, until=2)
    ganforge.train(config, pieces)
    model, resumed = load_run(straight), load_run(pieces)
    inputs = model.latents(8, seed=3)
    assert inputs["labels"].shape == (8, 1) and int(inputs["labels"].max()) < 4
    assert torch.equal(model.generate(inputs), resumed.generate(inputs))
    assert not torch.allclose(model.generate(inputs), model.generate({**inputs, "labels": (inputs["labels"] + 1) % 4}))
    assert main(["generate", str(straight), "-o", str(tmp_path / "squares"), "--n", "4", "--class", "square"]) == 0
    assert sorted(p.name for p in (tmp_path / "squares").iterdir()) == [f"0000-{i:05d}-square.png" for i in range(4)]
    assert main(["generate", str(straight), "-o", str(tmp_path / "sheets"), "--per-class", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "sheets").iterdir()) == ["per_class.png"]


def test_the_critic_steps_and_images_count_as_unconditioned(tmp_path):
    trainer = Trainer(tiny_run_config("wgan-gp", steps=2, critic_steps=3, conditions=["shape"]), tmp_path / "run")
    counts = count_optimizer_steps(trainer)
    trainer.train()
    assert counts == {"G": 2, "D": 6} and trainer.images_seen == 6 * TINY["batch_size"]
