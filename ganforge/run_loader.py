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

from ganforge.config import RunConfig, is_whole_number
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
        """`n` samples' generator inputs drawn from `seed` (what `generate(n=..., seed=...)` draws)."""
        return self._drawn(n, seed, "latents")

    def _drawn(self, n: Any, seed: Any, where: str) -> dict[str, torch.Tensor]:
        _check_draw(n, seed, where)
        return self.family.seeded_inputs(int(n), int(seed))

    @torch.no_grad()
    def sample_parts(self, n: int, largest: int = 64) -> list[slice]:
        """The batches `n` samples are drawn in (equal ones where samples depend on their batch: `sample_batches`)."""
        return sample_batches(n, largest, equal=self.family.batch_dependent_samples)

    def generate(self, z: torch.Tensor | dict[str, torch.Tensor] | None = None, *, n: int | None = None,
                 seed: int | None = None, net: str | None = None, raw: bool = False) -> torch.Tensor:
        """Images in [-1, 1] (NCHW) from latents `z` (or `n` latents drawn from `seed`, by default 16 from 0), by
        the EMA generator when the run keeps one, else by G. Generators without a tanh (PGAN) overshoot that range,
        so the images are clamped to it; `raw=True` returns the network's output unclamped (to compare with
        reference code)."""
        net = net or self.family.sample_net
        if net not in self.family.sample_nets():
            raise ValueError(f"generate: net {net!r} is not a generator of this model; its generators are "
                             f"{self.family.sample_nets()}")
        if z is None:
            inputs = self._drawn(16 if n is None else n, 0 if seed is None else seed, "generate")
        else:
            if n is not None or seed is not None:
                raise ValueError("generate: n and seed draw the latents; given latents z, leave them out (z sets both)")
            inputs = z if isinstance(z, dict) else {"z": z}
            wrong = {key: type(value).__name__ for key, value in inputs.items() if not isinstance(value, torch.Tensor)}
            if wrong:
                raise ValueError(f"generate: latents must be torch tensors, got {wrong}")
            # the latent width, from a drawn latent (a translating family draws sources too: its own checks serve)
            width = None if self.family.translates else self.latents(1)["z"].shape[1]
            latent = inputs.get("z")
            if latent is None or latent.ndim != 2 or width not in (None, latent.shape[1]) \
                    or not latent.is_floating_point() or not len(latent):
                raise ValueError(f"generate: z: expected float latents [N, {width or 'latent size'}] with N >= 1, "
                                 f"got {'no z' if latent is None else f'{latent.dtype} {tuple(latent.shape)}'}")
            self._check_inputs(inputs)
        # latents of any float precision are drawn in the networks' float32; classes and labels keep their type
        inputs = {k: v.to(self.device, torch.float32) if v.is_floating_point() else v.to(self.device)
                  for k, v in inputs.items()}
        images = self.family.generate(inputs, net, self.plan)
        return images if raw else images.clamp(-1, 1)

    def _check_inputs(self, inputs: dict[str, torch.Tensor]) -> None:
        """Given inputs against what the family draws itself: the same kinds and shapes per sample, one count N,
        and classes within the networks' counts (out of range they index past an embedding)."""
        if self.family.translates:  # its drawn inputs hold training images, which a loaded model has not
            if missing := [key for key in ("x", "y", "z") if key not in inputs]:
                raise ValueError(f"generate: {missing[0]!r} missing: this model translates sources x of domains y "
                                 "with latents z")
            drawn_inputs: dict[str, torch.Tensor] = {}
        else:
            drawn_inputs = self.latents(1)
            taken = set(drawn_inputs) | set(self.family.input_classes()) | self.family.optional_inputs
            if unknown := sorted(set(inputs) - taken):  # ignored before: labels given to a BigGAN cycled its classes
                raise ValueError(f"generate: {', '.join(map(repr, unknown))}: not an input of this model (it takes "
                                 f"{', '.join(sorted(taken))})")
        for key, value in inputs.items():
            drawn = drawn_inputs.get(key)
            if value.ndim == 0:
                raise ValueError(f"generate: {key}: expected one value per sample [N, ...], got a single number")
            if drawn is not None and (value.is_floating_point() != drawn.is_floating_point()
                                      or value.shape[1:] != drawn.shape[1:]):
                raise ValueError(f"generate: {key}: expected {'float' if drawn.is_floating_point() else 'integer'} "
                                 f"values [N, {', '.join(map(str, drawn.shape[1:]))}], got {value.dtype} "
                                 f"{tuple(value.shape)}".replace(", ]", "]"))
            if len(value) != len(inputs["z"]):
                raise ValueError(f"generate: {key} holds {len(value)} samples and z {len(inputs['z'])}")
        for key, counts in self.family.input_classes().items():
            if key not in inputs:  # a family may default it (BigGAN cycles through its classes)
                continue
            values = inputs[key]
            if values.is_floating_point():
                raise ValueError(f"generate: {key}: expected integer class indices, got {values.dtype}")
            for column, count in zip(values.reshape(len(values), -1).T, counts, strict=True):
                if len(column) and not 0 <= int(column.min()) <= int(column.max()) < count:
                    raise ValueError(f"generate: {key}: classes must be in 0..{count - 1}, got values from "
                                     f"{int(column.min())} to {int(column.max())}")


