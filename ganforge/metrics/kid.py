"""Kernel Inception Distance, as torch-fidelity computes it (float64 here).

KID: unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets
drawn like torch-fidelity (`np.random.RandomState(seed).choice(n, size, replace=False)`, first from set a then
from set b, per subset); reported as mean and population std over subsets. stylegan2-ada uses the same
estimator (100 subsets of 1,000). IS: logits_unbiased (fc without bias), rows permuted by
RandomState(seed).permutation(N), 10 splits, exp(mean KL(p(y|x) || p(y))), mean and population std.
"""

from __future__ import annotations

import numpy as np
import torch

from ganforge.metrics.fid import ArrayLike, _f64, feature_matrix


def polynomial_mmd2(feats_a: ArrayLike, feats_b: ArrayLike) -> float:
    """Unbiased MMD^2 of two equal-size feature subsets with the KID kernel (x.y/d + 1)^3."""
    x, y = _f64(feats_a), _f64(feats_b)
    m, dim = x.shape
    k_xx = (x @ x.T / dim + 1) ** 3
    k_yy = (y @ y.T / dim + 1) ** 3
    k_xy = (x @ y.T / dim + 1) ** 3
    off_diagonal = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return float(off_diagonal - 2 * k_xy.sum() / m**2)


def kid_subset_indices(n_a: int, n_b: int, subsets: int, subset_size: int,
                       seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (indices into a, indices into b) of every subset, in torch-fidelity's draw order."""
    rng = np.random.RandomState(seed)
    return [(rng.choice(n_a, subset_size, replace=False), rng.choice(n_b, subset_size, replace=False))
            for _ in range(subsets)]


def kid(feats_a: ArrayLike, feats_b: ArrayLike, *, subsets: int = 100, subset_size: int = 1000,
        seed: int = 2020) -> tuple[float, float]:
    """KID (mean, std) over `subsets` random subsets of `subset_size` features from each set."""
    feats_a, feats_b = feature_matrix(feats_a, "KID"), feature_matrix(feats_b, "KID")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"KID: feature sizes differ ({feats_a.shape[1]} vs {feats_b.shape[1]})")
    if subsets < 1:
        raise ValueError(f"KID: subsets={subsets}: expected at least one subset")
    n_a, n_b = len(feats_a), len(feats_b)
    if subset_size > min(n_a, n_b) or subset_size < 2:
        raise ValueError(f"KID: subset_size={subset_size} needs 2 <= subset_size <= the smaller set "
                         f"({n_a} and {n_b} features); pass a smaller subset_size or more images")
    a, b = _f64(feats_a), _f64(feats_b)
    values = [polynomial_mmd2(a[torch.from_numpy(ia)], b[torch.from_numpy(ib)])
              for ia, ib in kid_subset_indices(n_a, n_b, subsets, subset_size, seed)]
    return float(np.mean(values)), float(np.std(values))
