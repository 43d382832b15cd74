"""Batches on the training device from an in-memory / memory-mapped store.

No per-step decoding: the store already holds every resolution as uint8, so a batch is an index gather, a
conversion to [-1, 1] and an optional mirror flip. Sampling is a per-epoch permutation derived from (seed, epoch),
so the loader's whole state is two integers and a resumed run sees exactly the batches it would have seen.
All ranks compute the same global batch indices and keep their interleaved share (see DistInfo.shard).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ganforge.data.store import ImageDataset
from ganforge.distributed import DistInfo


@dataclass
class Batch:
    images: torch.Tensor  # float [N, C, H, W] in [-1, 1] on the device, this rank's share
    labels: torch.Tensor | None  # int64 [N, K] or None


def to_float_images(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 NCHW → float32 in [-1, 1] on `device` (the convention at every network input)."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:  # memory-mapped / cached stores are read-only
        images = np.array(images)
    tensor = torch.as_tensor(np.ascontiguousarray(images)).to(device, non_blocking=True)
    return tensor.to(torch.float32).div_(127.5).sub_(1.0)


class BatchLoader:
    def __init__(
        self, dataset: ImageDataset, *, seed: int, dist: DistInfo, device: torch.device, mirror: bool = False
    ) -> None:
        if dataset.count == 0:
            raise ValueError(f"dataset {dataset.source} holds no images")
        self.dataset = dataset
        self.seed = seed
        self.dist = dist
        self.device = device
        self.mirror = mirror
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

    def next(self, global_batch: int, resolution: int) -> Batch:
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
        return Batch(images=images, labels=labels)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
