"""Fréchet distance (FID) in float64 without scipy, and streaming feature statistics.

tr sqrt(S1 S2) is sum sqrt(eig(S1 S2)), and S1 S2 is similar to a symmetric PSD matrix whose eigenvalues a
symmetric solver (eigvalsh, no eigenvectors) finds: with a Cholesky factor S1 = L L^T, S1 S2 ~ L^T S2 L
(~7x less CPU than scipy's Schur-based `sqrtm` at 2048-d, real-valued, no imaginary-part fallbacks). When
neither covariance is positive definite (fewer samples than dimensions), S1 = V diag(l) V^T serves instead:
S1 S2 ~ diag(sqrt l) V^T S2 V diag(sqrt l), with V from the small matrix of an exact low-rank factorisation where
S1's rank is below D/4 (a few hundred samples), else from a symmetric eigendecomposition of S1. Tiny negative
eigenvalues (round-off of singular covariances) are clipped to 0.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


class Gaussian(Protocol):
    """A feature set summarised by its mean [D] and covariance [D, D] (`FeatureStats`, a statistics file)."""

    @property
    def mean(self) -> ArrayLike: ...

    @property
    def cov(self) -> ArrayLike: ...


def _f64(x: ArrayLike, device: torch.device | str | None = None) -> torch.Tensor:
    tensor = torch.as_tensor(x) if not isinstance(x, torch.Tensor) else x
    return tensor.to(device=device or tensor.device, dtype=torch.float64)


def feature_matrix(features: ArrayLike, name: str, *, at_least: int = 2) -> torch.Tensor:
    """`features` as a [N, D] tensor of finite values with N >= `at_least`, or a ValueError naming the metric
    (`name`) and what it got: the features' shape and type errors would otherwise surface inside torch."""
    try:
        tensor = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{name}: expected features [N, D] (an array or tensor), got {type(features).__name__} "
                         f"({err})") from None
    if tensor.ndim != 2 or tensor.shape[0] < at_least or tensor.shape[1] < 1 or tensor.is_complex() \
            or tensor.dtype == torch.bool:
        raise ValueError(f"{name}: expected real features [N, D] with N >= {at_least} and D >= 1, got {tensor.dtype} "
                         f"{tuple(tensor.shape)}")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name}: the features hold NaN or infinite values (a diverged generator?)")
    return tensor


# A covariance of n < D samples has rank n - 1. Its range is found exactly by a Gaussian sketch of more columns than
# its rank (S = Q B Q^T with Q orthonormal, B = Q^T S Q small), verified by the residual: tried at these widths up to
# D/4, where the D^2-sized products still cost far less than a D x D eigendecomposition (7 s at 2048-d on one core).
LOW_RANK_WIDTHS = (32, 128, 512)
LOW_RANK_TOLERANCE = 1e-12  # |S - Q B Q^T|_F / |S|_F: round-off of an exactly low-rank S, not a truncation


