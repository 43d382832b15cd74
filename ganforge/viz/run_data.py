"""A run directory read for the report and its plots: log and metric records (resumes folded into one history),
the curves in them, best checkpoints, sample grids. Reading only: the page is drawn by `ganforge.viz.report`, the
plots by `ganforge.viz.plots`, and both import this module.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ganforge.metrics.registry import MetricSettings, metric_of_output
from ganforge.training import checkpoint as ckpt
from ganforge.training.log import EARLY_STOP_EVENT, SINGULAR_VALUES_NAME, SWD_FLOOR_NAME

NOT_CURVES = ("step", "kimg", "img_per_s")
SCHEDULE_KEYS = ("scale", "res", "alpha")  # PGAN's growth position, logged with every record


class ReportError(ValueError):
    """A report that cannot be written, with the path named."""


# --- reading a run ----------------------------------------------------------------------------------------------

def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a JSONL file and the number of lines that were not one (e.g. cut by a kill)."""
    records, bad = [], 0
    if not path.is_file():
        return records, bad
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
        else:
            bad += 1
    return records, bad


RESTART_EVENTS = ("resume", "rollback")  # log.jsonl events at the checkpoint step a run goes on from


def resumed_history(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the run as it finally went: a resume (or rollback) restarts from an earlier checkpoint and
    logs those steps again, so the later records replace every earlier one at or after the step they restart at;
    a restart event (at the checkpoint's step) drops the records after it at once, which a resume at another
    log_every would not log again. Events themselves are not kept."""
    kept: list[dict[str, Any]] = []
    for record in records:
        restart = record.get("event") in RESTART_EVENTS
        if "event" in record and not restart:  # a stop, logged after its step's record
            continue
        while kept and kept[-1]["step"] > record["step"] - (0 if restart else 1):
            kept.pop()
        if not restart:
            kept.append(record)
    return kept


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def curve_keys(records: list[dict[str, Any]]) -> list[str]:
    """Logged quantities to plot as curves (losses and their terms), in first-seen order."""
    keys: dict[str, None] = {}
    for record in records:
        for key, value in record.items():
            if key not in NOT_CURVES and key not in SCHEDULE_KEYS and finite(value):
                keys.setdefault(key, None)
    return list(keys)


# what a metrics.jsonl record holds besides metric values: where, how many images, with which KID/PR settings
METRIC_RECORD_KEYS = ("step", "kimg", "n", *MetricSettings.DEFAULTS)


def metric_keys(records: list[dict[str, Any]]) -> list[str]:
    """Metric values of metrics.jsonl records (numbers only: `source` and `fid_mode` say how, they are no values),
    in first-seen order."""
    keys: dict[str, None] = {}
    for record in records:
        for key, value in record.items():
            if key not in METRIC_RECORD_KEYS and finite(value):
                keys.setdefault(key, None)
    return list(keys)


def leading_singular_values(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """The σ₀ series of singular_values.jsonl by network ("G" → ["G.linear.sv0", ...]): σ₀ is the estimate each
    layer's weight is divided by (further σᵢ, with num_svs > 1, are for monitoring only)."""
    by_net: dict[str, list[str]] = {}
    for key in dict.fromkeys(k for record in records for k in record):
        if key.endswith(".sv0"):
            by_net.setdefault(key.split(".", 1)[0], []).append(key)
    return by_net


# logged terms named without their network: the D step's regularisers (PGAN's gradient penalty and drift, R1,
# the Wasserstein distance estimate), the G step's GDPP
PHASE_OF_TERM = {"gp": "D", "drift": "D", "r1": "D", "wdist": "D", "gdpp": "G"}


def phase_of(key: str) -> str:
    """Which network's update a logged term belongs to, from its name (loss_D, D_ref_real, r1 → D; G_lat_sty,
    gdpp → G)."""
    tokens = key.split("_")
    if "D" in tokens:
        return "D"
    if "G" in tokens:
        return "G"
    return PHASE_OF_TERM.get(key, "other")


def series(records: list[dict[str, Any]], key: str, x: str = "kimg") -> tuple[np.ndarray, np.ndarray]:
    """(x, value) of every record with a finite `key` and `x`."""
    points = [(r[x], r[key]) for r in records if finite(r.get(key)) and finite(r.get(x))]
    if not points:
        return np.zeros(0), np.zeros(0)
    xs, ys = zip(*points, strict=True)
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def smoothing_weight(count: int) -> float:
    """The EMA weight for `count` points: a horizon of about a fifth of the curve, at most 50 points."""
    return 0.0 if count < 10 else min(0.98, 1.0 - 5.0 / count)


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased at the start (weight 0: unchanged)."""
    out = np.empty(len(values), dtype=np.float64)
    last = 0.0
    for index, value in enumerate(values):
        last = last * weight + (1.0 - weight) * value
        out[index] = last / (1.0 - weight ** (index + 1))
    return out


def elapsed_seconds(records: list[dict[str, Any]]) -> np.ndarray:
    """Training time at each record: each record's img_per_s is the training's rate since the previous one, so the
    interval is the images in between divided by that rate (sample grids, metrics and checkpoints are not in it,
    nor is time spent before a resume)."""
    total, out, previous_kimg = 0.0, [], 0.0
    for record in records:
        kimg, rate = record.get("kimg"), record.get("img_per_s")
        if finite(kimg) and finite(rate) and rate > 0:
            total += max(kimg - previous_kimg, 0.0) * 1000.0 / rate
            previous_kimg = kimg
        out.append(total)
    return np.asarray(out, dtype=np.float64)


def kimg_at_steps(records: list[dict[str, Any]], steps: list[int]) -> np.ndarray:
    """kimg at checkpoint/metric steps that carry none (e.g. `ganforge evaluate` rows), interpolated from the log."""
    xs, ys = series(records, "kimg", x="step")
    if len(xs) == 0:
        return np.full(len(steps), np.nan)
    return np.interp(np.asarray(steps, dtype=np.float64), np.concatenate([[0.0], xs]), np.concatenate([[0.0], ys]))


def align_by_kimg(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Curves of several runs on one kimg axis (the union of their points), each linearly interpolated and NaN
    outside the range it covers, so runs with different batch sizes or log intervals compare point by point."""
    grid = np.unique(np.concatenate([xs for xs, _ in curves.values()])) if curves else np.zeros(0)
    aligned = {}
    for name, (xs, ys) in curves.items():
        values = np.full(len(grid), np.nan)
        if len(xs):
            order = np.argsort(xs)
            inside = (grid >= xs[order[0]]) & (grid <= xs[order[-1]])
            values[inside] = np.interp(grid[inside], xs[order], ys[order])
        aligned[name] = values
    return grid, aligned


@dataclass
class Frame:
    step: int
    images: dict[str, Path]  # "EMA" / "G" → grid PNG


@dataclass
class RunData:
    """What a run directory holds, parsed once for the page."""

    path: Path
    config: dict[str, Any] | None
    log: list[dict[str, Any]]
    events: list[dict[str, Any]]
    metrics: list[dict[str, Any]]
    best: dict[str, Any] | None
    frames: list[Frame]
    notes: list[str] = field(default_factory=list)
    label: str = ""  # how the page names the run: its folder name, or its path where two names clash
    singular_values: list[dict[str, Any]] = field(default_factory=list)  # singular_values.jsonl, spectral-norm nets
    swd_floor: dict[str, Any] | None = None  # swd_floor.json (`train --final-swd`): {n, resolutions, swd, avg, ...}

    def __post_init__(self) -> None:
        self.label = self.label or self.path.resolve().name

    @property
    def last(self) -> dict[str, Any]:
        return self.log[-1] if self.log else {}

    @property
    def early_stop(self) -> dict[str, Any] | None:
        """The `patience` stop the run ended on: its event, unless a resume (a larger patience) trained on since,
        which its log or a newer checkpoint shows."""
        if not self.events or self.events[-1].get("event") != EARLY_STOP_EVENT:
            return None
        event = self.events[-1]
        newest = max([*(r["step"] for r in self.log[-1:]), *ckpt.checkpoint_steps(self.path)], default=0)
        return event if newest <= event["step"] else None

    def metric_points(self) -> list[dict[str, Any]]:
        """Metric rows with kimg filled in (rows written by `ganforge evaluate` have only the step)."""
        missing = [r["step"] for r in self.metrics if not finite(r.get("kimg"))]
        filled = iter(kimg_at_steps(self.log, missing))
        return [r if finite(r.get("kimg")) else {**r, "kimg": float(next(filled))} for r in self.metrics]

    def curve_points(self, key: str, n: int | None = None) -> list[dict[str, Any]]:
        """The metric rows the curve of output `key` draws, all of one protocol: training's own rows where the run
        computed it (for precision/recall, those of the newest rows' feature space); else the `ganforge evaluate`
        rows holding it of the most used image count, real set, FID mode, batch-norm statistics (`--bn`), KID/PR
        settings and PR feature space, the newest per step. Rows of other protocols at the same steps would draw a
        zig-zag; the table lists every row. With `n`, only rows of that image count (runs compared alike)."""
        points = [r for r in self.metric_points() if finite(r.get(key)) and (n is None or self.image_count(r) == n)]
        # precision/recall's feature space changed in 2026-12 (rows without it are of Inception features)
        space = "pr_features" if metric_of_output(key) == "pr" else None
        training = [r for r in points if "source" not in r]
        if training and space:  # a run resumed across that change: the newest rows' space
            training = [r for r in training if r.get(space) == training[-1].get(space)]
        if training or not points:
            return training
        own_data = (self.config or {}).get("data")  # rows from before the real set was recorded: the run's own

        def protocol(row: dict[str, Any]) -> tuple[Any, ...]:
            return (row.get("n"), row.get("real", own_data), row.get("fid_mode"), row.get("bn"), row.get("ppl_crop"),
                    *(row.get(name) for name in MetricSettings.DEFAULTS), space and row.get(space))

        chosen = Counter(map(protocol, points)).most_common(1)[0][0]
        newest = {r["step"]: r for r in points if protocol(r) == chosen}
        return [newest[step] for step in sorted(newest)]

    def floor_of(self, key: str) -> float | None:
        """The real-vs-real SWD floor of output `key` (swd_avg, swd_<res>) where the run has one."""
        floor = self.swd_floor
        if floor is None or not key.startswith("swd_"):
            return None
        if key == "swd_avg":  # an average over other levels (a PGAN grown since the floor) does not compare
            return floor["avg"] if self.floor_levels_match() else None
        levels = dict(zip(floor["resolutions"], floor["swd"], strict=True))
        return levels.get(int(key[4:])) if key[4:].isdigit() else None

    def floor_levels_match(self, n: int | None = None) -> bool:
        """Whether the newest row of the swd_avg curve (of `n` images) averages the pyramid levels the floor does: a
        floor written at a PGAN's --until stop at 16 px stands beside the 16 px level only, once the run has grown."""
        rows = self.curve_points("swd_avg", n)
        if self.swd_floor is None or not rows:
            return self.swd_floor is not None
        levels = sorted(int(key[4:]) for key in rows[-1] if key[:4] == "swd_" and key[4:].isdigit())
        return levels == sorted(self.swd_floor["resolutions"])

    def image_count(self, row: dict[str, Any]) -> int | None:
        """The images a metric row was computed on: its `n`; for training's rows from before they recorded it, the
        config's `metrics_n` (more than were used on a store with fewer images)."""
        return row["n"] if "n" in row else (self.config or {}).get("metrics_n") if "source" not in row else None

    def best_points(self) -> list[dict[str, Any]]:
        """best.json's steps with their kimg and rank (1 = best), for marking on the metric curve."""
        if not self.best:
            return []
        kimg_of = {r["step"]: r["kimg"] for r in self.metric_points() if finite(r.get("kimg"))}
        return [{"rank": rank, "step": entry["step"], "value": entry["value"], "metric": self.best.get("metric"),
                 "kimg": kimg_of.get(entry["step"], math.nan)}
                for rank, entry in enumerate(self.best.get("best", []), start=1)
                if isinstance(entry, dict) and isinstance(entry.get("step"), int) and finite(entry.get("value"))]


def shared_image_count(runs: list[RunData], key: str) -> int | None:
    """The largest image count every run has values of `key` at (values of other counts differ: SWD and FID are
    biased by the count), None when they share none; runs without the metric do not count."""
    counts = [{run.image_count(r) for r in run.metric_points() if finite(r.get(key))} for run in runs]
    shared = set.intersection(*[c for c in counts if c]) if any(counts) else set()
    return max((n for n in shared if n is not None), default=None)


def read_run(run_dir: Path) -> RunData:
    """Parse a run directory; a folder that is not a run is a ReportError."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: a file, not a run directory" if run_dir.exists()
                          else f"{run_dir}: no such run directory")
    if not (run_dir / "config.json").is_file() and not (run_dir / "log.jsonl").is_file():
        raise ReportError(f"{run_dir}: not a ganforge run (no config.json or log.jsonl)")
    notes = []
    config = None
    if (run_dir / "config.json").is_file():
        try:
            config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            notes.append(f"config.json is not valid JSON ({err})")
        if config is not None and (problem := _config_problem(config)):
            notes.append(f"config.json: {problem}; the run's config is not used")
            config = None
    records, bad_log = read_jsonl(run_dir / "log.jsonl")
    metrics, bad_metrics = read_jsonl(run_dir / "metrics.jsonl")
    singular_values, bad_sv = read_jsonl(run_dir / SINGULAR_VALUES_NAME)
    for name, bad in (("log.jsonl", bad_log), ("metrics.jsonl", bad_metrics), (SINGULAR_VALUES_NAME, bad_sv)):
        if bad:
            notes.append(f"{name}: {bad} unreadable line{'s' if bad > 1 else ''} skipped")
    best = None
    if (run_dir / "best.json").is_file():
        try:
            best = json.loads((run_dir / "best.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            notes.append(f"best.json is not valid JSON ({err})")
        if best is not None and not (isinstance(best, dict) and isinstance(best.get("metric"), str | None)
                                     and isinstance(best.get("best", []), list)):
            notes.append("best.json: expected an object with a metric name and a list of best checkpoints; the best "
                         "checkpoints are not marked")
            best = None
    swd_floor = _swd_floor(run_dir / SWD_FLOOR_NAME, notes)
    events = [r for r in records if "event" in r]
    steps = [r["step"] for r in records if "event" not in r]
    restarted = any(event.get("event") in RESTART_EVENTS for event in events) or any(
        later <= earlier for earlier, later in zip(steps, steps[1:], strict=False))
    log = resumed_history(records)
    # a tick after the last log line is at most one log interval past it (a metric row at a log step follows its line)
    log_every = (config or {}).get("log_every")
    slack = log_every - 1 if isinstance(log_every, int) and log_every > 0 else 0
    reach = max([*(r["step"] + slack for r in log[-1:]), *ckpt.checkpoint_steps(run_dir)], default=None) \
        if restarted else None
    return RunData(run_dir, config, log, events, current_metric_rows(metrics, reach), best,
                   sample_frames(run_dir / "samples"), notes, singular_values=resumed_history(singular_values),
                   swd_floor=swd_floor)


# config.json keys the page reads, and the types ganforge writes them as
_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "family": str, "data": str, "model": dict, "seed": int, "sample_count": int, "log_every": int,
    "metrics": list, "metrics_every": int, "metrics_n": int}


def _config_problem(config: Any) -> str | None:
    """What makes a config.json unusable for the page (a hand-edited or damaged file), or None."""
    if not isinstance(config, dict):
        return f"expected a JSON object, got {type(config).__name__}"
    for key, kind in _CONFIG_TYPES.items():
        value = config.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            return f"{key} is {json.dumps(value, ensure_ascii=False)[:60]}, expected {kind.__name__}"
    return None


def _swd_floor(path: Path, notes: list[str]) -> dict[str, Any] | None:
    """swd_floor.json where it holds what `run_swd_floor` writes; else None (and a note where it is broken)."""
    if not path.is_file():
        return None
    try:
        floor = json.loads(path.read_text(encoding="utf-8"))
        valid = (isinstance(floor, dict) and isinstance(floor.get("n"), int) and finite(floor.get("avg"))
                 and isinstance(floor.get("resolutions"), list) and isinstance(floor.get("swd"), list)
                 and len(floor["resolutions"]) == len(floor["swd"])
                 and all(isinstance(r, int) for r in floor["resolutions"]) and all(map(finite, floor["swd"])))
    except (OSError, ValueError):
        valid = False
    if not valid:
        notes.append(f"{SWD_FLOOR_NAME} is not a floor record (n, resolutions, swd, avg); the SWD floor not shown")
        return None
    return floor


def current_metric_rows(rows: list[dict[str, Any]], reach: int | None) -> list[dict[str, Any]]:
    """metrics.jsonl without training's rows of steps a resume or rollback trained again: those of the abandoned
    attempt that the new one has passed (as `resumed_history`), and, after a restart (`reach`: the newest step of
    the log, one log interval on, and the checkpoints), those it has not reached yet. `ganforge evaluate` rows
    (`source`) are each of a checkpoint, kept. Without a restart every row stands."""
    current = {id(r) for r in resumed_history([r for r in rows if "source" not in r])
               if reach is None or r["step"] <= reach}
    return [r for r in rows if "source" in r or id(r) in current]


def sample_frames(samples_dir: Path) -> list[Frame]:
    """The fixed-latent grids per step: `<step>.png` (EMA generator) and `<step>-G.png` (raw G)."""
    frames: dict[int, dict[str, Path]] = {}
    for path in samples_dir.glob("*.png") if samples_dir.is_dir() else []:
        stem, net = (path.stem[:-2], "G") if path.stem.endswith("-G") else (path.stem, "EMA")
        if stem.isdigit():
            frames.setdefault(int(stem), {})[net] = path
    return [Frame(step, {net: images[net] for net in ("EMA", "G") if net in images})
            for step, images in sorted(frames.items())]


def thin(items: list[Any], limit: int) -> list[Any]:
    """At most `limit` items, evenly spaced, always keeping the first and the last."""
    if len(items) <= limit:
        return items
    picks = np.unique(np.round(np.linspace(0, len(items) - 1, limit)).astype(int))
    return [items[i] for i in picks]
