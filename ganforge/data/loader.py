"""Batches on the training device from an in-memory / memory-mapped store.

No per-step decoding: the store already holds every resolution as uint8, so a batch is an index gather, a
conversion to [-1, 1], an optional mirror flip and an optional fade blend. Sampling is a per-epoch permutation
derived from (seed, epoch), so the loader's state is two integers and a resumed run sees exactly the batches it
would have seen. All ranks compute the same global batch and keep their interleaved share (see DistInfo.shard).

A family may ask for a sampling mode instead of the epoch order (`DataOptions`): StarGAN v2's domain-balanced
sources with reference pairs (`DomainPairSampler`), drawn from its own numpy generator whose state is part of the
loader's state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ganforge.data.store import ImageDataset
from ganforge.distributed import DistInfo

CROP_SCALE = (0.8, 1.0)  # StarGAN v2's random resized crop (torchvision's RandomResizedCrop arguments)
CROP_RATIO = (0.9, 1.1)
CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop: retry, then fall back to the whole image


@dataclass
class Batch:
    images: torch.Tensor  # float [N, C, H, W] in [-1, 1] on the device, this rank's share
    labels: torch.Tensor | None  # int64 [N, K] or None (domain-pair mode: [N, 1], the sources' domains)
    references: tuple[torch.Tensor, torch.Tensor] | None = None  # domain-pair mode: two reference images each,
    reference_labels: torch.Tensor | None = None  # of these domains (int64 [N])


def to_float_images(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NCHW → float32 in [-1, 1] on `device` (the convention at every network input)."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:  # memory-mapped / cached stores are read-only
        images = np.array(images)
    tensor = torch.as_tensor(np.ascontiguousarray(images)).to(device, non_blocking=True)
    return tensor.to(torch.float32).div_(127.5).sub_(1.0)


def half_resolution_blend(images: torch.Tensor, weight: float) -> torch.Tensor:
    """Images blended with their 2×2-box-downsampled, nearest-upsampled version by `weight` (PGAN's fade-in of a
    new resolution: the reals look like the old resolution at weight 1 and like themselves at 0)."""
    if weight <= 0:
        return images
    low = F.interpolate(F.avg_pool2d(images, 2), scale_factor=2, mode="nearest")
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

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


@dataclass
class DataOptions:
    """How a family wants its real images served; the engine's loader applies them."""

    mirror: bool = False  # random horizontal flips (drawn with the epoch order)
    domain_pairs: DomainPairSampler | None = field(default=None, repr=False)  # StarGAN v2's sampling mode


class BatchLoader:
    def __init__(self, dataset: ImageDataset, *, seed: int, dist: DistInfo, device: torch.device,
                 options: DataOptions | None = None) -> None:
        if dataset.count == 0:
            raise ValueError(f"dataset {dataset.source} holds no images")
        self.dataset = dataset
        self.seed = seed
        self.dist = dist
        self.device = device
        options = options or DataOptions()
        self.mirror = options.mirror
        self.domain_pairs = options.domain_pairs
        self.epoch = 0
        self.position = 0
        self._epoch_cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.dataset.count)
            flips = rng.random(self.dataset.count) < 0.5
            self._epoch_cache = (epoch, order, flips)
        return self._epoch_cache[1], self._epoch_cache[2]

    def _global_indices(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        indices, flips = [], []
        while count > 0:
            order, epoch_flips = self._epoch_order(self.epoch)
            take = min(count, len(order) - self.position)
            indices.append(order[self.position : self.position + take])
            flips.append(epoch_flips[self.position : self.position + take])
            self.position += take
            count -= take
            if self.position == len(order):
                self.epoch += 1
                self.position = 0
        return np.concatenate(indices), np.concatenate(flips)

    def next(self, global_batch: int, resolution: int, *, blend: float = 0.0) -> Batch:
        """This rank's share of the next global batch at `resolution`; `blend` > 0 mixes in each image's
        half-resolution version (see `half_resolution_blend`)."""
        if self.domain_pairs is not None:
            return self._next_domain_pairs(global_batch, resolution)
        indices, flips = self._global_indices(global_batch)
        indices = indices[self.dist.rank :: self.dist.world_size]
        flips = flips[self.dist.rank :: self.dist.world_size]
        images = to_float_images(self.dataset.images(resolution)[indices], self.device)
        if self.mirror and flips.any():
            flip_mask = torch.as_tensor(flips, device=self.device)
            images = torch.where(flip_mask[:, None, None, None], images.flip(3), images)
        labels = None
        if self.dataset.labels is not None:
            labels = torch.as_tensor(self.dataset.labels[indices], device=self.device)
        return Batch(images=half_resolution_blend(images, blend), labels=labels)

    def _next_domain_pairs(self, global_batch: int, resolution: int) -> Batch:
        sampler = self.domain_pairs
        if resolution != sampler.resolution:
            raise ValueError(f"domain-pair batches are {sampler.resolution} px, {resolution} px were asked for")
        x_src, y_src, x_ref, x_ref2, y_trg = (self.dist.shard(t).to(self.device) for t in sampler.draw(global_batch))
        return Batch(images=x_src, labels=y_src[:, None], references=(x_ref, x_ref2), reference_labels=y_trg)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"epoch": self.epoch, "position": self.position}
        if self.domain_pairs is not None:
            state["domain_pairs"] = self.domain_pairs.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; a state from before the domain-pair mode (no "domain_pairs") leaves the
        sampler as it is (its family restores it from the old checkpoint's family state)."""
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        if self.domain_pairs is not None and "domain_pairs" in state:
            self.domain_pairs.load_state_dict(state["domain_pairs"])
