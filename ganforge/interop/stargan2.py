"""Import official clovaai/stargan-v2 checkpoints without executing pickled code.

The official `{step:06d}_nets_ema.ckpt` / `{step:06d}_nets.ckpt` files are `torch.save`d dicts
``{generator, mapping_network, style_encoder[, discriminator][, fan]: state_dict}`` (zip or, for the released
PyTorch-1.4 files, the legacy format). They are read with torch's restricted ``weights_only`` unpickler, so a file
that would call anything (``os.system``, ``open`` …) is refused rather than run. A single network's state dict,
bare or under its official name, is accepted too.

Our networks (ganforge.models.stargan2) use the official parameter names, so the mapping is by name; this module
infers the architecture from the tensor shapes, checks every key and shape, and loads strictly. The high-pass
kernel ``hpf.filter`` is a constant of w_hpf: it may be absent (the released CelebA-HQ file predates it as a
buffer) and, when present, must be the Laplacian / w_hpf. The face-landmark network ``fan`` that w_hpf > 0
files carry is not imported: a w_hpf > 0 run loads it from the official ``wing.ckpt`` like any such run (see
models/fan.py), so importing one needs those weights too.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ganforge.config import ConfigError
from ganforge.families import resolve_run_config
from ganforge.interop.sources import check_shapes_kept, import_paths
from ganforge.models.stargan2 import StarGAN2Arch, official_base_dim
from ganforge.nn.stargan_layers import laplacian_kernel
from ganforge.run_loader import new_family
from ganforge.safe_load import load_weights_only
from ganforge.training.checkpoint import write_run

OFFICIAL_TO_ROLE = {"generator": "G", "mapping_network": "F", "style_encoder": "E", "discriminator": "D"}
NOT_IMPORTED = ("fan",)  # the frozen FAN landmark network of w_hpf > 0 checkpoints
HPF_FILTER_KEY = "hpf.filter"


class StarGAN2ImportError(ValueError):
    """An official StarGAN v2 file is unreadable, unsafe, or does not describe StarGAN v2 networks."""


@dataclass
class ImportedStarGAN2:
    """Networks read from official files, keyed by role (G, F, E, D), with the architecture they imply."""

    arch: StarGAN2Arch
    nets: dict[str, nn.Module]
    skipped: list[str]  # official entries that were present but not imported (e.g. "fan")


def _strip_module(name: str) -> str:
    """Drop DataParallel's `module.` segments, so files saved without unwrapping load too."""
    return ".".join(part for part in name.split(".") if part != "module")


def _guess_net(state: dict[str, Tensor], where: str) -> str:
    """Official network name of a bare state dict, from its characteristic first layer."""
    if "from_rgb.weight" in state:
        return "generator"
    if "main.0.weight" in state:
        return "discriminator"
    first = state.get("shared.0.weight")
    if first is not None and first.dim() in (2, 4):
        return "mapping_network" if first.dim() == 2 else "style_encoder"
    raise StarGAN2ImportError(f"{where}: a bare state dict, but not of a StarGAN v2 network "
                              f"(first keys: {sorted(state)[:4]})")


def _as_state(value: object, where: str, name: str) -> dict[str, Tensor]:
    if not isinstance(value, dict):
        raise StarGAN2ImportError(f"{where}: '{name}' must be a state dict, got {type(value).__name__}")
    if {"state", "param_groups"} <= set(value):
        raise StarGAN2ImportError(f"{where}: '{name}' is an optimiser state (an official *_optims.ckpt?); "
                                  "import the *_nets_ema.ckpt or *_nets.ckpt file")
    state = {}
    for key, tensor in value.items():
        if not isinstance(tensor, Tensor):
            raise StarGAN2ImportError(f"{where}: '{name}.{key}' must be a tensor, got {type(tensor).__name__}")
        state[_strip_module(str(key))] = tensor
    return state


