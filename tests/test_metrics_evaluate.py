"""`evaluate` / `format_table` on the SWD and MS-SSIM fixtures, and precision/recall by hand and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path

import ganforge.metrics as gm
from ganforge.metrics.prdc import precision_recall


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
    with pytest.raises(ValueError, match="k=3 needs more than 3"):
        precision_recall(real[:3], fake)
