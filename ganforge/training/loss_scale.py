"""Dynamic loss scaling for float16 autocast (BigGAN-PyTorch's naive fp16 collapses without it).

Our own small scaler rather than torch's GradScaler because the overflow check must happen *after* gradients are
averaged across ranks: then every rank sees the same gradients, skips the same steps and keeps the same scale.
"""

from __future__ import annotations

import torch


class DynamicLossScale:
    def __init__(self, initial: float = 2.0**16, growth: float = 2.0, backoff: float = 0.5,
                 growth_interval: int = 2000) -> None:
        self.value = initial
        self.growth, self.backoff, self.growth_interval = growth, backoff, growth_interval
        self.good_steps = 0
        self.skipped = 0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.value

    @torch.no_grad()
    def unscale(self, params: list[torch.nn.Parameter]) -> bool:
        """Divide the (already rank-averaged) gradients by the scale; False (and a smaller scale) on overflow, in
        which case the caller skips the optimiser step."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return True
        torch._foreach_mul_(grads, 1.0 / self.value)
        finite = bool(torch.stack([g.isfinite().all() for g in grads]).all())
        if finite:
            self.good_steps += 1
            if self.good_steps % self.growth_interval == 0:
                self.value *= self.growth
        else:
            self.value *= self.backoff
            self.good_steps = 0
            self.skipped += 1
        return finite

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "good_steps": self.good_steps, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value, self.good_steps, self.skipped = float(state["value"]), int(state["good_steps"]), int(
            state["skipped"])