def read_official_stargan2(path: Path) -> tuple[dict[str, dict[str, Tensor]], list[str]]:
    """Read one official file → ({official net name: state dict}, names present but not imported).

    Only tensors and plain containers are unpickled; anything else in the file is refused with an error.
    """
    path = Path(path)
    obj = load_weights_only(path, what="a StarGAN v2 checkpoint", error=StarGAN2ImportError)
    if not isinstance(obj, dict) or not obj:
        raise StarGAN2ImportError(f"{path}: expected a dict of state dicts, got {type(obj).__name__}")
    if all(isinstance(value, Tensor) for value in obj.values()):
        state = _as_state(obj, str(path), "state_dict")
        return {_guess_net(state, str(path)): state}, []
    states, skipped = {}, []
    for name, value in obj.items():
        if name in NOT_IMPORTED:
            skipped.append(name)
        elif name in OFFICIAL_TO_ROLE:
            states[name] = _as_state(value, str(path), name)
        else:
            raise StarGAN2ImportError(f"{path}: unexpected entry {name!r}; an official file holds "
                                      f"{', '.join([*OFFICIAL_TO_ROLE, *NOT_IMPORTED])}")
    if not states:
        raise StarGAN2ImportError(f"{path}: holds no StarGAN v2 network (found {sorted(obj)})")
    return states, skipped


def _indices(state: dict[str, Tensor], prefix: str, suffix: str) -> list[int]:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.{re.escape(suffix)}$")
    return sorted(int(match.group(1)) for key in state if (match := pattern.match(key)))


def _require(state: dict[str, Tensor], key: str, where: str) -> Tensor:
    if key not in state:
        raise StarGAN2ImportError(f"{where}: missing '{key}'")
    return state[key]


