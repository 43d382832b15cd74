"""Batches on the training device from an in-memory / memory-mapped store.

No per-step decoding: the store already holds every resolution as uint8, so a batch is an index gather, an
optional mirror flip, a conversion to [-1, 1] and an optional fade blend. Sampling is a per-epoch permutation
derived from (seed, epoch), so the loader's state is two integers and a resumed run sees exactly the batches it
would have seen. All ranks compute the same global batch and keep their share (see DistInfo.shard).

The host side of a batch (gather, flips, crops; pinned when the device is CUDA) is prepared ahead in a background
thread: after handing out a batch, the loader speculatively prepares the next ones with the same request (batch
size, resolution) from the position reached. A prepared batch is used only if the next request and the loader's
position match the ones it was made for, otherwise it is dropped and the batch made at once, so the batches, and
the state (which always describes the batches handed out), are those of a loader without prefetch. The cast to
float, normalisation and fade blend happen on the device.

A family may ask for a sampling mode instead of the epoch order (`DataOptions`): StarGAN v2's domain-balanced
sources with reference pairs (`DomainPairSampler`), drawn from its own numpy generator whose state is part of the
loader's state.
"""

from __future__ import annotations

import copy
import math
import queue
import threading
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ganforge.data.store import ImageDataset
from ganforge.distributed import DistInfo
from ganforge.nn.resample import upsample_nearest_2x

CROP_SCALE = (0.8, 1.0)  # StarGAN v2's random resized crop (torchvision's RandomResizedCrop arguments)
CROP_RATIO = (0.9, 1.1)
CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop: retry, then fall back to the whole image
PREFETCH_DEPTH = 2  # batches prepared ahead by the background thread


@dataclass
class Batch:
    images: torch.Tensor  # float [N, C, H, W] in [-1, 1] on the device, this rank's share
    labels: torch.Tensor | None  # int64 [N, K] or None (domain-pair mode: [N, 1], the sources' domains)
    references: tuple[torch.Tensor, torch.Tensor] | None = None  # domain-pair mode: two reference images each,
    reference_labels: torch.Tensor | None = None  # of these domains (int64 [N])
    whole: Batch | None = None  # set on a micro-batch: the batch it is a slice of (what a step's shared inputs key on)
    part: tuple[int, int] = (0, 1)  # (index, count): which of `whole`'s equal shares this is
    interleaved: bool = False  # how `whole` was split: see `share_of`

    def parts(self, count: int, *, interleaved: bool = False) -> list[Batch]:
        """The batch as `count` equal shares (a phase's micro-batches, split as `share_of` splits); 1: the batch
        itself."""
        if count == 1:
            return [self]
        if len(self.images) % count:
            raise ValueError(f"a batch of {len(self.images)} does not split into {count} equal micro-batches")

        def piece(tensor: torch.Tensor | None, index: int) -> torch.Tensor | None:
            return None if tensor is None else share_of(tensor, index, count, interleaved=interleaved)

        return [Batch(piece(self.images, i), piece(self.labels, i),
                      None if self.references is None else (piece(self.references[0], i), piece(self.references[1], i)),
                      piece(self.reference_labels, i), whole=self, part=(i, count), interleaved=interleaved)
                for i in range(count)]

    def share(self, tensor: torch.Tensor) -> torch.Tensor:
        """This micro-batch's share of a tensor made for the whole batch (latents drawn once per step), taken as
        the images were; the whole batch: the tensor itself."""
        return tensor if self.part == (0, 1) else share_of(tensor, *self.part, interleaved=self.interleaved)


def share_of(tensor: torch.Tensor, index: int, count: int, *, interleaved: bool) -> torch.Tensor:
    """The `index`-th of `count` equal shares of a batch: consecutive blocks, or `interleaved` (samples index,
    index + count, ...). Micro-batches split as the processes do (DistInfo.shard), so either keeps PGAN's
    minibatch-stddev groups whole: consecutive groups in blocks, the paper's strided groups interleaved."""
    size = len(tensor) // count
    return tensor[index::count] if interleaved else tensor[index * size:(index + 1) * size]


