"""Trained runs from disk: the family rebuilt from a checkpoint's saved config, its networks loaded and frozen.

Below evaluation, the engine and the API, so everything that reads a run (metrics of checkpoints, the CLI's
sampling commands, `ganforge.load`) loads it the same way without importing the layers above.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganforge.config import RunConfig
from ganforge.data.store import ImageDataset, open_dataset
from ganforge.distributed import DistInfo, pick_device
from ganforge.families import get_family, migrated_saved_config, resolve_run_config
from ganforge.families.base import Family, SamplingBN, StepPlan, sample_batches
from ganforge.training import checkpoint as ckpt


def dataset_placeholder(manifest: dict[str, Any]) -> ImageDataset:
    """A dataset with the recorded shape (channels, resolution, labels) but no images: enough to rebuild
    networks when the training data is not on this machine."""
    return ImageDataset({}, labels=None, manifest=manifest, fingerprint="", source=manifest.get("source", ""))


def build_family(config: RunConfig, device: torch.device, dataset: ImageDataset | None = None) -> Family:
    """The family's networks and optimisers for `config`, opening its dataset only if none is given."""
    family_cls = get_family(config.family)
    return family_cls(config.model, dataset if dataset is not None else open_dataset(config.data), device, DistInfo())


def new_family(config: RunConfig) -> Family:
    """The networks a new training run of `config` starts from (same seed, same initial weights), on the config's
    device and with the config's dataset: what an importer fills with official weights."""
    torch.manual_seed(config.seed)
    return build_family(config, pick_device(config.device, DistInfo()))


@dataclass
class LoadedModel:
    """A trained model: `.nets` maps role names ("G", "G_ema", "D", ...) to torch modules in eval mode."""

    family: Family
    config: RunConfig
    step: int
    plan: StepPlan

    @property
    def nets(self) -> dict[str, nn.Module]:
        return self.family.nets

    @property
    def device(self) -> torch.device:
        return self.family.device

    def latents(self, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
        return self.family.sample_latents(n, torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def sample_parts(self, n: int, largest: int = 64) -> list[slice]:
        """The batches `n` samples are drawn in (equal ones where samples depend on their batch: `sample_batches`)."""
        return sample_batches(n, largest, equal=self.family.batch_dependent_samples)

    def generate(self, z: torch.Tensor | dict[str, torch.Tensor] | None = None, *, n: int = 16, seed: int = 0,
                 net: str | None = None, raw: bool = False) -> torch.Tensor:
        """Images in [-1, 1] (NCHW) from latents `z` (or `n` latents drawn from `seed`), by the EMA generator
        when the run keeps one, else by G. Generators without a tanh (PGAN) overshoot that range, so the images
        are clamped to it; `raw=True` returns the network's output unclamped (to compare with reference code)."""
        net = net or self.family.sample_net
        inputs = self.latents(n, seed) if z is None else (z if isinstance(z, dict) else {"z": z})
        if net not in self.nets:
            raise ValueError(f"no network {net!r}; this model has {sorted(self.nets)}")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        images = self.family.generate(inputs, net, self.plan)
        return images if raw else images.clamp(-1, 1)


def load_run(target: str | Path, *, step: int | None = None, device: str = "auto",
             bn: SamplingBN | str | None = None) -> LoadedModel:
    """Load a run directory (its newest valid checkpoint, or `step`) or a checkpoint file; `bn` ("running",
    "batch", "standing:N") chooses the statistics its generator's batch norm samples with instead of the run's."""
    target = Path(target)
    if step is not None and target.is_dir() and step not in (steps := ckpt.checkpoint_steps(target)):
        have = ", ".join(map(str, steps)) if steps else "none"
        raise ckpt.CheckpointError(f"{target}: no checkpoint at step {step}; steps with a checkpoint: {have}")
    found = ckpt.resolve_checkpoint(target, step)
    saved = migrated_saved_config(dict(found.meta["config"]))
    if bn is not None:
        bn = SamplingBN.parse(bn) if isinstance(bn, str) else bn
        saved["model"] = {**(saved.get("model") or {}), **get_family(saved["family"]).sampling_bn_settings(bn)}
    config = resolve_run_config(None, saved)
    torch_device = pick_device(device, DistInfo())
    dataset = dataset_placeholder(found.meta["dataset"])
    family = build_family(config, torch_device, dataset)
    ckpt.load_network_states(family.nets, found.tensors, found.path)
    for net in family.nets.values():
        net.eval().requires_grad_(False)
    # the last step the checkpoint trained: training draws its samples and metrics at step N with that plan, so a
    # checkpoint at a growth boundary generates what was trained (not the next scale's upsampled start)
    plan = family.plan(min(max(found.step - 1, 0), family.total_steps() - 1))
    return LoadedModel(family=family, config=config, step=found.step, plan=plan)