class _Votes:
    """Architecture values seen by each network; two networks disagreeing is an error naming both."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.values: dict[str, tuple[object, str]] = {}

    def add(self, field: str, value: object, source: str) -> None:
        if field in self.values and self.values[field][0] != value:
            seen, by = self.values[field]
            raise StarGAN2ImportError(f"{self.where}: {field} is {seen} in {by} but {value} in {source}")
        self.values.setdefault(field, (value, source))

    def add_max(self, field: str, value: int, source: str) -> None:
        """For a cap (max_conv_dim): a net whose widths stay below it just reports less, so take the largest."""
        if value > self.values.get(field, (0, ""))[0]:
            self.values[field] = (value, source)

    def get(self, field: str, default: object = None) -> object:
        return self.values[field][0] if field in self.values else default


def _trunk_votes(votes: _Votes, state: dict[str, Tensor], prefix: str, net: str, where: str) -> None:
    """img_size, base and max width of the E/D trunk: conv3×3, then ResBlks numbered 1..n down to 4×4."""
    blocks = _indices(state, prefix, "conv2.weight")
    if not blocks:
        raise StarGAN2ImportError(f"{where}: {net} has no residual blocks ('{prefix}.N.conv2.weight')")
    votes.add("img_size", 2 ** (len(blocks) + 2), net)
    votes.add("first_dim", int(_require(state, f"{prefix}.0.weight", f"{where} {net}").shape[0]), net)
    votes.add_max("max_conv_dim", max(int(state[f"{prefix}.{i}.conv2.weight"].shape[0]) for i in blocks), net)


def infer_stargan2_arch(states: dict[str, dict[str, Tensor]], *, w_hpf: float | None = None,
                        where: str = "StarGAN v2 checkpoint") -> StarGAN2Arch:
    """The architecture the official state dicts describe (shapes are then checked in full by the converter).

    w_hpf is read from ``hpf.filter`` when present; give it for a high-pass generator without that key (default 1,
    the CelebA-HQ value). A generator alone implies its img_size through the official width 2^14 / img_size.
    What no given network fixes (e.g. num_domains of a generator alone) keeps the official default.
    """
    votes = _Votes(where)
    if "mapping_network" in states:
        state, net = states["mapping_network"], "mapping_network"
        heads = _indices(state, "unshared", "0.weight")
        first = _require(state, "shared.0.weight", f"{where} {net}")
        votes.add("num_domains", len(heads), net)
        votes.add("latent_dim", int(first.shape[1]), net)
        votes.add("mapping_dim", int(first.shape[0]), net)
        last = _indices(state, "unshared.0", "weight")
        if heads and last:
            votes.add("style_dim", int(state[f"unshared.0.{last[-1]}.weight"].shape[0]), net)
    if "style_encoder" in states:
        state, net = states["style_encoder"], "style_encoder"
        _trunk_votes(votes, state, "shared", net, where)
        votes.add("num_domains", len(_indices(state, "unshared", "weight")), net)
        votes.add("style_dim", int(_require(state, "unshared.0.weight", f"{where} {net}").shape[0]), net)
    if "discriminator" in states:
        state, net = states["discriminator"], "discriminator"
        _trunk_votes(votes, state, "main", net, where)
        last = _indices(state, "main", "weight")
        votes.add("num_domains", int(state[f"main.{last[-1]}.weight"].shape[0]), net)
    has_hpf_blocks = False
    if "generator" in states:
        state, net = states["generator"], "generator"
        first_dim = int(_require(state, "from_rgb.weight", f"{where} {net}").shape[0])
        votes.add("first_dim", first_dim, net)
        if votes.get("img_size") is None:
            img_size = 2**14 // first_dim
            if 2**14 % first_dim:
                raise StarGAN2ImportError(f"{where}: generator width {first_dim} is not 2^14 / img_size; import it "
                                          "together with its style encoder or discriminator")
            votes.add("img_size", img_size, net)
        blocks = _indices(state, "encode", "conv2.weight")
        votes.add_max("max_conv_dim", max((int(state[f"encode.{i}.conv2.weight"].shape[0]) for i in blocks),
                                      default=first_dim), net)
        votes.add("style_dim", int(_require(state, "decode.0.norm1.fc.weight", f"{where} {net}").shape[1]), net)
        extra = len(blocks) - 2 - (int(math.log2(int(votes.get("img_size")))) - 4)
        if extra not in (0, 1):
            raise StarGAN2ImportError(f"{where}: generator has {len(blocks)} encoder blocks, which fits neither "
                                      f"w_hpf = 0 nor w_hpf > 0 at img_size {votes.get('img_size')}")
        has_hpf_blocks = extra == 1
    if not has_hpf_blocks and w_hpf:
        raise StarGAN2ImportError(f"{where}: w_hpf={w_hpf} was given but the file has no high-pass generator")
    found = _filter_w_hpf(states.get("generator", {}), where)
    if found is not None and not has_hpf_blocks:
        raise StarGAN2ImportError(f"{where}: the generator has '{HPF_FILTER_KEY}' but the encoder depth of w_hpf = 0")
    if found is not None and w_hpf is not None and not math.isclose(found, w_hpf):
        raise StarGAN2ImportError(f"{where}: '{HPF_FILTER_KEY}' implies w_hpf={found}, but w_hpf={w_hpf} was given")
    resolved_w_hpf = (found or w_hpf or 1.0) if has_hpf_blocks else 0.0
    img_size = int(votes.get("img_size", 256))
    first_dim = votes.get("first_dim")
    try:
        return StarGAN2Arch(
            img_size=img_size, num_domains=int(votes.get("num_domains", 2)),
            latent_dim=int(votes.get("latent_dim", 16)), style_dim=int(votes.get("style_dim", 64)),
            max_conv_dim=int(votes.get("max_conv_dim", 512)),
            w_hpf=float(resolved_w_hpf), mapping_dim=int(votes.get("mapping_dim", 512)),
            base_dim=None if first_dim in (None, official_base_dim(img_size)) else int(first_dim))
    except ValueError as error:
        raise StarGAN2ImportError(f"{where}: the tensors describe no valid StarGAN v2 ({error})") from error


def _filter_w_hpf(state: dict[str, Tensor], where: str) -> float | None:
    """w_hpf from a stored high-pass kernel (Laplacian / w_hpf), or None when the key is absent."""
    kernel = state.get(HPF_FILTER_KEY)
    if kernel is None:
        return None
    if kernel.shape != (3, 3) or float(kernel[1, 1]) <= 0:
        raise StarGAN2ImportError(f"{where}: '{HPF_FILTER_KEY}' is not a 3×3 Laplacian / w_hpf: {kernel.tolist()}")
    found = 8.0 / float(kernel[1, 1])
    if not torch.allclose(kernel.float(), laplacian_kernel(found), atol=1e-6):
        raise StarGAN2ImportError(f"{where}: '{HPF_FILTER_KEY}' is not a 3×3 Laplacian / w_hpf: {kernel.tolist()}")
    return found


def _build(arch: StarGAN2Arch, official: str) -> nn.Module:
    return getattr(arch, official)()


def convert_official_stargan2(states: dict[str, dict[str, Tensor]], arch: StarGAN2Arch,
                              where: str = "StarGAN v2 checkpoint") -> dict[str, dict[str, Tensor]]:
    """{role: state dict} strict-loadable into `arch`'s networks; every official key and shape is checked."""
    out: dict[str, dict[str, Tensor]] = {}
    for official, state in states.items():
        label = f"{where} {official}"
        with torch.device("meta"):
            expected = _build(arch, official).state_dict()
        unexpected = sorted(set(state) - set(expected) - {HPF_FILTER_KEY})
        if unexpected:
            raise StarGAN2ImportError(f"{label}: unexpected keys {unexpected[:4]} for {arch}")
        missing = sorted(set(expected) - set(state))
        if missing:
            raise StarGAN2ImportError(f"{label}: missing tensors {missing[:4]} for {arch}")
        converted = {}
        for key, target in expected.items():
            tensor = state[key]
            if tensor.shape != target.shape:
                raise StarGAN2ImportError(f"{label}: '{key}' has shape {tuple(tensor.shape)}, {arch} expects "
                                          f"{tuple(target.shape)}")
            converted[key] = tensor.detach().to(torch.float32).clone()
        out[OFFICIAL_TO_ROLE[official]] = converted
    return out


