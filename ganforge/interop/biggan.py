"""Import BigGAN-PyTorch (ajbrock) training checkpoints without executing pickled code.

A BigGAN-PyTorch weights folder holds ``G.pth``, ``D.pth``, ``G_ema.pth``, ``G_optim.pth``, ``D_optim.pth`` and
``state_dict.pth`` (optionally with a suffix such as ``_best0`` or ``_copy1``). The network and optimiser files
are plain tensor containers and load with torch's restricted ``weights_only`` unpickler, in the zip format and in
the pre-1.6 legacy format of the released 2019 checkpoints alike. ``state_dict.pth`` also pickles the
``nn.ReLU`` modules of its config; those are mapped to an inert placeholder, so any other global in a file (for
example ``os.system``) is refused instead of being called.

Keys map one-to-one onto :mod:`ganforge.models.biggan` except the BN statistics (``stored_mean``/``stored_var``
→ ``running_mean``/``running_var``) and a DataParallel ``module.`` prefix, which is dropped. Loading is strict:
a missing, unexpected or misshapen tensor is an error naming the file and the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ganforge.config import ConfigError
from ganforge.families import resolve_run_config
from ganforge.families.biggan_flags import config_from_official, train_settings_from_official
from ganforge.interop.sources import import_paths
from ganforge.models.biggan import (
    RESOLUTIONS,
    BigGANArch,
    Discriminator,
    Generator,
)
from ganforge.run_loader import new_family
from ganforge.safe_load import load_weights_only
from ganforge.training.checkpoint import write_run

NETWORK_FILES = {"G": "G", "D": "D", "G_ema": "G_ema"}
OPTIMIZER_FILES = {"G": "G_optim", "D": "D_optim"}
STATE_FILE = "state_dict"
_RELU_GLOBALS = ("torch.nn.modules.activation.ReLU",)
_KEY_RENAMES = {"stored_mean": "running_mean", "stored_var": "running_var"}


class BigGANImportError(ValueError):
    """A BigGAN-PyTorch checkpoint is unreadable, unsafe, or describes networks ganforge does not build."""


class _InertModule:
    """Stand-in for the nn.ReLU objects pickled in the official config: unpickling only fills its __dict__."""


def _file_name(stem: str, suffix: str) -> str:
    return f"{stem}_{suffix}.pth" if suffix else f"{stem}.pth"


def load_restricted(path: Path) -> Any:
    """torch.load with the weights-only unpickler (+ inert ReLU); refusals become BigGANImportError."""
    return load_weights_only(path, what="a BigGAN-PyTorch file", error=BigGANImportError,
                             allowed=[(_InertModule, name) for name in _RELU_GLOBALS])


def _plain(value: Any) -> Any:
    """Config values as plain data; pickled activation modules become their official name ("ReLU")."""
    if isinstance(value, _InertModule):
        return "ReLU"
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


def read_training_state(path: Path) -> dict[str, Any]:
    """``state_dict.pth``: itr, epoch, save_num, save_best_num, best_IS, best_FID and the flags as ``config``."""
    state = load_restricted(path)
    if not isinstance(state, dict) or "itr" not in state:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise BigGANImportError(f"{path}: expected a dict with 'itr', 'epoch', 'config', ... found {found}")
    itr = state["itr"]
    if isinstance(itr, bool) or not isinstance(itr, int) or itr < 0:
        raise BigGANImportError(f"{path}: 'itr' must be the iteration count (an integer), got {itr!r}")
    return _plain(dict(state))


def _our_key(official_key: str) -> str:
    parts = [part for part in official_key.split(".") if part != "module"]
    return ".".join(_KEY_RENAMES.get(part, part) for part in parts)


def convert_network_state(state: Any, target: nn.Module, where: str) -> dict[str, Tensor]:
    """An official state dict → `target`'s keys (strict: every tensor present once, with the right shape)."""
    if not isinstance(state, dict):
        raise BigGANImportError(f"{where}: expected a state dict, got {type(state).__name__}")
    expected = target.state_dict()
    out: dict[str, Tensor] = {}
    for official_key, tensor in state.items():
        key = _our_key(official_key)
        if not isinstance(tensor, Tensor):
            raise BigGANImportError(f"{where}: '{official_key}' must be a tensor, got {type(tensor).__name__}")
        if key not in expected:
            raise BigGANImportError(f"{where}: unexpected key '{official_key}' for this BigGAN configuration")
        if tensor.shape != expected[key].shape:
            raise BigGANImportError(f"{where}: '{official_key}' has shape {tuple(tensor.shape)}, the configuration "
                                    f"expects {tuple(expected[key].shape)}")
        out[key] = tensor.detach().to(expected[key].dtype).clone()
    missing = sorted(set(expected) - set(out))
    if missing:
        raise BigGANImportError(f"{where}: missing tensors {missing}")
    return out


