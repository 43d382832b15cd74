"""The Python API: `ganforge.load(run)` for trained models, `ganforge.train(config)` to train from Python."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ganforge.config import RunConfig, read_config_file
from ganforge.families import resolve_run_config
from ganforge.run_loader import LoadedModel, build_family, dataset_placeholder  # noqa: F401 (the public API)
from ganforge.run_loader import load_run as load  # noqa: F401 (ganforge.load)
from ganforge.training.engine import TrainResult
from ganforge.training.engine import train as _train_run


def train(config: RunConfig | dict[str, Any] | str | Path, run_dir: str | Path = "runs/run", *,
          restart: bool = False, until: int | None = None) -> TrainResult:
    """Train from a RunConfig, a config mapping, or a config file path (resumes an existing run)."""
    if isinstance(config, (str, Path)):
        config = read_config_file(config)
    if isinstance(config, dict):
        config = resolve_run_config(None, config)
    return _train_run(config, Path(run_dir), restart=restart, until=until)
