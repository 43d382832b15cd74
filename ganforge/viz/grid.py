"""Sample grids as PNG files, without matplotlib or torchvision, and the captions that say what a grid shows.

A caption is drawn with PIL's built-in bitmap font (no font files) into strips added above the grid (a title), to
its left (one label per grid row) or under each row of cells (one label per cell); the images' own pixels are copied
unchanged, never painted over.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ganforge.errors import ConfigError

CAPTION_BACKGROUND = 255  # white strips, black text, whatever the grid's channel count
CAPTION_INK = 0
CAPTION_MARGIN = 3  # pixels around the text


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images in [-1, 1] (NCHW) → uint8 NHWC, rounding like the official PGGAN code (x·127.5 + 127.5)."""
    array = (images.detach().float().cpu() * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
    return array.permute(0, 2, 3, 1).numpy()


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2, min_cell: int = 0,
              cell_labels: Sequence[str] | None = None) -> np.ndarray:
    """uint8 NHWC images → one HWC mosaic; small images are enlarged (nearest) to at least `min_cell` pixels.
    `cell_labels` (one per image, lines split at newlines) are written in a strip under each row, each under its
    cell and cut to its width (the classes a conditional generator was asked for)."""
    count, height, width, channels = images.shape
    if cell_labels is not None and len(cell_labels) != count:
        raise ValueError(f"{len(cell_labels)} cell labels for {count} images")
    if min_cell and height < min_cell:
        factor = math.ceil(min_cell / height)
        images = images.repeat(factor, axis=1).repeat(factor, axis=2)
        count, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    lines = 0 if cell_labels is None else max((label.count("\n") + 1 for label in cell_labels), default=0)
    label_height = lines * line_height() + CAPTION_MARGIN if lines else 0
    pitch = height + label_height + padding
    grid = np.zeros((rows * pitch + padding, columns * (width + padding) + padding, channels), dtype=np.uint8)
    for index in range(count):
        r, c = divmod(index, columns)
        top, left = padding + r * pitch, padding + c * (width + padding)
        grid[top:top + height, left:left + width] = images[index]
    for r in range(rows if cell_labels is not None else 0):
        labels = cell_labels[r * columns:(r + 1) * columns]
        placed = []
        for c, label in enumerate(labels):
            for i, line in enumerate(_fitted(part, width) for part in label.split("\n")):
                placed.append((padding + c * (width + padding) + (width - text_width(line)) // 2, i * line_height(),
                               line))
        top = padding + r * pitch + height
        grid[top:top + label_height] = _text_strip(label_height, grid.shape[1], placed)[..., None]
    return grid


def _fitted(text: str, width: int) -> str:
    """`text` shortened from the end until it fits `width` pixels."""
    while text and text_width(text) > width:
        text = text[:-1]
    return text


def refuse_existing(paths: Sequence[Path], command: str, options: str = "-o") -> None:
    """An earlier `command`'s outputs among `paths` are kept: refused (naming the first) before any work, unless the
    caller was told to overwrite them (and so does not call this)."""
    found = [path for path in paths if path.exists()]
    if found:
        more = f" and {len(found) - 1} more" if len(found) > 1 else ""
        raise ConfigError(f"{found[0]}{more}: already there (an earlier {command}'s?); kept as they are: give another "
                          f"{options}, or --overwrite to replace them")


def check_output_folder(folder: Path | None, option: str = "-o", error: type[Exception] = ConfigError) -> None:
    """A folder to write into that is a file: one line now (as `error`), not an errno after the work."""
    if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
        raise error(f"{option} {folder}: a file; expected a folder (new, or one to add to)")


def save_image(array: np.ndarray, path: Path) -> None:
    """Write an HWC uint8 array (1 or 3 channels) as PNG, creating the folder; through a temp file and a rename,
    so a reader (the report during training) or a kill never meets half a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    try:
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(partial, format="PNG")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def save_grid(images: torch.Tensor, path: Path, columns: int | None = None, min_cell: int = 64,
              title: str | None = None, cell_labels: Sequence[str] | None = None) -> None:
    """Images in [-1, 1] → a grid PNG, under a caption strip holding `title` when one is given."""
    grid = make_grid(to_uint8(images), columns=columns, min_cell=min_cell, cell_labels=cell_labels)
    save_image(grid if title is None else label_grid(grid, title), path)


@cache
def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default_imagefont()  # PIL's bitmap font: latin-1, 11 px high


def _printable(text: str) -> str:
    """The bitmap font covers latin-1 only: other characters (a class named in another script) become '?'."""
    return text.encode("latin-1", "replace").decode("latin-1")


def line_height() -> int:
    """Height of one caption line (the font's tallest glyphs plus a pixel of spacing)."""
    return _font().getbbox("Mgy")[3] + 1


def text_width(text: str) -> int:
    return max((int(_font().getbbox(_printable(line))[2]) for line in text.split("\n")), default=0)


def _text_strip(height: int, width: int, lines: Sequence[tuple[int, int, str]]) -> np.ndarray:
    """An H×W uint8 strip of background with each (left, top, text) line drawn."""
    strip = Image.new("L", (max(width, 1), max(height, 1)), CAPTION_BACKGROUND)
    draw = ImageDraw.Draw(strip)
    for left, top, text in lines:
        draw.text((left, top), _printable(text), fill=CAPTION_INK, font=_font())
    return np.asarray(strip)[:height, :width]


def caption_size(title: str, row_labels: Sequence[str] | None = None) -> tuple[int, int]:
    """(top, left): the caption strip's height above the grid and the row-label strip's width beside it."""
    top = len(title.split("\n")) * line_height() + 2 * CAPTION_MARGIN
    left = max(map(text_width, row_labels)) + 2 * CAPTION_MARGIN if row_labels else 0
    return top, left


def label_grid(grid: np.ndarray, title: str, row_labels: Sequence[str] | None = None, padding: int = 2,
               min_width: int = 0) -> np.ndarray:
    """An HWC uint8 grid (as `make_grid` made it, with `padding`) under a strip holding `title` (lines split at
    newlines), with `row_labels` (one per grid row, centred on it) in a strip to its left. The canvas is widened
    when the title is wider than the grid, and to `min_width` (frames of one video keep one size whatever their
    titles); the grid's pixels are copied unchanged."""
    height, width, channels = grid.shape
    top, left = caption_size(title, row_labels)
    canvas_width = max(left + width, text_width(title) + 2 * CAPTION_MARGIN, min_width)
    canvas = np.full((top + height, canvas_width, channels), CAPTION_BACKGROUND, dtype=np.uint8)
    lines = [(CAPTION_MARGIN, CAPTION_MARGIN + i * line_height(), line) for i, line in enumerate(title.split("\n"))]
    canvas[:top] = _text_strip(top, canvas_width, lines)[..., None]
    if row_labels:
        rows = len(row_labels)
        cell = (height - padding) // rows - padding
        if cell < 1 or rows * (cell + padding) + padding != height:
            raise ValueError(f"{rows} row labels for a grid {height} px high (padding {padding}): the rows do not "
                             "divide it")
        centred = [(CAPTION_MARGIN, padding + r * (cell + padding) + (cell - line_height()) // 2, label)
                   for r, label in enumerate(row_labels)]
        canvas[top:, :left] = _text_strip(height, left, centred)[..., None]
    canvas[top:, left:left + width] = grid
    return canvas


def sample_caption(net: str, ema: bool, step: int) -> str:
    """What a grid of generator `net` shows: "EMA, step 1200" for an EMA copy, "G, step 1200" for the raw one."""
    return f"{'EMA' if ema else net}, step {step}"
