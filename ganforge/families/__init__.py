"""Families plug networks, optimisers and loss phases into the one training engine.

The registry maps the CLI's family names to classes, imported lazily so `ganforge --help` stays fast. Other
packages add theirs with an entry point in the `ganforge.families` group (name: the family's name, value:
"module:Class"), also imported only when used, or at run time with `register_family`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import typing
import warnings
from typing import Any

from ganforge.config import COMMAND_LINE, ConfigError, RunConfig, apply_overrides, from_dict, unknown_key_hint

_REGISTRY: dict[str, str | type] = {
    "pgan": "ganforge.families.pgan:PGANFamily",
    "dcgan": "ganforge.families.dcgan:DCGANFamily",
    "wgan": "ganforge.families.dcgan:WGANFamily",
    "wgan-gp": "ganforge.families.dcgan:WGANGPFamily",
    "stargan2": "ganforge.families.stargan2:StarGAN2Family",
    "biggan": "ganforge.families.biggan:BigGANFamily",
}


ENTRY_POINT_GROUP = "ganforge.families"
_entry_points_read = False


def _read_entry_points() -> None:
    """Add the families installed packages declare (once per process; none is imported here). A name the registry
    already holds keeps its family, with a warning naming the package that asked for it."""
    global _entry_points_read
    if _entry_points_read:
        return
    _entry_points_read = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _REGISTRY and _REGISTRY[entry.name] != entry.value:
            warnings.warn(f"entry point {entry.name} = {entry.value} ({ENTRY_POINT_GROUP}) ignored: a family named "
                          f"{entry.name!r} is already registered", RuntimeWarning, stacklevel=3)
            continue
        _REGISTRY[entry.name] = entry.value


def family_names() -> list[str]:
    _read_entry_points()
    return sorted(_REGISTRY)


def register_family(family: type) -> None:
    """Make a `Family` subclass trainable, loadable and evaluable under its `name` (configs, runs, the API); the
    built-in families are listed above and imported when first used."""
    name = getattr(family, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"register_family: {family!r} has no `name` (the family's name in configs and runs)")
    if name in _REGISTRY and _REGISTRY[name] is not family:
        raise ConfigError(f"register_family: a family named {name!r} is already registered")
    _REGISTRY[name] = family


def get_family(name: str) -> type:
    _read_entry_points()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown family {name!r}: expected one of {', '.join(family_names())}")
    target = _REGISTRY[name]
    if not isinstance(target, str):
        return target
    module, attr = target.split(":")
    family = getattr(importlib.import_module(module), attr)
    if getattr(family, "name", None) != name:
        raise ConfigError(f"family {name!r} ({target}) is a class named {getattr(family, 'name', None)!r}: the "
                          "entry point's name and the class's `name` must agree (runs record the class's)")
    return family


def _check_protocol_metrics(family_cls: type, config: RunConfig) -> None:
    """A translating family's `metrics` are its protocol's, its `best_metric` one of that protocol's means."""
    allowed = list(family_cls.protocol_metrics)
    unknown = [name for name in config.metrics if name not in allowed]
    if unknown:
        raise ConfigError(f"metrics: {unknown} cannot score a {family_cls.name} run, whose samples are (source, "
                          "translation) pairs, half of them real images; it is evaluated by the StarGAN v2 protocol "
                          f"(per domain task, latent- and reference-guided), whose metrics are {allowed}; saved "
                          "checkpoints with `ganforge evaluate RUN [--step N]`")
    if config.metrics and config.fid_mode != "legacy-tf":
        raise ConfigError(f"fid_mode: {config.fid_mode!r} is for the Inception metrics of image sets; the StarGAN v2 "
                          "protocol's FID has its own (torchvision's Inception, as the official evaluation)")
    if config.best_metric is not None:
        ranked = [key for key in family_cls.protocol_rankings if key.split("_", 1)[0].lower() in config.metrics]
        if config.best_metric not in ranked:
            raise ConfigError(f"best_metric: {config.best_metric!r} is not an output of metrics {config.metrics} "
                              f"that ranks checkpoints; expected one of {ranked}")


