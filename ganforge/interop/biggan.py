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
from ganforge.interop.sources import import_paths
from ganforge.models.biggan import (
    RESOLUTIONS,
    BigGANArch,
    Discriminator,
    Generator,
    discriminator_stages,
    generator_stages,
)
from ganforge.nn.spectral_norm import SNSettings
from ganforge.run_loader import new_family
from ganforge.safe_load import load_weights_only
from ganforge.training.checkpoint import write_run

NETWORK_FILES = {"G": "G", "D": "D", "G_ema": "G_ema"}
OPTIMIZER_FILES = {"G": "G_optim", "D": "D_optim"}
STATE_FILE = "state_dict"
_RELU_GLOBALS = ("torch.nn.modules.activation.ReLU",)
_KEY_RENAMES = {"stored_mean": "running_mean", "stored_var": "running_var"}
_RESOLUTION_BY_DATASET = {"I32": 32, "I64": 64, "I128": 128, "I256": 256, "C10": 32, "C100": 32}
_CLASSES_BY_DATASET = {"I32": 1000, "I64": 1000, "I128": 1000, "I256": 1000, "C10": 10, "C100": 100}
_INIT_NAMES = {"ortho": "ortho", "N02": "N02", "xavier": "xavier", "glorot": "xavier"}


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
    return _plain(dict(state))


def _flag(flags: dict[str, Any], key: str, where: str) -> Any:
    if key not in flags:
        raise BigGANImportError(f"{where}: config has no '{key}'")
    return flags[key]


def _attention(spec: Any, stage_resolutions: tuple[int, ...], key: str, where: str) -> tuple[int, ...]:
    """'64' / '32_64' / '0' → the stage resolutions that really got attention (others are ignored officially)."""
    try:
        wanted = {int(item) for item in str(spec).split("_")}
    except ValueError as error:
        raise BigGANImportError(f"{where}: config '{key}' = {spec!r} is not like '64' or '32_64'") from error
    return tuple(sorted(res for res in set(stage_resolutions) if res in wanted))


def config_from_official(flags: dict[str, Any], *, where: str = "BigGAN-PyTorch config") -> BigGANArch:
    """Translate BigGAN-PyTorch flags (the ``config`` in state_dict.pth) into a :class:`BigGANArch`."""
    model = flags.get("model", "BigGAN")
    if model not in ("BigGAN", "BigGANdeep"):
        raise BigGANImportError(f"{where}: config 'model' = {model!r}; expected 'BigGAN' or 'BigGANdeep'")
    deep = model == "BigGANdeep"
    for key, allowed in (("norm_style", {"bn"}), ("mybn", {False}), ("cross_replica", {False}),
                         ("G_nl", {"relu", "inplace_relu", "ir"}), ("D_nl", {"relu", "inplace_relu", "ir"})):
        if key in flags and flags[key] not in allowed:
            raise BigGANImportError(f"{where}: config '{key}' = {flags[key]!r}; ganforge supports {sorted(allowed)}")
    dataset = str(flags.get("dataset", "")).removesuffix("_hdf5")
    resolution = flags.get("resolution", _RESOLUTION_BY_DATASET.get(dataset))
    n_classes = flags.get("n_classes", _CLASSES_BY_DATASET.get(dataset))
    if resolution is None or n_classes is None:
        raise BigGANImportError(f"{where}: config has no 'resolution'/'n_classes' and dataset {dataset!r} is unknown")
    inits = {}
    for key in ("G_init", "D_init"):
        value = _flag(flags, key, where)
        if value not in _INIT_NAMES:
            raise BigGANImportError(f"{where}: config '{key}' = {value!r}; expected one of {sorted(_INIT_NAMES)}")
        inits[key] = _INIT_NAMES[value]
    g_ch, d_ch = int(_flag(flags, "G_ch", where)), int(_flag(flags, "D_ch", where))
    try:
        return BigGANArch(
            resolution=int(resolution),
            n_classes=int(n_classes),
            g_ch=g_ch,
            d_ch=d_ch,
            dim_z=int(_flag(flags, "dim_z", where)),
            g_shared=bool(_flag(flags, "G_shared", where)),
            shared_dim=int(flags.get("shared_dim", 0)),
            hier=bool(flags.get("hier", False)),
            g_attention=_attention(flags.get("G_attn", "64"), generator_stages(int(resolution), g_ch).resolution,
                                   "G_attn", where),
            d_attention=_attention(flags.get("D_attn", "64"),
                                   discriminator_stages(int(resolution), d_ch, deep=deep).resolution, "D_attn", where),
            g_init=inits["G_init"],
            d_init=inits["D_init"],
            g_spectral_norm=flags.get("G_param", "SN") == "SN",
            d_spectral_norm=flags.get("D_param", "SN") == "SN",
            g_sn=SNSettings(int(flags.get("num_G_SVs", 1)), int(flags.get("num_G_SV_itrs", 1)),
                            float(flags.get("SN_eps", 1e-8))),
            d_sn=SNSettings(int(flags.get("num_D_SVs", 1)), int(flags.get("num_D_SV_itrs", 1)),
                            float(flags.get("SN_eps", 1e-8))),
            bn_eps=float(flags.get("BN_eps", 1e-5)),
            d_wide=deep or bool(flags.get("D_wide", True)),  # BigGANdeep.py ignores --D_thin
            deep=deep,
            g_depth=int(flags.get("G_depth", 1)) if deep else 2,  # 1: BigGAN-PyTorch's parser default
            d_depth=int(flags.get("D_depth", 1)) if deep else 2,
        )
    except ValueError as error:
        raise BigGANImportError(f"{where}: config does not describe a valid BigGAN: {error}") from error


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
    if not weights_dir.is_dir():
        raise BigGANImportError(f"BigGAN-PyTorch weights folder not found: {weights_dir}")
    state_path = weights_dir / _file_name(STATE_FILE, suffix)
    training_state = read_training_state(state_path) if state_path.is_file() else {}
    if config is None:
        if "config" not in training_state:
            raise BigGANImportError(f"{weights_dir}: no {state_path.name} with the run's flags; pass the architecture "
                                    "as config=BigGANArch(...)")
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


