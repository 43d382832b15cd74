"""Import facebookresearch/pytorch_GAN_zoo Progressive GAN checkpoints without executing pickled code.

A zoo checkpoint (`<name>_s<scale>_i<iter>.pt`, or a hub `.pth`) is a `torch.save`d dict
``{config: models.utils.config.BaseConfig, netG, netD, avgG}``. It is read with torch's restricted
``weights_only`` unpickler; the one custom class, BaseConfig, is mapped to an inert attribute holder, so any
other global in the file (e.g. ``os.system``) is refused instead of being called.

The converted networks are the ``"zoo"`` variant of :mod:`ganforge.models.pgan` (√2 gains everywhere, He
constant applied to the bias too, unbiased consecutive-group minibatch stddev), which reproduces the zoo's
outputs. A zoo checkpoint only holds the scales trained so far, so the imported architecture stops at the
checkpoint's resolution; to grow an imported run further, build a config whose widths list more scales and
load these tensors into the matching layers of the bigger networks. `import_pgan_zoo` writes such a checkpoint as
a ganforge run at the same position.
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ganforge.config import ConfigError, read_config_file
from ganforge.data.store import CLASS_COLUMN, open_dataset
from ganforge.download import download, file_digest
from ganforge.families import resolve_run_config
from ganforge.families.pgan import UNIT_KEYS
from ganforge.families.pgan_zoo_config import zoo_config_to_ganforge
from ganforge.interop.sources import check_shapes_kept, import_paths
from ganforge.metrics.inception import default_cache_dir
from ganforge.models.pgan import LRELU_SLOPE, PGANArch, PGANDiscriminator, PGANGenerator
from ganforge.run_loader import new_family
from ganforge.safe_load import load_weights_only
from ganforge.training.checkpoint import write_run

ZOO_CONFIG_GLOBAL = "models.utils.config.BaseConfig"
ZOO_MBSTD_GROUP_SIZE = 4


class ZooImportError(ValueError):
    """A zoo checkpoint is unreadable, unsafe or describes networks ganforge does not build."""


class ZooDownloadError(OSError):
    """A zoo hub file could not be fetched or failed its hash check."""


class _ZooConfigData:
    """Inert stand-in for the zoo's BaseConfig: unpickling only fills its __dict__, no code runs."""


@dataclass
class ZooCheckpoint:
    """Contents of a zoo checkpoint as plain data; state-dict keys have no `.module.` segments."""

    config: dict[str, Any]
    netG: dict[str, Tensor]
    netD: dict[str, Tensor]
    avgG: dict[str, Tensor] | None
    path: Path | None = None


@dataclass(frozen=True)
class ZooHubFile:
    """A checkpoint published by the zoo through torch.hub.

    The file name ends with the first hex digits of the file's SHA-256 (torch.hub's convention); that
    prefix is all the reference metadata records, so it is what downloads are verified against.
    """

    file: str
    url: str
    sha256_prefix: str
    resolution: int
    note: str = ""


_HUB_BASE = "https://dl.fbaipublicfiles.com/gan_zoo/PGAN/"

# Names are the zoo's hubconf.py model names; files and URLs from the fixture meta.json `hub_checkpoints`.
ZOO_HUB_CHECKPOINTS: dict[str, ZooHubFile] = {
    "celebAHQ-256": ZooHubFile(
        "celebaHQ_s6_i80000-6196db68.pth", _HUB_BASE + "celebaHQ_s6_i80000-6196db68.pth", "6196db68", 256
    ),
    "celebAHQ-512": ZooHubFile(
        "celebaHQ16_december_s7_i96000-9c72988c.pth",
        _HUB_BASE + "celebaHQ16_december_s7_i96000-9c72988c.pth",
        "9c72988c",
        512,
    ),
    "celeba": ZooHubFile(
        "celebaCropped_s5_i83000-2b0acc76.pth",
        _HUB_BASE + "celebaCropped_s5_i83000-2b0acc76.pth",
        "2b0acc76",
        128,
    ),
    "DTD": ZooHubFile(
        "testDTD_s5_i96000-04efa39f.pth",
        _HUB_BASE + "testDTD_s5_i96000-04efa39f.pth",
        "04efa39f",
        128,
        note="trained as an AC-GAN on the DTD class folders: import it with data= a store prepared from them",
    ),
}


def _plain(value: Any) -> Any:
    """Config values as plain data (nested config objects become dicts)."""
    if isinstance(value, _ZooConfigData):
        return {key: _plain(item) for key, item in vars(value).items()}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(item) for item in value)
    return value