def load_official_stargan2(paths: Path | Iterable[Path], *, w_hpf: float | None = None,
                           require: Iterable[str] = ()) -> ImportedStarGAN2:
    """Official file(s) → our networks (eval mode, CPU) with the official weights, loaded strictly.

    Several files combine (e.g. a *_nets_ema.ckpt and a discriminator file); a network in two files is an error.
    `require` names roles (G, F, E, D) that must be present.
    """
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    states: dict[str, dict[str, Tensor]] = {}
    origin: dict[str, Path] = {}
    skipped: list[str] = []
    for path in paths:
        found, not_imported = read_official_stargan2(path)
        for name, state in found.items():
            if name in states:
                raise StarGAN2ImportError(f"{path}: '{name}' is also in {origin[name]}; give each network once")
            states[name], origin[name] = state, path
        skipped += not_imported
    where = ", ".join(str(p) for p in paths)
    roles = {OFFICIAL_TO_ROLE[name] for name in states}
    missing_roles = sorted(set(require) - roles)
    if missing_roles:
        official = [name for name, role in OFFICIAL_TO_ROLE.items() if role in missing_roles]
        raise StarGAN2ImportError(f"{where}: missing networks {official} (found {sorted(states)})")
    arch = infer_stargan2_arch(states, w_hpf=w_hpf, where=where)
    nets = {}
    for role, state in convert_official_stargan2(states, arch, where).items():
        official = next(name for name, r in OFFICIAL_TO_ROLE.items() if r == role)
        net = _build(arch, official)
        net.load_state_dict(state, strict=True)
        nets[role] = net.eval()
    return ImportedStarGAN2(arch=arch, nets=nets, skipped=skipped)


_STEP_IN_NAME = re.compile(r"^(?P<step>\d+)_nets")


def _is_ema_file(path: Path) -> bool:
    """Official names: `{step:06d}_nets_ema.ckpt` (EMA nets) vs `{step:06d}_nets.ckpt` (trained nets)."""
    return "ema" in path.stem.split("_")


