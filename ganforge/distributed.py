"""torchrun / torch.distributed set-up: ranks, data sharding, gradient averaging, rank-0 I/O.

Gradients are averaged with explicit all-reduces after each phase's backward (as stylegan2-ada does) rather than
through DistributedDataParallel: GAN phases train different subsets of networks, progressive networks leave
layers unused, and gradient penalties need double backward, none of which DDP's hooks handle well. The result is
the same data-parallel update DDP would make.

Decisions a rank takes alone (a signal reached it, its loss went non-finite) are voted on over a gloo group on
CPU tensors, so every rank stops or rolls back at the same step without waiting for its GPU.
"""

from __future__ import annotations

import datetime
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as torch_dist

from ganforge.errors import ConfigError

# How long the other ranks wait for rank 0 working alone (StarGAN v2's metrics, the last files) or for each other
# between long stretches of work (a metric tick's shares, downloading the metric weights). StarGAN v2's full
# evaluation protocol (tens of thousands of translations, FID and LPIPS per task) or a 50k-image FID can outlast the
# 30 minutes after which a collective gives up, on a slower GPU or on CPUs; a rank that dies still ends the run at
# once (torchrun stops the others), so only a rank stuck for this long fails the run.
MAIN_RANK_WAIT = datetime.timedelta(hours=24)

# The job's extra gloo groups, "votes" (only beside an NCCL default group; gloo's default group votes otherwise) and
# "waits" (MAIN_RANK_WAIT), and "default" when init_distributed created the default group (not a caller before it).
# Held here rather than by DistInfo, which outlives shutdown: destroy_process_group frees a group only once nothing
# references it, and a group left alive keeps its threads into the interpreter's teardown.
_groups: dict[str, Any] = {}


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    contiguous: bool = False  # shares are contiguous blocks of the global batch instead of interleaved (see shard)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def local_size(self, global_batch: int) -> int:
        if global_batch % self.world_size:
            raise ValueError(
                f"batch size {global_batch} is not divisible by the number of processes {self.world_size}"
            )
        return global_batch // self.world_size

    def shard(self, tensor: Any) -> Any:
        """This rank's share of a global-batch tensor (or array): samples rank, rank + W, rank + 2W, ...; with
        `contiguous`, the rank-th of W consecutive blocks, as DataParallel splits a batch.

        Each keeps a minibatch-stddev layout identical to a single-process run of the same global batch:
        interleaving the paper PGAN's strided groups, contiguous blocks the zoo's groups of consecutive samples.
        """
        if not self.enabled:
            return tensor
        local = self.local_size(len(tensor))  # uneven shares would still have their gradients averaged alike
        if self.contiguous:
            return tensor[self.rank * local:(self.rank + 1) * local]
        return tensor[self.rank :: self.world_size]

    def all_reduce_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Average gradients over ranks in one flat buffer per dtype."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch_dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        """`values` averaged over ranks (host side, like the votes: no device synchronisation). Every rank calls it
        at the same point with the same keys, e.g. its log means: each rank's losses are means over its equal share
        of the global batch, so their average is the global batch's mean, as one process would log it."""
        if not self.enabled:
            return values
        keys = sorted(values)
        # the ranks first agree that they hold the same keys: averaging other names, or a rank with none skipping
        # the sum, would log wrong values or hang
        signature = zlib.crc32("\n".join(keys).encode())
        vote = torch.tensor([signature, -signature], dtype=torch.int64)
        torch_dist.all_reduce(vote, op=torch_dist.ReduceOp.MAX, group=_groups.get("votes"))
        if int(vote[0]) != -int(vote[1]):
            raise RuntimeError(f"rank {self.rank}: the ranks' log values differ in their keys (this rank's: {keys})")
        if not keys:
            return values
        total = torch.tensor([values[key] for key in keys], dtype=torch.float64)
        torch_dist.all_reduce(total, group=_groups.get("votes"))
        return dict(zip(keys, (total / self.world_size).tolist(), strict=True))

    def max_over_ranks(self, value: int, *, after_long_work: bool = False) -> int:
        """The largest `value` any rank holds (a host-side vote: CPU tensor, gloo, no device synchronisation);
        `after_long_work`: on the group that waits MAIN_RANK_WAIT (a rank may come from a long download)."""
        if not self.enabled:
            return value
        vote = torch.tensor([value], dtype=torch.int64)
        group = _groups["waits"] if after_long_work else _groups.get("votes")
        torch_dist.all_reduce(vote, op=torch_dist.ReduceOp.MAX, group=group)
        return int(vote.item())

    def barrier(self) -> None:
        """Every rank waits here for rank 0 working alone (StarGAN v2's metrics, the last files), on a gloo group
        of its own: no
        device sync, and a timeout of MAIN_RANK_WAIT, where waiting in an NCCL collective would give up after 10
        minutes and in the default gloo group after 30."""
        if self.enabled:
            torch_dist.barrier(group=_groups["waits"])


def host_group() -> Any:
    """The gloo group with MAIN_RANK_WAIT's timeout, for host-side exchanges between long stretches of work (the
    metrics, spread over ranks: one rank's share of a 50k-image tick can outlast a collective's usual wait)."""
    return _groups["waits"]


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group that torchrun describes in the environment; a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing and not torch_dist.is_initialized():
        raise ConfigError(f"WORLD_SIZE={world} is set, but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                          "not: launch several processes with torchrun (it sets them all), or unset WORLD_SIZE for one")
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not torch_dist.is_initialized():
        # torch._dynamo keeps references to torch.distributed's objects from the moment it is imported (every
        # torch.optim optimizer imports it): imported after the group exists, it keeps the group alive past
        # destroy_process_group, and gloo's threads then outlive the interpreter's teardown, where one freeing a
        # collective's tensors can abort the rank (SIGABRT, a rare race) after a finished run
        import torch._dynamo  # noqa: F401

        backend = "nccl" if device_kind == "cuda" else "gloo"
        torch_dist.init_process_group(backend=backend)
        _groups["default"] = torch_dist.group.WORLD
    if torch_dist.get_backend() != "gloo":
        _groups["votes"] = torch_dist.new_group(backend="gloo")
    _groups["waits"] = torch_dist.new_group(backend="gloo", timeout=MAIN_RANK_WAIT)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def shutdown_distributed(info: DistInfo) -> None:
    """Destroy the groups init_distributed created: all of them when it created the default group, else its own
    extra groups only (a caller's torchrun script that set up the group before ganforge.train keeps it)."""
    if not (info.enabled and torch_dist.is_initialized()):
        return
    owned = _groups.pop("default", None) is not None
    extra = list(_groups.values())
    _groups.clear()
    if owned:
        torch_dist.destroy_process_group()
        return
    for group in extra:
        torch_dist.destroy_process_group(group)


def pick_device(requested: str, info: DistInfo) -> torch.device:
    """CUDA, then MPS, then CPU unless forced; under torchrun each rank takes its local GPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but no CUDA GPU is available")
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    if requested not in ("cpu", "mps") and not requested.startswith("cuda:"):
        raise ValueError(f"device: expected auto, cpu, cuda, cuda:N or mps, got {requested!r}")
    return torch.device(requested)
