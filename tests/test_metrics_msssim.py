"""MS-SSIM against the official Progressive GAN metric (fixtures in ../shared/fixtures/metrics)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import shared_path

from ganforge.metrics._images import ImageSetError
from ganforge.metrics.msssim import _gaussian_taps, msssim, msssim_pairs


@pytest.fixture(scope="module")
def pairs() -> dict[str, np.ndarray]:
    return dict(np.load(shared_path("fixtures", "metrics", "msssim_pairs.npz")))


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads(shared_path("fixtures", "metrics", "expected.json").read_text())["msssim"]["values"]


@pytest.mark.slow
@pytest.mark.parametrize("res", ["128", "64"])
def test_per_pair_values_match_official(pairs, expected, res):
    result = msssim(pairs[f"pairs{res}"])
    assert result["pairs"] == 100
    np.testing.assert_allclose(result["per_pair"], expected[res]["per_pair"], rtol=0, atol=1e-4)
    assert result["mean"] == pytest.approx(expected[res]["batch_mean"], abs=1e-5)


def test_pairs_straddling_batches_and_an_odd_tail(pairs, expected):
    images = pairs["pairs64"][:41]  # 20 pairs, the 41st image has no partner
    batches = (images[i : i + 7] for i in range(0, 41, 7))  # odd batch size: pairs cross batch boundaries
    result = msssim(batches)
    assert result["pairs"] == 20
    np.testing.assert_allclose(result["per_pair"], expected["64"]["per_pair"][:20], rtol=0, atol=1e-4)
    assert msssim(pairs["pairs64"], n=10)["pairs"] == 5


def test_identical_pair_is_one_and_float_input_is_quantised(pairs):
    image = torch.from_numpy(pairs["pairs64"][:1])
    same = msssim_pairs(image.double(), image.double())
    assert same.item() == pytest.approx(1.0, abs=1e-12)
    as_float = msssim(torch.from_numpy(pairs["pairs64"][:4]).float() / 127.5 - 1.0)
    assert as_float["per_pair"] == msssim(pairs["pairs64"][:4])["per_pair"]


def test_gaussian_window_matches_the_official_definition():
    taps = _gaussian_taps(11, 1.5)
    x = np.arange(-5, 6)
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(np.outer(taps, taps), g / g.sum(), rtol=1e-12)
    even = _gaussian_taps(8, 8 * 1.5 / 11)  # shrunk filter for 8-pixel images: centred between pixels
    np.testing.assert_allclose(even.numpy(), even.flip(0).numpy(), rtol=1e-12)


def test_bad_inputs_raise():
    with pytest.raises(ImageSetError, match="at least 2 images"):
        msssim(np.zeros((1, 3, 32, 32), np.uint8))
    with pytest.raises(ImageSetError, match="too small for 5 scales"):
        msssim(np.zeros((2, 3, 8, 8), np.uint8))


def test_smallest_size_for_five_scales_works_and_smaller_is_a_clear_error():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    result = msssim(images)
    assert result["pairs"] == 2 and 0.0 <= result["mean"] <= 1.0
    identical = msssim(images[:1].repeat(2, 1, 1, 1))
    assert identical["mean"] == pytest.approx(1.0)
    with pytest.raises(ImageSetError, match="8x8 are too small for 5 scales"):
        msssim(images[:, :, :8, :8])
