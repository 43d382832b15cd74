"""Improved precision and recall (Kynkäänniemi et al. 2019), as stylegan2-ada's `pr50k3` and torch-fidelity's `prc`
compute them (the `pr` metric reads VGG-16 fc2 features, `ganforge.metrics.vgg16_fc2`), and density and coverage
(Naeem et al. 2020, clovaai/generative-evaluation-prdc; the `dc` metric, on the same features), which count the
real balls around each fake instead of asking whether any holds it, so outliers among the reals inflate them less.

Each set's manifold is the union of balls around its features with radius = distance to the k-th nearest other
feature of the same set (k=3). Precision = share of fake features inside the real manifold; recall = share of
real features inside the fake manifold. Distances are computed in float32 blocks of `batch` rows, so memory is
batch x N rather than N x N (stylegan2-ada uses float16 VGG16 features; here any features).
"""

from __future__ import annotations

import math

import torch

from ganforge.metrics.fid import ArrayLike, feature_matrix

SAFE_MAGNITUDE = (1e-9, 1e9)  # feature magnitudes whose float32 squared distances stay normal and finite


def _as_features(real: ArrayLike, fake: ArrayLike, device: torch.device | str | None,
                 name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets in float32; where their largest magnitude lies outside SAFE_MAGNITUDE, divided by the power of two
    nearest it: the k-NN balls are unchanged by a common power-of-two scale (it divides exactly), and float32's
    squared distances would overflow (|x| above ~1e17 at 4096 dims) or underflow (below ~1e-19) into balls of
    radius inf or 0. Features in the safe range (VGG's, any network's) are used as they are, without a copy."""
    tensors = [feature_matrix(x, name, at_least=1) for x in (real, fake)]
    largest = max(max(-float(low), float(high)) for low, high in map(torch.aminmax, tensors))
    if largest == 0 or SAFE_MAGNITUDE[0] <= largest <= SAFE_MAGNITUDE[1]:
        return tuple(t.to(device=device, dtype=torch.float32) for t in tensors)
    exponent = -math.frexp(largest)[1]  # up to ±1075 for float64: two factors, each a finite double and float
    factors = (math.ldexp(1.0, exponent // 2), math.ldexp(1.0, exponent - exponent // 2))
    scaled = []
    for tensor in tensors:
        tensor = tensor.to(device=device, dtype=torch.float64 if tensor.dtype == torch.float64 else torch.float32)
        scaled.append((tensor * factors[0] * factors[1]).float())
    return scaled[0], scaled[1]


def knn_radii(features: torch.Tensor, k: int, batch: int, what: str = "k-nearest-neighbour radii") -> torch.Tensor:
    """Distance of every feature to its k-th nearest neighbour in the same set (itself excluded); `what` names the
    metric and set in errors."""
    if k < 1:
        raise ValueError(f"{what}: k = {k}: expected at least 1")
    if features.shape[0] <= k:
        raise ValueError(f"{what}: k = {k} nearest neighbours need more than {k} images in the set, got "
                         f"{features.shape[0]} (compare more images)")
    return torch.cat([torch.cdist(features[start : start + batch], features).kthvalue(k + 1, dim=1).values
                      for start in range(0, features.shape[0], batch)])


def manifold_coverage(manifold: torch.Tensor, radii: torch.Tensor, probes: torch.Tensor, batch: int) -> float:
    """Share of `probes` within radii[j] of at least one manifold feature j (boundary included)."""
    inside = [(torch.cdist(probes[start : start + batch], manifold) <= radii[None, :]).any(dim=1)
              for start in range(0, probes.shape[0], batch)]
    return float(torch.cat(inside).float().mean())


def precision_recall(real_features: ArrayLike, fake_features: ArrayLike, *, k: int = 3, batch: int = 1024,
                     device: torch.device | str | None = None) -> dict[str, float]:
    """{"precision", "recall"} of fake features against real ones with k-NN manifolds."""
    real, fake = _as_features(real_features, fake_features, device, "precision_recall")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"precision_recall: feature sizes differ ({real.shape[1]} vs {fake.shape[1]})")
    what = "precision/recall (pr) of the {} set"
    return {"precision": manifold_coverage(real, knn_radii(real, k, batch, what.format("real")), fake, batch),
            "recall": manifold_coverage(fake, knn_radii(fake, k, batch, what.format("fake")), real, batch)}


DC_K = 5  # density and coverage's k: the paper's and StudioGAN's


def density_coverage(real_features: ArrayLike, fake_features: ArrayLike, *, k: int = DC_K, batch: int = 1024,
                     device: torch.device | str | None = None) -> dict[str, float]:
    """{"density", "coverage"}: density = the mean over fakes of the number of real balls (radius: the real's
    distance to its k-th nearest real) holding it, divided by k (1 when fakes are distributed as the reals; above 1
    where they crowd dense regions); coverage = the share of reals whose ball holds at least one fake. Inside means
    strictly closer than the radius, as the reference implementation counts."""
    real, fake = _as_features(real_features, fake_features, device, "density_coverage")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"density_coverage: feature sizes differ ({real.shape[1]} vs {fake.shape[1]})")
    radii = knn_radii(real, k, batch, "density/coverage (dc) of the real set")
    balls_holding = torch.zeros(fake.shape[0], dtype=torch.float64, device=fake.device)
    covered = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)
    for start in range(0, fake.shape[0], batch):
        inside = torch.cdist(fake[start : start + batch], real) < radii[None, :]  # [fakes, reals]
        balls_holding[start : start + batch] = inside.sum(dim=1)
        covered |= inside.any(dim=0)
    return {"density": float(balls_holding.mean() / k), "coverage": float(covered.float().mean())}
