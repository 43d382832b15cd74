"""`evaluate` / `format_table` on the SWD and MS-SSIM fixtures, and precision/recall by hand and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path

import ganforge.metrics as gm
from ganforge.metrics.prdc import density_coverage, precision_recall


@pytest.fixture(scope="module")
def faces() -> dict[str, np.ndarray]:
    return dict(np.load(shared_path("fixtures", "metrics", "swd_inputs_64.npz")))


@pytest.mark.slow
def test_evaluate_swd_and_msssim_in_one_pass(faces):
    fake, real = faces["C"][:64], faces["B"][:64]
    batches = lambda: (fake[i : i + 24] for i in range(0, 64, 24))  # noqa: E731 (a callable producing batches)
    results = gm.evaluate(batches, real, ["swd", "msssim"], seed=4)
    assert list(results) == ["swd", "msssim"]
    assert results["swd"] == gm.swd(fake, real, seed=4)
    assert results["msssim"]["mean"] == pytest.approx(gm.msssim(fake)["mean"], rel=1e-12)
    assert results["msssim"]["pairs"] == 32
    table = gm.format_table(results).splitlines()
    assert table[0].split() == ["SWD", "x1e3", "64", "32", "16", "avg"]
    assert [float(v) for v in table[1].split()] == pytest.approx(results["swd"]["swd"] + [results["swd"]["avg"]],
                                                                 abs=5e-4)
    assert table[2].startswith("MS-SSIM") and "(32 pairs)" in table[2]


def test_evaluate_caps_images_and_quantises_floats(faces):
    as_float = torch.from_numpy(faces["A"][:40]).float() / 127.5 - 1.0
    capped = gm.evaluate(as_float, None, ["msssim"], n=20)
    assert capped["msssim"]["pairs"] == 10
    assert capped["msssim"]["mean"] == pytest.approx(gm.msssim(faces["A"][:20])["mean"], rel=1e-12)


def test_unknown_metrics_and_missing_inputs_are_clear_errors(faces):
    with pytest.raises(gm.UnknownMetricError, match=r"unknown metric\(s\) \['lpipz'\]; choose from swd, msssim"):
        gm.evaluate(faces["A"][:4], faces["B"][:4], ["swd", "lpipz"])
    with pytest.raises(ValueError, match=r"\['swd'\] need a real image set"):
        gm.evaluate(faces["A"][:4], None, ["swd"])
    with pytest.raises(ValueError, match="fake image set is empty"):
        gm.evaluate(faces["A"][:0], None, ["msssim"])


def test_precision_recall_by_hand():
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    fake = np.array([[1.5], [2.5], [20.0], [3.5]])
    # k=1 radii: real 1,1,1,1,7 -> fakes within: 1.5, 2.5, 3.5 (20 is 10 from 10 > 7) -> precision 3/4
    # fake radii: 1, 1, 16.5, 1 -> reals within: 1 (from 1.5), 2, 3, 10 (from 20, radius 16.5) -> recall 4/5
    result = precision_recall(real, fake, k=1)
    assert result == pytest.approx({"precision": 0.75, "recall": 0.8})


def test_density_and_coverage_by_hand():
    """Naeem et al. 2020 (clovaai's prdc): density = mean over fakes of the real balls strictly holding each, / k;
    coverage = share of reals whose ball strictly holds a fake; radii from the reals' k-th nearest real."""
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    fake = np.array([[1.5], [2.5], [20.0], [1.0]])
    # k=1 radii: 1, 1, 1, 1, 7. Fake 1.5 is inside the balls of 1 and 2 (0.5 < 1), 2.5 of 2 and 3, 20 of none,
    # 1.0 of 1 only (0 and 2 are exactly 1 away: not strictly inside) -> density (2 + 2 + 0 + 1) / 4 / 1 = 1.25;
    # covered reals: 1, 2, 3 (10's ball of 7 holds none) -> coverage 3/5
    assert density_coverage(real, fake, k=1) == pytest.approx({"density": 1.25, "coverage": 0.6})
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((40, 6)), rng.standard_normal((30, 6)) * 0.8
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=2)
    radii = np.sort(d_rr, axis=1)[:, 5]  # the 5th nearest other real (index 0 is the real itself)
    inside = np.linalg.norm(fake[:, None] - real[None], axis=2) < radii[None]
    result = density_coverage(real, fake, batch=7)  # k = 5, the paper's
    assert result["density"] == pytest.approx(inside.sum(1).mean() / 5)
    assert result["coverage"] == pytest.approx(inside.any(0).mean())
    with pytest.raises(ValueError, match=r"^density/coverage \(dc\) of the real set: k = 5 nearest neighbours need "
                       r"more than 5 images in the set, got 5"):
        density_coverage(real[:5], fake)


def test_precision_recall_matches_brute_force_in_blocks():
    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((60, 5)), rng.standard_normal((50, 5)) + 0.7

    def brute(manifold, probes, k):
        d_mm = np.linalg.norm(manifold[:, None] - manifold[None], axis=2)
        radii = np.sort(d_mm, axis=1)[:, k]
        d_pm = np.linalg.norm(probes[:, None] - manifold[None], axis=2)
        return float((d_pm <= radii[None]).any(1).mean())

    result = precision_recall(real, fake, k=3, batch=7)
    assert result["precision"] == pytest.approx(brute(real, fake, 3))
    assert result["recall"] == pytest.approx(brute(fake, real, 3))
    with pytest.raises(ValueError, match=r"^precision/recall \(pr\) of the real set: k = 3 nearest neighbours need"):
        precision_recall(real[:3], fake)
    with pytest.raises(ValueError, match=r"^precision/recall \(pr\) of the fake set: .* got 3 \(compare more"):
        precision_recall(real, fake[:3])
    # float32's squared distances overflow above ~1e19 and underflow below ~1e-19 (every ball inf or 0): the sets
    # are scaled together by a power of two, which leaves the balls as they are
    for scale in (1e300, 1e25, 1e-25, 1e-310):
        assert precision_recall(real * scale, fake * scale, k=3, batch=7) == result
        assert density_coverage(real * scale, fake * scale) == density_coverage(real, fake)
    tiny = torch.tensor(real, dtype=torch.float32) * 2**-130, torch.tensor(fake, dtype=torch.float32) * 2**-130
    assert precision_recall(*tiny, k=3, batch=7) == result  # a scale of 2^130 is no float32: two factors
    with pytest.raises(ValueError, match=r"^precision_recall: expected real features \[N, D\] with N >= 1 and D >= 1"):
        precision_recall(np.zeros((5, 0)), np.zeros((5, 0)))


def test_dc_reads_the_vgg16_features_pr_reads(standin_vgg16):
    """`dc` in one pass with `pr`: density and coverage of the same VGG-16 fc2 features, printed and flattened."""
    from conftest import _TinyFeatures

    from ganforge.metrics.registry import flat_outputs

    rng = np.random.default_rng(2)
    fake, real = rng.integers(0, 256, (2, 12, 3, 16, 16), dtype=np.uint8)
    results = gm.evaluate(fake, real, ["pr", "dc"])
    network = _TinyFeatures()
    with torch.no_grad():
        expected = density_coverage(network(torch.from_numpy(real)), network(torch.from_numpy(fake)))
    assert results["dc"] == pytest.approx(expected)
    assert flat_outputs(results)["dc_coverage"] == pytest.approx(expected["coverage"])
    assert gm.format_table(results).splitlines()[-1].startswith("Density ")
