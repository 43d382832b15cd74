"""`builtin:shapes`: a procedural, labelled dataset that needs no download.

Each image is one anti-aliased shape (circle, square, triangle, ring) of random size, position, rotation
and colour over a background style (dark, light, gradient, stripes); both are labels, so conditional
models and translation models have something to learn. Shapes are rendered from signed distance
functions with analytic pixel coverage, so 8 px images look as right as 256 px ones, and all random
parameters live in resolution-free units: the same seed gives the same scene at every resolution.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ganforge.data.images import build_pyramid, is_power_of_two

SHAPE_CLASSES = ["circle", "square", "triangle", "ring"]
BACKGROUND_CLASSES = ["dark", "light", "gradient", "stripes"]
SHAPES_VERSION = 2  # bump when the drawing or its pyramid changes: it keys cached metric statistics
_PIXELS_PER_CHUNK = 1 << 22  # bounds float32 temporaries to tens of MB whatever the resolution


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Vectorised HSV → RGB in [0, 1], shape [..., 3] (the piecewise-linear hexcone model)."""
    offsets = np.array([5.0, 3.0, 1.0])
    k = (offsets + hue[..., None] * 6.0) % 6.0
    ramp = np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return value[..., None] - value[..., None] * saturation[..., None] * ramp


def _draw_parameters(count: int, seed: int) -> dict[str, np.ndarray]:
    """Every random choice for `count` images, in resolution-free units, from one seeded stream."""
    rng = np.random.default_rng(seed)
    params = {
        "shape": rng.permutation(np.arange(count) % len(SHAPE_CLASSES)),
        "background": rng.permutation(np.arange(count) % len(BACKGROUND_CLASSES)),
        "size": rng.uniform(0.14, 0.3, count),
        "angle": rng.uniform(0.0, 2 * np.pi, count),
        "bg_angle": rng.uniform(0.0, 2 * np.pi, count),
        "period": rng.uniform(0.14, 0.28, count),
        "phase": rng.uniform(0.0, 1.0, count),
    }
    extent = 1.2 * params["size"] + 0.03  # bounding radius of every shape kind, plus a margin
    params["cx"] = extent + rng.uniform(0.0, 1.0, count) * (1.0 - 2 * extent)
    params["cy"] = extent + rng.uniform(0.0, 1.0, count) * (1.0 - 2 * extent)

    hue = rng.uniform(0.0, 1.0, (3, count))
    on_light = params["background"] == BACKGROUND_CLASSES.index("light")
    shape_value = np.where(on_light, rng.uniform(0.3, 0.75, count), rng.uniform(0.75, 1.0, count))
    params["shape_rgb"] = _hsv_to_rgb(hue[0], rng.uniform(0.6, 1.0, count), shape_value)
    # two muted background colours per image: plain styles use the first, patterns blend dark → light
    low_saturation = rng.uniform(0.0, 0.35, (2, count))
    style = params["background"]
    first_value = np.select(
        [style == BACKGROUND_CLASSES.index("dark"), style == BACKGROUND_CLASSES.index("light")],
        [rng.uniform(0.04, 0.22, count), rng.uniform(0.82, 0.97, count)],
        rng.uniform(0.1, 0.45, count),
    )
    params["bg_rgb_a"] = _hsv_to_rgb(hue[1], low_saturation[0], first_value)
    params["bg_rgb_b"] = _hsv_to_rgb(hue[2], low_saturation[1], rng.uniform(0.5, 0.9, count))
    return params


def _shape_distance(kind: str, u: np.ndarray, v: np.ndarray, size: np.ndarray, rounding: float = 0.0) -> np.ndarray:
    """Signed distance (negative inside) in image-width units, shape centred at the origin, u/v rotated.

    `rounding` > 0 rounds the corners of squares and triangles with a radius of that fraction of their inradius,
    edges in place (the polygon shrunk by the radius, then its distance offset by it); 0 is the dataset's drawing."""
    if kind == "circle":
        return np.hypot(u, v) - size
    if kind == "ring":
        return np.abs(np.hypot(u, v) - 0.72 * size) - 0.24 * size
    if kind == "square":
        half = 0.85 * size
        radius = rounding * half
        qu, qv = np.abs(u) - (half - radius), np.abs(v) - (half - radius)
        return np.hypot(np.maximum(qu, 0), np.maximum(qv, 0)) + np.minimum(np.maximum(qu, qv), 0) - radius
    # equilateral triangle with half-side r, apex towards +v, centroid at the origin
    k = np.float32(np.sqrt(3.0))
    radius = rounding * 0.95 * size / k  # the inradius of a triangle of half-side r is r / √3
    r = 0.95 * size - k * radius
    pu = np.abs(u) - r
    pv = v + r / k
    folded = pu + k * pv > 0
    pu, pv = np.where(folded, (pu - k * pv) / 2, pu), np.where(folded, (-k * pu - pv) / 2, pv)
    pu = pu - np.clip(pu, -2 * r, 0)
    return -np.hypot(pu, pv) * np.sign(pv) - radius


