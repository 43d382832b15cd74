"""Official checkpoints → ordinary ganforge runs (config.json + a checkpoint), so they can be sampled, evaluated
and trained further with the same commands as any run."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ganforge.config import read_config_file
from ganforge.families import resolve_run_config
from ganforge.families.pgan_zoo_config import zoo_config_to_ganforge
from ganforge.interop.pgan_zoo import (
    ZOO_HUB_CHECKPOINTS,
    convert_zoo_state,
    fetch_zoo_hub,
    read_zoo_checkpoint,
    zoo_arch,
    zoo_scale,
)
from ganforge.metrics.inception import default_cache_dir
from ganforge.training import checkpoint as ckpt
from ganforge.training.engine import Trainer

_ZOO_NAME = re.compile(r"^(?P<name>.+)_s(?P<scale>\d+)_i(?P<iter>\d+)$")


def _zoo_train_config(file: Path) -> dict | None:
    """The trainer's `<name>_train_config.json` beside a checkpoint, when the user kept it."""
    match = _ZOO_NAME.match(file.stem)
    if match is None:
        return None
    candidate = file.with_name(f"{match['name']}_train_config.json")
    return read_config_file(candidate) if candidate.is_file() else None


def _load_lower_scales(net: nn.Module, state: dict[str, torch.Tensor], top_scale: int, file: Path) -> None:
    """Strict for every layer the checkpoint has; layers of scales above it may only be missing."""
    missing, unexpected = net.load_state_dict(state, strict=False)
    grown = [key for key in missing if int(re.search(r"\.(\d+)\.", key).group(1)) > top_scale]
    if unexpected or len(grown) != len(missing):
        raise ValueError(f"{file}: the checkpoint does not fit the requested networks "
                         f"(missing {sorted(set(missing) - set(grown))[:3]}, unexpected {sorted(unexpected)[:3]})")


def import_pgan_zoo(file: Path, out: Path, *, data: str | None = None,
                    overrides: list[tuple[list[str], Any]] = ()) -> Path:
    """A pytorch_GAN_zoo PGAN checkpoint (or hub file) → a `zoo`-variant ganforge run at the same position.

    The zoo stores no optimiser state, so Adam restarts from zero; G, EMA G and D weights are exact.
    Without the zoo's train config beside the file, the schedule is the zoo default cut to the checkpoint's
    scales, and the run is positioned at the end of its current scale (or at the iteration in the file name).
    """
    file, out = Path(file), Path(out)
    if ckpt.checkpoint_steps(out):
        raise ValueError(f"{out} already holds a run; import into a new directory")
    if not file.exists() and str(file) in ZOO_HUB_CHECKPOINTS:  # a released hub model by name: fetch, verify
        file = fetch_zoo_hub(str(file), default_cache_dir() / "weights")
    zoo = read_zoo_checkpoint(file)
    arch = zoo_arch(zoo)
    scale = zoo_scale(zoo)
    train_config = _zoo_train_config(file)
    if train_config is not None:
        raw = zoo_config_to_ganforge({"pathDB": data or "builtin:shapes", "config": train_config})
        raw["model"]["schedule"]["max_iter_at_scale"] = raw["model"]["schedule"]["max_iter_at_scale"][: scale + 1]
    else:
        defaults = [48000] + [96000] * scale
        raw = {"family": "pgan", "data": data or "builtin:shapes",
               "model": {"variant": "zoo", "schedule": {"unit": "iterations", "max_iter_at_scale": defaults}}}
    raw["model"].update(resolution=arch.resolution, latent_dim=arch.latent_dim, widths=list(arch.widths))
    config = resolve_run_config("pgan", raw, overrides)
    if data is None:  # the built-in dataset at the size the (possibly grown) networks need
        config.data = f"builtin:shapes?resolution={config.model.resolution}"

    trainer = Trainer(config, out, restart=True)
    family = trainer.family
    states = convert_zoo_state(zoo)
    for role, state in states.items():
        _load_lower_scales(family.nets[role], state, scale, file)
    if "G_ema" not in states:
        family.nets["G_ema"].load_state_dict(states["G"])
    segment = family.segments[scale]
    match = _ZOO_NAME.match(file.stem)
    done_in_scale = int(match["iter"]) if match else segment.steps
    trainer.step = segment.start + min(done_in_scale, segment.steps)
    out.mkdir(parents=True, exist_ok=True)
    ckpt.write_json_atomic(out / "config.json", trainer.state_tensors()[1]["config"])
    trainer.save_checkpoint()
    return out
