"""`ganforge report`: one self-contained HTML page per run (or several runs compared), readable offline.

Everything the page shows comes from the run directory: config.json, log.jsonl (losses, schedule, img/s),
metrics.jsonl and best.json, the fixed-latent grids in samples/, and the checkpoints (verified by the checkpoint
module). Images and plots are inlined as data URIs, so the file can be mailed or archived alone. Plots need
matplotlib (`pip install 'ganforge[report]'`); without it the page keeps its tables and images and says so.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import numbers
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ganforge.metrics.registry import MetricSettings
from ganforge.training import checkpoint as ckpt
from ganforge.viz.run_data import (
    ReportError,
    RunData,
    align_by_kimg,
    elapsed_seconds,
    finite,
    metric_keys,
    read_run,
    series,
    shared_image_count,
    thin,
)

REPORT_NAME = "report.html"
COMPARE_NAME = "report-compare.html"
GENERATOR_TAG = '<meta name="generator" content="ganforge">'  # how `-o` tells its own pages from files it must keep
TITLE_PREFIX = "<title>ganforge report: "  # the pages written before the tag
MAX_FRAMES = 24  # sample grids in the slider; more are thinned evenly (first and last kept)
MAX_IMAGE_WIDTH = 1024  # larger grids are shrunk for the page (the PNGs in samples/ stay as they are)
MIN_DISPLAY = 256  # smaller grids are shown enlarged (pixelated) to at least this width
PLOTS_EXTRA = "pip install 'ganforge[report]'"


# --- checkpoints --------------------------------------------------------------------------------------------------

VerifyCache = dict[tuple[str, int, int, int], dict[str, Any]]


def _verify(json_path: Path) -> dict[str, Any]:
    try:
        meta = ckpt.load_checkpoint(json_path).meta
    except ckpt.CheckpointError as err:  # its JSON may still say where it was (a tensor file cut short)
        try:
            meta = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        return {"verified": False, **_position(meta), "problem": str(err)}
    return {"verified": True, **_position(meta), "problem": ""}


def _position(meta: Any) -> dict[str, Any]:
    """Images seen and the schedule's length (checkpoints before 2026-12-07 lack it) as a checkpoint's JSON says."""
    seen, total = (meta.get("images_seen"), meta.get("total_steps")) if isinstance(meta, dict) else (None, None)
    return {"images_seen": seen if finite(seen) else None,
            "total_steps": total if isinstance(total, int) and not isinstance(total, bool) else None}


def checkpoint_rows(run: RunData, cache: VerifyCache | None = None) -> list[dict[str, Any]]:
    """One row per checkpoint: step, kimg, size, best-metric value and whether its hash verifies (through
    `checkpoint.load_checkpoint`). `cache` (keyed by file sizes and times) spares re-hashing during training."""
    folder = ckpt.checkpoint_dir(run.path)
    metric = run.best.get("metric") if run.best else None
    # the values best.json ranked, else those the metric's curve draws (not an `evaluate` row of other settings)
    values = {r["step"]: r[metric] for r in run.curve_points(metric)} if metric else {}
    values.update({p["step"]: p["value"] for p in run.best_points()})
    best_rank = {p["step"]: p["rank"] for p in run.best_points()}
    rows = []
    for step in ckpt.checkpoint_steps(run.path):
        json_path = folder / f"{step:08d}.json"
        tensor_path = folder / f"{step:08d}.safetensors"
        try:
            stat_json = json_path.stat()
            stat_tensors = tensor_path.stat() if tensor_path.is_file() else None
        except OSError:
            continue  # pruned while we looked
        key = (json_path.name, stat_json.st_mtime_ns, stat_tensors.st_size if stat_tensors else -1,
               stat_tensors.st_mtime_ns if stat_tensors else -1)
        result = cache.get(key) if cache is not None else None
        if result is None:
            result = _verify(json_path)
            if cache is not None:
                cache[key] = result
        images_seen = result["images_seen"]
        rows.append({"step": step, "kimg": images_seen / 1000 if finite(images_seen) else None,
                     "bytes": stat_json.st_size + (stat_tensors.st_size if stat_tensors else 0),
                     "metric": metric, "value": values.get(step), "best_rank": best_rank.get(step),
                     "total_steps": result["total_steps"], "verified": result["verified"],
                     "problem": result["problem"]})
    return rows


# --- real images ------------------------------------------------------------------------------------------------

def real_grid(config: dict[str, Any] | None, count: int) -> tuple[np.ndarray | None, str]:
    """A grid of `count` training images at the model's resolution, laid out like the sample grids, or None and
    the reason (data path missing from here, unreadable store, ...)."""
    from ganforge.data.store import open_dataset
    from ganforge.evaluation.run_metrics import real_images
    from ganforge.viz.grid import make_grid

    if not config or not config.get("data"):
        return None, "the run's config names no dataset"
    data = str(config["data"])
    if not data.startswith("builtin:") and not Path(data).exists():
        return None, f"dataset {data} not found from {Path.cwd()}: real images not shown"
    try:
        dataset = open_dataset(data)
        model = config.get("model") or {}
        resolution = model.get("resolution") or model.get("img_size") or dataset.resolution
        if resolution not in dataset.levels:
            resolution = dataset.resolution
        images = real_images(dataset, resolution, min(count, dataset.count), int(config.get("seed", 0)))
    except (ValueError, OSError) as err:
        return None, f"real images not shown: {err}"
    return make_grid(images.transpose(0, 2, 3, 1), min_cell=64), f"{len(images)} images of {data}"


# --- HTML ---------------------------------------------------------------------------------------------------------

def image_tag(source: Path | np.ndarray, alt: str) -> str:
    """An <img> holding a PNG file or HWC uint8 array as a data URI. Grids wider than MAX_IMAGE_WIDTH are shrunk
    (box filter, integer factor); small ones are shown enlarged by an integer factor to at least MIN_DISPLAY px."""
    if isinstance(source, np.ndarray):
        image, data = Image.fromarray(source[..., 0] if source.shape[-1] == 1 else source), None
    else:
        try:
            with Image.open(source) as opened:
                image = opened.convert("RGB") if opened.width > MAX_IMAGE_WIDTH else opened.copy()
            data = None if image.width > MAX_IMAGE_WIDTH else source.read_bytes()
        except OSError as err:  # cut short by a kill, or written by something else: the page goes on without it
            return f"<p class=note>{_esc(source.parent.name)}/{_esc(source.name)} not shown: {_esc(err)}</p>"
    factor = math.ceil(image.width / MAX_IMAGE_WIDTH)
    if factor > 1:
        image = image.resize((image.width // factor, image.height // factor), Image.BOX)
    if data is None:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        data = buffer.getvalue()
    width = image.width * max(1, math.ceil(MIN_DISPLAY / image.width))
    return (f'<img alt="{_esc(alt)}" width="{width}" '
            f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">')


def svg_data_uri(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: Any, digits: int = 4) -> str:
    """`digits` significant digits; numbers of more whole digits (a long run's kimg, a PPL) in full, not 1.32e+04.
    Anything else a hand-edited record holds (text, a list) is "–": it must not reach the page as markup."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return "–"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return "–"
    return f"{value:.0f}" if abs(value) >= 10 ** digits - 0.5 else f"{value:.{digits}g}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _plot(svg: str | None, alt: str) -> str:
    return f'<img class="plot" alt="{_esc(alt)}" src="{svg_data_uri(svg)}">' if svg else ""


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:16px 24px;
color:#1d1d1f;background:#fff}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:1.6em}
.meta{color:#555}.note{background:#fff6dd;border:1px solid #e8d48a;padding:6px 10px;border-radius:4px}
table{border-collapse:collapse;font-size:.9em;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f6}td:first-child,th:first-child{text-align:left}.ok{color:#16794a}.bad{color:#b3261e}
img.plot{max-width:100%;display:block;margin:8px 0}pre{background:#f7f7f9;padding:8px;overflow:auto;font-size:.85em}
.grids{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}.grids figure{margin:0}
.grids img{image-rendering:pixelated;max-width:min(560px,100%);height:auto;border:1px solid #ccc}
.grids figure{max-width:min(560px,100%)}.frame[hidden]{display:none}table.kv td{text-align:left}
figcaption{font-size:.85em;color:#555;text-align:center}code{background:#f4f4f6;padding:1px 4px}
"""

SLIDER_SCRIPT = """
document.querySelectorAll('.slider').forEach(function (slider) {
  var input = slider.querySelector('input'), label = slider.querySelector('.frame-label');
  var frames = slider.querySelectorAll('.frame');
  function show() {
    frames.forEach(function (frame, i) { frame.hidden = i !== Number(input.value); });
    label.textContent = frames[Number(input.value)].dataset.label;
  }
  input.addEventListener('input', show);
  show();
});
"""


def _config_section(run: RunData) -> str:
    if run.config is None:
        return ("<p class=note>config.json could not be used (see the note at the top).</p>"
                if (run.path / "config.json").is_file() else "<p class=note>No config.json in this run.</p>")
    config = run.config
    top = [[_esc(k), _esc(json.dumps(v, ensure_ascii=False))] for k, v in config.items() if not isinstance(v, dict)]
    family = config.get("family", "FAMILY")
    command = (f"ganforge train {shlex.quote(family)} -c {shlex.quote(str(run.path.resolve() / 'config.json'))} "
               "--run-dir NEW_RUN")
    return (_table(["key", "value"], top, cls="kv") +
            f"<details><summary>full config.json</summary><pre>{_esc(json.dumps(config, indent=1, ensure_ascii=False))}"
            "</pre></details>"
            f"<p>The command line is not recorded in the run; this one trains the same config again:<br>"
            f"<code>{_esc(command)}</code></p>")


def _newest_step(run: RunData) -> int | None:
    """The last logged step, else the newest checkpoint's (a run stopped before its first log line, or imported)."""
    if run.last:
        return run.last["step"]
    steps = ckpt.checkpoint_steps(run.path)
    return steps[-1] if steps else None


def run_status(run: RunData, rows: list[dict[str, Any]], training: bool | None) -> str:
    """Where the run stands, as the user asks it: training now, finished, or stopped (and where a resume starts).
    `training`: whether a process trains it now (None: unknown). The schedule's length is the newest checkpoint's
    (checkpoints from before 2026-12-07 do not record it: then neither "finished" nor a resume point is claimed)."""
    newest = _newest_step(run)
    if newest is None:
        return "training now: no step done yet" if training else ""
    total = next((row["total_steps"] for row in reversed(rows) if row["total_steps"] is not None), None)
    of = f" of {total}" if total is not None else ""
    origin = "" if run.last else " (its newest checkpoint; no log lines yet)"
    if training:
        return f"<b>training now</b>: step {newest}{of}{origin}"
    verified = [row["step"] for row in rows if row["verified"]]
    # finished where the last step's checkpoint is there: a kill in the last step's metric tick logged the step
    # and wrote no checkpoint, and a resume retrains from the one before
    if total is not None and newest >= total and verified and verified[-1] == newest:
        return f"finished: step {newest}{of}{origin}"
    if training is None or total is None or run.early_stop is not None:
        return f"step {newest}{of}{origin}"
    if not verified:
        start = "no checkpoint verifies: a resume is refused (--restart starts over)"
    elif verified[-1] == newest:
        start = f"a resume continues from step {newest}"
    else:
        start = f"a resume starts from its newest checkpoint that verifies, step {verified[-1]}"
    return f"not training: step {newest}{of}{origin}; {start}"


def _summary(run: RunData, rows: list[dict[str, Any]], training: bool | None) -> str:
    last = run.last
    parts = [f"family {_esc(run.config.get('family'))}" if run.config else "no config"]
    if status := run_status(run, rows, training):
        parts.append(status)
    if last:
        if finite(last.get("kimg")):
            parts.append(f"{last['kimg']:.3f} kimg")
        elapsed = elapsed_seconds(run.log)
        if len(elapsed):
            parts.append(f"training time {_duration(elapsed[-1])} (from img/s)")
    if (stop := run.early_stop) is not None:
        parts.append(f"stopped early at step {stop['step']}: {_esc(stop.get('reason', ''))} (patience)")
    return " · ".join(parts)


def _frames_section(run: RunData) -> str:
    frames = thin(run.frames, MAX_FRAMES)
    if not frames:
        return "<p class=note>No sample grids in samples/ yet.</p>"
    blocks = []
    for index, frame in enumerate(frames):
        figures = "".join(f'<figure>{image_tag(path, f"{net} step {frame.step}")}'
                          f"<figcaption>{net} · step {frame.step}</figcaption></figure>"
                          for net, path in frame.images.items())
        hidden = "" if index == len(frames) - 1 else " hidden"
        blocks.append(f'<div class="frame grids" data-label="step {frame.step} ({index + 1}/{len(frames)})"'
                      f"{hidden}>{figures}</div>")
    shown = f" ({len(frames)} of {len(run.frames)} shown)" if len(frames) < len(run.frames) else ""
    return (f'<div class="slider"><p>Fixed latents, EMA generator and raw G{shown}: '
            f'<input type="range" min="0" max="{len(frames) - 1}" value="{len(frames) - 1}" '
            f'aria-label="sample step"> <span class="frame-label"></span></p>{"".join(blocks)}</div>')


def _real_section(run: RunData) -> str:
    last = run.frames[-1] if run.frames else None
    count = int(run.config.get("sample_count", 16)) if run.config else 16
    grid, caption = real_grid(run.config, count)
    figures = []
    if grid is not None:
        figures.append(f'<figure>{image_tag(grid, "real images")}'
                       f"<figcaption>real: {_esc(caption)}</figcaption></figure>")
    if last is not None:
        net, path = next(iter(last.images.items()))
        figures.append(f'<figure>{image_tag(path, f"generated step {last.step}")}'
                       f"<figcaption>generated: {net} · step {last.step}</figcaption></figure>")
    note = "" if grid is not None else f"<p class=note>{_esc(caption)}</p>"
    return note + f'<div class="grids">{"".join(figures)}</div>'


def _checkpoint_section(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No checkpoints.</p>"
    metric = rows[0]["metric"]
    table_rows = []
    for row in rows:
        check = ('<span class="ok">✓ sha256 verified</span>' if row["verified"]
                 else f'<span class="bad">✗ {_esc(row["problem"])}</span>')
        best = f"#{row['best_rank']}" if row["best_rank"] else ""
        table_rows.append([str(row["step"]), _number(row["kimg"]), f"{row['bytes'] / 1e6:.1f} MB",
                           _number(row["value"]), best, check])
    return _table(["step", "kimg", "size", metric or "metric", "best", "integrity"], table_rows)


def _floor_note(run: RunData) -> str:
    """The real-vs-real SWD floor (`train --final-swd`) and the newest SWD of its image count against it."""
    floor = run.swd_floor
    if floor is None:
        return ""
    levels = ", ".join(f"{res} px {_number(value)}" for res, value in zip(floor["resolutions"], floor["swd"],
                                                                         strict=True))
    text = (f"Real-vs-real SWD floor (×1e3, n={floor['n']}, the training images against "
            f"{_esc(floor.get('second_set', 'a second real set'))}): {levels}, avg {_number(floor['avg'])}: what a "
            "generator indistinguishable from the data would score (dotted).")
    if not run.floor_levels_match(floor["n"]):
        text += " The newest SWD averages other pyramid levels (the run has grown since): compare its levels above."
    elif points := run.curve_points("swd_avg", floor["n"]):
        newest = points[-1]
        text += (f" The newest SWD avg of as many images (step {newest['step']}) is {_number(newest['swd_avg'])}, "
                 f"{newest['swd_avg'] / floor['avg']:.1f}× the floor.")
    return f"<p>{text}</p>"


def _metrics_table(run: RunData) -> str:
    points = run.metric_points()
    if not points:
        return ""
    keys = metric_keys(points)
    notes = [k for k in ("n", "real", "fid_mode", "bn", *MetricSettings.DEFAULTS, "pr_features", "fid_real_stats",
                         "ppl_crop", "source") if any(k in r for r in points)]  # how each was computed
    rows = [[str(r["step"]), _number(r.get("kimg")), *(_number(r.get(k)) for k in keys),
             *(_esc(str(r.get(k, ""))) for k in notes)] for r in points]
    evaluated = sum("source" in r for r in points)
    if not evaluated:
        caption = ""
    elif evaluated < len(points):
        caption = ("<p>Each curve draws training's own values where training computed that metric, else the rows "
                   "of <code>ganforge evaluate</code> of its most used image count, real set and settings; every row "
                   "is listed here.</p>")
    else:
        caption = ("<p>Each curve draws the rows of its most used image count, real set and settings (the newest per "
                   "step); every row is listed here.</p>")
    return (f"<details><summary>metric values</summary>{caption}"
            f"{_table(['step', 'kimg', *keys, *notes], rows)}</details>")


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{GENERATOR_TAG}<title>{_esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head>'
            f"<body>{body}<script>{SLIDER_SCRIPT}</script></body></html>\n")


def _plots_note(plots_available: bool) -> str:
    return "" if plots_available else (f"<p class=note>Plots need matplotlib, which is not installed: "
                                       f"<code>{_esc(PLOTS_EXTRA)}</code> adds them.</p>")


def render_run(run: RunData, cache: VerifyCache | None = None, training: bool | None = None) -> str:
    """The HTML page of one run; `training` None: whether a process trains it now is asked of its lock."""
    from ganforge.viz import plots

    labelled = [(run.label, run)]
    checkpoints = checkpoint_rows(run, cache)
    if training is None:
        training = ckpt.training_active(run.path)
    body = [f"<h1>{_esc(run.label)}</h1><p class=meta>{_summary(run, checkpoints, training)} · written "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')} from {_esc(run.path.resolve())}</p>"]
    body += [f"<p class=note>{_esc(note)}</p>" for note in run.notes]
    body.append(_plots_note(plots.available()))
    body.append("<h2>Losses</h2>")
    body.append(_plot(plots.loss_figure(labelled), "loss curves") if run.log else "<p>No log records yet.</p>")
    body.append(_plot(plots.schedule_figure(labelled), "growth schedule"))
    if run.singular_values:
        body.append("<h2>Spectral norms</h2><p>The leading singular value σ₀ of each spectrally normalised layer "
                    "of the trained networks, as BigGAN-PyTorch logs it: in the BigGAN paper (§4.1) a few layers' "
                    "σ₀ grow sharply before training collapses.</p>")
        body.append(_plot(plots.singular_value_figure(run), "singular values of the spectrally normalised layers"))
    body.append("<h2>Metrics</h2>")
    if run.metrics:
        body.append(_plot(plots.metrics_figure(labelled), "metric curves") + _floor_note(run) + _metrics_table(run))
    elif run.config and run.config.get("metrics"):
        every = run.config.get("metrics_every")
        body.append(f"<p>No metric tick yet ({_esc(', '.join(map(str, run.config['metrics'])))} "
                    f"{f'every {_esc(every)} steps and ' if every else ''}at the end of training).</p>")
    else:
        body.append("<p>No metrics computed (set <code>metrics</code> and <code>metrics_every</code>, or run "
                    "<code>ganforge evaluate RUN --all</code>).</p>")
    body.append("<h2>Speed</h2>")
    body.append(_plot(plots.speed_figure(labelled), "throughput and progress over time"))
    if run.events:  # resumes, rollbacks, an early or non-finite stop
        rows = [[str(e["step"]), _esc(e.get("event")), _esc(e.get("reason", ""))] for e in run.events]
        body.append("<h2>Events</h2>" + _table(["step", "event", "detail"], rows))
    body.append("<h2>Samples</h2>" + _frames_section(run))
    body.append("<h2>Real and generated</h2>" + _real_section(run))
    body.append("<h2>Checkpoints</h2>" + _checkpoint_section(checkpoints))
    body.append("<h2>Config</h2>" + _config_section(run))
    return _page(f"ganforge report: {run.label}", "".join(body))


def last_common_point(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[float, dict[str, float]] | None:
    """The largest kimg that every curve covers, and each curve's (interpolated) value there: runs of different
    length, batch size or metric interval compared at the same amount of training. None when they do not overlap."""
    grid, aligned = align_by_kimg(curves)
    if not len(grid):
        return None
    covered = np.flatnonzero(~np.isnan(np.stack(list(aligned.values()))).any(axis=0))
    if not len(covered):
        return None
    index = covered[-1]
    return float(grid[index]), {name: float(values[index]) for name, values in aligned.items()}


def _count_note(shared: int | None, run: RunData, rows: list[dict[str, Any]]) -> str:
    """" (n=512)" beside a run's last value where the compared runs share no image count and its row says one."""
    count = run.image_count(rows[-1]) if rows and shared is None else None
    return f" (n={_number(count)})" if count is not None else ""


def comparison_table(runs: list[RunData]) -> tuple[list[str], list[list[str]]]:
    """Per run: last step and kimg, then each metric's last value and its value at the last common kimg of the
    runs that have it, all of one image count where they share one (else each value with its count)."""
    keys = metric_keys([r for run in runs for r in run.metrics])
    header, columns = ["run", "step", "kimg"], []
    for key in keys:
        n = shared_image_count(runs, key)
        points = {run.label: run.curve_points(key, n) for run in runs}
        curves = {label: series(rows, key) for label, rows in points.items()}
        common = last_common_point({label: curve for label, curve in curves.items() if len(curve[0])})
        counted = f" (n={n})" if n is not None else ""
        header += [f"{key} (last){counted}", f"{key} @ {_number(common[0])} kimg{counted}" if common
                   else f"{key} @ common kimg"]
        columns.append([(_number(float(ys[-1]) if len(ys) else None) + _count_note(n, run, points[run.label]),
                         _number(common[1].get(run.label)) + _count_note(n, run, points[run.label]) if common
                         else "–")
                        for run, (_, ys) in zip(runs, curves.values(), strict=True)])
    rows = []
    for index, run in enumerate(runs):
        step = _newest_step(run)
        row = [_esc(run.label), "–" if step is None else str(step), _number(run.last.get("kimg"))]
        for column in columns:
            row += list(column[index])
        rows.append(row)
    return header, rows


def render_comparison(runs: list[RunData]) -> str:
    """The HTML page overlaying several runs' curves on one kimg axis."""
    from ganforge.viz import plots

    labelled = [(run.label, run) for run in runs]
    names = ", ".join(run.label for run in runs)
    body = [f"<h1>Comparison: {_esc(names)}</h1><p class=meta>written {time.strftime('%Y-%m-%d %H:%M:%S')}; "
            "curves on one kimg axis</p>", _plots_note(plots.available())]
    header, rows = comparison_table(runs)
    body.append("<h2>Runs</h2>" + _table(header, rows))
    configs = [_flat(run.config or {}) for run in runs]  # model.lr, not the whole model section
    def shown(config: dict[str, Any], key: str) -> str:  # a key one run lacks is not one it set to null
        return json.dumps(config[key], sort_keys=True, ensure_ascii=False) if key in config else "(not set)"

    differing = sorted(k for k in set().union(*configs) if len({shown(c, k) for c in configs}) > 1)
    if differing:
        rows = [[_esc(k), *(_esc(shown(c, k)) for c in configs)] for k in differing]
        body.append("<h2>Config differences</h2>" + _table(["key", *(run.label for run in runs)], rows))
    body.append("<h2>Losses</h2>" + _plot(plots.loss_figure(labelled), "loss curves"))
    body.append(_plot(plots.schedule_figure(labelled), "growth schedule"))
    if any(run.metrics for run in runs):
        body.append("<h2>Metrics</h2>" + _plot(plots.metrics_figure(labelled), "metric curves"))
    body.append("<h2>Speed</h2>" + _plot(plots.speed_figure(labelled), "throughput and progress over time"))
    figures = []
    for run in runs:
        if run.frames:
            frame = run.frames[-1]
            net, path = next(iter(frame.images.items()))
            figures.append(f'<figure>{image_tag(path, f"{run.label} step {frame.step}")}'
                           f"<figcaption>{_esc(run.label)}: {net} · step {frame.step}</figcaption></figure>")
    body.append(f'<h2>Last samples</h2><div class="grids">{"".join(figures)}</div>')
    return _page(f"ganforge report: {names}", "".join(body))


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config as dotted keys to its values: {"model.lr": 0.001, ...} (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def write_atomic_text(path: Path, text: str) -> None:
    """Temp file beside the target, then rename: a browser reloading the page never sees half of it."""
    ckpt._write_atomic(path, text.encode("utf-8"))  # the checkpoints' own temp-file + fsync + rename
    os.chmod(path, 0o644)  # a page to share: readable like any other file (the temp file was private)


def write_report(run_dirs: list[Path], out: Path | None = None, cache: VerifyCache | None = None,
                 training: bool | None = None) -> Path:
    """`ganforge report RUN [RUN ...] [-o FILE]`: one run → RUN/report.html, several → ./report-compare.html.
    `training`: whether the one run is being trained now (None: ask its lock)."""
    if not run_dirs:
        raise ReportError("report: give at least one run directory")
    seen: dict[Path, str] = {}
    for given in map(str, run_dirs):
        if (where := Path(given).resolve()) in seen:
            raise ReportError(f"report: {given} is the run {seen[where]} already names; give each run once")
        seen[where] = given
    runs = [read_run(Path(r)) for r in run_dirs]
    if len({run.label for run in runs}) < len(runs):
        for run in runs:
            run.label = str(run.path)
    if out is None:  # the default names are the reports' own
        out = runs[0].path / REPORT_NAME if len(runs) == 1 else Path(COMPARE_NAME)
        named = str(out)
    else:
        out = Path(out)
        named = f"-o {out}"
        if out.is_dir():
            raise ReportError(f"{named}: is a directory; give the HTML file to write, e.g. {out / REPORT_NAME}")
        if out.suffix.lower() not in (".html", ".htm"):
            raise ReportError(f"{named}: expected an .html file name (the report is one HTML page)")
        if (above := next((p for p in out.parents if p.exists()), None)) is not None and not above.is_dir():
            raise ReportError(f"{named}: {above} is a file, not a folder to write the report in")
    if out.exists() and not written_by_ganforge(out):
        raise ReportError(f"{named}: the file exists and is not a report ganforge wrote; it is left as it is "
                          "(remove it, or write the page to another file: ganforge report RUN -o FILE.html)")
    page = render_run(runs[0], cache, training) if len(runs) == 1 else render_comparison(runs)
    write_atomic_text(out, page)
    return out


def written_by_ganforge(path: Path) -> bool:
    """A page this module wrote (its head holds GENERATOR_TAG, or the title earlier pages had), which a new report
    may replace."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return GENERATOR_TAG in head or TITLE_PREFIX in head


class ReportRefresher:
    """Keeps RUN/report.html current during training: refreshed at sample ticks at most every MIN_INTERVAL seconds
    and while writing it takes at most MAX_SHARE of the time in between (large runs pay little for it), always at
    the end. A report that cannot be written is a warning: it must not stop the run or hide why it stopped."""

    MIN_INTERVAL = 30.0
    MAX_SHARE = 0.1

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._cache: VerifyCache = {}
        self._last_end = time.perf_counter()  # the run's start counts as a write: no refresh in the first interval
        self._last_cost = 0.0

    def tick(self) -> Path | None:
        """At a sample tick: rewrite the page unless the last write was too recent for its cost."""
        since = time.perf_counter() - self._last_end
        if since < max(self.MIN_INTERVAL, self._last_cost / self.MAX_SHARE):
            return None
        return self._write(training=True)

    def write(self) -> Path | None:
        """The page as training ends (finished, stopped or failed)."""
        return self._write(training=False)

    def _write(self, training: bool) -> Path | None:
        start = time.perf_counter()
        try:
            out = write_report([self.run_dir], cache=self._cache, training=training)
        except (OSError, ValueError) as err:
            print(f"ganforge: warning: report not written: {err}", file=sys.stderr)
            out = None
        self._last_end = time.perf_counter()
        self._last_cost = self._last_end - start
        return out
