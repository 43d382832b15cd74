"""Metrics spread over the processes of a torchrun job: rank r generates and runs the feature networks on the global
batches r, r + W, r + 2W, ... of each image set, and rank 0 receives every batch's features (and, for SWD and
MS-SSIM, its images) in the global order, so its values are the ones a single process computes, up to the float
rounding of the networks in another process (a GPU's kernels, a CPU's BLAS need not round alike there). BigGAN-PyTorch
samples and runs Inception on all GPUs (DataParallel) for its FID/IS every 2,000 iterations; a rank 0 working alone
while the other GPUs wait would make such a tick W times slower.

Everything travels as CPU tensors on the job's gloo group with the long timeout (`ganforge.distributed.host_group`),
where the features already are. Once the exchanges begin, a rank that fails (out of memory, an image set a metric
cannot take) says so at the next exchange and every rank raises an error of one kind there, so no rank waits in a
collective for one that left, and the engine's reactions (skip a metric at a small PGAN scale, move the metrics to
the CPU) are taken by every rank alike. (Loading the feature networks comes before: the engine loads them, with a
vote, before training starts.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist

from ganforge.distributed import DistInfo, host_group
from ganforge.errors import RankFailedError, is_out_of_memory
from ganforge.metrics._images import ImageSetError

T = TypeVar("T")

# what a rank met before an exchange: nothing wrong, or the kind of error, in the order in which one kind outranks
# another when several ranks fail at once (an error the engine cannot react to stops everything)
_FINE, _IMAGE_SET, _OUT_OF_MEMORY, _FAILED = range(4)
_MESSAGE_BYTES = 1024  # of each failed rank's error text, gathered with the failure


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
        """An exchange at which every rank learns of any rank's error and every rank raises one error of the same
        kind (MemoryError for an out-of-memory, ImageSetError, else RankFailedError; the most serious kind when
        ranks fail differently), so the engine's reaction (skip a metric, move to the CPU, stop) is every rank's.
        A rank raises its own error where it is of that kind; the others' errors name the failed ranks and their
        messages. Returns the table of every rank's `extra` when no rank failed."""
        table = self.exchange([error_code(error), *(extra or [])])
        codes = table[:, 0].tolist()
        kind = max(codes)
        if kind == _FINE:
            return table[:, 1:]
        texts = self._messages(f"{type(error).__name__}: {error}" if error is not None else "")
        said = "; ".join(f"rank {rank}: {texts[rank]}" for rank, code in enumerate(codes) if code != _FINE)
        if error is not None and error_code(error) == kind:
            raise error
        what = f"metrics over {self.world_size} ranks failed ({said})"
        if kind == _OUT_OF_MEMORY:
            raise MemoryError(f"{what}: out of memory") from error
        if kind == _IMAGE_SET:
            raise ImageSetError(what) from error
        raise RankFailedError(what) from error

    def _messages(self, text: str) -> list[str]:
        """Every rank's `text` (its first _MESSAGE_BYTES bytes of UTF-8), in rank order."""
        data = bytearray(text.encode()[:_MESSAGE_BYTES])
        mine = torch.zeros(_MESSAGE_BYTES, dtype=torch.uint8)
        if data:
            mine[: len(data)] = torch.frombuffer(data, dtype=torch.uint8)
        table = [torch.empty_like(mine) for _ in range(self.world_size)]
        torch_dist.all_gather(table, mine, group=self.group)
        return [bytes(row.tolist()).rstrip(b"\0").decode(errors="replace") for row in table]


def error_code(error: BaseException | None) -> int:
    """An error's kind as `RankShare.agree` ranks them."""
    if error is None:
        return _FINE
    if is_out_of_memory(error):
        return _OUT_OF_MEMORY
    return _IMAGE_SET if isinstance(error, ImageSetError) else _FAILED
