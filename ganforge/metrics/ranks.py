"""Metrics spread over the processes of a torchrun job: rank r generates and runs the feature networks on the global
batches r, r + W, r + 2W, ... of each image set, and rank 0 receives every batch's features (and, for SWD and
MS-SSIM, its images) in the global order, so its values are the ones a single process computes. BigGAN-PyTorch
samples and runs Inception on all GPUs (DataParallel) for its FID/IS every 2,000 iterations; a rank 0 working alone
while the other GPUs wait would make such a tick W times slower.

Everything travels as CPU tensors on the job's gloo group with the long timeout (`ganforge.distributed.host_group`),
where the features already are. A rank that fails (out of memory, an image set a metric cannot take) says so at the
next exchange and every rank raises the same kind of error there, so no rank waits in a collective for one that
left, and the engine's reactions (skip a metric at a small PGAN scale, move the metrics to the CPU) are taken by
every rank alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist

from ganforge.distributed import DistInfo, host_group
from ganforge.errors import is_out_of_memory
from ganforge.metrics._images import ImageSetError

T = TypeVar("T")

# what a rank met before an exchange: nothing wrong, or the kind of error
_FINE, _OUT_OF_MEMORY, _IMAGE_SET, _FAILED = range(4)


class RankFailedError(RuntimeError):
    """Another rank of the evaluation failed; its own error is in its output."""


@dataclass(frozen=True)
class RankShare:
    """This process's part of an evaluation spread over `world_size` ranks."""

    rank: int
    world_size: int
    group: Any = None  # a gloo group (None: the default group, which must then be gloo)

    @classmethod
    def of(cls, dist: DistInfo) -> RankShare:
        return cls(dist.rank, dist.world_size, host_group())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether global batch `index` is this rank's: r, r + W, r + 2W, ..."""
        return index % self.world_size == self.rank

    def own(self, items: Iterable[T]) -> Iterator[T]:
        """This rank's items of a sequence of global batches (or their slices)."""
        return (item for index, item in enumerate(items) if self.owns(index))

    def exchange(self, row: list[int]) -> torch.Tensor:
        """Every rank's `row` (equal lengths), as a [world_size, len] int64 table."""
        mine = torch.tensor(row, dtype=torch.int64)
        table = [torch.empty_like(mine) for _ in range(self.world_size)]
        torch_dist.all_gather(table, mine, group=self.group)
        return torch.stack(table)

    def gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's `tensor` (equal shapes and dtypes) on rank 0, in rank order; [] on the others."""
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)] if self.is_main else None
        torch_dist.gather(tensor.contiguous(), parts, dst=0, group=self.group)
        return parts or []

    def agree(self, error: BaseException | None, extra: list[int] | None = None) -> torch.Tensor:
        """An exchange at which every rank learns of any rank's error: a rank that met one raises it, the others
        raise an error of its kind (MemoryError for an out-of-memory, ImageSetError, else RankFailedError).
        Returns the table of every rank's `extra` when no rank failed."""
        table = self.exchange([error_code(error), *(extra or [])])
        failed = [rank for rank in range(self.world_size) if int(table[rank, 0]) != _FINE]
        if not failed:
            return table[:, 1:]
        if error is not None:
            raise error
        rank, code = failed[0], int(table[failed[0], 0])
        what = f"rank {rank} of {self.world_size} failed while computing the metrics (its own error is in its output)"
        if code == _OUT_OF_MEMORY:
            raise MemoryError(f"{what}: out of memory")
        if code == _IMAGE_SET:
            raise ImageSetError(what)
        raise RankFailedError(what)


def error_code(error: BaseException | None) -> int:
    if error is None:
        return _FINE
    if is_out_of_memory(error):
        return _OUT_OF_MEMORY
    return _IMAGE_SET if isinstance(error, ImageSetError) else _FAILED