def import_stargan2_run(files: Path | Iterable[Path], out: Path, *, data: str | None = None,
                        overrides: Sequence[tuple[list[str], Any]] = ()) -> Path:
    """Official file(s) → a `stargan2` ganforge run in `out` that samples, evaluates and trains on like any run.

    `*_nets_ema.ckpt` fills G_ema, F_ema, E_ema and `*_nets.ckpt` (or any name without "ema") G, F, E, D. A side
    that is absent is copied from the other (the released files are EMA only); a missing D keeps its He init. The
    run stands at the step in the file name with λ_ds decayed to match; Adam restarts from zero (the official
    optimiser files are not read). `data` must have as many domains as the checkpoint; `overrides` shape the run
    (e.g. model.domain_column; a model.w_hpf must agree with the files).
    """
    if not data:
        raise ConfigError("import stargan2: --data is required (a store whose domain column has as many domains as "
                          "the checkpoint)")
    paths, out = import_paths(files, out, StarGAN2ImportError)
    w_hpf = next((value for keys, value in overrides if keys == ["model", "w_hpf"]), None)
    sides: dict[bool, dict[str, dict[str, Tensor]]] = {True: {}, False: {}}
    origin: dict[tuple[bool, str], Path] = {}
    steps = set()
    for path in paths:
        ema = _is_ema_file(path)
        for name, state in read_official_stargan2(path)[0].items():
            if (ema, name) in origin:
                raise StarGAN2ImportError(f"{path}: '{name}' is also in {origin[ema, name]}; give each file once")
            sides[ema][name], origin[ema, name] = state, path
        if match := _STEP_IN_NAME.match(path.stem):
            steps.add(int(match["step"]))
    if len(steps) > 1:
        raise StarGAN2ImportError(f"{', '.join(map(str, paths))}: files of different steps {sorted(steps)}")
    where = ", ".join(str(p) for p in paths)
    networks = {**sides[True], **sides[False]}
    missing = [name for name in ("generator", "mapping_network", "style_encoder") if name not in networks]
    if missing:  # a run without them would translate with random networks
        raise StarGAN2ImportError(f"{where}: no {', '.join(missing)} in the files (they hold {', '.join(networks)}); a "
                                  "run needs the generator, mapping network and style encoder, which the official "
                                  "*_nets_ema.ckpt holds")
    if "discriminator" not in networks:
        warnings.warn(f"{where}: no discriminator in the files; the run's D starts from its He init (training on "
                      "needs the official *_nets.ckpt for the trained one)", stacklevel=2)
    arch = infer_stargan2_arch(networks, w_hpf=w_hpf, where=where)
    for side in sides.values():  # the union saw one side's hpf.filter: the other must agree
        found = _filter_w_hpf(side.get("generator", {}), where)
        if found is not None and not math.isclose(found, arch.w_hpf):
            raise StarGAN2ImportError(f"{where}: the files' '{HPF_FILTER_KEY}' imply different w_hpf "
                                      f"({found} and {arch.w_hpf})")
    model = {"resolution": arch.img_size, "latent_dim": arch.latent_dim,
             "style_dim": arch.style_dim, "max_conv_dim": arch.max_conv_dim, "w_hpf": arch.w_hpf,
             "base_dim": arch.base_dim, "mapping_dim": arch.mapping_dim}
    config = resolve_run_config("stargan2", {"data": data, "model": model}, list(overrides))
    check_shapes_kept({key: (getattr(config.model, key), value) for key, value in model.items()}, where,
                      StarGAN2ImportError)
    family = new_family(config)
    if family.arch.num_domains != arch.num_domains:
        raise StarGAN2ImportError(f"{where}: the checkpoint has {arch.num_domains} domains but {data} has "
                                  f"{family.arch.num_domains} in column {family.domain_column!r} "
                                  f"({', '.join(family.domain_names)})")
    trained = convert_official_stargan2(sides[False], arch, where)
    averaged = convert_official_stargan2(sides[True], arch, where)
    for role in ("G", "F", "E", "D"):
        state = trained.get(role, averaged.get(role))
        if state is not None:
            family.nets[role].load_state_dict(state, strict=True)
        if role != "D" and (role in averaged or role in trained):
            family.nets[f"{role}_ema"].load_state_dict(averaged.get(role, state), strict=True)
    step = min(steps.pop() if steps else 0, family.total_steps())
    family.lambda_ds = max(0.0, family.config.lambda_ds * (1.0 - step / family.config.ds_iter))
    return write_run(out, config, family, step)
