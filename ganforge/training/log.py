"""Run logging: JSONL lines (the record), optional TensorBoard events, and a progress bar with img/s."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm


def _tensorboard_writer(folder: Path, requested: bool | None) -> Any | None:
    """A SummaryWriter when the optional package is installed. `tensorboard: true` without it prints one warning
    line (the run goes on with log.jsonl); the default (None) stays quiet."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if requested:
            print("ganforge: warning: tensorboard: true, but the tensorboard package is not installed "
                  "(pip install tensorboard); logging to log.jsonl only", file=sys.stderr)
        return None
    return SummaryWriter(str(folder))


class RunLogger:
    """Writes on rank 0 only; other ranks get a logger that does nothing."""

    def __init__(self, run_dir: Path, *, total_steps: int, start_step: int, enabled: bool, progress: bool,
                 tensorboard: bool | None) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._log = open(self.run_dir / "log.jsonl", "a", encoding="utf-8") if enabled else None  # noqa: SIM115
        self._metrics = None
        self._tb = _tensorboard_writer(self.run_dir / "tb", tensorboard) if enabled and tensorboard is not False \
            else None
        self._bar = (tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                          file=sys.stderr, smoothing=0.1)
                     if enabled and progress else None)
        self._last_time = time.perf_counter()
        self._images_since = 0
        self._bar_time = time.perf_counter()
        self._bar_rate: float | None = None

    def count_images(self, n: int) -> None:
        self._images_since += n
        now = time.perf_counter()
        rate = n / max(now - self._bar_time, 1e-9)
        self._bar_time = now
        self._bar_rate = rate if self._bar_rate is None else 0.9 * self._bar_rate + 0.1 * rate  # smoothed for the bar

    def step_done(self, postfix: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.update(1)
            shown = {k: _short(v) for k, v in postfix.items()}
            if self._bar_rate is not None:
                shown["img/s"] = f"{self._bar_rate:.0f}"
            self._bar.set_postfix(shown, refresh=False)

    def throughput(self) -> float:
        """Images per second since the last call (real images fed to the critic)."""
        now = time.perf_counter()
        rate = self._images_since / max(now - self._last_time, 1e-9)
        self._last_time, self._images_since = now, 0
        return rate

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step" and math.isfinite(value):
                    self._tb.add_scalar(key, value, record["step"])

    def metrics(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._tb.add_scalar(f"metrics/{key}", value, record["step"])

    def message(self, text: str) -> None:
        if self.enabled:
            (self._bar.write if self._bar is not None else print)(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._log is not None:
            self._log.close()
        if self._tb is not None:
            self._tb.close()


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
