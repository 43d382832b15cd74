"""A new family needs only what this file holds: a config dataclass, networks, and a `Family` subclass that says
what one step does. This minimal SNGAN-style family (spectrally normalised convolutions, hinge loss) is built from
ganforge's layers and losses and registered through the public contract, then trains, checkpoints, resumes to the
weights of an uninterrupted run and samples through `ganforge.load` like any built-in family. docs/architecture.md's
"add a family" walkthrough follows this file; if the contract changes, this test says so."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import safetensors.torch
import torch
from torch import nn

import ganforge
from ganforge.config import ConfigError
from ganforge.data.loader import Batch
from ganforge.families import get_family, register_family
from ganforge.families.base import Family, Phase, StepPlan
from ganforge.losses import hinge_discriminator_loss, hinge_generator_loss
from ganforge.nn.spectral_norm import SNSettings, conv2d, linear
from ganforge.training import checkpoint as ckpt


@dataclass
class TinySNGANConfig:
    """`model:` settings: sizes, the step count and one Adam setting for both networks."""

    latent_dim: int = 8
    width: int = 8
    batch_size: int = 4
    steps: int = 6
    lr: float = 2e-4

    def __post_init__(self) -> None:
        for key in ("latent_dim", "width", "batch_size", "steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: expected a positive integer, got {getattr(self, key)}")


class TinyGenerator(nn.Module):
    """z → 4×4 features → ×2 upsampling blocks → RGB in [-1, 1] at `resolution`."""

    def __init__(self, latent_dim: int, width: int, resolution: int, channels: int) -> None:
        super().__init__()
        self.width = width
        self.project = nn.Linear(latent_dim, width * 16)
        blocks: list[nn.Module] = []
        for _ in range(resolution.bit_length() - 3):  # 4 → resolution
            blocks += [nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(-1, self.width, 4, 4)
        return torch.tanh(self.to_rgb(self.blocks(x)))


class TinyCritic(nn.Module):
    """Spectrally normalised convolutions down to 4×4, then one linear logit (SNGAN's D)."""

    def __init__(self, width: int, resolution: int, channels: int) -> None:
        super().__init__()
        sn = SNSettings()
        layers: list[nn.Module] = [conv2d(channels, width, 3, sn=sn), nn.LeakyReLU(0.1)]
        for _ in range(resolution.bit_length() - 3):
            layers += [conv2d(width, width, 3, sn=sn), nn.LeakyReLU(0.1), nn.AvgPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.logit = linear(width * 16, 1, sn=sn)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logit(self.features(images).flatten(1)).squeeze(1)


class TinySNGANFamily(Family):
    """One step: a D update on a fresh real batch, then a G update (no real images)."""

    name: ClassVar[str] = "tiny-sngan"
    config_class: ClassVar[type] = TinySNGANConfig

    def __init__(self, config: TinySNGANConfig, dataset: Any, device: torch.device, dist: Any) -> None:
        super().__init__(config, dataset, device, dist)
        self.resolution = dataset.resolution
        self.nets["G"] = TinyGenerator(config.latent_dim, config.width, self.resolution, dataset.channels).to(device)
        self.nets["D"] = TinyCritic(config.width, self.resolution, dataset.channels).to(device)
        for net in ("G", "D"):
            self.optimizers[net] = torch.optim.Adam(self.nets[net].parameters(), lr=config.lr, betas=(0.0, 0.9))

    def total_steps(self) -> int:
        return self.config.steps

    def plan(self, step: int) -> StepPlan:
        return StepPlan(batch_size=self.config.batch_size, resolution=self.resolution)

    def phases(self, step: int, plan: StepPlan) -> list[Phase]:
        G, latent_dim = self.nets["G"], self.config.latent_dim

        def d_loss(batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
            with torch.no_grad():
                fakes = G(self.randn(plan.batch_size, latent_dim))
            real_part, fake_part = hinge_discriminator_loss(self.discriminate(batch.images),
                                                            self.discriminate(fakes))
            return real_part + fake_part, {"loss_D": (real_part + fake_part).detach()}

        def g_loss(_: Batch | None) -> tuple[torch.Tensor, dict[str, Any]]:
            loss = hinge_generator_loss(self.discriminate(G(self.randn(plan.batch_size, latent_dim))))
            return loss, {"loss_G": loss.detach()}

        return [Phase("D", ("D",), d_loss), Phase("G", ("G",), g_loss, data="none")]

    def sample_latents(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"z": torch.randn(n, self.config.latent_dim, generator=generator)}

    @torch.no_grad()
    def generate(self, inputs: dict[str, torch.Tensor], net: str, plan: StepPlan) -> torch.Tensor:
        return self.nets[net](inputs["z"])


register_family(TinySNGANFamily)

CONFIG = {"family": "tiny-sngan", "data": "builtin:shapes?count=32&resolution=16", "seed": 5, "log_every": 1,
          "sample_every": 1000, "checkpoint_every": 2, "sample_count": 4, "progress": False, "tensorboard": False,
          "model": {"steps": 6}}


def test_registration_is_by_the_family_class_and_its_name() -> None:
    assert get_family("tiny-sngan") is TinySNGANFamily
    register_family(TinySNGANFamily)  # the same class again: no change
    clash = type("Other", (TinySNGANFamily,), {})
    with pytest.raises(ConfigError, match="a family named 'tiny-sngan' is already registered"):
        register_family(clash)


def test_a_family_defined_outside_the_package_trains_resumes_and_samples(tmp_path) -> None:
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert ganforge.train(CONFIG, straight).step == 6
    assert ganforge.train(CONFIG, pieces, until=3).step == 3  # stops with a checkpoint at step 3
    assert ckpt.checkpoint_steps(pieces)[-1] == 3
    assert ganforge.train(CONFIG, pieces).step == 6  # resumes from it
    final = {run: safetensors.torch.load_file(str(ckpt.checkpoint_dir(run) / f"{6:08d}.safetensors"))
             for run in (straight, pieces)}
    assert final[straight].keys() == final[pieces].keys()
    assert {"net/D/logit.u0", "net/D/logit.weight", "net/G/to_rgb.weight", "opt/G/0/exp_avg"} <= final[pieces].keys()
    early = safetensors.torch.load_file(str(ckpt.checkpoint_dir(straight) / f"{2:08d}.safetensors"))
    assert not torch.equal(early["net/G/to_rgb.weight"], final[straight]["net/G/to_rgb.weight"])  # it trains
    differing = [key for key in final[straight] if not torch.equal(final[straight][key], final[pieces][key])]
    assert differing == []  # bit-identical weights, optimiser moments and spectral-norm vectors

    model = ganforge.load(pieces)
    assert model.step == 6 and model.family.sample_net == "G"
    images = model.generate(n=3, seed=1)
    assert images.shape == (3, 3, 16, 16) and images.abs().max() <= 1
    z = torch.randn(3, 8, generator=torch.Generator().manual_seed(1))  # (not `normal_z`: its own draw)
    torch.testing.assert_close(images, model.nets["G"](z), rtol=0, atol=0)  # G's eval-mode output for those z


PLUGIN = '''
from test_minimal_family import TinySNGANFamily


class PluginFamily(TinySNGANFamily):
    name = "plugin-sngan"
'''


def test_families_installed_packages_declare_are_cli_choices_imported_only_when_used(tmp_path, monkeypatch) -> None:
    from importlib.metadata import EntryPoint

    import ganforge.families as families
    from ganforge.cli import build_parser

    (tmp_path / "gf_plugin_family.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    declared = [EntryPoint("plugin-sngan", "gf_plugin_family:PluginFamily", families.ENTRY_POINT_GROUP),
                EntryPoint("misnamed", "gf_plugin_family:PluginFamily", families.ENTRY_POINT_GROUP),
                EntryPoint("pgan", "gf_plugin_family:PluginFamily", families.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(families.importlib.metadata, "entry_points",
                        lambda group: [e for e in declared if e.group == group])
    monkeypatch.setattr(families, "_REGISTRY", dict(families._REGISTRY))
    monkeypatch.setattr(families, "_entry_points_read", False)
    with pytest.warns(RuntimeWarning, match=r"entry point pgan = gf_plugin_family:PluginFamily \(ganforge.families\) "
                      "ignored: a family named 'pgan' is already registered"):
        names = families.family_names()
    assert {"plugin-sngan", "misnamed", "pgan"} <= set(names)
    assert "gf_plugin_family" not in sys.modules  # declared, not imported
    assert build_parser().parse_args(["train", "plugin-sngan"]).family == "plugin-sngan"
    plugin = get_family("plugin-sngan")
    assert plugin.name == "plugin-sngan" and issubclass(plugin, TinySNGANFamily)
    assert get_family("pgan").__name__ == "PGANFamily"  # the built-in kept its name
    with pytest.raises(ConfigError, match="family 'misnamed' .* is a class named 'plugin-sngan'"):
        get_family("misnamed")
    assert ganforge.train({**CONFIG, "family": "plugin-sngan", "model": {"steps": 2}}, tmp_path / "run").step == 2