def to_float_images(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NCHW → float32 in [-1, 1] on `device` (the convention at every network input); a (pinned) tensor is
    copied without blocking and converted there."""
    if isinstance(images, np.ndarray):
        if not images.flags.writeable:  # memory-mapped / cached stores are read-only
            images = np.array(images)
        images = torch.from_numpy(np.ascontiguousarray(images))
    return images.to(device, non_blocking=True).to(torch.float32).div_(127.5).sub_(1.0)


def half_resolution_blend(images: torch.Tensor, weight: float) -> torch.Tensor:
    """Images blended with their 2×2-box-downsampled, nearest-upsampled version by `weight` (PGAN's fade-in of a
    new resolution: the reals look like the old resolution at weight 1 and like themselves at 0)."""
    if weight <= 0:
        return images
    low = upsample_nearest_2x(F.avg_pool2d(images, 2))
    return torch.lerp(images, low, weight)


class DomainPairSampler:
    """StarGAN v2's training draws, as the official loaders make them.

    Per sample: a uniform source domain, then a uniform image of it (the class-weighted sampler), and a uniform
    target domain with two uniform reference images of it; each image through the official transform (with
    p = randcrop_prob a random resized crop, scale 0.8–1, ratio 0.9–1.1, cut from `crop_size` images, the crop
    source, and resized to `resolution` bilinear with antialiasing like PIL's; then a horizontal flip with p = 0.5
    when `flip`). Everything comes from `rng`, whose state is the sampler's state.
    """

    def __init__(self, dataset: ImageDataset, members: list[np.ndarray], *, resolution: int, crop_size: int | None,
                 randcrop_prob: float, flip: bool, rng: np.random.Generator) -> None:
        self.dataset = dataset
        self.members = members
        self.resolution = resolution
        self.crop_size = crop_size or resolution
        self.randcrop_prob = randcrop_prob
        self.flip = flip
        self.rng = rng

    def _balanced(self, domains: np.ndarray) -> np.ndarray:
        """One uniformly drawn image index of each requested domain."""
        return np.array([self.members[k][self.rng.integers(len(self.members[k]))] for k in domains], dtype=np.int64)

    def crop_box(self, size: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) of a random resized crop of a size×size image (torchvision's recipe)."""
        area = size * size
        log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
        for _ in range(CROP_ATTEMPTS):
            target = area * self.rng.uniform(*CROP_SCALE)
            ratio = math.exp(self.rng.uniform(*log_ratio))
            width, height = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < width <= size and 0 < height <= size:
                top, left = self.rng.integers(size - height + 1), self.rng.integers(size - width + 1)
                return int(top), int(left), height, width
        return 0, 0, size, size

    def transform(self, indices: np.ndarray) -> torch.Tensor:
        """The official training transform of the images at `indices`, float [N, C, H, W] in [-1, 1] on the CPU."""
        cpu, size = torch.device("cpu"), self.resolution
        images, sources = self.dataset.images(size), self.dataset.images(self.crop_size)
        out = []
        for index in indices:
            if self.rng.random() < self.randcrop_prob:
                top, left, height, width = self.crop_box(self.crop_size)
                crop = to_float_images(sources[index:index + 1, :, top:top + height, left:left + width], cpu)
                image = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False,
                                      antialias=True)[0]
            else:
                image = to_float_images(images[index:index + 1], cpu)[0]
            if self.flip and self.rng.random() < 0.5:
                image = image.flip(-1)
            out.append(image)
        return torch.stack(out)

    def draw(self, count: int) -> tuple[torch.Tensor, ...]:
        """A global batch on the CPU: (sources, their domains, references, second references, target domains)."""
        num_domains = len(self.members)
        y_src = self.rng.integers(num_domains, size=count)
        y_trg = self.rng.integers(num_domains, size=count)
        src, ref, ref2 = self._balanced(y_src), self._balanced(y_trg), self._balanced(y_trg)
        return (self.transform(src), torch.as_tensor(y_src), self.transform(ref), self.transform(ref2),
                torch.as_tensor(y_trg))

    def draw_from(self, rng_state: dict[str, Any], count: int) -> tuple[tuple[torch.Tensor, ...], dict[str, Any]]:
        """`draw(count)` as it would come from generator state `rng_state`, and the state after it, leaving this
        sampler's own generator untouched (the prefetch thread's speculative draws)."""
        clone = copy.copy(self)
        clone.rng = np.random.Generator(type(self.rng.bit_generator)())
        clone.rng.bit_generator.state = rng_state
        return clone.draw(count), clone.rng.bit_generator.state

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


@dataclass
class DataOptions:
    """How a family wants its real images served; the engine's loader applies them."""

    mirror: bool = False  # random horizontal flips (drawn with the epoch order)
    domain_pairs: DomainPairSampler | None = field(default=None, repr=False)  # StarGAN v2's sampling mode