def migrated_saved_config(data: dict[str, Any]) -> dict[str, Any]:
    """A saved run's config as today's checks accept it. Runs of a translating family saved before it had a protocol
    of its own may list image-set metrics, which scored its (source, translation) samples as generated images: they
    are dropped, with their best_metric and FID mode, and a warning says so (the run loads and resumes); names the
    protocol shares (`fid`) stay and mean the protocol's from now on. ADA at a fixed p of 0, which augmented nothing,
    reads as no augmentation; a PGAN alpha jump pair with a 0, which faded over no iterations, as no fade."""
    augment = data.get("augment")
    if isinstance(augment, dict) and augment.get("kind") == "ada" and augment.get("p") == 0:
        data = {**data, "augment": {"kind": "none"}}  # what ADA at a fixed p of 0 did (refused for new runs)
    family = data.get("family")
    if isinstance(family, str) and family in family_names():
        data = get_family(family).migrated_saved(data)
    if not isinstance(family, str) or family not in family_names() or not get_family(family).translates:
        return data
    family_cls = get_family(family)
    metrics = data.get("metrics") or []
    dropped = [name for name in metrics if name not in family_cls.protocol_metrics]
    if not dropped:
        return data
    kept = [name for name in metrics if name in family_cls.protocol_metrics]
    best = data.get("best_metric")
    warnings.warn(f"this {family} run's saved metrics {dropped} scored its (source, translation) samples, half of "
                  "them real images, as generated ones; they are no longer computed (its checkpoints are evaluated "
                  "by `ganforge evaluate RUN`)", stacklevel=2)
    return {**data, "metrics": kept, "best_metric": best if kept and best in family_cls.protocol_rankings else None,
            "fid_mode": "legacy-tf"}


def _refuse_model_keys_at_the_top(family_cls: type, data: dict[str, Any]) -> None:
    """A top-level key that is one of the family's model settings (`--set batch_size=8`) is pointed to its place
    under `model`, which the engine's own key suggestions cannot see (they would offer kid_subset_size)."""
    engine_keys = {field.name for field in dataclasses.fields(RunConfig)}
    model_cls = family_cls.config_class
    model_fields = {field.name: field for field in dataclasses.fields(model_cls) if field.init}
    for key in data:
        if key in engine_keys or not isinstance(key, str):
            continue
        if key in model_fields:
            raise ConfigError(f"unknown config key '{key}': it belongs in 'model.{key}'")
        hint = unknown_key_hint(key, model_fields, typing.get_type_hints(model_cls), "model")
        if hint.startswith("it belongs in"):
            raise ConfigError(f"unknown config key '{key}': {hint}")


def resolve_run_config(family: str | None, data: dict[str, Any],
                       overrides: list[tuple[list[str], Any]] = (), *, reads_data: bool = True) -> RunConfig:
    """File data (ours or a family's foreign format) + overrides → a validated RunConfig with defaults filled.
    `reads_data=False` (describing networks) lets a reference's command line go without a store."""
    named = data.get("family")
    if family and named and named != family:
        raise ConfigError(f"family: the config (its `family:` key) is for {named!r} but {family!r} was asked for")
    family = family or named or ("pgan" if "pathDB" in data else None)  # zoo JSON files are PGAN configs
    if not family:
        raise ConfigError("family: not given (name it on the command line or as `family:` in the config)")
    family_cls = get_family(family)
    command = data.get(COMMAND_LINE)
    data = apply_overrides(family_cls.normalise_config(data), list(overrides))
    if data.get("family") not in (None, family_cls.name):  # an override; the family is named before overrides
        raise ConfigError(f"--set family={data['family']}: this is a {family_cls.name} config; name the family on "
                          "the command line (ganforge train FAMILY) or in the config file")
    if command is not None and COMMAND_LINE in data:
        raise ConfigError(f"{command['file']}: a shell script is a config for pgan (pytorch_GAN_zoo's train.py "
                          "command), biggan (BigGAN-PyTorch's train.py) and stargan2 (StarGAN v2's main.py); "
                          f"{family_cls.name} reads JSON or YAML")
    if command is not None and "data" not in data and not reads_data:
        data["data"] = command["file"]  # not a store: describing the networks reads no images
    elif command is not None and "data" not in data:
        raise ConfigError(f"data: {command['file']} names the reference's own dataset files; give a store made by "
                          "`ganforge prepare` with --data")
    data["family"] = family_cls.name
    model = data.pop("model", None) or {}
    if not isinstance(model, dict):
        raise ConfigError(f"model: expected a mapping of {family_cls.name} settings, got {model!r}")
    _refuse_model_keys_at_the_top(family_cls, data)
    config = from_dict(RunConfig, data)
    if family_cls.translates:
        _check_protocol_metrics(family_cls, config)
    elif config.best_metric is not None:  # a rankable output of one of the run's metrics: the registry knows them
        from ganforge.metrics.registry import check_best_metric

        check_best_metric(config.best_metric, config.metrics)
    config.model = from_dict(family_cls.config_class, model, "model")
    return config
