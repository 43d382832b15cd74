"""Image-set plumbing shared by the metrics: validation, quantisation to uint8, and batch streaming.

Metrics take uint8 NCHW RGB arrays/tensors, iterables of such batches (generated images arrive batch by
batch), or a zero-argument callable returning such an iterable. Float input is treated as generator output in
[-1, 1] and quantised with the official Progressive GAN conversion: round(x * 127.5 + 127.5) clipped to
[0, 255] (round half to even, as TF's `tf.round`). Single-channel images are repeated to RGB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

ImageBatch = np.ndarray | torch.Tensor
ImageSource = ImageBatch | Iterable[ImageBatch] | Callable[[], Iterable[ImageBatch]]


class ImageSetError(ValueError):
    """An image set or batch does not have the layout the metrics expect."""


class ImageSizeError(ImageSetError):
    """Images too small, or of a size a metric's pyramid cannot halve: bringing them to another size helps."""


def to_uint8_images(batch: ImageBatch, *, name: str = "images") -> torch.Tensor:
    """One batch as a CPU uint8 tensor N x 3 x H x W; floats are quantised like the official PGGAN code (clamped to
    [-1, 1]: generators without a tanh overshoot it). NaN and infinite pixels are an error, not the flat images
    clamping would make of them (an ImageSetError would read as a set too small for the metric)."""
    if isinstance(batch, np.ndarray):
        # read-only arrays (memory-mapped stores, np.load) are copied: torch cannot wrap them without a warning
        batch = torch.from_numpy(np.require(batch, requirements=["C_CONTIGUOUS", "WRITEABLE"]))
    if not isinstance(batch, torch.Tensor):
        raise ImageSetError(f"{name}: expected a numpy array or torch tensor batch, got {type(batch).__name__}")
    if batch.ndim != 4 or batch.shape[1] not in (1, 3):
        raise ImageSetError(f"{name}: expected an N x C x H x W batch with C = 1 or 3, got shape {tuple(batch.shape)}")
    batch = batch.detach().cpu()
    if batch.dtype.is_floating_point:
        if not torch.isfinite(batch).all():
            found = "NaN" if torch.isnan(batch).any() else "infinite"
            raise ValueError(f"{name}: {found} pixel values (a generator whose training diverged?); expected floats "
                             "in [-1, 1] or uint8")
        batch = (batch.float() * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
    elif batch.dtype != torch.uint8:
        raise ImageSetError(f"{name}: expected uint8 or float (in [-1, 1]) images, got dtype {batch.dtype}")
    if batch.shape[1] == 1:
        batch = batch.expand(-1, 3, -1, -1)
    return batch.contiguous()


def iter_image_batches(source: ImageSource, *, batch_size: int = 64, name: str = "images") -> Iterator[torch.Tensor]:
    """Stream a set as uint8 NCHW batches; a whole array/tensor is cut into `batch_size` slices (no copy of it)."""
    if batch_size < 1:
        raise ValueError(f"{name}: batch_size={batch_size}: expected at least 1")
    if callable(source) and not isinstance(source, (np.ndarray, torch.Tensor)):
        source = source()
    if isinstance(source, (np.ndarray, torch.Tensor)):
        if source.ndim != 4:
            raise ImageSetError(f"{name}: expected an N x C x H x W array, got shape {tuple(source.shape)}")
        for start in range(0, source.shape[0], batch_size):
            yield to_uint8_images(source[start : start + batch_size], name=name)
        return
    if not isinstance(source, Iterable):
        raise ImageSetError(f"{name}: expected an array, tensor, iterable of batches or callable, "
                            f"got {type(source).__name__}")
    for batch in source:
        yield to_uint8_images(batch, name=name)


def limit_images(batches: Iterable[torch.Tensor], n: int | None) -> Iterator[torch.Tensor]:
    """Stop a batch stream after exactly `n` images (all of them when None)."""
    if n is None:
        yield from batches
        return
    remaining = n
    for batch in batches:
        if remaining <= 0:
            return
        yield batch[:remaining]
        remaining -= batch.shape[0]


def derived_seed(seed: int, *stream: int) -> int:
    """An independent 63-bit seed for one named random stream of `seed` (a metric's set a/b or level, the classes
    `LoadedModel.latents` draws, ...)."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(2, np.uint64)[0] >> np.uint64(1))
