"""Sliced Wasserstein distance exactly as the official Progressive GAN metric defines it.

Per image: a Laplacian pyramid (5x5 binomial kernel, mirror boundary) from the full resolution down to
`min_resolution` (the last level is the low-pass residual); `n_patches` random 7x7x3 neighbourhoods per level
(centres uniform in [3, S-4]). Per set and level, each colour channel is normalised by its mean and std over
all descriptors and pixels; then `n_repeats` x `n_directions` random unit directions, and the mean
|sorted projections of A - sorted projections of B|. Reported x1e3 per level plus the average.

Memory: the official code keeps every float32 descriptor of every level (about 10 GB per set for 16,384
images at 128). Here a set's uint8 images are spilled to an anonymous temporary file as they stream in; the
per-channel statistics are accumulated on the way; the descriptors of one level at a time are rebuilt from the
file (only the pyramid steps that level needs, evaluated polyphase), normalised and kept as float16 (617 MB per
set at 16,384 x 128); projections are computed and sorted a chunk of directions at a time into buffers
allocated once. On CPU the independent pieces (image batches, row blocks, sort rows) run on a pool of
single-threaded workers; on GPU everything is torch.
"""

from __future__ import annotations

import ctypes
import queue
import tempfile
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ganforge.metrics._images import ImageSetError, ImageSizeError, ImageSource, derived_seed, iter_image_batches

_BINOMIAL_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)
_SET_A, _SET_B, _DIRECTIONS = 0, 1, 2