def _low_rank_factor(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(Q [D, m], B [m, m]) with sigma = Q B Q^T to round-off, or None when sigma's rank is above D/4."""
    generator = torch.Generator(device=sigma.device).manual_seed(0)  # deterministic: equal inputs, equal FID
    scale = torch.linalg.matrix_norm(sigma)
    for width in LOW_RANK_WIDTHS:
        if width > sigma.shape[0] // 4:
            break
        sketch = torch.randn(sigma.shape[0], width, dtype=sigma.dtype, device=sigma.device, generator=generator)
        basis = torch.linalg.qr(sigma @ sketch).Q
        small = basis.T @ sigma @ basis
        if torch.linalg.matrix_norm(sigma - basis @ small @ basis.T) <= LOW_RANK_TOLERANCE * scale:
            return basis, small
    return None


def _root_inner(vectors: torch.Tensor, values: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """diag(sqrt l) V^T S2 V diag(sqrt l) for S1 = V diag(l) V^T: similar to S1 S2 (up to zero eigenvalues)."""
    root = values.clamp(min=0).sqrt()
    return root[:, None] * (vectors.T @ other @ vectors) * root[None, :]


def sqrt_trace_product(sigma1: ArrayLike, sigma2: ArrayLike, device: torch.device | str | None = None) -> float:
    """tr sqrt(sigma1 @ sigma2) for symmetric PSD matrices, via one symmetric eigenvalue problem."""
    s1, s2 = _f64(sigma1, device), _f64(sigma2, device)
    inner = None
    for factored, other in ((s1, s2), (s2, s1)):  # eig(S1 S2) = eig(S2 S1): either may be factored
        lower, info = torch.linalg.cholesky_ex(factored)
        if int(info) == 0:
            inner = lower.T @ other @ lower
            break
    for factored, other in ((s1, s2), (s2, s1)) if inner is None else ():  # fewer samples than dimensions
        low_rank = _low_rank_factor(factored)
        if low_rank is not None:
            basis, small = low_rank
            values, vectors = torch.linalg.eigh((small + small.T) / 2)
            inner = _root_inner(basis @ vectors, values, other)
            break
    if inner is None:
        values, vectors = torch.linalg.eigh(s1)
        inner = _root_inner(vectors, values, s2)
    inner = (inner + inner.T) / 2  # exact symmetry for eigvalsh
    return float(torch.linalg.eigvalsh(inner).clamp(min=0).sqrt().sum())


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, *,
                     device: torch.device | str | None = None) -> float:
    """|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2), all in float64."""
    m1, m2 = _f64(mu1, device), _f64(mu2, device)
    s1, s2 = _f64(sigma1, device), _f64(sigma2, device)
    if m1.ndim != 1 or m1.shape != m2.shape or s1.shape != (m1.shape[0],) * 2 or s2.shape != s1.shape:
        raise ValueError(f"frechet_distance: expected mu [D] and sigma [D, D] of one D, got mu {tuple(m1.shape)}, "
                         f"{tuple(m2.shape)} and sigma {tuple(s1.shape)}, {tuple(s2.shape)}")
    mean_term = float(((m1 - m2) ** 2).sum())
    return mean_term + float(torch.trace(s1) + torch.trace(s2)) - 2.0 * sqrt_trace_product(s1, s2)


class FeatureStats:
    """Streaming float64 mean and unbiased (1/(N-1)) covariance of feature rows, as np.mean / np.cov give."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.count = 0
        self._sum = torch.zeros(dim, dtype=torch.float64)
        self._outer = torch.zeros(dim, dim, dtype=torch.float64)
        self._shift: torch.Tensor | None = None  # first row: centring improves the conditioning of sum x x^T

    def update(self, features: ArrayLike) -> None:
        """Add a [B, dim] batch of features."""
        x = _f64(features, "cpu")
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"FeatureStats: expected features [B, {self.dim}], got {tuple(x.shape)}")
        if self._shift is None:
            self._shift = x[0].clone()
        x = x - self._shift
        self._sum += x.sum(0)
        self._outer += x.T @ x
        self.count += x.shape[0]

    @property
    def mean(self) -> torch.Tensor:
        return self._sum / self.count + self._shift

    @property
    def cov(self) -> torch.Tensor:
        if self.count < 2:
            raise ValueError(f"FeatureStats: a covariance needs at least 2 samples, got {self.count}")
        centred_mean = self._sum / self.count
        return (self._outer - self.count * torch.outer(centred_mean, centred_mean)) / (self.count - 1)

    @classmethod
    def from_features(cls, features: ArrayLike) -> FeatureStats:
        """Statistics of a complete [N, dim] feature array."""
        stats = cls(int(features.shape[1]))
        stats.update(features)
        return stats


def _is_gaussian(stats: object) -> bool:
    return hasattr(stats, "mean") and hasattr(stats, "cov") and not isinstance(stats, (np.ndarray, torch.Tensor))


def fid(feats_a: ArrayLike | Gaussian, feats_b: ArrayLike | Gaussian, *,
        device: torch.device | str | None = None) -> float:
    """FID between two feature sets: arrays [N, D] of Inception pool features, or their mean and covariance
    (`FeatureStats`, `ReferenceStats` read from a statistics file)."""
    a, b = (stats if _is_gaussian(stats) else FeatureStats.from_features(feature_matrix(stats, "fid"))
            for stats in (feats_a, feats_b))
    return frechet_distance(a.mean, a.cov, b.mean, b.cov, device=device)
