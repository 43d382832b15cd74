"""Run logging: JSONL lines (the record), optional TensorBoard events (scalars, sample grids, the config), and a
progress bar with img/s, or, where the progress stream is not a terminal (CI, nohup, cluster logs), one plain line
per logged step instead of carriage-return updates."""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from PIL import Image
from tqdm import tqdm


def _tensorboard_writer(folder: Path, requested: bool | None, purge_step: int | None = None) -> Any | None:
    """A SummaryWriter when the optional package is installed. `tensorboard: true` without it prints one warning
    line (the run goes on with log.jsonl); the default (None) stays quiet. `purge_step`: a resumed or rolled-back run
    logs the steps from there again, so the events an earlier attempt wrote from there on are dropped (else every
    curve would run back and forth)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        if requested:
            print("ganforge: warning: tensorboard: true, but the tensorboard package is not installed "
                  "(pip install tensorboard); logging to log.jsonl only", file=sys.stderr)
        return None
    return SummaryWriter(str(folder), purge_step=purge_step)


SINGULAR_VALUES_NAME = "singular_values.jsonl"  # BigGAN-PyTorch's SV logs: per-layer σ estimates of G and D
PER_CLASS_METRICS_NAME = "metrics_per_class.jsonl"  # `evaluate RUN --per-class`: a record per evaluation
SWD_FLOOR_NAME = "swd_floor.json"  # `train --final-swd`: the real-vs-real SWD floor the final SWD was set against
EARLY_STOP_EVENT = "stopped early"  # the log.jsonl event of a `patience` stop, which the report names


def end_cut_line(path: Path) -> None:
    """End a JSONL file's last line if a kill cut it (no newline), so that the next record starts a line of its own
    instead of extending a broken one."""
    if not path.is_file():
        return
    with open(path, "r+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell():
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One JSON line appended to a JSONL file (whose cut last line, if any, is ended first)."""
    end_cut_line(path)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json_line(record))


def json_line(record: dict[str, Any]) -> str:
    """A record as one line of valid JSON: a non-finite number is null (json.dumps would write a bare NaN, which
    JSON readers refuse)."""
    clean = {key: None if isinstance(value, float) and not math.isfinite(value) else value
             for key, value in record.items()}
    return json.dumps(clean) + "\n"