def _coverage(distance_px: np.ndarray) -> np.ndarray:
    """Fraction of a pixel inside an edge at this signed distance (in pixels): the analytic anti-aliasing."""
    return np.clip(0.5 - distance_px, 0.0, 1.0)


def _render_chunk(params: dict[str, np.ndarray], index: np.ndarray, resolution: int,
                  rounding: float = 0.0) -> np.ndarray:
    centres = ((np.arange(resolution, dtype=np.float32) + 0.5) / resolution).astype(np.float32)
    x, y = centres[None, None, :], centres[None, :, None]

    def column(name: str, rows: np.ndarray) -> np.ndarray:
        return params[name][rows].astype(np.float32)[:, None, None]

    # background: colour a, blended towards colour b by a per-pixel mix (0 everywhere for plain styles)
    mix = np.zeros((len(index), resolution, resolution), dtype=np.float32)
    style = params["background"][index]
    for patterned in (BACKGROUND_CLASSES.index("gradient"), BACKGROUND_CLASSES.index("stripes")):
        rows = np.flatnonzero(style == patterned)
        if not len(rows):
            continue
        angle = column("bg_angle", index[rows])
        along = (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle)
        if BACKGROUND_CLASSES[patterned] == "gradient":
            mix[rows] = np.clip(0.5 + along / np.float32(np.sqrt(2.0)), 0.0, 1.0)
        else:
            period = column("period", index[rows])
            phase = along / period + column("phase", index[rows])
            phase -= np.floor(phase)  # fractional part; much faster than % 1.0
            stripes = _coverage((np.abs(phase - 0.5) - 0.25) * period * resolution)
            visible = np.clip((period * resolution - 2.0) / 2.0, 0.0, 1.0)  # stripes under ~2 px become grey
            mix[rows] = visible * stripes + (1.0 - visible) * 0.5

    alpha = np.empty_like(mix)
    shape = params["shape"][index]
    for label, kind in enumerate(SHAPE_CLASSES):
        rows = np.flatnonzero(shape == label)
        if not len(rows):
            continue
        picked = index[rows]
        dx, dy = x - column("cx", picked), y - column("cy", picked)
        angle = column("angle", picked)
        cos, sin = np.cos(angle), np.sin(angle)
        u, v = cos * dx + sin * dy, cos * dy - sin * dx
        alpha[rows] = _coverage(_shape_distance(kind, u, v, column("size", picked), rounding) * resolution)

    # blend one channel at a time: broadcasting [B, 3, 1, 1] against [B, 1, R, R] is several times slower
    canvas = np.empty((len(index), 3, resolution, resolution), dtype=np.float32)
    first, second, ink = (params[name][index].astype(np.float32) for name in ("bg_rgb_a", "bg_rgb_b", "shape_rgb"))
    for channel in range(3):
        start = first[:, channel, None, None]
        background = start + (second[:, channel, None, None] - start) * mix
        canvas[:, channel] = background + (ink[:, channel, None, None] - background) * alpha
    canvas *= 255.0
    return np.rint(canvas, out=canvas).astype(np.uint8)


def make_shapes(
    count: int, resolution: int, seed: int = 0, *, corner_rounding: float = 0.0
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, list[str]]]]:
    """Draw `count` images: (uint8 NCHW RGB, int64 labels [count, 2], label columns shape/background).

    `corner_rounding` (0 for the dataset) draws the same scenes with the corners of squares and triangles rounded,
    a radius of that fraction of the shape's inradius: the negatives of benchmarks/shape_fidelity.py."""
    if not 0.0 <= corner_rounding < 1.0:
        raise ValueError(f"corner_rounding must be in [0, 1) (a fraction of the inradius), got {corner_rounding!r}")
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    if not is_power_of_two(resolution) or not 4 <= resolution <= 256:
        raise ValueError(f"resolution must be a power of two in 4..256, got {resolution!r}")
    params = _draw_parameters(count, seed)
    images = np.empty((count, 3, resolution, resolution), dtype=np.uint8)
    chunk = max(1, _PIXELS_PER_CHUNK // (resolution * resolution))

    def render(start: int) -> None:
        index = np.arange(start, min(start + chunk, count))
        images[start : start + len(index)] = _render_chunk(params, index, resolution, corner_rounding)

    # numpy releases the GIL inside its loops, so threads render chunks in parallel; each writes its own rows
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(render, range(0, count, chunk)))
    labels = np.stack([params["shape"], params["background"]], axis=1).astype(np.int64)
    columns = [("shape", list(SHAPE_CLASSES)), ("background", list(BACKGROUND_CLASSES))]
    return images, labels, columns


@functools.lru_cache(maxsize=2)
def shapes_pyramid(
    count: int, resolution: int, seed: int
) -> tuple[dict[int, np.ndarray], np.ndarray, list[tuple[str, list[str]]]]:
    """make_shapes plus its box pyramid down to 4, cached so repeated opens are free (arrays read-only)."""
    images, labels, columns = make_shapes(count, resolution, seed)
    levels = build_pyramid(images, 4)
    for array in (*levels.values(), labels):
        array.flags.writeable = False
    return levels, labels, columns
