"""Typed configs: dataclasses filled from JSON/YAML files and `--set a.b=c` overrides, strictly validated.

Every family owns a dataclass for its `model:` section; the engine's own settings are the top-level keys of
`RunConfig`. Validation is strict because a misspelt key in a GAN config silently costs days of compute: an unknown
key is an error that names the key and the nearest valid ones.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import json
import logging
import math
import numbers
import re
import shlex
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ganforge.augment.config import AugmentConfig
from ganforge.errors import ConfigError
from ganforge.settings import Settings, suggest_keys


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting only where the conversion is lossless."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} does not fit {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool) and ("on" if value else "off") in allowed:  # YAML 1.1 reads `off` as False
            value = "on" if value else "off"
        if value not in allowed:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = typing.get_args(tp)
        return {
            _coerce(_parse_key(k, key_tp), key_tp, f"{where}.{k}"): _coerce(v, val_tp, f"{where}.{k}")
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if not -(2**63) <= value < 2**63:
            raise ConfigError(f"{where}: {value} is out of range")
        return value
    if tp is float:
        number = value
        if isinstance(value, str):  # YAML 1.1 loaders (yaml.safe_load in scripts) read `1e-4` as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(number):  # an infinite rate or a NaN weight trains nothing a user wants
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(number)
    if tp is str:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{where}: unsupported config type {_type_name(tp)}")


def _parse_key(key: Any, key_tp: Any) -> Any:
    """JSON object keys are strings; per-resolution tables want integers."""
    if key_tp is int and isinstance(key, str):
        try:
            return int(key)
        except ValueError:
            raise ConfigError(f"key {key!r}: expected an integer key") from None
    return key


def renamed_keys(cls: type, data: dict[str, Any], where: str = "") -> dict[str, Any]:
    """`data` with the old spellings a config class lists in its `RENAMED_KEYS` ClassVar (old → new) under their
    new names, each with a deprecation message; run configs saved before a rename keep loading."""
    renamed = getattr(cls, "RENAMED_KEYS", {})
    if not renamed.keys() & data.keys():
        return data
    data = dict(data)
    for old, new in renamed.items():
        if old not in data:
            continue
        path = f"{where}.{old}" if where else old
        if new in data:
            raise ConfigError(f"{path}: the old spelling of '{new}', which is also given; keep only '{new}'")
        logging.getLogger(__name__).warning("%s is deprecated: it is now called '%s' (read as such; write '%s')",
                                            path, new, new)
        data[new] = data.pop(old)
    return data


# names users bring from other code for the keys ganforge calls otherwise
KEY_SYNONYMS = {"learning_rate": "lr", "lr_rate": "lr", "num_steps": "steps", "iterations": "steps",
                "n_critic": "critic_steps", "seed_value": "seed"}


def unknown_key_hint(key: str, fields: dict[str, Any], hints: dict[str, Any], where: str) -> str:
    """Where a mistaken key belongs: its usual synonym here, the same key in a nested section (PGAN's
    model.batch_size is model.schedule.batch_size), else the nearest names."""
    prefix = f"{where}." if where else ""
    if KEY_SYNONYMS.get(key) in fields:
        return f"did you mean '{prefix}{KEY_SYNONYMS[key]}'?"
    sections = {name: next((tp for tp in (hints.get(name), *typing.get_args(hints.get(name)))
                            if dataclasses.is_dataclass(tp)), None) for name in fields}  # X or X | None
    homes = [f"{prefix}{name}.{key}" for name, section in sections.items()
             if section is not None and key in {f.name for f in dataclasses.fields(section)}]
    if homes:
        return "it belongs in " + " or ".join(f"'{home}'" for home in homes)
    return suggest_keys(key, list(fields))


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types with the key path."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in renamed_keys(cls, data, where).items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown config key '{path}': {unknown_key_hint(str(key), fields, hints, where)}")
        kwargs[key] = _coerce(value, hints[key], path)
    try:
        obj = cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}" if where and not str(err).startswith(where) else str(err)) from None
    except TypeError as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from None
    return obj


def is_whole_number(value: Any) -> bool:
    """An integer of any kind (numpy's too, e.g. a step chosen with argmin), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def to_dict(obj: Any) -> Any:
    """Plain JSON-ready data from (nested) dataclasses."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


COMMAND_LINE = "command_line"  # read_config_file's key for a shell script: {"file": path, "words": [script.py, ...]}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML config file as a mapping; errors name the file. A shell script (`.sh`: the zoo's train.py
    command, BigGAN-PyTorch's launch scripts, StarGAN v2's README commands) is read as its one python command line,
    `{COMMAND_LINE: {"file": path, "words": [script.py, arg, ...]}}`, for a family that translates the
    reference's flags (`Family.normalise_config`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: a folder, not a config file (a run's config is its config.json)" if path.is_dir()
                          else f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file in UTF-8 ({err.reason} at byte {err.start})") from None
    if path.suffix.lower() == ".sh":
        return {COMMAND_LINE: {"file": str(path), "words": python_command_line(text, str(path))}}
    try:
        data = json.loads(text, object_pairs_hook=_mapping_without_repeats) if path.suffix.lower() == ".json" \
            else yaml.load(text, Loader=_StrictYamlLoader)  # a SafeLoader: no Python objects
    except RepeatedKeyError as err:
        raise ConfigError(f"{path}: {err}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON: {err}") from None
    except yaml.YAMLError as err:  # PyYAML's message quotes the file over several lines: keep what and where
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML: {getattr(err, 'problem', None) or type(err).__name__}{where}"
                          ) from None
    if data is None or data == {}:
        raise ConfigError(f"{path}: the config file is empty (leave out -c for every default)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


class RepeatedKeyError(ValueError):
    """A key given twice in one mapping of a config file: the first value would be dropped without a word."""


def _mapping_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise RepeatedKeyError(f"key {repeated[0]!r} is given twice in one mapping (only the last would count)")
    return dict(pairs)


class _StrictYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error rather than the last one winning,
    and that numbers are read as YAML 1.2 (and JSON) read them: `010` is no octal 8 and `1:30` no base-60 90 (both
    stay text, which an integer setting refuses), and `1e-4` is a float without a dot. The keys are checked as
    written, on the composed document before anything is constructed (construction merges `<<: *anchor` keys into
    the anchored mappings themselves)."""

    def construct_document(self, node: yaml.Node) -> Any:
        _refuse_repeated_keys(node, set())
        return super().construct_document(node)


_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_StrictYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_StrictYamlLoader.add_implicit_resolver(
    _INT_TAG, re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$"), list("-+0123456789"))
_StrictYamlLoader.add_implicit_resolver(
    _FLOAT_TAG, re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                              |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                              |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                              |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


def _refuse_repeated_keys(node: yaml.Node, visited: set[int]) -> None:
    if id(node) in visited:  # an alias: the anchored node, checked where it was written
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        lines: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
                if key in lines:
                    where = f"line {line}" if lines[key] == line else f"lines {lines[key]} and {line}"
                    raise RepeatedKeyError(f"key {key_node.value!r} is given twice in one mapping ({where}; only the "
                                           "last would count)")
                lines[key] = line
            _refuse_repeated_keys(key_node, visited)
            _refuse_repeated_keys(value_node, visited)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_repeated_keys(item, visited)


def python_command_line(text: str, where: str) -> list[str]:
    """The words of a shell script's one `python SCRIPT.py ARGS` command from the script on: continuation lines
    joined (a launch script may end on a dangling backslash), comments dropped, environment assignments and
    launchers before the script (`CUDA_VISIBLE_DEVICES=0,1 python -u`) skipped. Not a shell: no variables."""
    commands = []
    for line in re.sub(r"\\\r?\n", " ", text).rstrip("\\ \n").splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError as err:
            raise ConfigError(f"{where}: cannot read the line {line.strip()[:60]!r}: {err}") from None
        scripts = [index for index, word in enumerate(words) if word.endswith(".py")]
        if scripts:
            commands.append(words[scripts[0]:])
    if len(commands) != 1:
        raise ConfigError(f"{where}: expected one `python SCRIPT.py --flag value ...` command, found {len(commands)}")
    unexpanded = [word for word in commands[0] if "$" in word]
    if unexpanded:
        raise ConfigError(f"{where}: {unexpanded[0]!r}: shell variables are not expanded here; write the value")
    return commands[0]


def parse_reference_flags(words: list[str], table: dict[str, tuple[str, Any]], where: str, *, program: str,
                          destinations: dict[str, str] | None = None, error: type[ConfigError] = ConfigError
                          ) -> tuple[dict[str, Any], set[str]]:
    """A reference's `--flag value` arguments, read as its argparse parser would: `table` maps each flag to (kind,
    default), kind "int"/"float"/"str" or a switch "on"/"off" (store_true/store_false), `destinations` the flags
    stored under another name. Returns every flag's value (defaults filled in) and the names given."""
    destinations = destinations or {}
    flags = {destinations.get(name, name): default for name, (_, default) in table.items()}
    given: set[str] = set()
    words = list(words)
    while words:
        word = words.pop(0)
        name, has_value, value = word.removeprefix("--").partition("=")
        if not word.startswith("--") or name not in table:
            near = difflib.get_close_matches(name, list(table), n=2)
            hint = f" (did you mean {' or '.join('--' + n for n in near)}?)" if near else ""
            raise error(f"{where}: {word!r} is not a flag of {program}{hint}")
        kind, _ = table[name]
        if kind in ("on", "off"):
            if has_value:
                raise error(f"{where}: --{name} is a switch and takes no value, got {word!r}")
            flags[destinations.get(name, name)] = kind == "on"
        else:
            if not has_value:
                if not words:
                    raise error(f"{where}: --{name} needs a value")
                value = words.pop(0)
            try:
                flags[destinations.get(name, name)] = {"int": int, "float": float, "str": str}[kind](value)
            except ValueError:
                raise error(f"{where}: --{name} {value!r}: expected a {kind}") from None
        given.add(destinations.get(name, name))
    return flags, given


_COLON_WITHOUT_SPACE = re.compile(r"\w:[^\s/]")  # `32:4`, not `http://` or `a: b`


def parse_overrides(items: list[str]) -> list[tuple[list[str], Any]]:
    """`a.b=c` strings → (key path, value); values are parsed as YAML scalars/lists (`3`, `1e-3`, `[1, 2]`)."""
    parsed = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set model.lr=0.002")
        key, raw = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.load(raw, Loader=_StrictYamlLoader) if raw.strip() else ""  # as a config file reads it
        except RepeatedKeyError as err:
            raise ConfigError(f"--set {item!r}: {str(err).split(' (')[0]} (only the last would count)") from None
        except yaml.YAMLError:
            value = raw
        if isinstance(value, dict) and None in value.values() and _COLON_WITHOUT_SPACE.search(raw):
            # a flow mapping reads `32:4` as one key (the text "32:4") with no value
            raise ConfigError(f"--set {item!r}: write a space after each colon in a mapping, e.g. {{32: 4}} "
                              f"(YAML reads `32:4` as one key with no value)")
        parsed.append((key.strip().split("."), value))
    return parsed


def apply_overrides(data: dict[str, Any], overrides: list[tuple[list[str], Any]]) -> dict[str, Any]:
    """A copy of `data` with each override set at its key path (intermediate mappings are created)."""
    data = copy.deepcopy(data)
    for keys, value in overrides:
        node = data
        for key in keys[:-1]:
            if node.get(key) is None:  # an unset section (`lookahead: null` in a saved config) gets its first key
                node[key] = {}
            child = node[key]
            if not isinstance(child, dict):
                raise ConfigError(f"--set {'.'.join(keys)}: '{key}' is not a section")
            node = child
        if len(keys) == 1 and isinstance(value, dict) and isinstance(node.get(keys[0]), dict) and node[keys[0]]:
            # a top-level section (model, augment); a table deeper in (micro_batches: {8: 2}) is one setting
            name = keys[0]
            raise ConfigError(f"--set {name}={{...}} would replace the whole {name} section (every key the config "
                              f"sets there); set its keys one by one, e.g. --set {name}.{next(iter(value), 'KEY')}=...")
        node[keys[-1]] = value
    return data


# How images reach the FID Inception network: "legacy-tf" (TF1 bilinear resize, the TTUR / torch-fidelity numbers
# papers report), "clean" (clean-fid's PIL bicubic anti-aliased resize) or "pytorch-fid" (pytorch-fid's torch bilinear
# resize of images in [0, 1]). Recorded with every Inception metric.
FidMode = Literal["legacy-tf", "clean", "pytorch-fid"]


# RunConfig settings a resume may change, taking effect at once: where and how the run reports, samples and saves,
# never what a step computes (device: the same computation elsewhere, refused under amp: auto, whose precision
# follows the device), patience (a run stopped early goes on with a larger one). Refused, for instance: metrics,
# metrics_n, best_metric and keep_best (a run's metric record and its best-checkpoint ranking stay comparable over its
# whole length), seed, amp, augment, lookahead, data (unless the same dataset moved), model (unless the family's
# schedule only grows) and another init_from (left out, the run's own is kept: only a new run reads it).
# model.micro_batches (StarGAN v2, PGAN) computes the same update in slices (with augment on, each slice draws its own
# transforms), so a run that ran out of GPU memory goes on in more of them. fid_real_stats may name the statistics
# file where it is now (each FID row records the file's name and digest, so another file's values are told apart).
# tf32 rounds float32 work as another GPU would (a run whose losses went non-finite may go on in full float32).
RESUMABLE_CHANGES = ("device", "progress", "tensorboard", "log_every", "sample_every", "sample_count", "metrics_every",
                     "checkpoint_every", "keep_checkpoints", "patience", "on_nan", "inception_weights",
                     "dinov2_weights", "fid_real_stats", "compile", "deterministic", "tf32", "model.micro_batches")


@dataclasses.dataclass
class LookaheadConfig(Settings):
    """The top-level `lookahead:` section: Lookahead on every trained network together (Zhang et al. 2019; for
    GANs "Lookahead-minmax", Chavdarova et al. 2021): after every `every`-th step each weight moves back to
    slow + alpha·(fast − slow), and the slow copy takes that value. It damps the players' rotation around an
    equilibrium, which a GAN's simultaneous updates otherwise keep up."""

    every: int = 5  # k: engine steps between pulls (the paper's 5 for most of its runs)
    alpha: float = 0.5  # how far towards the fast weights the slow ones move (the paper's 0.5)

    def __post_init__(self) -> None:
        if self.every < 2:
            raise ConfigError(f"lookahead.every: expected at least 2 steps between pulls, got {self.every} (with 1 "
                              "every step is only scaled by alpha)")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"lookahead.alpha: expected a fraction strictly between 0 and 1, got {self.alpha} "
                              "(1 does nothing, 0 undoes every step)")


@dataclasses.dataclass
class RunConfig(Settings):
    """Engine settings shared by every family; the family's own settings live in `model`."""

    family: str
    data: str = "builtin:shapes"
    seed: int = 0
    device: str = "auto"
    # off: float32 as every reference trains (TF32 matmuls/convolutions allowed on CUDA). bf16/fp16: autocast, not
    # yet verified against float32; fp16 adds dynamic loss scaling. auto: bf16 on CUDA only, the former default,
    # kept so runs saved with it resume in the precision they trained in.
    amp: Literal["off", "bf16", "fp16", "auto"] = "off"
    compile: bool = False  # torch.compile the networks (per network eager fallback with a warning); same weights
    # CUDA's TF32 tensor cores for float32 work: all (matmuls and convolutions, the fastest), convolutions (PyTorch's
    # default, what the references' runs got), off (full float32, e.g. to tell TF32 from a bug); the CPU has none
    tf32: Literal["all", "convolutions", "off"] = "all"
    # bit-reproducible GPU runs: torch's deterministic algorithms only (an op without one stops the run naming it),
    # cuDNN without autotuning, cuBLAS's fixed workspace; slower on CUDA, already the case on the CPU
    deterministic: bool = False
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_count: int = 64
    metrics: list[str] = dataclasses.field(default_factory=list)
    metrics_every: int = 0
    metrics_n: int = 2048
    best_metric: str | None = None  # e.g. "fid" or "swd_avg": keep the `keep_best` best checkpoints by it
    keep_best: int = 5
    # early stopping: training ends once this many metric ticks in a row bring no new best `best_metric` (BigGAN's
    # collapse: the paper reports checkpoints from before it); None: the schedule's end
    patience: int | None = None
    on_nan: Literal["stop", "rollback"] = "stop"
    inception_weights: str | None = None  # local FID Inception weights for training-time fid (and blocks)/kid/is
    dinov2_weights: str | None = None  # local dinov2_vitl14_pretrain.pth for training-time fd_dinov2
    fid_mode: FidMode = "legacy-tf"  # the resize protocol of training-time fid (and blocks)/kid/is (see FidMode)
    # training-time FID against these statistics (.npz with mu, sigma; `ganforge stats DATA -o FILE`, the whole set,
    # as BigGAN-PyTorch's inception moments) rather than against metrics_n random training images
    fid_real_stats: str | None = None
    # training-time KID's subsets and precision/recall's k; None: what papers report (100 subsets of 1,000, k = 3)
    kid_subsets: int | None = None
    kid_subset_size: int | None = None
    pr_k: int | None = None
    progress: bool = True
    tensorboard: bool | None = None  # None: events when the package is installed; true: warn once if it is not
    # what every image D sees passes through (DiffAugment or ADA; kind none: nothing); runs saved before it: none
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    lookahead: LookaheadConfig | None = None  # off (every reference trains without it); see LookaheadConfig
    # fine-tuning / transfer: a run directory or checkpoint of the same family whose network weights a new run starts
    # from (tensors whose names and shapes match; the others keep their fresh init); optimisers and step start fresh
    init_from: str | None = None
    model: Any = None

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**63:  # before a --restart deletes anything: numpy's seeds are non-negative
            raise ConfigError(f"seed: expected an integer from 0 to 2^63 - 1, got {self.seed}")
        for name in ("log_every", "sample_every", "checkpoint_every", "keep_checkpoints", "sample_count", "metrics_n",
                     "keep_best"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        for name, most in (("sample_count", 4096), ("metrics_n", 10**7), ("keep_checkpoints", 10**4)):
            if getattr(self, name) > most:
                raise ConfigError(f"{name}: {getattr(self, name)} is more than the {most} ganforge accepts")
        if self.patience is not None and (self.patience < 1 or self.best_metric is None):
            raise ConfigError(f"patience: {self.patience} counts metric ticks without a new best best_metric: "
                              + ("expected a positive integer" if self.patience < 1 else "set best_metric too"))
        if self.patience is not None and not self.metrics_every:
            raise ConfigError(f"patience: {self.patience} counts metric ticks, and metrics_every is 0 (metrics at "
                              "the last step only); set metrics_every")
        if self.best_metric is not None and not self.metrics:
            raise ConfigError(f"best_metric: {self.best_metric!r} needs `metrics` to compute it (and metrics_every); "
                              "without metrics, set best_metric=null too")
        if self.fid_mode != "legacy-tf" and not self.metrics:
            raise ConfigError(f"fid_mode: {self.fid_mode!r} is for the Inception metrics (fid and its blocks "
                              "fid64/fid192/fid768, kid, is), and `metrics` is empty")
        if self.metrics_every < 0:
            raise ConfigError(f"metrics_every: expected 0 (off) or a positive integer, got {self.metrics_every}")