def train_settings_from_official(flags: dict[str, Any], *, where: str = "BigGAN-PyTorch config") -> dict[str, Any]:
    """The `model:` section of a ganforge `biggan` run with the official run's architecture and recipe.

    Official runs may give G and D their own SN iterations or Adam betas; ganforge's recipe shares them, so
    differing values are refused rather than silently unified.
    """
    arch = config_from_official(flags, where=where)
    if arch.g_sn != arch.d_sn:
        raise BigGANImportError(f"{where}: G and D spectral-norm settings differ ({arch.g_sn} vs {arch.d_sn}); "
                                "ganforge's biggan family uses one setting for both")
    betas = [float(flags.get("G_B1", 0.0)), float(flags.get("G_B2", 0.999))]
    if betas != [float(flags.get("D_B1", 0.0)), float(flags.get("D_B2", 0.999))]:
        raise BigGANImportError(f"{where}: G and D Adam betas differ; ganforge's biggan family uses one pair")
    if not (arch.g_spectral_norm and arch.d_spectral_norm):
        raise BigGANImportError(f"{where}: G_param/D_param other than 'SN' are not trainable in ganforge's family")
    return {
        "resolution": arch.resolution, "g_ch": arch.g_ch, "d_ch": arch.d_ch, "latent_dim": arch.dim_z,
        "g_shared": arch.g_shared, "shared_dim": arch.shared_dim, "hier": arch.hier,
        "g_attention": list(arch.g_attention), "d_attention": list(arch.d_attention),
        "g_init": arch.g_init, "d_init": arch.d_init, "num_svs": arch.g_sn.num_svs, "num_sv_itrs": arch.g_sn.num_itrs,
        "sn_eps": arch.g_sn.eps, "bn_eps": arch.bn_eps, "batch_size": int(flags.get("batch_size", 64)),
        **({"deep": True, "g_depth": arch.g_depth, "d_depth": arch.d_depth} if arch.deep else {}),
        "g_batch_size": int(flags.get("G_batch_size", 0)) or None, "num_d_steps": int(flags.get("num_D_steps", 2)),
        "num_d_accumulations": int(flags.get("num_D_accumulations", 1)),
        "num_g_accumulations": int(flags.get("num_G_accumulations", 1)), "g_lr": float(flags.get("G_lr", 5e-5)),
        "d_lr": float(flags.get("D_lr", 2e-4)), "betas": betas, "adam_eps": float(flags.get("adam_eps", 1e-8)),
        "g_ortho": float(flags.get("G_ortho", 0.0)), "d_ortho": float(flags.get("D_ortho", 0.0)),
        "ema": bool(flags.get("ema", False)), "sample_eval_mode": bool(flags.get("G_eval_mode", False)),
        # without --ema the official run's ema_decay/ema_start did nothing: ganforge refuses them with ema off
        **({"ema_decay": float(flags.get("ema_decay", 0.9999)), "ema_start": int(flags.get("ema_start", 0))}
           if flags.get("ema", False) else {}),
    }


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
