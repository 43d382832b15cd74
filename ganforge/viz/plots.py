"""The report's plots, drawn by matplotlib (the optional `report` extra) as SVG text, one run or several overlaid.

Every function takes [(label, RunData)] and returns an SVG document, or None when there is nothing to draw or
matplotlib is not installed. The x axis is always kimg (thousands of real images shown to the critic), so runs with
different batch sizes or log intervals line up.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from ganforge.metrics.registry import metric_of_output
from ganforge.viz.run_data import (
    curve_keys,
    elapsed_seconds,
    finite,
    leading_singular_values,
    metric_keys,
    phase_of,
    series,
    shared_image_count,
    smooth,
    smoothing_weight,
)

if TYPE_CHECKING:
    from ganforge.viz.run_data import RunData

Runs = list[tuple[str, "RunData"]]
PHASE_ORDER = {"D": 0, "G": 1, "other": 2}
COLUMNS = 3
LOG_SCALE_RATIO = 30.0  # positive curves spanning more than this factor get a log y axis


def _plain(label: str) -> str:
    """A run's name as matplotlib shows it literally: a `$` would start mathtext (a parse error, or italics) and a
    leading `_` would hide the line from the legend."""
    label = label.replace("$", r"\$")
    return "\u200b" + label if label.startswith("_") else label


def _legend(ax: Any, fontsize: int) -> None:
    """A legend where the panel has labelled lines (a run without, e.g. one moved before its first log, has none:
    matplotlib would warn)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize)


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def available() -> bool:
    """Whether plots can be drawn (matplotlib importable)."""
    return _figure_class() is not None


def _svg(figure: Any) -> str:
    import matplotlib

    buffer = io.StringIO()
    # text as paths: the SVG looks the same without the fonts; fixed salt: the same run gives the same file
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "ganforge"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def _new_figure(rows: int, columns: int, height: float = 2.6) -> tuple[Any, np.ndarray] | None:
    figure_class = _figure_class()
    if figure_class is None:
        return None
    figure = figure_class(figsize=(4.0 * columns, height * rows))
    inches = height * rows  # margins in inches, so the axis labels fit whatever the number of rows
    figure.subplots_adjust(left=0.7 / (4.0 * columns), right=0.98, bottom=0.5 / inches, top=1 - 0.3 / inches,
                           wspace=0.28, hspace=0.75)
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).reshape(rows, columns)
    return figure, axes


def wants_log_scale(values: list[np.ndarray]) -> bool:
    """Log y for positive curves spanning more than LOG_SCALE_RATIO (e.g. a gradient penalty falling 1000x)."""
    joined = np.concatenate([v for v in values if len(v)]) if any(len(v) for v in values) else np.zeros(0)
    return bool(len(joined) and joined.min() > 0 and joined.max() / joined.min() > LOG_SCALE_RATIO)


def _panel_grid(panels: int) -> tuple[Any, np.ndarray] | None:
    """A figure with `panels` panels, COLUMNS to a row."""
    columns = min(COLUMNS, panels)
    return _new_figure(math.ceil(panels / columns), columns)


def _colors(count: int) -> list[str]:
    return [f"C{i % 10}" for i in range(count)]