def pyramid_down(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrDown semantics: [1,4,6,4,1]/16 blur (mirror boundary) then every second pixel of each axis.

    Polyphase: the blur is evaluated only where a pixel is kept (a quarter of the work of blurring the image).
    """
    t0, t1, t2 = (tap / 16.0 for tap in _BINOMIAL_TAPS[:3])
    y = F.pad(x, (2, 2, 2, 2), mode="reflect")
    w = x.shape[-1]
    y = t0 * (y[..., 0 : w - 1 : 2] + y[..., 4 : w + 3 : 2]) + t1 * (y[..., 1:w:2] + y[..., 3 : w + 2 : 2]) \
        + t2 * y[..., 2 : w + 1 : 2]
    h = x.shape[-2]
    return t0 * (y[..., 0 : h - 1 : 2, :] + y[..., 4 : h + 3 : 2, :]) \
        + t1 * (y[..., 1:h:2, :] + y[..., 3 : h + 2 : 2, :]) + t2 * y[..., 2 : h + 1 : 2, :]


def _upsample_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    """One axis (-1 or -2) of cv2.pyrUp: zero-insertion then [1,4,6,4,1]/8 under the mirror boundary, as two phases.

    Even outputs see x[i-1], x[i], x[i+1] with taps 1, 6, 1; odd outputs x[i], x[i+1] with 4, 4. Mirroring
    the zero-inserted signal makes x[-1] = x[1] on the left and x[W] = x[W-1] on the right.
    """
    size = x.shape[dim]
    padded = torch.cat([x.narrow(dim, 1, 1), x, x.narrow(dim, size - 1, 1)], dim=dim)
    before, centre, after = (padded.narrow(dim, start, size) for start in range(3))
    even = (before + after) * 0.125 + centre * 0.75
    odd = (centre + after) * 0.5
    return torch.stack([even, odd], dim=dim).flatten(dim - 1, dim)


def pyramid_up(x: torch.Tensor) -> torch.Tensor:
    """cv2.pyrUp semantics: twice the size, zero-insertion then 4x the binomial kernel (mirror boundary)."""
    return _upsample_axis(_upsample_axis(x, -1), -2)


def laplacian_pyramid(images: torch.Tensor, n_levels: int) -> list[torch.Tensor]:
    """Float32 Laplacian pyramid on the 0..255 scale; the last level is the low-pass image."""
    levels = [images.float()]
    for _ in range(1, n_levels):
        down = pyramid_down(levels[-1])
        levels[-1] = levels[-1] - pyramid_up(down)
        levels.append(down)
    return levels


def laplacian_level(images: torch.Tensor, index: int, n_levels: int) -> torch.Tensor:
    """Level `index` of `laplacian_pyramid(images, n_levels)`, computing only what that level needs."""
    gaussian = images.float()
    for _ in range(index):
        gaussian = pyramid_down(gaussian)
    if index == n_levels - 1:
        return gaussian
    return gaussian - pyramid_up(pyramid_down(gaussian))


def pyramid_resolutions(size: int, min_resolution: int = 16) -> list[int]:
    """Resolutions of the official pyramid: size, size/2, ... while >= min_resolution."""
    resolutions = []
    res = size
    while res >= min_resolution:
        resolutions.append(res)
        if res % 2 and res // 2 >= min_resolution:
            raise ImageSizeError(f"SWD: image size {size} cannot be halved down to {min_resolution} (odd size {res})")
        res //= 2
    if not resolutions:
        raise ImageSizeError(f"SWD: images of size {size} are smaller than min_resolution={min_resolution}")
    return resolutions


@contextmanager
def single_threaded_torch() -> Iterator[None]:
    """Torch ops run on one thread each inside; the caller parallelises with its own worker threads.

    The metric's CPU work is many medium-sized independent pieces (row blocks, sort rows, image batches):
    one piece per core beats splitting each piece over all cores, and it keeps torch's spinning OpenMP
    threads from competing with the workers (several times slower on two cores).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def return_freed_memory() -> None:
    """Hand heap memory freed by worker threads back to the OS now (glibc keeps it in per-thread arenas).

    Otherwise the image-batch temporaries of the descriptor build stay resident through the projection
    phase and add to the metric's peak memory. A no-op where the C library has no malloc_trim.
    """
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def bounded_map(pool: ThreadPoolExecutor, fn: Callable[..., Any], items: Iterable[Any], ahead: int) -> Iterator[Any]:
    """`pool.map` that pulls at most `ahead` items beyond those done (Executor.map reads its input at once)."""
    pending: deque[Future] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _sliced_sum_cpu(desc_a: torch.Tensor, desc_b: torch.Tensor, flat_dirs: torch.Tensor, chunk: int,
                    workers: int, block_rows: int = 1 << 15) -> float:
    """Sum over directions of sum |sorted(A d) - sorted(B d)|, `chunk` directions at a time on `workers` threads.

    Per chunk: row blocks of both sets are projected into two [chunk, M] float32 buffers allocated once
    (fresh multi-megabyte tensors cost more in page faults than the work), then each direction's two rows are
    sorted in place by numpy (its sort is ~10x faster than torch.sort on CPU and releases the GIL) and compared.
    """
    count, dim = desc_a.shape
    outs = [torch.empty(chunk, count) for _ in range(2)]
    casts: queue.SimpleQueue[torch.Tensor] = queue.SimpleQueue()
    if desc_a.dtype != torch.float32:
        for _ in range(workers):
            casts.put(torch.empty(min(block_rows, count), dim))

    def project(task: tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]) -> None:
        desc, out, dirs_t, start = task
        rows = desc[start : start + block_rows]
        if desc.dtype == torch.float32:
            out[:, start : start + rows.shape[0]] = dirs_t @ rows.T
            return
        block = casts.get()
        try:
            out[:, start : start + rows.shape[0]] = dirs_t @ block[: rows.shape[0]].copy_(rows).T
        finally:
            casts.put(block)

    def compare(row: int) -> float:
        proj_a, proj_b = outs[0][row].numpy(), outs[1][row].numpy()
        proj_a.sort()
        proj_b.sort()
        return float(np.abs(np.subtract(proj_a, proj_b, out=proj_a), out=proj_a).sum(dtype=np.float64))

    total = 0.0
    with single_threaded_torch(), ThreadPoolExecutor(max_workers=workers) as pool:
        for first in range(0, flat_dirs.shape[1], chunk):
            dirs_t = flat_dirs[:, first : first + chunk].T.contiguous().float()
            n_dirs = dirs_t.shape[0]
            tasks = [(desc, out[:n_dirs], dirs_t, start) for desc, out in zip((desc_a, desc_b), outs, strict=True)
                     for start in range(0, count, block_rows)]
            list(pool.map(project, tasks))
            total += sum(pool.map(compare, range(n_dirs)))
    return total


def _sliced_sum_torch(desc_a: torch.Tensor, desc_b: torch.Tensor, flat_dirs: torch.Tensor, chunk: int,
                      block_rows: int = 1 << 18) -> float:
    """The same sum with torch ops only, for GPUs (where torch's sort is fast and memory is not the limit)."""
    total = 0.0
    for first in range(0, flat_dirs.shape[1], chunk):
        dirs = flat_dirs[:, first : first + chunk].to(desc_a.device, torch.float32)
        proj_a, proj_b = (torch.cat([rows.float() @ dirs for rows in desc.split(block_rows)]).sort(dim=0).values
                          for desc in (desc_a, desc_b))
        total += float(proj_a.sub_(proj_b).abs_().sum(dtype=torch.float64))
    return total


