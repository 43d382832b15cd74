"""The augmentation stage every image D sees: the `Augmenter` the engine calls and ADA's controller."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist

from ganforge.augment.ada import AdaPipeline
from ganforge.augment.config import (
    DEFAULT_INTERVAL,
    DEFAULT_PIPELINE,
    DEFAULT_POLICY,
    DEFAULT_SPEED_KIMG,
    DEFAULT_TARGET,
    AugmentConfig,
)
from ganforge.augment.diffaugment import DiffAugment
from ganforge.augment.noise import GlobalNoise
from ganforge.distributed import DistInfo


class AdaController:
    """ADA's overfitting heuristic: every `interval` steps, p moves by sign(r_t - target) * images / (speed_kimg *
    1000), where r_t is the mean sign of D's outputs on the real images of those steps and `images` the real images
    the steps drew (batch_size * interval in stylegan2-ada, whose step draws one batch; a step of several D updates
    draws more). p is floored at 0 and, as there, not capped at 1 (the gates treat p >= 1 as always). p is kept in
    float32 as the official buffer is, so runs match it update for update.
    """

    def __init__(self, target: float, speed_kimg: float, interval: int, p: float = 0.0) -> None:
        self.target = target
        self.speed_kimg = speed_kimg
        self.interval = interval
        self.p = p
        self.sign_sum = 0.0  # over the steps since the last adjustment, all ranks
        self.sign_count = 0.0
        self.images = 0
        self.steps = 0

    def end_step(self, sign_sum: float, sign_count: float, real_images: int) -> None:
        """Add one step's signs and real images (summed over all ranks); adjust p every `interval` steps."""
        self.sign_sum += sign_sum
        self.sign_count += sign_count
        self.images += real_images
        self.steps += 1
        if self.steps < self.interval:
            return
        if self.sign_count > 0:  # no D evaluation of reals in the interval: nothing to steer by
            r_t = self.sign_sum / self.sign_count
            adjust = np.sign(r_t - self.target) * self.images / (self.speed_kimg * 1000)
            self.p = float(max(np.float32(self.p) + np.float32(adjust), np.float32(0)))
        self.sign_sum, self.sign_count, self.images, self.steps = 0.0, 0.0, 0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "sign_sum": self.sign_sum, "sign_count": self.sign_count, "images": self.images,
                "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p = float(state["p"])
        self.sign_sum = float(state["sign_sum"])
        self.sign_count = float(state["sign_count"])
        self.images = int(state["images"])
        self.steps = int(state["steps"])


class Augmenter:
    """What the engine calls: `augmenter(images)` on every image batch D sees (reals and fakes, and the inputs of
    gradient penalties), `update(real_logits)` after each D evaluation of reals, `end_step(real_images)` once per
    step on every rank, and `state_dict()` / `load_state_dict()` with the checkpoint.

    Random numbers come from `generator` (None: the device's default stream, like the families' noise), drawn for the
    global batch on every rank and then sharded (see GlobalNoise).
    """

    def __init__(self, config: AugmentConfig, dist: DistInfo | None = None,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.dist = dist or DistInfo()
        self.device = torch.device(device)  # where the sign statistic lives (NCCL sums device tensors only)
        self.noise = GlobalNoise(self.dist, generator)
        self.controller: AdaController | None = None
        self._fixed_p: float | None = None
        self._signs: torch.Tensor | None = None  # this rank's [sum, count] of signs since p was last adjusted
        if config.kind == "diffaugment":
            policies = tuple(name.strip() for name in (config.policy or DEFAULT_POLICY).split(","))
            self._diffaugment = DiffAugment(policies, self.noise)
        elif config.kind == "ada":
            self._ada = AdaPipeline(config.pipeline or DEFAULT_PIPELINE, self.noise)
            if config.adaptive:
                self.controller = AdaController(
                    config.target if config.target is not None else DEFAULT_TARGET,
                    config.speed_kimg if config.speed_kimg is not None else DEFAULT_SPEED_KIMG,
                    config.interval if config.interval is not None else DEFAULT_INTERVAL,
                )
            else:
                self._fixed_p = config.p

    @property
    def enabled(self) -> bool:
        return self.config.kind != "none"

    @property
    def p(self) -> float | None:
        """ADA's current probability (None for the other kinds)."""
        if self.controller is not None:
            return self.controller.p
        return self._fixed_p

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The augmented batch (same shape and dtype); differentiable with respect to `images`."""
        if self.config.kind == "diffaugment":
            return self._diffaugment(images)
        if self.config.kind == "ada" and self.p > 0:  # p = 0: every gate is shut, so the images pass unchanged
            # float32 as stylegan2-ada runs it: under the engine's bf16/fp16 autocast the transform matrices, the
            # warp's sampling grid and the wavelet filters would be rounded (pixel copies off by up to 0.5)
            with torch.autocast(images.device.type, enabled=False):
                return self._ada(images.float(), self.p).to(images.dtype)
        return images

    def update(self, real_logits: torch.Tensor) -> None:
        """Collect the signs of D's outputs on (augmented) reals for ADA's controller; a no-op otherwise."""
        if self.controller is None:
            return
        signs = real_logits.detach().float().sign()
        step = torch.stack([signs.sum(), torch.tensor(float(signs.numel()), device=signs.device)])
        self._signs = step if self._signs is None else self._signs + step

    def end_step(self, real_images: int) -> None:
        """Close a training step that drew `real_images` reals, all ranks together (call on every rank). The signs
        stay on the device until the controller adjusts p, every `interval` steps (when stylegan2-ada reads its
        statistic too): only then are they summed across ranks and read, so ADA adds no host sync to other steps."""
        if self.controller is None:
            return
        if self.controller.steps + 1 < self.controller.interval:
            self.controller.end_step(0.0, 0.0, real_images)
            return
        self.controller.end_step(*self._collect_signs(), real_images)

    def flush(self) -> None:
        """Hand the signs gathered since the last adjustment to the controller, summed over the ranks (call on
        every rank before a checkpoint, so that rank 0's state holds them all)."""
        if self.controller is not None:
            sign_sum, sign_count = self._collect_signs()
            self.controller.sign_sum += sign_sum
            self.controller.sign_count += sign_count

    def _collect_signs(self) -> tuple[float, float]:
        signs = self._signs if self._signs is not None else torch.zeros(2, device=self.device)
        if self.dist.enabled:
            signs = signs.clone()
            torch_dist.all_reduce(signs)
        self._signs = None
        sign_sum, sign_count = signs.tolist()
        return sign_sum, sign_count

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state a resume needs (the controller's p and accumulators)."""
        return {"ada": self.controller.state_dict()} if self.controller is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._signs = None  # a rollback may come mid-step: that step's signs are not the restored run's
        if self.controller is not None:
            if "ada" not in state:
                raise ValueError("the checkpoint has no ADA controller state (was it trained with augment.kind ada?)")
            self.controller.load_state_dict(state["ada"])

    def describe(self) -> dict[str, Any]:
        """What `ganforge info` and the logs show."""
        kind = self.config.kind
        if kind == "diffaugment":
            return {"kind": kind, "policy": ",".join(self._diffaugment.policies)}
        if kind == "ada":
            info: dict[str, Any] = {"kind": kind, "pipeline": self.config.pipeline or DEFAULT_PIPELINE, "p": self.p}
            if self.controller is not None:
                info.update(target=self.controller.target, speed_kimg=self.controller.speed_kimg,
                            interval=self.controller.interval)
            return info
        return {"kind": kind}
