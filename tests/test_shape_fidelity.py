"""benchmarks/shape_fidelity.py: its resampling, its labelled near misses, and a tiny end-to-end run with the cache."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from benchmark_scripts import load_benchmark
from pgan_tiny import TINY_PGAN

import ganforge
from ganforge.data.builtin import SHAPE_CLASSES, make_shapes


@pytest.fixture(scope="module")
def fidelity():
    return load_benchmark("shape_fidelity")


def test_resampling_without_displacement_is_the_identity_and_a_whole_pixel_shift_moves_by_one(fidelity) -> None:
    images = torch.rand(2, 3, 8, 8) * 2 - 1
    still = fidelity.resample(images, torch.zeros(2, 2, 8, 8))
    torch.testing.assert_close(still, images, atol=1e-6, rtol=0)
    right = torch.zeros(2, 2, 8, 8)
    right[:, 0] = 1.0  # sample one pixel to the right: the image moves left by one
    torch.testing.assert_close(fidelity.resample(images, right)[..., :-1], images[..., 1:], atol=1e-6, rtol=0)
    shift = fidelity.subpixel_shift(64, 8, torch.Generator().manual_seed(0))
    assert shift.abs().max() <= 0.5 and shift.std() > 0.1


def test_labelled_set_holds_the_scenes_their_rounded_corners_and_warped_copies(fidelity) -> None:
    images, targets = fidelity.labelled_set(64, 16, seed=5)
    _, labels, _ = make_shapes(64, 16, 5)
    angular = np.isin(labels[:, 0], [SHAPE_CLASSES.index("square"), SHAPE_CLASSES.index("triangle")]).sum()
    assert images.shape == (64 + angular + 32, 3, 16, 16)
    assert torch.equal(targets[:64], torch.from_numpy(labels[:, 0]))
    assert (targets[64:64 + angular] == fidelity.CLASSES.index("rounded")).all()
    assert (targets[64 + angular:] == fidelity.CLASSES.index("warped")).all()
    assert images.min() >= -1 and images.max() <= 1
    again, _ = fidelity.labelled_set(64, 16, seed=5)
    assert torch.equal(images, again)


def test_a_tiny_run_is_scored_and_the_classifier_is_trained_once(fidelity, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    ganforge.train(copy.deepcopy(TINY_PGAN), run)
    argv = ["--train-count", "64", "--epochs", "1", "--samples", "32", "--resolution", "16",
            "--cache", str(tmp_path / "cache"), "--json", str(tmp_path / "out.json"), str(run)]
    report = fidelity.main(argv)
    assert "classifier epoch 1/1" in capsys.readouterr().err
    assert list(report["shares"]) == ["real (builtin:shapes)", str(run)]
    for shares in report["shares"].values():
        assert sum(shares[name] for name in fidelity.CLASSES) == pytest.approx(1.0)
        assert shares["clean"] == pytest.approx(sum(shares[name] for name in SHAPE_CLASSES))
        assert shares["angular"] == pytest.approx(shares["square"] + shares["triangle"])
    assert fidelity.main(argv)["shares"] == report["shares"]  # the cached classifier: same net, same figures
    assert "classifier epoch" not in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse's one-line error: a run of 0 epochs would leave no classifier
        fidelity.main([*argv[:2], "--epochs", "0", *argv[4:]])
    assert "--epochs must be at least 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="samples are 16 px, the classifier 32 px"):
        fidelity.main([*argv[:6], "--resolution", "32", *argv[8:]])
