"""Fréchet distance, FID, KID and IS against torch-fidelity's values (../shared/fixtures/inception) and scipy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import shared_path
from safetensors.numpy import load_file

from ganforge.metrics.fid import (
    FeatureStats,
    _low_rank_factor,
    _root_inner,
    fid,
    frechet_distance,
    sqrt_trace_product,
)
from ganforge.metrics.inception_score import inception_score
from ganforge.metrics.kid import kid, kid_subset_indices, polynomial_mmd2


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    return load_file(shared_path("fixtures", "inception", "expected.safetensors"))


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(shared_path("fixtures", "inception", "expected.json").read_text())["metrics_A_vs_B"]


@pytest.mark.slow
def test_fid_matches_torch_fidelity(expected, reference):
    value = fid(expected["A/2048"], expected["B/2048"])
    assert value == pytest.approx(reference["torch_fidelity_functions"]["fid"], rel=1e-4)
    assert fid(expected["A/64"], expected["B/64"]) == pytest.approx(reference["fid_64"]["torch_fidelity_functions"],
                                                                    rel=2e-6)


def _scipy_frechet(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


# Full rank (Cholesky of S1), S1 rank-deficient (Cholesky of S2), S2 rank-deficient, both rank-deficient
# (fewer samples than dimensions: the eigendecomposition route), both of rank below D/4 (the low-rank route).
@pytest.mark.slow
@pytest.mark.parametrize(("n_a", "n_b"), [(1000, 1000), (100, 1000), (1000, 100), (100, 150), (20, 30)])
def test_frechet_equals_scipy_sqrtm(n_a, n_b):
    rng = np.random.default_rng(n_a + n_b)
    dim = 256
    mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    a = rng.standard_normal((n_a, dim)) @ mix
    b = rng.standard_normal((n_b, dim)) @ (mix + 0.3 * np.eye(dim)) + 0.1
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    assert np.linalg.matrix_rank(s1) == min(n_a - 1, dim)
    assert np.linalg.matrix_rank(s2) == min(n_b - 1, dim)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_scipy_frechet(mu1, s1, mu2, s2), rel=1e-6)


def test_sqrt_trace_product_takes_whichever_covariance_is_positive_definite():
    rng = np.random.default_rng(0)
    singular = np.cov(rng.standard_normal((20, 64)), rowvar=False)
    full = np.cov(rng.standard_normal((500, 64)), rowvar=False)
    assert int(torch.linalg.cholesky_ex(torch.from_numpy(singular))[1]) != 0  # the singular one cannot be factored
    expected = np.trace(scipy.linalg.sqrtm(singular @ full).real)
    assert sqrt_trace_product(singular, full) == pytest.approx(expected, rel=1e-8)
    assert sqrt_trace_product(full, singular) == pytest.approx(expected, rel=1e-8)


def test_low_rank_factor_is_exact_below_a_quarter_of_the_dimension_and_declines_above():
    rng = np.random.default_rng(1)
    low = torch.from_numpy(np.cov(rng.standard_normal((40, 512)) @ rng.standard_normal((512, 512)), rowvar=False))
    basis, small = _low_rank_factor(low)
    assert basis.shape == (512, 128)  # rank 39: the 32-column sketch misses part of the range, 128 columns hold it
    torch.testing.assert_close(basis.T @ basis, torch.eye(128, dtype=torch.float64))
    torch.testing.assert_close(basis @ small @ basis.T, low, rtol=0, atol=1e-12 * float(low.abs().max()))
    assert _low_rank_factor(torch.from_numpy(np.cov(rng.standard_normal((80, 256)), rowvar=False))) is None  # 79 > 64
    # the same FID either way: the low-rank route against the eigendecomposition of the whole matrix
    other = torch.from_numpy(np.cov(rng.standard_normal((50, 512)), rowvar=False))
    values, vectors = torch.linalg.eigh(low)
    inner = _root_inner(vectors, values, other)
    whole = float(torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum())
    assert sqrt_trace_product(low, other) == pytest.approx(whole, rel=1e-7)


def test_frechet_of_known_gaussians():
    # diagonal covariances: FID = |dmu|^2 + sum (sqrt a - sqrt b)^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    value = frechet_distance(np.zeros(3), np.diag(a), np.ones(3), np.diag(b))
    assert value == pytest.approx(3 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum(), rel=1e-12)
    with pytest.raises(ValueError, match="sigma"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))


def test_streamed_statistics_equal_numpy(expected):
    feats = expected["A/2048"].astype(np.float64)
    stats = FeatureStats(2048)
    for start in range(0, 64, 10):
        stats.update(feats[start : start + 10])
    np.testing.assert_allclose(stats.mean.numpy(), feats.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.cov.numpy(), np.cov(feats, rowvar=False), rtol=1e-9, atol=1e-12)


def test_kid_subsets_and_values_match_torch_fidelity(expected, reference):
    indices = kid_subset_indices(64, 64, 10, 32, seed=2020)
    np.testing.assert_array_equal(np.stack([i for i, _ in indices]), expected["kid/subset_idx_A"])
    np.testing.assert_array_equal(np.stack([j for _, j in indices]), expected["kid/subset_idx_B"])
    per_subset = [polynomial_mmd2(expected["A/2048"][i], expected["B/2048"][j]) for i, j in indices]
    np.testing.assert_allclose(per_subset, expected["kid/mmd2_per_subset_float64"], rtol=1e-8)
    mean, std = kid(expected["A/2048"], expected["B/2048"], subsets=10, subset_size=32, seed=2020)
    assert mean == pytest.approx(reference["torch_fidelity_functions"]["kid_mean"], abs=1e-6)
    assert std == pytest.approx(reference["torch_fidelity_functions"]["kid_std"], rel=1e-3)
    with pytest.raises(ValueError, match="subset_size=1000"):
        kid(expected["A/2048"], expected["B/2048"])


def test_inception_score_matches_torch_fidelity(expected, reference):
    np.testing.assert_array_equal(np.random.RandomState(2020).permutation(64), expected["isc/perm_A"])
    values = reference["torch_fidelity_functions"]
    for splits in (4, 10):
        mean, std = inception_score(expected["A/logits_unbiased"], splits=splits)
        assert mean == pytest.approx(values[f"isc{splits}_mean"], rel=1e-6)
        assert std == pytest.approx(values[f"isc{splits}_std"], rel=1e-6)
    assert inception_score(expected["synthetic/logits"], splits=4)[0] == pytest.approx(12.466797839383505, rel=1e-6)
    assert inception_score(expected["synthetic/logits"], splits=10)[0] == pytest.approx(5.714566389756543, rel=1e-6)


def test_inception_score_of_hand_made_logits():
    # one-hot-like predictions over k equally used classes give IS = k; identical predictions give 1
    logits = np.full((40, 4), -1e4)
    logits[np.arange(40), np.arange(40) % 4] = 0
    assert inception_score(logits, splits=2, seed=None)[0] == pytest.approx(4.0, rel=1e-9)
    assert inception_score(np.zeros((10, 5)), splits=2) == pytest.approx((1.0, 0.0))
