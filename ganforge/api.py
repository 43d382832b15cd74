"""The Python API: `ganforge.load(run)` for trained models, `ganforge.train(config)` to train from Python."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ganforge.augment.augmenter import Augmenter
from ganforge.config import ConfigError, RunConfig, is_whole_number, read_config_file, to_dict
from ganforge.data.store import open_dataset
from ganforge.families import get_family, resolve_run_config
from ganforge.run_loader import LoadedModel, build_family, dataset_placeholder  # noqa: F401 (the public API)
from ganforge.run_loader import load_run as load  # noqa: F401 (ganforge.load)
from ganforge.training.engine import TrainResult, check_ada_can_steer, check_training_metrics
from ganforge.training.engine import train as _train_run


def train(config: RunConfig | dict[str, Any] | str | Path, run_dir: str | Path = "runs/run", *,
          restart: bool = False, until: int | None = None) -> TrainResult:
    """Train from a RunConfig, a config mapping, or a config file path (resumes an existing run). A RunConfig is
    checked again as a mapping would be: one built or changed by hand may hold a plain model mapping or values of
    the wrong type."""
    if isinstance(config, (str, Path)):
        config = read_config_file(config)
    elif isinstance(config, RunConfig):
        config = to_dict(config)
    elif not isinstance(config, dict):
        raise ConfigError(f"config: expected a RunConfig, a config mapping or a config file path, got "
                          f"{type(config).__name__}")
    if not isinstance(run_dir, (str, Path)):
        raise ConfigError(f"run_dir: expected a folder path, got {type(run_dir).__name__}")
    if not isinstance(restart, bool):  # "no" and "False" are true: the run would be deleted
        raise ConfigError(f"restart: expected True or False, got {restart!r}")
    if until is not None and not is_whole_number(until):
        raise ConfigError(f"until: expected a whole number of steps, got {until!r}")
    return _train_run(resolve_run_config(None, config), Path(run_dir), restart=restart,
                      until=None if until is None else int(until))


def describe(config: RunConfig) -> dict[str, Any]:
    """What `config` builds, without training or reading images (`ganforge info`): the family, each network's
    parameter count, the family's own description, and notes on defaults that stood in for missing settings.

    The dataset's shape comes from its manifest when it is on this machine; networks are built on the meta device,
    so even a large model costs no memory."""
    from ganforge.data.store import parse_builtin_spec

    channels, resolution, labels = 3, None, []
    if config.data.startswith("builtin:"):
        builtin, params = parse_builtin_spec(config.data)
        resolution = params["resolution"]
        labels = open_dataset(f"builtin:{builtin}?count=1&resolution=4").manifest["labels"]  # its label columns
    elif Path(config.data).expanduser().is_dir():  # else the data may come later (or is a reference's script)
        store = open_dataset(str(Path(config.data).expanduser()))
        channels, resolution, labels = store.channels, store.resolution, store.manifest["labels"]
    notes = []
    family_cls = get_family(config.family)
    if not family_cls.translates:  # the metric settings `train` would refuse (a translating family's need its data)
        check_training_metrics(config, evaluates=False)
    check_ada_can_steer(config, resumed=False)
    count_key = family_cls.label_count_key  # the config key of a conditional family's count
    if count_key and not labels and getattr(config.model, count_key) is None:
        default = family_cls.default_label_count
        setattr(config.model, count_key, default)
        notes.append(f"model.{count_key}: {default} (a default: the config does not set it and {config.data} is "
                     f"not a labelled dataset here; set model.{count_key} for other counts)")
    asked = getattr(config.model, "resolution", None)
    if isinstance(asked, int) and resolution is not None and asked > resolution:  # described, and said
        notes.append(f"model.resolution: {asked}, but the images of {config.data} are {resolution} px: train refuses "
                     "this data (prepare it at that size, or give --data with images that large)")
    if isinstance(asked, int) and asked > (resolution or 0):
        resolution = asked
    if resolution is None:  # a family that sizes its networks from the data (DCGAN, StarGAN v2, BigGAN)
        raise ConfigError(f"{config.data}: not at hand here, and the {config.family} networks take their "
                          "resolution from the data; give --data STORE, or --set model.resolution=R")
    manifest = {"source": config.data, "count": 0, "resolution": resolution, "channels": channels,
                "levels": [], "labels": labels}
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        family = build_family(config, torch.device("meta"), dataset_placeholder(manifest))
    parameters = {name: sum(p.numel() for p in net.parameters()) for name, net in family.nets.items()}
    return {"family": config.family, "parameters": parameters, **family.describe(),
            "augment": Augmenter(config.augment).describe(), **({"notes": notes} if notes else {})}
