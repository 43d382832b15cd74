"""Decoding user images robustly and resampling them the way the reference dataset tools do.

Users feed whatever their cameras and editors produce (EXIF-rotated JPEGs, CMYK, palettes, 16-bit PNGs,
transparency), so everything is normalised here to 8-bit RGB once, and failures name the offending file.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# the files read as images from folders (evaluate, stats, domain folders, translate, align-faces): pytorch-fid's list,
# TIFF and Netpbm included; `prepare` also reads GIFs (an animation's first frame), which an image set to evaluate
# leaves out (a run's progress.gif, translate's video_ref.gif)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
PREPARE_EXTENSIONS = (*IMAGE_EXTENSIONS, ".gif")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and the problem."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


def _sixteen_bit_to_rgb(image: Image.Image) -> np.ndarray:
    """Scale a 16-bit grayscale image to 8 bits by /257 with rounding (keeps the full tonal range)."""
    values = np.asarray(image).astype(np.float64)
    gray = np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def _over_white(image: Image.Image) -> np.ndarray:
    """Composite a transparent image over white, which is how viewers show it to the user."""
    rgba = np.asarray(image.convert("RGBA")).astype(np.float32)
    alpha = rgba[:, :, 3:4] / 255.0
    rgb = rgba[:, :, :3] * alpha + 255.0 * (1.0 - alpha)
    return np.rint(rgb).astype(np.uint8)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode == "F":  # PIL's convert would clip to 0..255: a 0..1 image became black
        raise ValueError("32-bit floating-point pixels, whose range (0..1? 0..255? HDR?) the file does not say; "
                         "convert it to an 8- or 16-bit image first")
    if image.mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_rgb(image)
    if image.mode in _ALPHA_MODES or (image.mode in ("P", "L", "RGB") and "transparency" in image.info):
        return _over_white(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


def load_rgb(source: str | Path | bytes, name: str) -> np.ndarray:
    """Decode an image file (path or its bytes) to an H×W×3 uint8 RGB array, upright as the user sees it.

    `name` is only used in error messages, so archive members can be named by their member path.
    """
    if isinstance(source, bytes):
        if not source:
            raise ImageError(name, "empty file (0 bytes), expected an image")
        stream: io.BytesIO | Path = io.BytesIO(source)
    else:
        stream = Path(source)
        try:
            if stream.stat().st_size == 0:
                raise ImageError(name, "empty file (0 bytes), expected an image")
        except OSError as error:
            raise ImageError(name, f"cannot read file ({error})") from error
    try:
        with Image.open(stream) as image:
            image.load()  # decode now so that truncated files fail here, naming the file
            upright = ImageOps.exif_transpose(image)
            return _to_rgb_array(upright)
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(name, f"not a readable image ({type(error).__name__}: {error})") from error


def center_crop_resize(img: np.ndarray, resolution: int,
                       resample: Image.Resampling = Image.Resampling.LANCZOS) -> np.ndarray:
    """Square centre crop, then a resize (LANCZOS unless `resample` says) to resolution×resolution (tiny images are
    upsampled). The crop's offset is rounded half to even, as torchvision's `center_crop` (BigGAN-PyTorch's
    `CenterCropLongEdge`) rounds it.

    Accepts H×W or H×W×C uint8 (C = 1 or 3) and returns the same layout.
    """
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise ValueError(f"expected an H×W or H×W×C uint8 image with C in (1, 3), got {img.dtype} {img.shape}")
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    height, width = img.shape[:2]
    side = min(height, width)
    top, left = round((height - side) / 2), round((width - side) / 2)
    square = img[top : top + side, left : left + side]
    if side == resolution:
        return np.ascontiguousarray(square)
    squeeze = square.ndim == 3 and square.shape[2] == 1
    pil = Image.fromarray(square[:, :, 0] if squeeze else square)
    resized = np.asarray(pil.resize((resolution, resolution), resample))
    return resized[:, :, None] if squeeze else resized


def box_mean2x(images: np.ndarray) -> np.ndarray:
    """Halve the last two axes by 2×2 averaging, unrounded (float32): one step of PGGAN dataset_tool's pyramid.

    dataset_tool keeps each level as float32 and averages that, rounding only the copy it stores; with float32
    sums of multiples of 4^-k this is the exact block mean up to 8 halvings (1024 → 4 px). A uint8 input is summed
    in uint16 first (the same values, half the float memory).
    """
    if images.dtype not in (np.uint8, np.float32):
        raise ValueError(f"box_mean2x expects uint8 or float32 images, got {images.dtype}")
    if images.ndim < 2 or images.shape[-1] % 2 or images.shape[-2] % 2:
        raise ValueError(f"box_mean2x needs even height and width, got shape {images.shape}")
    wide = images.astype(np.uint16) if images.dtype == np.uint8 else images
    total = wide[..., 0::2, 0::2] + wide[..., 0::2, 1::2] + wide[..., 1::2, 0::2] + wide[..., 1::2, 1::2]
    return total.astype(np.float32) * np.float32(0.25)


def is_power_of_two(value: int) -> bool:
    """True for 1, 2, 4, …; resolutions of a pyramid must be powers of two."""
    return isinstance(value, int) and value > 0 and value & (value - 1) == 0


def build_pyramid(images: np.ndarray, min_resolution: int = 4) -> dict[int, np.ndarray]:
    """All levels from the full resolution down to `min_resolution` by repeated 2×2 box averaging of the unrounded
    previous level, each rounded half to even for storage (dataset_tool.py's pyramid, `box_mean2x`)."""
    resolution = images.shape[-1]
    if images.ndim < 2 or images.shape[-2] != resolution or not is_power_of_two(resolution):
        raise ValueError(f"build_pyramid needs square power-of-two images, got shape {images.shape}")
    if not is_power_of_two(min_resolution) or min_resolution > resolution:
        raise ValueError(f"min_resolution must be a power of two ≤ {resolution}, got {min_resolution}")
    levels = {resolution: images}
    unrounded = images
    while resolution > min_resolution:
        unrounded = box_mean2x(unrounded)
        resolution //= 2
        levels[resolution] = np.rint(unrounded).astype(np.uint8)  # means of uint8 stay within 0..255
    return levels
