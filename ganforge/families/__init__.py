"""Families plug networks, optimisers and loss phases into the one training engine.

The registry maps the CLI's family names to classes, imported lazily so `ganforge --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from ganforge.config import ConfigError, RunConfig, apply_overrides, from_dict

_REGISTRY: dict[str, str | type] = {
    "pgan": "ganforge.families.pgan:PGANFamily",
    "dcgan": "ganforge.families.dcgan:DCGANFamily",
    "wgan": "ganforge.families.dcgan:WGANFamily",
    "wgan-gp": "ganforge.families.dcgan:WGANGPFamily",
    "stargan2": "ganforge.families.stargan2:StarGAN2Family",
    "biggan": "ganforge.families.biggan:BigGANFamily",
}


def family_names() -> list[str]:
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
    if name not in _REGISTRY:
        raise ConfigError(f"unknown family {name!r}: expected one of {', '.join(family_names())}")
    target = _REGISTRY[name]
    if not isinstance(target, str):
        return target
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def resolve_run_config(family: str | None, data: dict[str, Any],
                       overrides: list[tuple[list[str], Any]] = ()) -> RunConfig:
    """File data (ours or a family's foreign format) + overrides → a validated RunConfig with defaults filled."""
    named = data.get("family")
    if family and named and named != family:
        raise ConfigError(f"family: the config file is for {named!r} but {family!r} was asked for")
    family = family or named or ("pgan" if "pathDB" in data else None)  # zoo JSON files are PGAN configs
    if not family:
        raise ConfigError("family: not given (name it on the command line or as `family:` in the config)")
    family_cls = get_family(family)
    data = apply_overrides(family_cls.normalise_config(data), list(overrides))
    data["family"] = family_cls.name
    model = data.pop("model", None) or {}
    if not isinstance(model, dict):
        raise ConfigError(f"model: expected a mapping of {family_cls.name} settings, got {model!r}")
    config = from_dict(RunConfig, data)
    if config.best_metric is not None:  # a rankable output of one of the run's metrics: the registry knows them
        from ganforge.metrics.registry import check_best_metric

        check_best_metric(config.best_metric, config.metrics)
    config.model = from_dict(family_cls.config_class, model, "model")
    return config