class RunLogger:
    """Writes on rank 0 only; other ranks get a logger that does nothing."""

    def __init__(self, run_dir: Path, *, total_steps: int, start_step: int, enabled: bool, progress: bool,
                 tensorboard: bool | None, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        if enabled:
            end_cut_line(self.run_dir / "log.jsonl")
        self._log = open(self.run_dir / "log.jsonl", "a", encoding="utf-8") if enabled else None  # noqa: SIM115
        self._metrics = None
        self._tb = _tensorboard_writer(self.run_dir / "tb", tensorboard, start_step + 1) \
            if enabled and tensorboard is not False else None
        self._stream = stream or sys.stderr
        interactive = self._stream.isatty()
        self._bar = (tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                          file=self._stream, smoothing=0.1)
                     if enabled and progress and interactive else None)
        self._plain = enabled and progress and not interactive  # one line per logged step, no carriage returns
        self._total_steps = total_steps
        self._eta_mark = (start_step, time.perf_counter())  # (step, time) of the last plain line
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

    def step_done(self, postfix: dict[str, Any] | None) -> None:
        """Advance the bar; `postfix` (host values, given at log points only) replaces the values it shows."""
        if self._bar is not None:
            self._bar.update(1)
            if postfix is None:
                return
            shown = {k: _short(v) for k, v in postfix.items()}
            if self._bar_rate is not None:
                shown["img/s"] = f"{self._bar_rate:.0f}"
            self._bar.set_postfix(shown, refresh=False)

    @contextlib.contextmanager
    def maintenance(self) -> Iterator[None]:
        """Sample grids, metrics, checkpoints and the report between steps: their time is left out of img/s (as
        StyleGAN2-ADA leaves its maintenance out of sec/kimg), so the rate, the report's speed curve and training time
        are the training's own and do not dip at every tick; the ETA still counts them."""
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self._last_time += spent
            self._bar_time += spent

    def throughput(self) -> float:
        """Images per second of training since the last call (real images fed to the critic)."""
        now = time.perf_counter()
        rate = self._images_since / max(now - self._last_time, 1e-9)
        self._last_time, self._images_since = now, 0
        return rate

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._log.write(json_line(record))
        self._log.flush()
        if self._plain and "event" not in record:
            self._stream.write(progress_line(record, self._total_steps, self._eta(record["step"])) + "\n")
            self._stream.flush()
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step" and math.isfinite(value):
                    self._tb.add_scalar(key, value, record["step"])

    def _eta(self, step: int) -> float | None:
        """Seconds to the end at the pace of the steps since the last plain line: a growing GAN's later steps are
        slower (the quick start's at 32 px are several times those at 4 px), so the average since the start promises
        too early an end."""
        last_step, last_time = self._eta_mark
        now = time.perf_counter()
        if step <= last_step:
            return None
        self._eta_mark = (step, now)
        return (self._total_steps - step) * (now - last_time) / (step - last_step)

    def metrics(self, record: dict[str, Any], settings: dict[str, Any] | None = None) -> None:
        """A metric tick's values (numbers also to TensorBoard), with the `settings` they were computed with
        (metrics.jsonl only)."""
        if not self.enabled:
            return
        append_record(self.run_dir / "metrics.jsonl", {**record, **(settings or {})})
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "kimg", "n") and math.isfinite(value):
                    self._tb.add_scalar(f"metrics/{key}", value, record["step"])

    def singular_values(self, record: dict[str, Any]) -> None:
        """A log point's σ estimates of the spectrally normalised layers ({"step", "kimg", "G.<layer>.sv0": ...})."""
        if not self.enabled:
            return
        append_record(self.run_dir / SINGULAR_VALUES_NAME, record)
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("step", "kimg") and math.isfinite(value):
                    self._tb.add_scalar(f"singular_values/{key}", value, record["step"])

    def log_config(self, config: dict[str, Any]) -> None:
        """The run's config as TensorBoard text (an indented block: TensorBoard renders text as Markdown)."""
        if self._tb is not None:
            self._tb.add_text("config", "    " + json.dumps(config, indent=1).replace("\n", "\n    "), 0)

    def sample_images(self, step: int, grids: dict[str, Path]) -> None:
        """The fixed-latent grids just written (network name → PNG) as TensorBoard images `samples/<net>`."""
        if self._tb is None:
            return
        for net, path in grids.items():
            with Image.open(path) as image:
                self._tb.add_image(f"samples/{net}", np.asarray(image.convert("RGB")), step, dataformats="HWC")

    def restart_at(self, step: int) -> None:
        """A rollback to the checkpoint at `step`: TensorBoard's events after it are dropped, as on a resume."""
        if self._tb is not None:
            self._tb.close()
            self._tb = _tensorboard_writer(self.run_dir / "tb", True, step + 1)

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


def progress_line(record: dict[str, Any], total_steps: int, eta_seconds: float | None) -> str:
    """`step 400/1000 (40%)  kimg 12.8  res 16  alpha 0.5  loss_D 0.4648  img/s 31  ETA 0:02:03` for logs that are
    read, not watched."""
    step = record["step"]
    parts = [f"step {step}/{total_steps} ({100 * step / max(total_steps, 1):.0f}%)"]
    for key, value in record.items():
        if key in ("step", "img_per_s") or not isinstance(value, (int, float)):
            continue
        parts.append(f"{key} {_short(value)}")
    if isinstance(record.get("img_per_s"), (int, float)):
        parts.append(f"img/s {record['img_per_s']:.0f}")
    if eta_seconds is not None and math.isfinite(eta_seconds):
        minutes, seconds = divmod(int(round(eta_seconds)), 60)
        parts.append(f"ETA {minutes // 60}:{minutes % 60:02d}:{seconds:02d}")
    return "  ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