def _grid_off_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def _log_axis(ax: Any) -> None:
    """Log y with ticks at 1, 2 and 5 times powers of ten, so a curve within one or two decades still reads."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def loss_figure(runs: Runs) -> str | None:
    """One panel per logged term, the discriminator's first, then the generator's, then the rest; the raw values
    faint, the smoothed curve on top (one colour per run when comparing)."""
    keys = list(dict.fromkeys(k for _, run in runs for k in curve_keys(run.log)))
    if not keys:
        return None
    keys.sort(key=lambda k: PHASE_ORDER[phase_of(k)])
    made = _panel_grid(len(keys))
    if made is None:
        return None
    figure, axes = made
    colors = _colors(len(runs))
    for ax, key in zip(axes.flat, keys, strict=False):
        drawn = []
        for (label, run), color in zip(runs, colors, strict=True):
            xs, ys = series(run.log, key)
            if not len(xs):
                continue
            drawn.append(ys)
            ax.plot(xs, ys, color=color, alpha=0.3, linewidth=0.8, label=None if len(runs) > 1 else "raw")
            ax.plot(xs, smooth(ys, smoothing_weight(len(ys))), color=color, linewidth=1.5,
                    label=_plain(label) if len(runs) > 1 else "smoothed")
        if wants_log_scale(drawn):
            _log_axis(ax)
        phase = phase_of(key)
        ax.set_title(f"{key}" + (f"  ({phase} step)" if phase != "other" else ""), fontsize=10)
        ax.set_xlabel("kimg")
        ax.grid(alpha=0.3)
        if len(runs) > 1:  # each panel names its runs: a run may log terms another lacks
            _legend(ax, 7)
    if len(runs) == 1:
        _legend(axes.flat[0], 8)
    _grid_off_unused(axes, len(keys))
    return _svg(figure)


LABELLED_LAYERS = 5  # legend entries per panel of the singular-value plot: the layers with the largest last σ₀


def singular_value_figure(run: RunData) -> str | None:
    """σ₀ of every spectrally normalised layer over kimg, a panel per network (BigGAN's G and D; the BigGAN paper's
    Figure 3): a layer whose σ₀ takes off is the early sign of collapse. The legend names the largest."""
    by_net = leading_singular_values(run.singular_values)
    if not by_net:
        return None
    made = _new_figure(1, len(by_net), height=3.2)
    if made is None:
        return None
    figure, axes = made
    for ax, (net, keys) in zip(axes.flat, by_net.items(), strict=True):
        curves = {key: series(run.singular_values, key) for key in keys}
        ranked = sorted(keys, key=lambda k: -curves[k][1][-1] if len(curves[k][1]) else math.inf)
        for index, key in enumerate(ranked):
            xs, ys = curves[key]
            labelled = index < LABELLED_LAYERS
            ax.plot(xs, ys, linewidth=1.2 if labelled else 0.7, alpha=1.0 if labelled else 0.4,
                    color=f"C{index}" if labelled else "0.55", label=key.removeprefix(f"{net}.") if labelled else None)
        if wants_log_scale([curves[k][1] for k in keys]):
            _log_axis(ax)
        ax.set_title(f"{net}: σ₀ of its {len(keys)} spectrally normalised layers", fontsize=10)
        ax.set_xlabel("kimg")
        ax.grid(alpha=0.3)
        _legend(ax, 7)
    return _svg(figure)


def schedule_figure(runs: Runs) -> str | None:
    """PGAN's growth timeline under the losses: the resolution trained at, and the fade-in alpha."""
    if not any(finite_series(run, "res") for _, run in runs):
        return None
    made = _new_figure(1, 2, height=2.0)
    if made is None:
        return None
    figure, axes = made
    for (label, run), color in zip(runs, _colors(len(runs)), strict=True):
        for ax, key in zip(axes.flat, ("res", "alpha"), strict=True):
            xs, ys = series(run.log, key)
            if len(xs):
                ax.step(xs, ys, where="pre", color=color, label=_plain(label))  # a record describes the steps before it
    axes[0, 0].set_yscale("log", base=2)
    axes[0, 0].yaxis.set_major_formatter(lambda value, _: f"{value:g}")  # 4, 8, 16 px, not 2², 2³, 2⁴
    axes[0, 0].set_title("resolution (px)", fontsize=10)
    axes[0, 1].set_title("fade-in alpha (1 = new layer off, 0 = fully in)", fontsize=10)
    for ax in axes.flat:
        ax.set_xlabel("kimg")
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        _legend(axes[0, 0], 8)
    return _svg(figure)


def finite_series(run: RunData, key: str) -> bool:
    return len(series(run.log, key)[0]) > 0


OUTPUT_STYLES = ("--", ":", "-.", (0, (5, 1, 1, 1)))  # a metric's outputs other than its average