def _strip_module(state: Any, path: Path, key: str) -> dict[str, Tensor]:
    """Drop `module` key segments (zoo's ConstrainedLayer wrapper, DataParallel) so both key styles load."""
    if not isinstance(state, dict):
        raise ZooImportError(f"{path}: '{key}' must be a state dict, got {type(state).__name__}")
    out: dict[str, Tensor] = {}
    for name, tensor in state.items():
        if not isinstance(tensor, Tensor):
            raise ZooImportError(f"{path}: '{key}.{name}' must be a tensor, got {type(tensor).__name__}")
        out[".".join(part for part in name.split(".") if part != "module")] = tensor
    return out


def read_zoo_checkpoint(path: Path) -> ZooCheckpoint:
    """Read a zoo checkpoint (zip or legacy pre-1.6 torch format) with the restricted unpickler."""
    path = Path(path)
    obj = load_weights_only(path, what="a zoo checkpoint", error=ZooImportError,
                            allowed=[(_ZooConfigData, ZOO_CONFIG_GLOBAL)])
    if not isinstance(obj, dict) or "config" not in obj:
        found = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ZooImportError(f"{path}: expected a dict with keys config, netG, netD[, avgG], found {found}")
    for key in ("netG", "netD"):
        if key not in obj:
            raise ZooImportError(f"{path}: missing '{key}' (found keys {sorted(obj)})")
    config = _plain(obj["config"])
    if not isinstance(config, dict):
        raise ZooImportError(
            f"{path}: 'config' must be a {ZOO_CONFIG_GLOBAL} or dict, got {type(config).__name__}"
        )
    avg = obj.get("avgG")
    return ZooCheckpoint(
        config=config,
        netG=_strip_module(obj["netG"], path, "netG"),
        netD=_strip_module(obj["netD"], path, "netD"),
        avgG=None if avg is None else _strip_module(avg, path, "avgG"),
        path=path,
    )


def _where(ckpt: ZooCheckpoint) -> str:
    return str(ckpt.path) if ckpt.path is not None else "zoo checkpoint"


def _config_value(ckpt: ZooCheckpoint, key: str) -> Any:
    if key not in ckpt.config:
        raise ZooImportError(f"{_where(ckpt)}: config has no '{key}' (keys: {sorted(ckpt.config)})")
    return ckpt.config[key]


