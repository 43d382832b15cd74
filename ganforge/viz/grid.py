"""Sample grids as PNG files, without matplotlib or torchvision."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images in [-1, 1] (NCHW) → uint8 NHWC, rounding like the official PGGAN code (x·127.5 + 127.5)."""
    array = (images.detach().float().cpu() * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
    return array.permute(0, 2, 3, 1).numpy()


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2, min_cell: int = 0) -> np.ndarray:
    """uint8 NHWC images → one HWC mosaic; small images are enlarged (nearest) to at least `min_cell` pixels."""
    count, height, width, channels = images.shape
    if min_cell and height < min_cell:
        factor = math.ceil(min_cell / height)
        images = images.repeat(factor, axis=1).repeat(factor, axis=2)
        count, height, width, channels = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = np.zeros((rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
                    dtype=np.uint8)
    for index in range(count):
        r, c = divmod(index, columns)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        grid[top:top + height, left:left + width] = images[index]
    return grid


def save_image(array: np.ndarray, path: Path) -> None:
    """Write an HWC uint8 array (1 or 3 channels) as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


def save_grid(images: torch.Tensor, path: Path, columns: int | None = None, min_cell: int = 64) -> None:
    save_image(make_grid(to_uint8(images), columns=columns, min_cell=min_cell), path)