def convert_optimizer_state(optim_state: Any, official_keys: list[str], target: nn.Module,
                            where: str) -> dict[str, Any]:
    """An official Adam state dict re-indexed to ``target.parameters()`` order.

    The official optimiser indexes parameters in the order of the official module's parameters, which is the
    order of the parameter keys in its network file (`official_keys`, buffers skipped).
    """
    if not isinstance(optim_state, dict) or not {"state", "param_groups"} <= set(optim_state):
        raise BigGANImportError(f"{where}: expected an optimizer state dict with 'state' and 'param_groups'")
    our_names = [name for name, _ in target.named_parameters()]
    our_index = {name: i for i, name in enumerate(our_names)}
    official_params = [key for key in map(_our_key, official_keys) if key in our_index]
    groups = optim_state["param_groups"]
    official_indices = [index for group in groups for index in group["params"]]
    if len(groups) != 1 or len(official_indices) != len(our_names):
        raise BigGANImportError(f"{where}: {len(groups)} param groups with {len(official_indices)} parameters; "
                                f"expected 1 group with {len(our_names)}")
    position = {official: our_index[official_params[n]] for n, official in enumerate(official_indices)}
    return {
        "state": {position[index]: _tensor_step(value) for index, value in optim_state["state"].items()},
        "param_groups": [{**groups[0], "params": list(range(len(our_names)))}],
    }


def _tensor_step(state: dict[str, Any]) -> dict[str, Any]:
    """2019 files store Adam's `step` as an int; current torch wants a tensor."""
    if isinstance(state.get("step"), (int, float)):
        return {**state, "step": torch.tensor(float(state["step"]))}
    return dict(state)


@dataclass
class OfficialBigGAN:
    """A BigGAN-PyTorch checkpoint as ganforge networks (G_ema is None when the folder has none)."""

    config: BigGANArch
    G: Generator
    D: Discriminator
    G_ema: Generator | None
    optimizer_states: dict[str, dict[str, Any]] = field(default_factory=dict)  # "G"/"D", in our param order
    training_state: dict[str, Any] = field(default_factory=dict)  # itr, epoch, best_IS, best_FID, config


def load_biggan_pytorch(weights_dir: Path, *, config: BigGANArch | None = None,
                        suffix: str = "") -> OfficialBigGAN:
    """Read a BigGAN-PyTorch weights folder into networks (eval mode) plus optimiser and training state.

    The architecture comes from `config` or else from the flags in ``state_dict.pth``. `suffix` selects the
    official copies (``best0``, ``copy1``, ...).
    """
    weights_dir = Path(weights_dir)
    if weights_dir.is_file():
        raise BigGANImportError(f"{weights_dir}: a file; give the BigGAN-PyTorch weights folder that holds it (G.pth, "
                                f"D.pth, state_dict.pth, ...): {weights_dir.parent}")
    if not weights_dir.is_dir():
        raise BigGANImportError(f"BigGAN-PyTorch weights folder not found: {weights_dir}")
    state_path = weights_dir / _file_name(STATE_FILE, suffix)
    training_state = read_training_state(state_path) if state_path.is_file() else {}
    if config is None:
        if "config" not in training_state:
            raise BigGANImportError(f"{weights_dir}: no {state_path.name} with the run's flags (BigGAN-PyTorch saves "
                                    "it beside G.pth: copy it into the folder; Python: pass the architecture as "
                                    "config=BigGANArch(...))")
        config = config_from_official(training_state["config"], where=str(state_path))
    nets: dict[str, nn.Module] = {"G": Generator(config), "D": Discriminator(config), "G_ema": Generator(config)}
    official_keys: dict[str, list[str]] = {}
    for role, stem in NETWORK_FILES.items():
        path = weights_dir / _file_name(stem, suffix)
        if role == "G_ema" and not path.is_file():
            del nets[role]
            continue
        state = load_restricted(path)
        nets[role].load_state_dict(convert_network_state(state, nets[role], str(path)), strict=True)
        nets[role].eval()
        official_keys[role] = list(state)
    optimizer_states = {}
    for role, stem in OPTIMIZER_FILES.items():
        path = weights_dir / _file_name(stem, suffix)
        if path.is_file():
            optimizer_states[role] = convert_optimizer_state(load_restricted(path), official_keys[role], nets[role],
                                                             str(path))
    return OfficialBigGAN(config, nets["G"], nets["D"], nets.get("G_ema"), optimizer_states,  # type: ignore[arg-type]
                          training_state)