def _layer_count(state: dict[str, Tensor], prefix: str) -> int:
    pattern = re.compile(rf"{re.escape(prefix)}\.(\d+)\.")
    indices = {int(match.group(1)) for key in state if (match := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def zoo_scale(ckpt: ZooCheckpoint) -> int:
    """Current scale = number of scales added after 4×4, counted from the state dicts."""
    g_scales = _layer_count(ckpt.netG, "toRGBLayers")
    d_scales = _layer_count(ckpt.netD, "fromRGBLayers")
    if g_scales == 0 or g_scales != d_scales:
        raise ZooImportError(
            f"{_where(ckpt)}: netG has {g_scales} toRGBLayers and netD {d_scales} fromRGBLayers; "
            "expected the same positive number"
        )
    return g_scales - 1


def zoo_alpha(ckpt: ZooCheckpoint) -> float:
    """Fade weight of the old path at save time (the zoo's own alpha semantics, as in ganforge)."""
    alpha = float(_config_value(ckpt, "alpha"))
    if not 0.0 <= alpha <= 1.0:
        raise ZooImportError(f"{_where(ckpt)}: config 'alpha' must be in [0, 1], got {alpha}")
    return alpha


def zoo_label_sizes(ckpt: ZooCheckpoint) -> list[int]:
    """Classes per attribute of an AC-GAN checkpoint, in the order of its attribKeysOrder (empty: unconditional);
    they must add up to its categoryVectorDim."""
    category_dim = int(ckpt.config.get("categoryVectorDim", 0) or 0)
    attributes = ckpt.config.get("attribKeysOrder") or {}
    try:
        ordered = sorted(attributes.items(), key=lambda item: int(item[1]["order"]))
        sizes = [len(entry["values"]) for _, entry in ordered]
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ZooImportError(f"{_where(ckpt)}: config 'attribKeysOrder' must map attribute names to "
                             f"{{'order': int, 'values': [...]}}, got {attributes!r}") from None
    if sum(sizes) != category_dim:
        raise ZooImportError(f"{_where(ckpt)}: config 'categoryVectorDim' = {category_dim} but 'attribKeysOrder' "
                             f"lists {sum(sizes)} classes")
    return sizes


def zoo_arch(ckpt: ZooCheckpoint, *, reproduce_d_fade_quirk: bool = False) -> PGANArch:
    """The "zoo"-variant architecture of exactly the checkpoint's scales.

    ``reproduce_d_fade_quirk`` makes D ignore alpha during 4→8 as the zoo does (fidelity); off by default.
    """
    where = _where(ckpt)
    label_sizes = zoo_label_sizes(ckpt)
    for key, expected in (
        ("equalizedlR", True),
        ("miniBatchStdDev", True),
        ("perChannelNormalization", True),
    ):
        if ckpt.config.get(key, expected) is not expected:
            raise ZooImportError(
                f"{where}: config '{key}' = {ckpt.config[key]!r}; ganforge expects {expected}"
            )
    leak = float(ckpt.config.get("leakyReluLeak", LRELU_SLOPE))
    if not math.isclose(leak, LRELU_SLOPE):
        raise ZooImportError(f"{where}: config 'leakyReluLeak' = {leak}; ganforge expects {LRELU_SLOPE}")
    num_scales = zoo_scale(ckpt) + 1
    widths = [_config_value(ckpt, "depthScale0"), *_config_value(ckpt, "depthOtherScales")]
    if len(widths) < num_scales:
        raise ZooImportError(
            f"{where}: config 'depthOtherScales' lists {len(widths) - 1} added scales but the state dicts "
            f"hold {num_scales - 1}"
        )
    # the zoo's latentVectorDim is the noise plus the one-hot classes (categoryVectorDim)
    latent = ckpt.config.get("noiseVectorDim")
    if latent is None and ckpt.config.get("latentVectorDim") is not None:
        latent = int(ckpt.config["latentVectorDim"]) - sum(label_sizes)
    if latent is None:
        raise ZooImportError(f"{where}: config has neither 'latentVectorDim' nor 'noiseVectorDim'")
    try:
        return PGANArch(
            resolution=4 * 2 ** (num_scales - 1),
            widths=[int(w) for w in widths[:num_scales]],
            latent_dim=int(latent),
            variant="zoo",
            channels=int(ckpt.config.get("dimOutput", 3)),
            mbstd_group_size=ZOO_MBSTD_GROUP_SIZE,
            zoo_skip_first_d_fade=reproduce_d_fade_quirk,
            label_sizes=label_sizes,
        )
    except ValueError as error:
        raise ZooImportError(f"{where}: config does not describe a valid PGAN: {error}") from error


_G_KEYS = [
    (re.compile(r"formatLayer\.(weight|bias)$"), r"blocks.0.dense.\1"),
    (re.compile(r"groupScale0\.0\.(weight|bias)$"), r"blocks.0.conv.\1"),
    (re.compile(r"toRGBLayers\.(\d+)\.(weight|bias)$"), r"to_rgb.\1.\2"),
]
_D_KEYS = [
    (re.compile(r"fromRGBLayers\.(\d+)\.(weight|bias)$"), r"from_rgb.\1.\2"),
    (re.compile(r"groupScaleZero\.0\.(weight|bias)$"), r"blocks.0.conv.\1"),
    (re.compile(r"groupScaleZero\.1\.(weight|bias)$"), r"blocks.0.dense0.\1"),
    (re.compile(r"decisionLayer\.(weight|bias)$"), r"blocks.0.dense1.\1"),
]
_SCALE_LAYER = re.compile(r"scaleLayers\.(\d+)\.([01])\.(weight|bias)$")


def _rename(zoo_key: str, table: list[tuple[re.Pattern[str], str]]) -> str | None:
    if match := _SCALE_LAYER.match(zoo_key):
        index, conv, param = match.groups()
        return f"blocks.{int(index) + 1}.conv{conv}.{param}"  # zoo's scaleLayers[i] is the block of scale i+1
    for pattern, replacement in table:
        if pattern.match(zoo_key):
            return pattern.sub(replacement, zoo_key)
    return None


def _convert(
    state: dict[str, Tensor], table: list[tuple[re.Pattern[str], str]], target: torch.nn.Module, label: str
) -> dict[str, Tensor]:
    expected = target.state_dict()
    out: dict[str, Tensor] = {}
    for zoo_key, tensor in state.items():
        name = _rename(zoo_key, table)
        if name is None or name not in expected:
            raise ZooImportError(f"{label}: unexpected key '{zoo_key}' for a zoo PGAN")
        if tensor.shape != expected[name].shape:
            raise ZooImportError(
                f"{label}: '{zoo_key}' has shape {tuple(tensor.shape)}, the architecture from the config "
                f"expects {tuple(expected[name].shape)}"
            )
        out[name] = tensor.detach().clone()
    missing = sorted(set(expected) - set(out))
    if missing:
        raise ZooImportError(f"{label}: missing tensors for {missing}")
    return out


def convert_zoo_state(ckpt: ZooCheckpoint) -> dict[str, dict[str, Tensor]]:
    """State dicts "G", "D", "G_ema" for the networks of `zoo_arch(ckpt)` (strict-loadable).

    A checkpoint without avgG gets G's weights as its EMA, the zoo's own starting point for avgG.
    """
    arch = zoo_arch(ckpt)
    where = _where(ckpt)
    with torch.device("meta"):
        generator, discriminator = PGANGenerator(arch), PGANDiscriminator(arch)
    g_state = _convert(ckpt.netG, _G_KEYS, generator, f"{where} netG")
    ema_source = ckpt.avgG if ckpt.avgG is not None else ckpt.netG
    return {
        "G": g_state,
        "D": _convert(ckpt.netD, _D_KEYS, discriminator, f"{where} netD"),
        "G_ema": _convert(ema_source, _G_KEYS, generator, f"{where} avgG"),
    }


def _verify(path: Path, entry: ZooHubFile) -> None:
    actual = file_digest(path)
    if not actual.startswith(entry.sha256_prefix):
        raise ZooDownloadError(
            f"{path}: sha256 {actual} does not start with {entry.sha256_prefix} expected for {entry.file} "
            f"({entry.url}); the file is corrupt or a different file"
        )


def fetch_zoo_hub(name: str, dest_dir: Path, local_path: Path | None = None) -> Path:
    """Put hub checkpoint `name` (a key of ZOO_HUB_CHECKPOINTS) in dest_dir, verified, and return its path.

    With local_path the file is copied from there (for offline machines); otherwise it is downloaded.
    """
    if name not in ZOO_HUB_CHECKPOINTS:
        raise ValueError(
            f"unknown zoo hub checkpoint {name!r}; expected one of {sorted(ZOO_HUB_CHECKPOINTS)}"
        )
    entry = ZOO_HUB_CHECKPOINTS[name]
    dest_dir = Path(dest_dir)
    dest = dest_dir / entry.file
    if local_path is not None:
        local_path = Path(local_path)
        if not local_path.is_file():
            raise ZooDownloadError(f"local copy of {entry.file} not found: {local_path}")
        _verify(local_path, entry)
        dest_dir.mkdir(parents=True, exist_ok=True)
        if local_path.resolve() != dest.resolve():
            shutil.copyfile(local_path, dest)
        return dest
    if dest.is_file():
        _verify(dest, entry)
        return dest
    try:
        return download(entry.url, dest, check=lambda path: _verify(path, entry))
    except ZooDownloadError:
        raise
    except OSError as error:
        raise ZooDownloadError(
            f"could not download {entry.file} from {entry.url} ({error}); on an offline machine download it "
            f"elsewhere and put it at {dest}, or give the downloaded file's path in place of the name "
            f"(`ganforge import pgan-zoo PATH/{entry.file}`)"
        ) from error


PLACEHOLDER_IMAGES = 64  # the built-in data an import without --data is bound to
# the zoo trainer's `NAME_s<scale>_i<iteration>`, with the `-<sha256 prefix>` torch.hub's file names add
_ZOO_NAME = re.compile(r"^(?P<name>.+)_s(?P<scale>\d+)_i(?P<iter>\d+)(-[0-9a-f]{6,})?$")


def train_config_path(file: Path) -> Path:
    """Where the zoo's trainer writes `<name>_train_config.json` beside the checkpoint `file`."""
    match = _ZOO_NAME.match(file.stem)
    return file.with_name(f"{match['name'] if match else file.stem}_train_config.json")


def _zoo_train_config(file: Path) -> dict | None:
    """The trainer's `<name>_train_config.json` beside a checkpoint, when the user kept it."""
    candidate = train_config_path(file)
    return read_config_file(candidate) if _ZOO_NAME.match(file.stem) and candidate.is_file() else None


def _matched_conditions(ckpt: ZooCheckpoint, data: str | None) -> tuple[list[str], list[list[int]]]:
    """The store's label columns holding an AC-GAN checkpoint's attributes (the zoo's class-folder attribute
    "Main" is `ganforge prepare`'s "class"), and for each the zoo's index of every store class, by name."""
    attributes = sorted(ckpt.config["attribKeysOrder"].items(), key=lambda item: int(item[1]["order"]))
    wanted = "; ".join(f"{name}: {len(entry['values'])} classes ({', '.join(map(str, entry['values'][:4]))}, ...)"
                       for name, entry in attributes)
    if data is None:
        raise ZooImportError(f"{_where(ckpt)}: an AC-GAN checkpoint; --data must name a store whose label columns "
                             f"hold its classes ({wanted})")
    store = open_dataset(data)
    columns = dict(store.label_columns)
    conditions, orders = [], []
    for name, entry in attributes:
        folders = name == "Main" and CLASS_COLUMN in columns  # the zoo's class-folder attribute
        column = name if name in columns else CLASS_COLUMN if folders else None
        classes = [str(value) for value in entry["values"]]
        if column is None or sorted(map(str, columns[column])) != sorted(classes):
            have = {k: len(v) for k, v in columns.items()}
            raise ZooImportError(f"{_where(ckpt)}: the store {store.source} has no label column with the classes of "
                                 f"the checkpoint's attribute {name!r} ({wanted}); its columns: {have}")
        conditions.append(column)
        orders.append([classes.index(str(value)) for value in columns[column]])
    return conditions, orders


def _reordered_classes(states: dict[str, dict[str, Tensor]], arch: PGANArch, orders: list[list[int]]
                       ) -> dict[str, dict[str, Tensor]]:
    """The zoo's one-hot inputs of G and class rows of D put in the store's class order (`orders[a][k]`: the
    zoo's index of store class k of attribute a). D's class logits are the rows the zoo trained as them: it slices
    attribute a's logits from its output starting at column 0, the score (a bug ganforge fixes), so its logit of
    class j is row offset_a + j, and the first class of the first attribute shares row 0 with the score."""
    if not orders:
        return states
    g_columns, d_rows, offset = list(range(arch.latent_dim)), [0], 0
    for order in orders:
        g_columns += [arch.latent_dim + offset + index for index in order]
        d_rows += [offset + index for index in order]
        offset += len(order)
    reordered = {role: dict(state) for role, state in states.items()}
    for role, state in reordered.items():
        if role == "D":
            for key in ("blocks.0.dense1.weight", "blocks.0.dense1.bias"):
                state[key] = state[key][d_rows]
        else:
            state["blocks.0.dense.weight"] = state["blocks.0.dense.weight"][:, g_columns]
    return reordered


def _load_lower_scales(net: nn.Module, state: dict[str, torch.Tensor], top_scale: int, file: Path) -> None:
    """Strict for every layer the checkpoint has; layers of scales above it may only be missing."""
    missing, unexpected = net.load_state_dict(state, strict=False)
    grown = [key for key in missing if int(re.search(r"\.(\d+)\.", key).group(1)) > top_scale]
    if unexpected or len(grown) != len(missing):
        raise ValueError(f"{file}: the checkpoint does not fit the requested networks "
                         f"(missing {sorted(set(missing) - set(grown))[:3]}, unexpected {sorted(unexpected)[:3]})")


def import_pgan_zoo(files: Path | Sequence[Path], out: Path, *, data: str | None = None,
                    overrides: Sequence[tuple[list[str], Any]] = ()) -> Path:
    """A pytorch_GAN_zoo PGAN checkpoint (or hub file, by name) → a `zoo`-variant ganforge run at the same position.

    The zoo stores no optimiser state, so Adam restarts from zero; G, EMA G and D weights are exact.
    With the zoo's train config beside the file (`NAME_train_config.json`) the run follows its whole plan, so a
    mid-run checkpoint grows on as the zoo's train.py would resume it; without, the schedule is the zoo default cut
    to the checkpoint's scales. The run stands at the iteration in the file name (or the end of its scale).
    """
    paths, out = import_paths(files, out, ZooImportError)
    if len(paths) != 1:
        raise ZooImportError(f"{', '.join(map(str, paths))}: a zoo checkpoint is one file, got {len(paths)}")
    file = paths[0]
    if not file.exists() and str(file) in ZOO_HUB_CHECKPOINTS:  # a released hub model by name: fetch, verify
        file = fetch_zoo_hub(str(file), default_cache_dir() / "weights")
    zoo = read_zoo_checkpoint(file)
    arch = zoo_arch(zoo)
    conditions, orders = _matched_conditions(zoo, data) if arch.label_sizes else ([], [])
    scale = zoo_scale(zoo)
    train_config = _zoo_train_config(file)
    if train_config is not None:
        ac_gan = {"attribKeysOrder", "categoryVectorDim", "weightConditionD", "weightConditionG"}
        train_config = {k: v for k, v in train_config.items() if k not in ac_gan}  # from the checkpoint below
        try:
            raw = zoo_config_to_ganforge({"pathDB": data or "builtin:shapes", "config": train_config})
        except ConfigError as err:  # a file the user did not name: say which, and what else there is
            raise ZooImportError(f"{train_config_path(file)}: {err} (the zoo's train config beside {file.name}, "
                                 "which the import follows; move it away to import with the zoo's default "
                                 "schedule)") from None
    else:  # the zoo's defaults; a checkpoint saved after its fade (alpha 0) had a fade that ended before it
        defaults = [48000] + [96000] * scale
        fades = [0] + [UNIT_KEYS["iterations"]["alpha_jumps"]] * scale
        if scale and zoo_alpha(zoo) == 0.0:
            fades[scale] = 0
        raw = {"family": "pgan", "data": data or "builtin:shapes",
               "model": {"variant": "zoo", "schedule": {"unit": "iterations", "max_iter_at_scale": defaults,
                                                        "alpha_jumps": fades}}}
    planned = raw["model"].get("widths", [])
    if len(planned) > len(arch.widths) and planned[:len(arch.widths)] == list(arch.widths):
        # a checkpoint from mid-run and the zoo's train config beside it: the run grows on to the planned
        # resolution as the zoo's train.py would, the scales not grown yet starting from their initialisation
        raw["model"]["latent_dim"] = arch.latent_dim
    else:
        schedule = raw["model"]["schedule"]
        for key in ("max_iter_at_scale", "alpha_jumps", "alpha_jump_size"):
            if isinstance(schedule.get(key), list):
                schedule[key] = schedule[key][: scale + 1]
        raw["model"].update(resolution=arch.resolution, latent_dim=arch.latent_dim, widths=list(arch.widths))
    if conditions:
        raw["model"].update(conditions=conditions,
                            condition_weight_d=float(zoo.config.get("weightConditionD", 0.0) or 0.0),
                            condition_weight_g=float(zoo.config.get("weightConditionG", 0.0) or 0.0))
    config = resolve_run_config("pgan", raw, list(overrides))
    if data is None:  # a few built-in images at the networks' size: they only shape the networks (64 images at
        # 1024 px are 200 MB, the default 4,096 would be 13 GB); the run's first `train` may name its real data
        config.data = f"builtin:shapes?count={PLACEHOLDER_IMAGES}&resolution={config.model.resolution}"

    check_shapes_kept({"latent_dim": (config.model.latent_dim, arch.latent_dim),
                       "widths": (list(config.model.widths or arch.widths)[: len(arch.widths)], list(arch.widths))},
                      str(file), ZooImportError)
    family = new_family(config)
    if family.arch.channels != arch.channels:
        raise ZooImportError(f"{file}: the checkpoint's networks make {arch.channels}-channel images, and "
                             f"{config.data} holds {family.arch.channels}-channel ones; import with a store of "
                             f"{arch.channels}-channel images (--data)")
    states = _reordered_classes(convert_zoo_state(zoo), arch, orders)
    for role, state in states.items():
        _load_lower_scales(family.nets[role], state, scale, file)
    if "G_ema" not in states:
        family.nets["G_ema"].load_state_dict(states["G"])
    segment = family.segments[scale]
    match = _ZOO_NAME.match(file.stem)
    done_in_scale = int(match["iter"]) if match else segment.steps
    step = segment.start + min(done_in_scale, segment.steps)
    planned = family.plan(step - 1).real_blend  # what the run's networks fade by from here (run_loader's plan)
    if abs(planned - zoo_alpha(zoo)) > 1e-6:
        where = (f"the schedule of {train_config_path(file).name} beside it" if train_config is not None else
                 f"the zoo's default schedule (no {train_config_path(file).name} beside it)")
        raise ZooImportError(f"{file}: the checkpoint fades its new scale by alpha {zoo_alpha(zoo):g}, and {where} "
                             f"puts iteration {min(done_in_scale, segment.steps)} of scale {scale} at alpha "
                             f"{planned:g}: the run would not generate what the zoo's networks do; import it with "
                             "the train config it was trained with beside it")
    return write_run(out, config, family, step)