def sliced_wasserstein(desc_a: torch.Tensor, desc_b: torch.Tensor, directions: torch.Tensor, chunk: int = 16,
                       workers: int | None = None) -> float:
    """Official sliced distance: mean over repeats of mean |sorted(A d) - sorted(B d)| (not x1e3).

    `directions` is [repeats, D, n_dirs] of unit columns; `chunk` directions are projected at a time (CPU
    memory: 2 x chunk x M float32); on CPU the work runs on `workers` threads (default: torch's thread count).
    """
    if desc_a.shape != desc_b.shape or desc_a.ndim != 2:
        raise ImageSetError(f"SWD: descriptor sets must have equal shapes [M, D], got {tuple(desc_a.shape)} "
                            f"and {tuple(desc_b.shape)} (both image sets need the same number of images)")
    flat = directions.reshape(-1, directions.shape[1], directions.shape[2]).permute(1, 0, 2).reshape(
        directions.shape[1], -1)
    chunk = min(chunk, flat.shape[1])
    if desc_a.device.type == "cpu":
        total = _sliced_sum_cpu(desc_a, desc_b, flat, chunk, workers or torch.get_num_threads())
    else:
        total = _sliced_sum_torch(desc_a, desc_b, flat, chunk)
    return total / (flat.shape[1] * desc_a.shape[0])


def random_directions(dim: int, n_repeats: int, n_directions: int, seed: int) -> torch.Tensor:
    """[n_repeats, dim, n_directions] Gaussian directions normalised to unit length (float64 then float32)."""
    dirs = np.random.default_rng(seed).standard_normal((n_repeats, dim, n_directions))
    return torch.from_numpy(dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).float()