@dataclass
class _HostBatch:
    """A batch prepared on the host, and the loader position before and after it."""

    request: tuple[int, int]  # (global batch, resolution)
    cursor: Any  # (epoch, position), or the domain-pair generator state, before this batch
    next_cursor: Any  # ... and after it
    images: torch.Tensor  # uint8 (epoch order) or float (domain pairs), this rank's share
    labels: torch.Tensor | None
    references: tuple[torch.Tensor, torch.Tensor] | None = None
    reference_labels: torch.Tensor | None = None

    def pinned(self) -> _HostBatch:
        """The same batch in page-locked memory, so the copy to a CUDA device does not block."""
        def pin(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.pin_memory()
        references = None if self.references is None else (pin(self.references[0]), pin(self.references[1]))
        return _HostBatch(self.request, self.cursor, self.next_cursor, pin(self.images), pin(self.labels),
                          references, pin(self.reference_labels))


def _prefetch_worker(loader_ref: weakref.ref, jobs: queue.Queue, results: queue.Queue) -> None:
    """Prepare each job's batch: (generation, request, cursor or None = where the previous job ended). Holds the
    loader only while preparing, so an unused loader can be collected (its finalizer sends the stop job)."""
    cursor = None
    while (job := jobs.get()) is not None:
        generation, request, start = job
        cursor = start if start is not None else cursor
        loader = loader_ref()
        if loader is None or loader._generation != generation:  # dropped before it started: skip the work
            results.put((generation, None))
            continue
        try:
            prepared = loader._prepare(request, cursor)
            cursor = prepared.next_cursor
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            prepared, cursor = err, None
        del loader
        results.put((generation, prepared))


class BatchLoader:
    """The training batches; see the module docstring. `prefetch`: batches prepared ahead in a background thread
    (0: none, everything on the calling thread). `close()` stops the thread; a later `next` starts it again."""

    def __init__(self, dataset: ImageDataset, *, seed: int, dist: DistInfo, device: torch.device,
                 options: DataOptions | None = None, prefetch: int = PREFETCH_DEPTH) -> None:
        if dataset.count == 0:
            raise ValueError(f"dataset {dataset.source} holds no images")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0 batches, got {prefetch}")
        self.dataset = dataset
        self.seed = seed
        self.dist = dist
        self.device = device
        options = options or DataOptions()
        self.mirror = options.mirror
        self.domain_pairs = options.domain_pairs
        self.epoch = 0
        self.position = 0
        self.prefetch = prefetch
        self._epoch_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        self._generation = 0  # bumped to drop every batch prepared or queued so far
        self._pending: deque[tuple[int, int]] = deque()  # requests of the queued jobs, oldest first
        self._jobs: queue.Queue | None = None
        self._results: queue.Queue | None = None
        self._stop: Callable[[], None] | None = None

    # --- sampling (pure functions of a cursor, safe on the prefetch thread) ------------------------------------
    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._epoch_cache  # one read: the other thread may replace it
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.dataset.count)
            flips = rng.random(self.dataset.count) < 0.5
            cached = self._epoch_cache = (epoch, order, flips)
        return cached[1], cached[2]

    def _global_indices(self, count: int, epoch: int, position: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """The next `count` (index, flip) pairs from (epoch, position), and the (epoch, position) after them."""
        indices, flips = [], []
        while count > 0:
            order, epoch_flips = self._epoch_order(epoch)
            take = min(count, len(order) - position)
            indices.append(order[position : position + take])
            flips.append(epoch_flips[position : position + take])
            position += take
            count -= take
            if position == len(order):
                epoch, position = epoch + 1, 0
        return np.concatenate(indices), np.concatenate(flips), (epoch, position)

    def _cursor(self) -> Any:
        if self.domain_pairs is not None:
            return self.domain_pairs.rng.bit_generator.state
        return self.epoch, self.position

    def _prepare(self, request: tuple[int, int], cursor: Any) -> _HostBatch:
        """The host side of the batch `request` asks for, from `cursor`: gather and flip as uint8 (epoch order),
        or the domain-pair draws; pinned for a CUDA device."""
        global_batch, resolution = request
        if self.domain_pairs is not None:
            (x_src, y_src, x_ref, x_ref2, y_trg), after = self.domain_pairs.draw_from(cursor, global_batch)
            x_src, y_src, x_ref, x_ref2, y_trg = (self.dist.shard(t) for t in (x_src, y_src, x_ref, x_ref2, y_trg))
            prepared = _HostBatch(request, cursor, after, x_src, y_src[:, None], (x_ref, x_ref2), y_trg)
        else:
            indices, flips, after = self._global_indices(global_batch, *cursor)
            indices, flips = self.dist.shard(indices), self.dist.shard(flips)
            images = self.dataset.images(resolution)[indices]  # a fancy-index gather: a writable copy
            if self.mirror and flips.any():
                images[flips] = images[flips][..., ::-1]
            labels = None if self.dataset.labels is None else torch.as_tensor(self.dataset.labels[indices])
            prepared = _HostBatch(request, cursor, after, torch.from_numpy(np.ascontiguousarray(images)), labels)
        return prepared.pinned() if self.device.type == "cuda" else prepared

    # --- prefetch ----------------------------------------------------------------------------------------------
    def _start_thread(self) -> None:
        self._jobs, self._results = queue.Queue(), queue.Queue()
        worker = threading.Thread(target=_prefetch_worker, args=(weakref.ref(self), self._jobs, self._results),
                                  name="ganforge-prefetch", daemon=True)
        worker.start()
        jobs = self._jobs

        def stop() -> None:
            jobs.put(None)
            if worker is not threading.current_thread():
                worker.join(timeout=10)
        self._stop = weakref.finalize(self, stop)

    def _drop_prefetched(self) -> None:
        """Forget every batch prepared or queued (the position changed behind the prefetch). What the thread has
        not started is taken back and what it finished is thrown away now: left for the next batch's wait to skip,
        requests that change often piled up full batches in memory."""
        self._generation += 1
        self._pending.clear()
        for waiting in (self._jobs, self._results):
            while waiting is not None:
                try:
                    waiting.get_nowait()
                except queue.Empty:
                    break

    def _take_prefetched(self, request: tuple[int, int]) -> _HostBatch | None:
        """The oldest prepared batch if it was made for `request` at the current position, else None (and every
        prepared batch dropped)."""
        if not self._pending:
            return None
        if self._pending[0] != request:
            self._drop_prefetched()
            return None
        self._pending.popleft()
        while True:
            generation, prepared = self._results.get()
            if generation == self._generation:
                break
        if isinstance(prepared, BaseException):
            self._drop_prefetched()
            raise prepared
        if prepared is None or prepared.cursor != self._cursor():
            self._drop_prefetched()
            return None
        return prepared

    def _queue_ahead(self, request: tuple[int, int], cursor: Any) -> None:
        """Keep `prefetch` batches of `request` queued, the first one from `cursor`."""
        if self._jobs is None:
            self._start_thread()
        while len(self._pending) < self.prefetch:
            self._jobs.put((self._generation, request, None if self._pending else cursor))
            self._pending.append(request)

    def close(self) -> None:
        """Stop the prefetch thread (waiting for the batch it is preparing); idempotent."""
        self._drop_prefetched()
        if self._stop is not None:
            self._stop()
        self._jobs = self._results = self._stop = None

    # --- batches -----------------------------------------------------------------------------------------------
    def next(self, global_batch: int, resolution: int, *, blend: float = 0.0) -> Batch:
        """This rank's share of the next global batch at `resolution`; `blend` > 0 mixes in each image's
        half-resolution version (see `half_resolution_blend`)."""
        request = (global_batch, resolution)
        sampler = self.domain_pairs
        if sampler is not None and resolution != sampler.resolution:
            raise ValueError(f"domain-pair batches are {sampler.resolution} px, {resolution} px were asked for")
        prepared = self._take_prefetched(request) if self.prefetch else None
        if prepared is None:
            prepared = self._prepare(request, self._cursor())
        if self.domain_pairs is not None:
            self.domain_pairs.rng.bit_generator.state = prepared.next_cursor
        else:
            self.epoch, self.position = prepared.next_cursor
        if self.prefetch:
            self._queue_ahead(request, prepared.next_cursor)
        return self._on_device(prepared, blend)

    def _on_device(self, prepared: _HostBatch, blend: float) -> Batch:
        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(self.device, non_blocking=True)
        if prepared.references is not None:
            return Batch(images=move(prepared.images), labels=move(prepared.labels),
                         references=(move(prepared.references[0]), move(prepared.references[1])),
                         reference_labels=move(prepared.reference_labels))
        images = to_float_images(prepared.images, self.device)
        return Batch(images=half_resolution_blend(images, blend), labels=move(prepared.labels))

    def state_dict(self) -> dict[str, Any]:
        """The position after the batches handed out (never the prefetched ones)."""
        state: dict[str, Any] = {"epoch": self.epoch, "position": self.position}
        if self.domain_pairs is not None:
            state["domain_pairs"] = self.domain_pairs.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; a state from before the domain-pair mode (no "domain_pairs") leaves the
        sampler as it is (its family restores it from the old checkpoint's family state)."""
        epoch, position = state["epoch"], state["position"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, position)) or epoch < 0 \
                or not 0 <= position < self.dataset.count:
            raise ValueError(f"loader: expected an epoch >= 0 and a position in 0..{self.dataset.count - 1} (the "
                             f"images of an epoch), got epoch {epoch!r}, position {position!r}")
        self._drop_prefetched()
        self.epoch, self.position = epoch, position
        if self.domain_pairs is not None and "domain_pairs" in state:
            self.domain_pairs.load_state_dict(state["domain_pairs"])