def _check_draw(n: Any, seed: Any, where: str) -> None:
    """A positive whole count and a seed numpy and torch accept (the generators take 0 .. 2^63 - 1)."""
    if not is_whole_number(n) or n < 1:
        raise ValueError(f"{where}: n: expected a positive whole number, got {n!r}")
    if not is_whole_number(seed) or not 0 <= seed < 2**63:
        raise ValueError(f"{where}: seed: expected a whole number in 0 .. 2^63 - 1, got {seed!r}")


def load_run(target: str | Path, *, step: int | None = None, device: str | torch.device = "auto",
             bn: SamplingBN | str | None = None) -> LoadedModel:
    """Load a run directory (its newest valid checkpoint, or `step`) or a checkpoint file; `bn` ("running",
    "batch", "standing:N") chooses the statistics its generator's batch norm samples with instead of the run's."""
    if not isinstance(target, (str, Path)):
        raise ckpt.CheckpointError(f"load: expected a run directory or checkpoint file path, got "
                                   f"{type(target).__name__}")
    target = Path(target)
    if step is not None and not is_whole_number(step):
        raise ckpt.CheckpointError(f"{target}: step: expected a whole step number, got {step!r}")
    step = None if step is None else int(step)
    if step is not None and target.is_file():
        raise ckpt.CheckpointError(f"{target}: step {step} is for a run directory; a checkpoint file is one step "
                                   "already")
    if step is not None and target.is_dir() and step not in (steps := ckpt.checkpoint_steps(target)):
        have = ", ".join(map(str, steps)) if steps else "none"
        raise ckpt.CheckpointError(f"{target}: no checkpoint at step {step}; steps with a checkpoint: {have}")
    found = ckpt.resolve_checkpoint(target, step)
    saved = migrated_saved_config(dict(found.meta["config"]))
    if bn is not None:
        bn = SamplingBN.parse(bn) if isinstance(bn, str) else bn
        saved["model"] = {**(saved.get("model") or {}), **get_family(saved["family"]).sampling_bn_settings(bn)}
    config = resolve_run_config(None, saved)
    torch_device = pick_device(str(device), DistInfo())
    dataset = dataset_placeholder(found.meta["dataset"])
    family = build_family(config, torch_device, dataset)
    ckpt.load_network_states(family.nets, found.tensors, found.path)
    for net in family.nets.values():
        net.eval().requires_grad_(False)
    # the last step the checkpoint trained: training draws its samples and metrics at step N with that plan, so a
    # checkpoint at a growth boundary generates what was trained (not the next scale's upsampled start)
    plan = family.plan(min(max(found.step - 1, 0), family.total_steps() - 1))
    return LoadedModel(family=family, config=config, step=found.step, plan=plan)
