"""Inception Score, as torch-fidelity computes it (float64 here).

logits_unbiased (the Inception fc without bias), rows permuted by RandomState(seed).permutation(N), 10 splits,
exp(mean KL(p(y|x) || p(y))), reported as mean and population std over the splits.
"""

from __future__ import annotations

import numpy as np
import torch

from ganforge.metrics.fid import ArrayLike, _f64


def inception_score(logits: ArrayLike, *, splits: int = 10, seed: int | None = 2020) -> tuple[float, float]:
    """IS (mean, std) from Inception `logits_unbiased` [N, classes]; rows shuffled by `seed` (None: kept in order)."""
    x = _f64(logits, "cpu")
    n = x.shape[0]
    if x.ndim != 2 or n < splits:
        raise ValueError(f"inception_score: expected logits [N >= splits={splits}, classes], got {tuple(x.shape)}")
    if seed is not None:
        x = x[torch.from_numpy(np.random.RandomState(seed).permutation(n))]
    scores = []
    for i in range(splits):
        part = x[i * n // splits : (i + 1) * n // splits]
        log_p = torch.log_softmax(part, dim=1)
        p = log_p.exp()
        log_marginal = p.mean(0).log()
        kl = (p * (log_p - log_marginal[None, :])).sum(1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))