def _arch_mismatch(run: BigGANArch, checkpoint: BigGANArch) -> str:
    """The settings that differ, short (not two whole reprs), with what would make them agree."""
    names = [item.name for item in fields(BigGANArch) if getattr(run, item.name) != getattr(checkpoint, item.name)]
    hints = []
    if "resolution" in names:
        hints.append(f"the checkpoint is {checkpoint.resolution} px: import it at that resolution (BigGAN builds "
                     f"{', '.join(map(str, RESOLUTIONS))} px, each with its own weights' shapes)")
    if "n_classes" in names:
        hints.append(f"the data's first label column must have {checkpoint.n_classes} classes")
    differences = ", ".join(f"{name} {getattr(run, name)!r} (checkpoint: {getattr(checkpoint, name)!r})"
                            for name in names)
    return "; ".join([differences, *hints])


def import_biggan_pytorch(files: Path | Sequence[Path], out: Path, *, data: str | None = None,
                          overrides: Sequence[tuple[list[str], Any]] = ()) -> Path:
    """A BigGAN-PyTorch weights folder → a ganforge `biggan` run at the official iteration, ready to resume.

    `data` must have the official run's class count in its first label column (fine-tuning on new data of the
    same classes works). `overrides` are model.KEY settings that change the recipe, e.g. model.steps (the run's
    length in G iterations; default: the imported iteration, i.e. nothing left to train) or a smaller batch for a
    small GPU. G, D, G_ema, both Adam states and the iteration carry over; without G_ema.pth the EMA starts from G.
    """
    if not data:
        raise ConfigError("import biggan-pytorch: --data is required (a store with the run's classes)")
    for keys, _ in overrides:
        if len(keys) != 2 or keys[0] != "model":
            raise ConfigError(f"--set {'.'.join(keys)}: import biggan-pytorch takes model.KEY=VALUE overrides")
    folders, out = import_paths(files, out, BigGANImportError)
    if len(folders) != 1:
        raise BigGANImportError(f"{', '.join(map(str, folders))}: give one BigGAN-PyTorch weights folder")
    weights_dir = folders[0]
    official = load_biggan_pytorch(weights_dir)
    flags = official.training_state["config"]
    itr = int(official.training_state["itr"])
    model = {**train_settings_from_official(flags, where=str(weights_dir)), "steps": max(itr, 1)}
    config = resolve_run_config("biggan", {"family": "biggan", "data": data, "model": model}, list(overrides))
    family = new_family(config)
    if family.arch != official.config:
        raise BigGANImportError(f"{weights_dir}: the run for {data} does not fit the checkpoint: "
                                f"{_arch_mismatch(family.arch, official.config)}")
    sources = {"G": official.G, "D": official.D, "G_ema": official.G_ema or official.G}
    for role, net in family.nets.items():
        net.load_state_dict(sources[role].state_dict(), strict=True)
    for role, state in official.optimizer_states.items():
        optimizer = family.optimizers[role]
        settings = [{key: group[key] for key in ("lr", "betas", "eps")} for group in optimizer.param_groups]
        optimizer.load_state_dict(state)
        for group, own in zip(optimizer.param_groups, settings, strict=True):
            group.update(own)  # moments carry over; the run's recipe (possibly overridden) sets the rates
    return write_run(out, config, family, itr)
