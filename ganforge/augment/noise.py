"""Per-sample random numbers for augmentation, drawn like the rest of a run's noise.

Every rank draws the numbers of the GLOBAL batch from the same stream (same seed everywhere) and keeps its own share
(`DistInfo.shard`), as `Family.randn`/`rand` do: a W-process run then augments each sample exactly as a one-process
run of the same global batch does, and a resume that restores the stream repeats the augmentation bit for bit.
"""

from __future__ import annotations

import torch

from ganforge.distributed import DistInfo


class GlobalNoise:
    """Uniform and normal draws for the global batch, with the rank's share taken by `shard`.

    `generator` is the stream to draw from; None draws from the device's default stream like the families do.
    """

    def __init__(self, dist: DistInfo | None = None, generator: torch.Generator | None = None) -> None:
        self.dist = dist or DistInfo()
        self.generator = generator

    def global_size(self, local_size: int) -> int:
        """Global batch size of a local batch of `local_size` samples."""
        return local_size * self.dist.world_size

    def uniform(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """U[0, 1) noise of `shape` (first dimension: the global batch), float32 on `device`."""
        return self._draw(torch.rand, shape, device)

    def normal(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """N(0, 1) noise of `shape` (first dimension: the global batch), float32 on `device`."""
        return self._draw(torch.randn, shape, device)

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's samples of a global-batch tensor."""
        return self.dist.shard(tensor)

    def _draw(self, fn, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        if self.generator is None:
            return fn(shape, device=device)
        return fn(shape, generator=self.generator, device=self.generator.device).to(device)
