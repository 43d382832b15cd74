"""benchmarks/oracle_vs_reference.py: its noise recording and replay, the zoo's real-image blend, and (where the
official checkouts are at hand) the check itself: ganforge's steps are the zoo's and StarGAN v2's own."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "oracle_vs_reference.py"


@pytest.fixture(scope="module")
def oracle():
    return load_benchmark("oracle_vs_reference")


def test_noise_is_recorded_in_order_and_torch_is_restored(oracle) -> None:
    randn, rand = torch.randn, torch.rand
    torch.manual_seed(0)
    with oracle.recorded_noise() as drawn:
        a = torch.randn(2, 3)
        b = torch.rand(4, 1)
        a.add_(1)  # a caller changing its tensor in place does not change the record
    assert torch.randn is randn and torch.rand is rand
    torch.manual_seed(0)
    assert torch.equal(drawn[0], torch.randn(2, 3)) and torch.equal(drawn[1], torch.rand(4, 1))
    assert torch.equal(b, drawn[1]) and len(drawn) == 2


def test_biases_a_normalisation_cancels_are_found_and_reported_apart(oracle) -> None:
    """A bias right before batch norm (on batch statistics) or instance norm cannot change the output, so its
    float64 gradient is rounding noise and the weight check leaves it out, reporting it apart."""
    from ganforge.nn.spectral_norm import SNConv2d

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              SNConv2d(4, 4, 1), torch.nn.InstanceNorm2d(4), torch.nn.Conv2d(4, 2, 1)).double()
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)  # the check runs in float64: cancelled means rounding only
    before = copy.deepcopy(net.state_dict())
    assert oracle.cancelled_biases(net, lambda n: n(x)) == {"0.bias", "3.bias"}  # not 1.bias (BN's shift), 5.bias
    assert all(torch.equal(value, net.state_dict()[key]) for key, value in before.items())  # probed on a copy
    theirs = {"G": {"0.bias": torch.ones(4), "0.weight": torch.ones(4)}}
    ours = {"G": {"0.bias": torch.full((4,), 3.0), "0.weight": torch.full((4,), 1.0 + 1e-12)}}
    check = oracle.weight_check(ours, theirs, {"G": {"0.bias"}})
    assert check["weights"]["G"] == pytest.approx(1e-12) and check["cancelled"] == {"G": 2.0}
    assert check["cancelled_count"] == {"G": 1}


def test_replayed_noise_is_reshaped_and_every_mismatch_is_an_error(oracle) -> None:
    family = SimpleNamespace()
    trainer = SimpleNamespace(family=family, device=torch.device("cpu"))
    drawn = [torch.arange(6.0).reshape(2, 3), torch.arange(4.0).reshape(4, 1)]
    oracle.replay_noise(trainer, drawn)
    assert torch.equal(family.randn(2, 3), torch.arange(6.0).reshape(2, 3))
    assert family.rand(4, 1, 1, 1).shape == (4, 1, 1, 1)
    with pytest.raises(RuntimeError, match=r"shape \(5,\) that the reference step never drew"):
        family.randn(5)
    oracle.replay_noise(trainer, [torch.zeros(3)])
    with pytest.raises(RuntimeError, match=r"shape \(2, 2\), the reference \(3,\)"):
        family.rand(2, 2)


def test_the_zoo_blend_averages_2x2_blocks_and_repeats_them(oracle) -> None:
    real = torch.arange(16.0).reshape(1, 1, 4, 4)
    low = torch.tensor([[2.5, 4.5], [10.5, 12.5]]).repeat_interleave(2, 0).repeat_interleave(2, 1)
    torch.testing.assert_close(oracle.zoo_blend(real, 0.25)[0, 0], 0.25 * low + 0.75 * real[0, 0])
    assert oracle.zoo_blend(real, 0.0) is real
    assert torch.equal(oracle.zoo_blend(real, 1.0), F.interpolate(F.avg_pool2d(real, 2), scale_factor=2))


def _checkout(name: str) -> Path | None:
    refs = os.environ.get("GANFORGE_REFS")
    if not refs or not Path(refs).is_dir():
        return None
    return next((p for p in Path(refs).iterdir() if name in p.name.lower()), None)


NEEDS_REFS = ("needs GANFORGE_REFS: a folder holding checkouts of the official code (benchmarks/bench_vs_reference.py "
              "names the repositories and commits); missing: ")


def _run_check(*args: str) -> subprocess.CompletedProcess:  # own process: the official modules stay out of this one
    return subprocess.run([sys.executable, str(SCRIPT), "--refs", os.environ["GANFORGE_REFS"], *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def _missing(family: str) -> str | None:
    """Why the official check of `family` cannot run here, or None."""
    checkout = {"pgan": "pytorch_gan_zoo", "stargan2": "stargan-v2", "biggan": "biggan-pytorch"}[family]
    if _checkout(checkout) is None:
        return NEEDS_REFS + checkout
    if family == "stargan2" and importlib.util.find_spec("munch") is None:
        return "the official StarGAN v2 code imports munch: pip install munch"
    return None


@pytest.mark.slow
@pytest.mark.parametrize(("family", "args"), [
    ("pgan", ["--scale", "2", "--alpha", "0.5", "--steps", "3"]),
    ("pgan", ["--scale", "2", "--alpha", "0.5", "--steps", "3", "--condition-weights", "1.0", "0.5"]),  # AC-GAN
    ("pgan", ["--scale", "2", "--alpha", "0.5", "--steps", "3", "--micro-batches", "2"]),  # ganforge in slices
    ("pgan", ["--scale", "2", "--alpha", "0.5", "--steps", "3", "--resampling", "fused"]),  # G's strided route
    ("stargan2", ["--steps", "3", "--ds-iter", "2"]),  # lambda_ds decays to 0 within the check
    ("stargan2", ["--steps", "3", "--micro-batches", "2"]),  # ganforge in slices, the official code whole
    ("stargan2", ["--steps", "3", "--resampling", "fused"]),  # every resampling conv one strided conv
    ("biggan", ["--steps", "3", "--ema-start", "2"]),  # the EMA starts within the check
    ("biggan", ["--preset", "imagenet", "--steps", "2"]),  # attention, hierarchical z, accumulations, ortho
    ("biggan", ["--preset", "deep", "--steps", "3"]),  # BigGAN-deep's networks, its whole z, the EMA's start
    ("biggan", ["--steps", "3", "--resampling", "fused"]),
    ("biggan", ["--preset", "deep", "--steps", "2", "--resampling", "fused"]),
])
def test_ganforge_takes_the_official_training_steps(family: str, args: list[str]) -> None:
    if _missing(family):
        pytest.skip(_missing(family))
    same = _run_check("--family", family, *args)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "the same training step" in same.stdout


@pytest.mark.slow
def test_the_check_sees_the_zoos_skipped_d_fade() -> None:
    if _missing("pgan"):
        pytest.skip(_missing("pgan"))
    quirk = _run_check("--scale", "1", "--alpha", "0.5", "--steps", "2")  # the zoo's D ignores alpha at 4->8
    assert quirk.returncode == 1 and "DIFFERENT" in quirk.stdout


@pytest.mark.slow
def test_face_alignment_is_the_official_one() -> None:
    """benchmarks/oracle_face_align.py: ganforge's landmarks, mirrored border, transform and aligned faces against
    the official core/wing.py functions."""
    if _checkout("stargan-v2") is None:
        pytest.skip(NEEDS_REFS + "stargan-v2")
    for module, install in (("munch", "munch"), ("skimage", "scikit-image"), ("cv2", "opencv-python-headless")):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the official core/wing.py imports {module}: pip install {install}")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "oracle_face_align.py"), "--refs",
                             os.environ["GANFORGE_REFS"]], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the official alignment, to float32 rounding" in result.stdout