def metric_groups(keys: list[str]) -> dict[str, list[str]]:
    """Outputs that share a panel, their metric's: swd_16, swd_32, swd_avg → "swd"; fid → "fid"; fd_dinov2 →
    "fd_dinov2" (other keys by their first word)."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(metric_of_output(key) or key.split("_")[0], []).append(key)
    return groups


def metrics_figure(runs: Runs) -> str | None:
    """One panel per metric; the `best_metric` curve marks the steps best.json keeps (★, numbered by rank)."""
    keys = metric_keys([r for _, run in runs for r in run.metrics])
    groups = metric_groups(keys)
    if not groups:
        return None
    made = _panel_grid(len(groups))
    if made is None:
        return None
    figure, axes = made
    colors = _colors(len(runs))
    for ax, (group, members) in zip(axes.flat, groups.items(), strict=False):
        for run_index, (label, run) in enumerate(runs):
            for key_index, key in enumerate(members):  # compared runs at one image count, where they share one
                n = shared_image_count([compared for _, compared in runs], key) if len(runs) > 1 else None
                xs, ys = series(run.curve_points(key, n), key)
                if not len(xs):
                    continue
                color = colors[run_index] if len(runs) > 1 else f"C{key_index % 10}"
                name = f"{_plain(label)}: {key}" if len(runs) > 1 else key
                # one run's outputs of a metric (swd_16, swd_32) share its colour when runs are compared: the
                # line style tells them apart
                ax.plot(xs, ys, marker="o", markersize=3, color=color, label=name,
                        linestyle="-" if key.endswith("avg") or len(members) == 1
                        else OUTPUT_STYLES[key_index % len(OUTPUT_STYLES)])
                if len(runs) == 1 and (floor := run.floor_of(key)) is not None:  # what a perfect G would score
                    ax.axhline(floor, color=color, linestyle=":", linewidth=1.2,
                               label=f"real-vs-real floor (n={run.swd_floor['n']})" if key == "swd_avg" else None)
            for best in run.best_points():
                if best["metric"] in members and math.isfinite(best["kimg"]):
                    ax.plot(best["kimg"], best["value"], marker="*", markersize=12, color="gold",
                            markeredgecolor="black", linestyle="none")
                    ax.annotate(f"#{best['rank']}", (best["kimg"], best["value"]), textcoords="offset points",
                                xytext=(5, 5), fontsize=8)
        ax.set_title(f"{group}" + (" (×1e3)" if group == "swd" else "") + ("  (★ best checkpoints)" if any(
            b["metric"] in members for _, run in runs for b in run.best_points()) else ""), fontsize=10)
        ax.set_xlabel("kimg")
        ax.grid(alpha=0.3)
        _legend(ax, 7)
    _grid_off_unused(axes, len(groups))
    return _svg(figure)


def speed_figure(runs: Runs) -> str | None:
    """Images per second against kimg, and kimg against training time (minutes, hours from two hours on)."""
    if not any(len(series(run.log, "img_per_s")[0]) for _, run in runs):
        return None
    made = _new_figure(1, 2, height=2.4)
    if made is None:
        return None
    figure, axes = made
    longest = max((elapsed_seconds(run.log)[-1] for _, run in runs if run.log), default=0.0)
    unit, seconds = ("hours", 3600.0) if longest >= 7200 else ("minutes", 60.0)  # a short run in minutes
    for (label, run), color in zip(runs, _colors(len(runs)), strict=True):
        xs, ys = series(run.log, "img_per_s")
        axes[0, 0].plot(xs, ys, color=color, label=_plain(label))
        elapsed = elapsed_seconds(run.log) / seconds
        kimg = np.asarray([r["kimg"] if finite(r.get("kimg")) else np.nan for r in run.log], dtype=np.float64)
        axes[0, 1].plot(elapsed, kimg, color=color, label=_plain(label))
    axes[0, 0].set_title("throughput (img/s)", fontsize=10)
    axes[0, 0].set_xlabel("kimg")
    axes[0, 1].set_title("progress", fontsize=10)
    axes[0, 1].set_xlabel(f"training {unit}")
    axes[0, 1].set_ylabel("kimg")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    if len(runs) > 1:
        _legend(axes[0, 0], 8)
    return _svg(figure)

