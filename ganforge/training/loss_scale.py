"""Dynamic loss scaling for float16 autocast (BigGAN-PyTorch's naive fp16 collapses without it).

Our own small scaler rather than torch's GradScaler because the overflow check must happen *after* gradients are
averaged across ranks: then every rank sees the same gradients, skips the same steps and keeps the same scale. The
scale, its growth counter and the overflow flag live on the training device and change with torch's own AMP ops, so
the host does not wait for the device to decide a skip where the optimiser can take the flag (fused Adam).
"""

from __future__ import annotations

import torch


class DynamicLossScale:
    def __init__(self, initial: float = 2.0**16, growth: float = 2.0, backoff: float = 0.5,
                 growth_interval: int = 2000, device: torch.device | str = "cpu") -> None:
        self.scale_tensor = torch.full((), initial, dtype=torch.float32, device=device)
        self.growth, self.backoff, self.growth_interval = growth, backoff, growth_interval
        # good steps since the last growth or overflow (torch's growth tracker): the scale grows when it reaches
        # growth_interval
        self.good_steps = torch.zeros((), dtype=torch.int32, device=device)
        self.skipped = torch.zeros((), dtype=torch.int64, device=device)

    @property
    def value(self) -> float:
        """The current scale (a host read: for checkpoints and tests, not for the step)."""
        return self.scale_tensor.item()

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale_tensor.to(loss.dtype)

    @torch.no_grad()
    def unscale(self, params: list[torch.nn.Parameter]) -> torch.Tensor:
        """Divide the (already rank-averaged) gradients by the scale; returns the overflow flag (1.0 when any
        gradient is NaN/Inf) as a device tensor for `step` and `update`."""
        found_inf = torch.zeros((), dtype=torch.float32, device=self.scale_tensor.device)
        grads = [p.grad for p in params if p.grad is not None]
        if grads:
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, self.scale_tensor.reciprocal())
        return found_inf

    @staticmethod
    def step(optimizer: torch.optim.Optimizer, found_inf: torch.Tensor) -> bool:
        """The optimiser's step unless the gradients overflowed. An optimiser that takes the flag (fused Adam)
        skips on the device and this returns True; any other needs the flag on the host, one read per update as
        with torch's GradScaler, and this returns whether it stepped."""
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            optimizer.grad_scale, optimizer.found_inf = None, found_inf  # gradients are already unscaled
            try:
                optimizer.step()
            finally:
                del optimizer.grad_scale, optimizer.found_inf
            return True
        if found_inf.item():
            return False
        optimizer.step()
        return True

    @torch.no_grad()
    def update(self, found_inf: torch.Tensor) -> None:
        """After an update: back off (and count a skip) on overflow, grow after growth_interval good steps."""
        torch._amp_update_scale_(self.scale_tensor, self.good_steps, found_inf, self.growth, self.backoff,
                                 self.growth_interval)
        self.skipped += found_inf.to(self.skipped.dtype)

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "good_steps": int(self.good_steps.item()), "skipped": int(self.skipped.item())}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Also reads checkpoints that counted all good steps since the last overflow (the count modulo the
        growth interval is the same growth tracker)."""
        self.scale_tensor.fill_(float(state["value"]))
        self.good_steps.fill_(int(state["good_steps"]) % self.growth_interval)
        self.skipped.fill_(int(state["skipped"]))
