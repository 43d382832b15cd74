"""FID modes: the clean-fid resize against a hand computation of PIL's bicubic filter, the mode reaching the
Inception network, and the mode recorded wherever Inception metric values go (tables, records, config)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganforge.config import ConfigError, RunConfig
from ganforge.data.store import open_dataset
from ganforge.evaluation import run_metrics
from ganforge.metrics.inception import InceptionV3FID, resize_bilinear_tf1, resize_pil_bicubic
from ganforge.metrics.registry import format_table, protocol_fields


def _pil_bicubic_weights(in_size: int, out_size: int) -> np.ndarray:
    """PIL's resampling matrix [out, in] for BICUBIC (Keys kernel, a = -0.5): the kernel is widened by the
    downscale factor (anti-aliasing), taps are clamped to the image and normalised to sum 1 (Pillow Resample.c)."""

    def cubic(x: float) -> float:
        x, a = abs(x), -0.5
        if x < 1:
            return ((a + 2) * x - (a + 3)) * x * x + 1
        return (((x - 5) * x + 8) * x - 4) * a if x < 2 else 0.0

    scale = in_size / out_size
    widen = max(scale, 1.0)
    support = 2.0 * widen
    matrix = np.zeros((out_size, in_size))
    for out in range(out_size):
        centre = (out + 0.5) * scale
        first, last = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_size)
        taps = np.array([cubic((x - centre + 0.5) / widen) for x in range(first, last)])
        matrix[out, first:last] = taps / taps.sum()
    return matrix


def _hand_clean_resize(images: np.ndarray, size: int) -> np.ndarray:
    """Rows then columns in float64, each pass stored as float32 (PIL 'F' images), then clipped to [0, 255]."""
    rows = _pil_bicubic_weights(images.shape[3], size)
    cols = _pil_bicubic_weights(images.shape[2], size)
    horizontal = (images.astype(np.float64) @ rows.T).astype(np.float32)
    return (cols @ horizontal.astype(np.float64)).astype(np.float32).clip(0, 255)


@pytest.mark.parametrize("shape,size", [((7, 5), 4), ((3, 4), 11), ((8, 8), 299)])
def test_clean_resize_is_pil_bicubic_per_channel_in_float_without_quantisation(shape, size):
    images = np.random.default_rng(0).integers(0, 256, (2, 3, *shape), dtype=np.uint8)
    images[0, 0] = 255 * (np.arange(shape[1]) % 2)  # sharp edges: upsampled by bicubic, they overshoot
    resized = resize_pil_bicubic(torch.from_numpy(images), size)
    assert resized.dtype == torch.float32 and resized.shape == (2, 3, size, size)
    np.testing.assert_allclose(resized.numpy(), _hand_clean_resize(images, size), rtol=0, atol=1e-4)
    assert not torch.equal(resized, resized.round())  # float32 kept: clean-fid does not quantise
    if size > shape[0]:  # clipped to [0, 255], not wrapped or rescaled
        assert float(resized.min()) == 0.0 and float(resized.max()) == 255.0


@pytest.mark.parametrize("shape", [(32, 32), (128, 128), (37, 53)])
def test_clean_resize_equals_clean_fids_own_resizer(shape):
    """The oracle itself, where clean-fid is installed: its resize module needs only numpy, torch and PIL, so
    `pip install --no-deps clean-fid` is enough (its own dependencies include torchvision)."""
    resize = pytest.importorskip("cleanfid.resize", reason="clean-fid not installed (pip install --no-deps "
                                 "clean-fid): its build_resizer('clean') is the oracle").build_resizer("clean")
    images = np.random.default_rng(3).integers(0, 256, (2, *shape, 3), dtype=np.uint8)  # clean-fid takes HWC
    expected = np.stack([resize(image) for image in images]).transpose(0, 3, 1, 2)
    ours = resize_pil_bicubic(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))).numpy()
    assert np.array_equal(ours, expected)  # bit for bit


def test_clean_resize_differs_from_legacy_tf_except_at_299():
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (1, 3, 8, 8), dtype=np.uint8))
    difference = (resize_pil_bicubic(images) - resize_bilinear_tf1(images.float())).abs().max()
    assert float(difference) > 10  # bicubic vs bilinear (and different pixel centres) on an 8 -> 299 upsample
    at_size = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (1, 3, 299, 299), dtype=np.uint8))
    assert torch.equal(resize_pil_bicubic(at_size), at_size.float())
    assert torch.equal(resize_bilinear_tf1(at_size.float()), at_size.float())


def test_the_network_resizes_by_its_mode():
    torch.manual_seed(0)
    legacy = InceptionV3FID().eval()
    clean = InceptionV3FID("clean").eval()
    clean.load_state_dict(legacy.state_dict())
    small = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (1, 3, 16, 16), dtype=np.uint8))
    with torch.no_grad():
        pool_legacy, _ = legacy(small)
        pool_clean, _ = clean(small)
    assert float((pool_legacy - pool_clean).norm() / pool_legacy.norm()) > 0.01
    at_size = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (1, 3, 299, 299), dtype=np.uint8))
    with torch.no_grad():
        assert torch.equal(legacy(at_size)[0], clean(at_size)[0])  # both resizes are the identity at 299
    with pytest.raises(ConfigError, match=r"^fid_mode: 'tf' is not one of legacy-tf, clean, pytorch-fid$"):
        InceptionV3FID("tf")


def test_the_pytorch_fid_mode_feeds_the_network_as_pytorch_fid_does():
    """mseitzer/pytorch-fid's InceptionV3 (resize_input, normalize_input): images in [0, 1] (ToTensor's uint8 / 255),
    torch's bilinear resize to 299 (align_corners=False), then 2x - 1, into the same FID Inception network;
    recomputed here from the network's first layers. At 299 px it equals the others but for their (x - 128) / 128."""
    torch.manual_seed(0)
    legacy = InceptionV3FID().eval()
    torch_fid = InceptionV3FID("pytorch-fid").eval()
    torch_fid.load_state_dict(legacy.state_dict())
    small = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (2, 3, 24, 24), dtype=np.uint8))
    seen = []
    torch_fid.Conv2d_1a_3x3.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    with torch.no_grad():
        features = torch_fid.features(small)
    by_hand = 2 * F.interpolate(small.float() / 255, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(seen[0], by_hand, rtol=0, atol=1e-6)
    with torch.no_grad():
        assert float((features["2048"] - legacy(small)[0]).norm() / features["2048"].norm()) > 0.01
        at_size = torch.from_numpy(np.random.default_rng(6).integers(0, 256, (1, 3, 299, 299), dtype=np.uint8))
        seen.clear()
        torch_fid.features(at_size)
        torch.testing.assert_close(seen[0], at_size.float() / 127.5 - 1, rtol=0, atol=1e-6)


def test_config_key_is_checked():
    assert RunConfig(family="pgan").fid_mode == "legacy-tf"
    from ganforge.families import resolve_run_config

    assert resolve_run_config("pgan", {"fid_mode": "clean", "metrics": ["fid"]}, []).fid_mode == "clean"
    with pytest.raises(ConfigError, match=r"fid_mode: 'cleanfid' is not one of 'legacy-tf', 'clean', 'pytorch-fid'"):
        resolve_run_config("pgan", {"fid_mode": "cleanfid"}, [])
    # a mode that no metric would use does nothing: refused
    with pytest.raises(ConfigError, match=r"^fid_mode: 'clean' is for the Inception metrics \(fid and its blocks "
                                          r"fid64/fid192/fid768, kid, is\), and `metrics` is empty$"):
        RunConfig(family="pgan", fid_mode="clean")
    from ganforge.training.engine import check_training_metrics

    with pytest.raises(ConfigError, match=r"^fid_mode: 'clean' is for the Inception metrics \(fid, fid64, fid192, "
                                          r"fid768, kid, is\), and none of metrics \['swd'\] is one$"):
        check_training_metrics(RunConfig(family="pgan", fid_mode="clean", metrics=["swd"], metrics_every=8))
    check_training_metrics(RunConfig(family="pgan", metrics=["swd"], metrics_every=8))


def test_table_and_records_say_the_mode_of_inception_metrics():
    results = {"swd": {"resolutions": [16], "swd": [3.0], "avg": 3.0}, "fid": 12.3, "kid": (0.01, 0.002),
               "is": (1.5, 0.1), "pr": {"precision": 0.5, "recall": 0.25}}
    lines = format_table(results, "clean").splitlines()
    assert lines[2] == "FID         12.3000  (clean)"
    assert lines[3].endswith("(clean)") and lines[4].endswith("(clean)")
    assert "clean" not in "".join(lines[:2]) + lines[5]  # SWD and precision/recall (VGG-16) see no Inception
    assert format_table(results) == "\n".join(line.removesuffix("  (clean)") for line in lines)
    assert protocol_fields(results, "legacy-tf") == {"fid_mode": "legacy-tf", "pr_features": "vgg16-fc2"}
    assert protocol_fields({"swd": results["swd"]}, "clean") == {}
    assert protocol_fields({"pr": results["pr"]}, "clean") == {"pr_features": "vgg16-fc2"}


def test_training_time_records_carry_the_mode(monkeypatch):
    seen = {}

    def fake_evaluate(fake, real, metrics, **kwargs):
        seen.update(kwargs)
        return {"fid": 4.5} if "fid" in metrics else {"msssim": {"mean": 0.25, "pairs": 2}}

    monkeypatch.setattr(run_metrics, "_run_evaluate", fake_evaluate)
    dataset = open_dataset("builtin:shapes?count=8&resolution=16")
    plan = SimpleNamespace(resolution=16)
    # scored by image-set metrics (its images are never drawn here)
    family = SimpleNamespace(translates=False, device=torch.device("cpu"), weights_held=contextlib.nullcontext)
    record = run_metrics.evaluate_family(family, dataset, plan, ["fid"], n=4, seed=0, fid_mode="clean")
    assert record == {"fid": 4.5, "fid_mode": "clean"} and seen["fid_mode"] == "clean"
    assert run_metrics.evaluate_family(family, dataset, plan, ["msssim"], n=4, seed=0) == {
        "msssim_mean": 0.25, "msssim_pairs": 2.0}


def test_a_mode_for_metrics_without_inception_is_refused():
    assert run_metrics.chosen_fid_mode(["swd", "fid"], None) == "legacy-tf"
    assert run_metrics.chosen_fid_mode(["swd", "is"], "clean") == "clean"
    with pytest.raises(ConfigError, match=r"^--fid-mode clean: only the Inception metrics \(fid, fid64, fid192, "
                                          r"fid768, kid, is\) use it, and the metrics asked for are swd, msssim$"):
        run_metrics.chosen_fid_mode(["swd", "msssim"], "clean")
