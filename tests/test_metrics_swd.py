"""SWD against the official Progressive GAN metric code (fixtures in ../shared/fixtures/metrics)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import shared_path

from ganforge.metrics._images import ImageSetError, derived_seed
from ganforge.metrics.swd import (
    SWDStats,
    _sliced_sum_torch,
    bounded_map,
    laplacian_level,
    laplacian_pyramid,
    pyramid_resolutions,
    single_threaded_torch,
    sliced_wasserstein,
    swd,
    swd_from_stats,
)


@pytest.fixture(scope="module")
def components() -> dict[str, np.ndarray]:
    return dict(np.load(shared_path("fixtures", "metrics", "swd_components.npz")))


@pytest.fixture(scope="module")
def inputs64() -> dict[str, np.ndarray]:
    return dict(np.load(shared_path("fixtures", "metrics", "swd_inputs_64.npz")))


def test_laplacian_pyramid_matches_official(components):
    levels = laplacian_pyramid(torch.from_numpy(components["pyr_in"]), 3)
    for index, level in enumerate(levels):
        np.testing.assert_allclose(level.numpy(), components[f"pyr{index}"], rtol=0, atol=1e-3)


def test_sliced_distance_matches_official(components):
    value = sliced_wasserstein(torch.from_numpy(components["desc_A"]), torch.from_numpy(components["desc_B"]),
                               torch.from_numpy(components["dirs"]))
    assert value == pytest.approx(float(components["sliced"]), rel=1e-5)


def test_sliced_distance_is_independent_of_the_direction_chunk(components):
    desc_a, desc_b = torch.from_numpy(components["desc_A"]), torch.from_numpy(components["desc_B"])
    dirs = torch.from_numpy(components["dirs"])
    assert sliced_wasserstein(desc_a, desc_b, dirs, chunk=7) == pytest.approx(
        sliced_wasserstein(desc_a, desc_b, dirs, chunk=512), rel=1e-6)


def test_sliced_distance_is_the_same_on_any_number_of_workers_and_on_the_torch_path(components):
    desc_a, desc_b = torch.from_numpy(components["desc_A"]), torch.from_numpy(components["desc_B"])
    dirs = torch.from_numpy(components["dirs"])
    one = sliced_wasserstein(desc_a, desc_b, dirs, workers=1)
    assert sliced_wasserstein(desc_a, desc_b, dirs, workers=3) == one
    flat = dirs.permute(1, 0, 2).reshape(dirs.shape[1], -1)
    torch_path = _sliced_sum_torch(desc_a, desc_b, flat, chunk=100, block_rows=1000) / (flat.shape[1] * len(desc_a))
    assert torch_path == pytest.approx(one, rel=1e-6)
    assert one == pytest.approx(float(components["sliced"]), rel=1e-5)


def test_float16_descriptors_are_projected_like_their_float32_values(components):
    desc_a, desc_b = (torch.from_numpy(components[k]).half() for k in ("desc_A", "desc_B"))
    dirs = torch.from_numpy(components["dirs"])
    assert sliced_wasserstein(desc_a, desc_b, dirs) == pytest.approx(
        sliced_wasserstein(desc_a.float(), desc_b.float(), dirs), rel=1e-6)


def test_one_laplacian_level_equals_that_level_of_the_whole_pyramid():
    images = torch.randint(0, 256, (2, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    pyramid = laplacian_pyramid(images, 3)
    for index in range(3):
        assert torch.equal(laplacian_level(images, index, 3), pyramid[index])


@pytest.mark.slow
def test_swd_is_the_same_whatever_the_number_of_cpu_workers(inputs64):
    a, b = inputs64["A"][:40, :, :32, :32], inputs64["B"][:40, :, :32, :32]
    before = torch.get_num_threads()
    results = []
    for threads in (1, 3):  # 3 workers: parallel descriptor builds, row blocks and row sorts
        torch.set_num_threads(threads)
        try:
            results.append(swd(a, b, seed=4, batch_size=16))
        finally:
            torch.set_num_threads(before)
    np.testing.assert_allclose(results[1]["swd"], results[0]["swd"], rtol=1e-9)


def test_single_threaded_torch_restores_the_thread_count():
    before = torch.get_num_threads()
    with single_threaded_torch():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_bounded_map_keeps_order_and_reads_only_ahead_items():
    from concurrent.futures import ThreadPoolExecutor

    pulled = []

    def items():
        for i in range(10):
            pulled.append(i)
            yield i

    with ThreadPoolExecutor(2) as pool:
        results = bounded_map(pool, lambda x: x * x, items(), ahead=3)
        assert next(results) == 0
        assert len(pulled) == 3
        assert list(results) == [x * x for x in range(1, 10)]


def test_resolutions_follow_the_official_levels():
    assert pyramid_resolutions(128) == [128, 64, 32, 16]
    assert pyramid_resolutions(64) == [64, 32, 16]
    assert pyramid_resolutions(48) == [48, 24]
    with pytest.raises(ImageSetError, match="odd size 33"):
        pyramid_resolutions(66)


@pytest.fixture(scope="module")
def fixture_stats(inputs64):
    """Streamed statistics of A, B, C and a second, independently sampled A (as the official 'A vs A')."""
    stats = {}
    for name, key, stream in (("A", "A", 0), ("B", "B", 1), ("C", "C", 2), ("A2", "A", 3)):
        st = SWDStats(seed=derived_seed(0, stream))
        st.update(inputs64[key])
        stats[name] = st
    yield stats
    for st in stats.values():
        st.close()


@pytest.mark.slow
@pytest.mark.parametrize("pair,other", [("A_vs_B", "B"), ("A_vs_C", "C"), ("A_vs_A", "A2")])
def test_swd_within_official_spread(fixture_stats, pair, other):
    expected = json.loads(shared_path("fixtures", "metrics", "expected.json").read_text())[pair]
    result = swd_from_stats(fixture_stats["A"], fixture_stats[other], seed=0)
    assert result["resolutions"] == [64, 32, 16]
    values = np.array(result["swd"] + [result["avg"]])
    mean, std = np.array(expected["mean"]), np.array(expected["std"])
    assert np.all(np.abs(values - mean) <= 3 * std), (values, mean, std)


@pytest.mark.slow
def test_streamed_batches_and_float_input_give_the_same_result(inputs64):
    a = inputs64["A"][:48, :, :32, :32]
    b = inputs64["B"][:48, :, :32, :32]
    whole = swd(a, b, seed=5)
    streamed = swd((a[i : i + 16] for i in range(0, 48, 16)), iter([b]), seed=5)
    as_float = swd(torch.from_numpy(a).float() / 127.5 - 1.0, b, seed=5)
    assert streamed == whole
    assert as_float == whole
    assert whole["resolutions"] == [32, 16]
    assert whole["avg"] == pytest.approx(np.mean(whole["swd"]))
    assert min(whole["swd"]) > 0


@pytest.mark.slow
def test_float16_descriptors_agree_with_float32(inputs64):
    a, b = inputs64["A"][:64], inputs64["C"][:64]
    results = []
    for limit in (1 << 40, 0):
        st_a, st_b = SWDStats(seed=1, float32_limit_bytes=limit), SWDStats(seed=2, float32_limit_bytes=limit)
        st_a.update(a)
        st_b.update(b)
        assert st_a.descriptors(0).dtype == (torch.float32 if limit else torch.float16)
        results.append(swd_from_stats(st_a, st_b)["swd"])
    np.testing.assert_allclose(results[1], results[0], rtol=2e-3)


def test_channel_stats_are_those_of_all_descriptors(inputs64):
    st = SWDStats(seed=3, n_patches=8)
    for start in range(0, 40, 16):
        st.update(inputs64["A"][start : start + 16, :, :16, :16])
    raw = st.descriptors(0).double() * st.channel_stats(0)[1][None, :].repeat_interleave(49)
    raw = raw + st.channel_stats(0)[0][None, :].repeat_interleave(49)
    per_channel = raw.reshape(-1, 3, 49).permute(1, 0, 2).reshape(3, -1)
    np.testing.assert_allclose(per_channel.mean(1).numpy(), st.channel_stats(0)[0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(per_channel.std(1, unbiased=False).numpy(), st.channel_stats(0)[1].numpy(), rtol=1e-5)
    st.close()


def test_bad_inputs_raise_clear_errors(inputs64):
    a = inputs64["A"][:8]
    with pytest.raises(ImageSetError, match="same number of images, got 8 and 6"):
        swd(a, inputs64["B"][:6])
    with pytest.raises(ImageSetError, match="square"):
        swd(a[:, :, :, :32], a[:, :, :, :32])
    with pytest.raises(ImageSetError, match="uint8 or float"):
        swd(a.astype(np.int32), a)
    with pytest.raises(ImageSetError, match="N x C x H x W"):
        swd(a[0], a[0])


def test_a_set_without_variation_gives_nan_as_the_official_code_and_says_why() -> None:
    flat = torch.full((8, 3, 32, 32), 7, dtype=torch.uint8)
    flat[:, 1] = torch.arange(32, dtype=torch.uint8)  # channel 1 varies at 32 px; its 16 px low-pass level too
    varied = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (8, 3, 32, 32), dtype=np.uint8))
    with pytest.warns(UserWarning) as caught:
        result = swd(varied, flat, min_resolution=16)
    assert np.isnan(result["swd"]).all() and np.isnan(result["avg"])
    assert [str(w.message).split(" do not")[0] for w in caught] == [
        f"SWD at {res} px: the second images (colour channels 0, 2)" for res in (32, 16)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(swd(varied, varied.flip(0), min_resolution=16)["avg"])  # no warning where all vary
