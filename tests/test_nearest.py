"""Nearest training images of samples (`ganforge generate --nearest K`): copies and mirrored copies are found at
distance 0, the chunked search equals a brute-force one, and the command writes the sheet and the record."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pgan_tiny import TINY_PGAN

import ganforge
from ganforge.cli import main
from ganforge.data.store import open_dataset
from ganforge.viz.grid import to_uint8
from ganforge.viz.nearest import nearest_images


def test_copies_and_mirrored_copies_are_found_and_the_search_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    training = rng.integers(0, 256, (11, 3, 4, 6), dtype=np.uint8)
    samples = np.stack([training[5], training[7][..., ::-1], rng.integers(0, 256, (3, 4, 6), dtype=np.uint8)])
    index, distance, mirrored = nearest_images(samples, training, 3, chunk=4)  # chunks of 4, 4 and 3
    assert index[0, 0] == 5 and distance[0, 0] == 0 and not mirrored[0, 0]
    assert index[1, 0] == 7 and distance[1, 0] == 0 and mirrored[1, 0]
    flat = training.reshape(11, -1).astype(np.float64)
    for row, sample in enumerate(samples.astype(np.float64)):
        both = np.minimum(np.sqrt(((flat - sample.reshape(-1)) ** 2).sum(1)),
                          np.sqrt(((flat - sample[..., ::-1].reshape(-1)) ** 2).sum(1))) / (255 * 72 ** 0.5)
        expected = np.argsort(both, kind="stable")[:3]
        assert index[row].tolist() == expected.tolist()
        np.testing.assert_allclose(distance[row], both[expected], rtol=1e-12)  # recomputed exactly
    assert (np.diff(distance, axis=1) >= 0).all()
    with pytest.raises(ValueError, match="k = 12: expected 1 to 11"):
        nearest_images(samples, training, 12)


def test_a_near_copy_reads_its_exact_distance() -> None:
    """One value one level off in a 3×64×64 image: float32's matrix-product distance would cancel to noise."""
    training = np.random.default_rng(1).integers(0, 255, (5, 3, 64, 64), dtype=np.uint8)
    near = training[2].copy()
    near[1, 10, 20] += 1
    index, distance, _ = nearest_images(near[None], training, 1)
    assert index[0, 0] == 2 and distance[0, 0] == pytest.approx((1 / near.size) ** 0.5 / 255, rel=1e-12)


def test_generate_nearest_writes_the_sheet_and_the_record(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    ganforge.train(TINY_PGAN, run)
    out = tmp_path / "out"
    assert main(["generate", str(run), "--nearest", "2", "--n", "3", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean distance of a sample to its nearest training image" in printed and "64 training images" in printed
    assert (out / "nearest.png").is_file()
    record = json.loads((out / "nearest.json").read_text())
    assert record["resolution"] == 16 and len(record["samples"]) == 3 and len(record["samples"][0]) == 2
    samples = to_uint8(ganforge.load(run).generate(n=3, seed=0)).transpose(0, 3, 1, 2)
    training = open_dataset(TINY_PGAN["data"]).images(16)
    first = record["samples"][0][0]
    image = np.asarray(training[first["index"]], dtype=np.float64)
    sample = samples[0].astype(np.float64)[..., ::-1] if first["mirrored"] else samples[0].astype(np.float64)
    assert first["distance"] == pytest.approx(np.sqrt(((image - sample) ** 2).mean()) / 255, rel=1e-5)
    assert record["mean_nearest"] == pytest.approx(np.mean([row[0]["distance"] for row in record["samples"]]))
    assert main(["generate", str(run), "--nearest", "2", "--grid", "-o", str(out)]) == 2
    assert "--nearest writes its own sheet" in capsys.readouterr().err