class SWDStats:
    """Streaming SWD state of one image set: feed uint8 batches with `update`, then compare two with `swd_from_stats`.

    RAM stays at one batch while streaming (images go to an anonymous temporary file in `spill_dir`); the
    per-level channel means/stds are accumulated in float64 as the official code computes them over all
    descriptors. Normalised descriptors are float32 while one level of a set needs at most
    `float32_limit_bytes`, float16 beyond (or as `descriptor_dtype` forces): float16 halves the memory of large
    sets at a relative rounding of 5e-4 per component, far below the metric's sampling noise.
    """

    def __init__(self, *, n_patches: int = 128, patch_size: int = 7, min_resolution: int = 16, seed: int = 0,
                 device: torch.device | str | None = None, descriptor_dtype: torch.dtype | None = None,
                 spill_dir: str | None = None, batch_size: int = 64, float32_limit_bytes: int = 1 << 29) -> None:
        if patch_size % 2 != 1 or patch_size < 1:
            raise ValueError(f"SWD: patch_size must be a positive odd number, got {patch_size}")
        if n_patches < 1 or batch_size < 1:
            raise ValueError(f"SWD: n_patches and batch_size must be at least 1, got {n_patches} and {batch_size}")
        self.n_patches, self.patch_size, self.min_resolution = n_patches, patch_size, min_resolution
        self.device = torch.device(device or "cpu")
        self.descriptor_dtype, self.batch_size = descriptor_dtype, batch_size
        self.float32_limit_bytes = float32_limit_bytes
        self.seed = seed
        self._rngs: list[np.random.Generator] = []
        self._file = tempfile.TemporaryFile(dir=spill_dir)  # noqa: SIM115 (lives as long as the stats; see close)
        self.count = 0
        self.size: int | None = None
        self.resolutions: list[int] = []
        self._sum: torch.Tensor | None = None  # per level and channel: sum, and centred sum of squares (Chan merge)
        self._m2: torch.Tensor | None = None

    def _check_batch(self, batch: torch.Tensor) -> None:
        _, _, h, w = batch.shape
        if h != w:
            raise ImageSetError(f"SWD: images must be square, got {h}x{w}")
        if self.size is None:
            if h < self.patch_size or h < self.min_resolution:
                raise ImageSizeError(f"SWD: images of size {h} are smaller than min_resolution={self.min_resolution}")
            self.size = h
            self.resolutions = pyramid_resolutions(h, self.min_resolution)
            if self.resolutions[-1] < self.patch_size:
                raise ImageSetError(f"SWD: level {self.resolutions[-1]} is smaller than patch_size={self.patch_size}")
            self._rngs = self._level_streams()
            self._sum = torch.zeros(len(self.resolutions), 3, dtype=torch.float64)
            self._m2 = torch.zeros(len(self.resolutions), 3, dtype=torch.float64)
        elif h != self.size:
            raise ImageSetError(f"SWD: all images of a set must have one size, got {h} after {self.size}")

    def _level_streams(self) -> list[np.random.Generator]:
        """One patch-centre stream per level. Each centre costs one 64-bit draw, so a stream gives the same
        centres however the set is cut into batches, and `descriptors` re-draws them instead of storing them
        (small long-lived allocations between the per-batch temporaries would fragment the heap)."""
        return [np.random.default_rng(s) for s in np.random.SeedSequence(self.seed).spawn(len(self.resolutions))]

    def _centres(self, rng: np.random.Generator, res: int, n_images: int) -> torch.Tensor:
        half = self.patch_size // 2
        return torch.from_numpy(rng.integers(half, res - half, (n_images * self.n_patches, 2)))

    def _gather(self, level: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """[B*n_patches, 3, p, p] neighbourhoods of `level` [B, 3, S, S] at centres [B*n_patches, 2] (y, x)."""
        size = level.shape[-1]
        half = self.patch_size // 2
        offsets = torch.arange(-half, half + 1, device=level.device)
        centres = centres.to(level.device)
        image = torch.arange(level.shape[0], device=level.device).repeat_interleave(self.n_patches)
        ys = (centres[:, 0:1] + offsets)[:, None, :, None]
        xs = (centres[:, 1:2] + offsets)[:, None, None, :]
        planes = (image[:, None] * 3 + torch.arange(3, device=level.device))[:, :, None, None]
        return level.reshape(-1)[(planes * size + ys) * size + xs]

    def update(self, batch: Any) -> None:
        """Add one batch (uint8 NCHW RGB, or floats in [-1, 1]); see `ganforge.metrics._images`."""
        for images in iter_image_batches(batch, batch_size=self.batch_size, name="SWD batch"):
            self._update_uint8(images)

    def _update_uint8(self, images: torch.Tensor) -> None:
        """Spill the batch, then merge its per-level channel moments (Chan et al.'s merge of centred squares).

        One batch at a time on torch's own threads: splitting each batch over parallel workers gave no clear gain
        on 2 cores (8% faster in one run, 20% slower in another) and kept ~70 MiB more resident at the peak.
        """
        self._check_batch(images)
        self._file.write(images.numpy().tobytes())
        centres = [self._centres(rng, res, images.shape[0]) for rng, res in zip(self._rngs, self.resolutions,
                                                                                 strict=True)]
        seen = self.count * self.n_patches * self.patch_size**2
        for index, (batch_sum, batch_m2, count) in enumerate(self._level_moments(images, centres)):
            if seen:
                delta = batch_sum / count - self._sum[index] / seen
                self._m2[index] += batch_m2 + delta**2 * seen * count / (seen + count)
            else:
                self._m2[index] += batch_m2
            self._sum[index] += batch_sum
        self.count += images.shape[0]

    def _level_moments(self, images: torch.Tensor, centres: list[torch.Tensor]) -> list[tuple[torch.Tensor, ...]]:
        """Per level: float64 channel sums and centred sums of squares of the images' descriptors, and their count."""
        moments = []
        for level, level_centres in zip(laplacian_pyramid(images.to(self.device), len(self.resolutions)), centres,
                                        strict=True):
            desc = self._gather(level, level_centres).double()
            count = desc.shape[0] * desc.shape[2] * desc.shape[3]
            batch_sum = desc.sum(dim=(0, 2, 3))
            batch_m2 = ((desc - (batch_sum / count)[None, :, None, None]) ** 2).sum(dim=(0, 2, 3))
            moments.append((batch_sum.cpu(), batch_m2.cpu(), count))
        return moments

    def channel_stats(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (population) std per colour channel of level `index` over all descriptors and pixels."""
        total = self.count * self.n_patches * self.patch_size**2
        return self._sum[index] / total, (self._m2[index] / total).sqrt()

    def _stored_images(self) -> Iterator[torch.Tensor]:
        self._file.seek(0)
        per_image = 3 * self.size * self.size
        for start in range(0, self.count, self.batch_size):
            n = min(self.batch_size, self.count - start)
            data = np.fromfile(self._file, dtype=np.uint8, count=n * per_image)
            yield torch.from_numpy(data.reshape(n, 3, self.size, self.size))

    def descriptors(self, index: int) -> torch.Tensor:
        """Normalised descriptors [count*n_patches, 3*p*p] of pyramid level `index`, rebuilt from the stored images."""
        if self.count == 0:
            raise ImageSetError("SWD: no images were added to this set")
        mean, std = (t.to(self.device, torch.float32)[None, :, None, None] for t in self.channel_stats(index))
        dim = 3 * self.patch_size**2
        rows = self.count * self.n_patches
        dtype = self.descriptor_dtype or (
            torch.float32 if rows * dim * 4 <= self.float32_limit_bytes else torch.float16)
        out = torch.empty(rows, dim, dtype=dtype, device=self.device)
        rng = self._level_streams()[index]

        def tasks() -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
            row = 0
            for images in self._stored_images():
                yield images, self._centres(rng, self.resolutions[index], images.shape[0]), row
                row += images.shape[0] * self.n_patches

        def build(task: tuple[torch.Tensor, torch.Tensor, int]) -> None:
            images, centres, row = task
            desc = self._gather(laplacian_level(images.to(self.device), index, len(self.resolutions)), centres)
            out[row : row + desc.shape[0]] = ((desc - mean) / std).reshape(desc.shape[0], dim)

        if self.device.type != "cpu":
            for task in tasks():
                build(task)
            return out
        workers = torch.get_num_threads()
        with single_threaded_torch(), ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in bounded_map(pool, build, tasks(), ahead=2 * workers):
                pass
        return_freed_memory()
        return out

    def close(self) -> None:
        """Delete the temporary image file now rather than at garbage collection."""
        self._file.close()


def swd_from_stats(stats_a: SWDStats, stats_b: SWDStats, *, n_repeats: int = 4, n_directions: int = 128,
                   seed: int = 0, chunk: int = 16, names: tuple[str, str] = ("first", "second")) -> dict[str, Any]:
    """SWD x1e3 per level of two streamed sets: {"resolutions": [...], "swd": [...], "avg": float}. A level where a
    set does not vary in a colour channel is NaN, as in the official code, with a warning naming the set (`names`)."""
    for name, value in (("n_repeats", n_repeats), ("n_directions", n_directions), ("chunk", chunk)):
        if value < 1:
            raise ValueError(f"SWD: {name}={value}: expected at least 1")
    if stats_a.count != stats_b.count:
        raise ImageSetError(f"SWD: both sets need the same number of images, got {stats_a.count} and {stats_b.count}")
    if stats_a.resolutions != stats_b.resolutions:
        raise ImageSetError(f"SWD: image sizes differ ({stats_a.size} vs {stats_b.size})")
    values = []
    dim = 3 * stats_a.patch_size**2
    for index, res in enumerate(stats_a.resolutions):
        flat = []
        for which, stats in zip(names, (stats_a, stats_b), strict=True):
            channels = [str(channel) for channel in range(3) if stats.channel_stats(index)[1][channel] == 0]
            if channels:
                flat.append(f"the {which} images (colour channel{'s' * (len(channels) > 1)} {', '.join(channels)})")
        if flat:
            warnings.warn(f"SWD at {res} px: {' and '.join(flat)} do not vary at all (flat): the official "
                          "normalisation divides by that zero deviation, so SWD is NaN there", stacklevel=2)
        directions = random_directions(dim, n_repeats, n_directions, derived_seed(seed, _DIRECTIONS, index))
        desc_a, desc_b = stats_a.descriptors(index), stats_b.descriptors(index)
        values.append(sliced_wasserstein(desc_a, desc_b, directions.to(desc_a.device), chunk=chunk) * 1e3)
        del desc_a, desc_b
    return {"resolutions": list(stats_a.resolutions), "swd": values, "avg": float(np.mean(values))}


def swd(a: ImageSource, b: ImageSource, *, n_patches: int = 128, patch_size: int = 7, n_repeats: int = 4,
        n_directions: int = 128, min_resolution: int = 16, seed: int = 0, device: torch.device | str | None = None,
        batch_size: int = 64) -> dict[str, Any]:
    """Official PGGAN SWD (x1e3 per level, plus average) between two image sets of equal size and count.

    `a` and `b` are uint8 NCHW arrays/tensors or iterables of batches; the two sets draw independent patches
    (as the official reals and fakes do), so swd(x, x) is small but not zero.
    """
    stats: list[SWDStats] = []
    try:  # the sets' temporary files are closed whatever fails
        for role, source in ((_SET_A, a), (_SET_B, b)):
            stats.append(SWDStats(n_patches=n_patches, patch_size=patch_size, min_resolution=min_resolution,
                                  seed=derived_seed(seed, role), device=device, batch_size=batch_size))
            name = "SWD set a" if role == _SET_A else "SWD set b"
            for images in iter_image_batches(source, batch_size=batch_size, name=name):
                stats[-1].update(images)
        return swd_from_stats(*stats, n_repeats=n_repeats, n_directions=n_directions, seed=seed)
    finally:
        for st in stats:
            st.close()
