"""What a family contributes to the engine: networks, optimisers, a schedule and the phases of one step.

The engine owns the loop (data, backward, gradient averaging across ranks, optimiser steps, EMA, checkpoints,
samples, logs). A family never loops: it says, for a given step, which batch size and resolution to use and which
phases to run, and each phase computes one loss.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ganforge.data.loader import Batch
from ganforge.data.store import ImageDataset
from ganforge.distributed import DistInfo


@dataclass
class StepPlan:
    """Where the schedule stands at one step: what the loader must deliver and what logs should show."""

    batch_size: int  # global batch size, across all ranks
    resolution: int
    progress: dict[str, float] = field(default_factory=dict)  # e.g. scale, alpha: logged and shown in the bar


@dataclass
class Phase:
    """One optimisation phase of a step: a loss, the networks it trains, how often it repeats."""

    name: str
    trains: tuple[str, ...]  # names of nets whose optimisers step after this phase (optimiser key = net name)
    loss: Callable[[Batch | None], tuple[torch.Tensor, dict[str, float]]]
    repeats: int = 1
    accumulate: int = 1  # micro-batches whose gradients add up before one optimiser step
    needs_data: bool = True
    after_step: Callable[[], None] | None = None
    reuse_batch: bool = False  # True: the first repeat's real batch serves every repeat (the WGAN-GP tutorial)


class Family(ABC):
    """Base of every GAN family. Subclasses fill `nets`, `optimizers` and `ema_pairs` in `__init__`."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    mirror: bool = False  # random horizontal flips of real images

    @classmethod
    def extends_schedule(cls, saved: dict[str, Any], requested: dict[str, Any]) -> bool:
        """Whether `requested` (a `model:` mapping) only lengthens the run of `saved`: then a resume may use it.
        Families whose length is one `steps` key get this for free."""
        others = {k for k in set(saved) | set(requested) if saved.get(k) != requested.get(k)} - {"steps"}
        return not others and isinstance(saved.get("steps"), int) and requested.get("steps", 0) >= saved["steps"]

    @classmethod
    def normalise_config(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Translate a foreign config format (e.g. pytorch_GAN_zoo's JSON) into ours; ours passes through."""
        return data

    def __init__(self, config: Any, dataset: ImageDataset, device: torch.device, dist: DistInfo) -> None:
        self.config = config
        self.dataset = dataset
        self.device = device
        self.dist = dist
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.ema_pairs: dict[str, str] = {}  # EMA net name -> source net name
        self._images_drawn = 0

    def count_images(self, n: int) -> None:
        """Families that sample real images themselves (not through `needs_data` phases) report them here, so
        kimg and img/s in the logs stay true."""
        self._images_drawn += n

    def pop_images_drawn(self) -> int:
        drawn, self._images_drawn = self._images_drawn, 0
        return drawn

    # --- schedule -------------------------------------------------------------------------------------------
    @abstractmethod
    def total_steps(self) -> int:
        """Length of the run in steps (one step = every phase once)."""

    @abstractmethod
    def plan(self, step: int) -> StepPlan:
        """Batch size, resolution and schedule position at `step`; a pure function of the step."""

    def begin_step(self, step: int, plan: StepPlan) -> None:  # noqa: B027 - optional hook
        """Schedule-driven changes that happen at a step boundary (learning rates, optimiser resets)."""

    @abstractmethod
    def phases(self, step: int, plan: StepPlan) -> list[Phase]:
        """The phases to run at this step, in order."""

    def prepare_batch(self, batch: Batch, plan: StepPlan) -> Batch:
        """Turn a loader batch into what the losses expect (e.g. PGAN's fade blend of reals)."""
        return batch

    def ema_decay(self, step: int) -> float | None:
        """Decay of the EMA update after this step, or None for no update."""
        return None

    # --- sampling -------------------------------------------------------------------------------------------
    @abstractmethod
    def sample_latents(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Inputs for `generate` drawn from `generator` on the CPU (so fixed grids are device independent)."""

    @abstractmethod
    def generate(self, inputs: dict[str, torch.Tensor], net: str, plan: StepPlan) -> torch.Tensor:
        """Images in [-1, 1] from generator `net` ("G" or its EMA) at the schedule position `plan`."""

    # --- state beyond nets and optimisers ---------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable family state that a resume needs (beyond nets, optimisers and step)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what `extra_state` returned."""

    def describe(self) -> dict[str, Any]:
        """What `ganforge info` prints beyond parameter counts."""
        return {}

    # --- helpers for subclasses -----------------------------------------------------------------------------
    def add_ema(self, ema_name: str, source: str) -> None:
        """Create an EMA copy of `source` (frozen, eval mode) starting from its current weights."""
        ema = copy.deepcopy(self.nets[source]).eval().requires_grad_(False)
        self.nets[ema_name] = ema
        self.ema_pairs[ema_name] = source

    def randn(self, *shape: int) -> torch.Tensor:
        """Normal noise drawn at global-batch size on every rank, then this rank's share.

        Drawing the whole global batch everywhere (same seed on all ranks) makes a multi-process run equal a
        single-process run of the same global batch.
        """
        return self.dist.shard(torch.randn(*shape, device=self.device))

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniform noise with the same global-draw-then-shard rule as `randn`."""
        return self.dist.shard(torch.rand(*shape, device=self.device))

    def batch_sizes(self) -> dict[str, int]:
        """Every global batch size the schedule uses, by the config key that sets it (checked at startup to split
        evenly over the processes). Families with more than one override this."""
        return {"model.batch_size": self.plan(0).batch_size}

    def local_batch(self, plan: StepPlan) -> int:
        return self.dist.local_size(plan.batch_size)
