"""Latent interpolation: spherical (slerp) paths, which stay on the Gaussian shell where latents live."""

from __future__ import annotations

import torch


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Spherical interpolation between rows of `a` and `b` (falls back to linear for parallel vectors)."""
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    a_unit = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    b_unit = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos = (a_unit * b_unit).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    linear = sin.abs() < 1e-6
    safe_sin = torch.where(linear, torch.ones_like(sin), sin)
    spherical = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / safe_sin
    return torch.where(linear, torch.lerp(a, b, t), spherical)


def interpolation_path(latents: torch.Tensor, frames: int) -> torch.Tensor:
    """[n, d] latents → [(n − 1) · frames, d]: `frames` slerp steps from each latent to the next, ends included."""
    if latents.shape[0] < 2 or frames < 2:
        raise ValueError("an interpolation needs at least 2 latents and 2 frames")
    t = torch.linspace(0, 1, frames, dtype=latents.dtype)[:, None]
    rows = [slerp(latents[i : i + 1], latents[i + 1 : i + 2], t) for i in range(latents.shape[0] - 1)]
    return torch.cat(rows)
