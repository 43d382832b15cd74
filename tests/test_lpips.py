"""LPIPS v0.1: heads from the installed `lpips` files, AlexNet loading and weight resolution, the metric against a
hand computation on a tiny backbone, and the full pipeline on random stand-in AlexNet weights."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ganforge.metrics import lpips as lp
from ganforge.metrics.lpips import (
    LPIPS,
    AlexNetFeatures,
    LPIPSWeightsError,
    load_alexnet,
    load_lpips,
    load_lpips_heads,
    pairwise_diversity,
    resolve_alexnet_weights,
)


def needs_lpips_files() -> None:
    try:
        importlib.metadata.files("lpips")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the lpips package is not installed (pip install --no-deps lpips)")


@pytest.fixture(scope="module")
def alexnet_file(tmp_path_factory) -> Path:
    """Random stand-in AlexNet weights in torchvision's layout, classifier included (it must be ignored)."""
    torch.manual_seed(0)
    state = AlexNetFeatures().state_dict()
    state.update({"classifier.1.weight": torch.zeros(8, 8), "classifier.1.bias": torch.zeros(8)})
    path = tmp_path_factory.mktemp("alexnet") / lp.ALEXNET_FILE
    torch.save(state, path)
    return path


def test_heads_load_from_the_installed_package_files() -> None:
    needs_lpips_files()
    heads = load_lpips_heads()
    assert [tuple(h.shape) for h in heads] == [(1, c, 1, 1) for c in (64, 192, 384, 256, 256)]
    assert all((h >= 0).all() and h.sum() > 0 for h in heads)  # v0.1 heads are clamped non-negative


def test_missing_lpips_package_says_how_to_install(monkeypatch) -> None:
    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(LPIPSWeightsError, match=r"pip install --no-deps lpips"):
        load_lpips_heads()


class TinyBackbone(nn.Module):
    """Two 'layers': the scaled input itself and a fixed 1×1 conv of it with a ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        self.conv.weight.data = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]]).view(2, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [x, torch.relu(self.conv(x))]


def test_lpips_equals_a_hand_computation_on_a_tiny_backbone() -> None:
    heads = [torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1), torch.tensor([0.7, 0.4]).view(1, 2, 1, 1)]
    metric = LPIPS(TinyBackbone(), heads).requires_grad_(False)
    x0, x1 = torch.rand(2, 2, 3, 4, 5, generator=torch.Generator().manual_seed(1)) * 2 - 1
    a = x0.numpy().astype(np.float64)
    b = x1.numpy().astype(np.float64)
    shift = np.array([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = np.array([0.458, 0.448, 0.450])[None, :, None, None]
    w = np.array([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]])

    def layers(x: np.ndarray) -> list[np.ndarray]:
        s = (x - shift) / scale
        return [s, np.maximum(np.einsum("oc,nchw->nohw", w, s), 0)]

    expected = np.zeros(2)
    for head, fa, fb in zip(heads, layers(a), layers(b), strict=True):
        na = fa / (np.sqrt((fa**2).sum(1, keepdims=True)) + 1e-10)
        nb = fb / (np.sqrt((fb**2).sum(1, keepdims=True)) + 1e-10)
        weighted = np.einsum("c,nchw->nhw", head.flatten().numpy().astype(np.float64), (na - nb) ** 2)
        expected += weighted.mean(axis=(1, 2))
    np.testing.assert_allclose(metric(x0, x1).numpy(), expected, rtol=1e-5)


def test_full_pipeline_on_stand_in_alexnet(alexnet_file: Path) -> None:
    needs_lpips_files()
    metric = load_lpips(alexnet_file)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 3, 64, 64, generator=g) * 2 - 1
    d = metric(x, y)
    assert d.shape == (3,) and (d > 0).all()
    torch.testing.assert_close(metric(y, x), d)
    assert metric(x, x).abs().max() == 0
    near = metric(x, (x + 0.01 * y).clamp(-1, 1))
    assert (near < d).all()
    taps = metric.backbone(x)
    assert [t.shape[1] for t in taps] == [64, 192, 384, 256, 256] and taps[0].shape[-1] == 15


def test_pairwise_diversity_averages_all_pairs() -> None:
    metric = LPIPS(TinyBackbone(), [torch.ones(1, 3, 1, 1), torch.ones(1, 2, 1, 1)]).requires_grad_(False)
    outputs = list(torch.rand(10, 4, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1)
    pairs = [metric(outputs[i], outputs[j]).mean() for i in range(10) for j in range(i + 1, 10)]
    assert len(pairs) == 45
    assert pairwise_diversity(metric, outputs) == pytest.approx(float(torch.stack(pairs).mean()), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 outputs"):
        pairwise_diversity(metric, outputs[:1])


def test_alexnet_layout_is_checked(tmp_path: Path, alexnet_file: Path) -> None:
    model = load_alexnet(alexnet_file)
    saved = torch.load(alexnet_file, weights_only=True)
    assert torch.equal(model.features[10].weight, saved["features.10.weight"])
    broken = {k: v for k, v in saved.items() if k != "features.8.bias"}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(LPIPSWeightsError, match=r"broken.pth does not have torchvision's AlexNet layout: missing "
                                                r"\['features.8.bias'\]"):
        load_alexnet(tmp_path / "broken.pth")


def test_weight_resolution_order_and_offline_message(tmp_path: Path, alexnet_file: Path, monkeypatch) -> None:
    monkeypatch.setenv(lp.ALEXNET_ENV, str(alexnet_file))
    assert resolve_alexnet_weights() == alexnet_file
    with pytest.raises(LPIPSWeightsError, match=r"does not exist"):
        resolve_alexnet_weights(tmp_path / "nope.pth")
    monkeypatch.delenv(lp.ALEXNET_ENV)
    cached = tmp_path / "cache" / lp.ALEXNET_FILE
    cached.parent.mkdir()
    cached.write_bytes(alexnet_file.read_bytes())
    assert resolve_alexnet_weights(cache_dir=cached.parent) == cached

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(LPIPSWeightsError) as info:
        resolve_alexnet_weights(cache_dir=tmp_path / "empty")
    message = str(info.value)
    assert lp.ALEXNET_FILE in message and lp.ALEXNET_URL in message and str(tmp_path / "empty") in message
    assert "--alexnet-weights" in message


def test_download_checks_the_sha256_prefix(tmp_path: Path, monkeypatch) -> None:
    payload = b"weights"
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    monkeypatch.delenv(lp.ALEXNET_ENV, raising=False)
    monkeypatch.setattr(lp, "ALEXNET_SHA256_PREFIX", hashlib.sha256(payload).hexdigest()[:8])
    assert resolve_alexnet_weights(cache_dir=tmp_path / "ok").read_bytes() == payload
    monkeypatch.setattr(lp, "ALEXNET_SHA256_PREFIX", "00000000")
    with pytest.raises(LPIPSWeightsError, match="sha256 starts with 00000000.*; not saved"):
        resolve_alexnet_weights(cache_dir=tmp_path / "bad")
    assert list((tmp_path / "bad").iterdir()) == []  # nothing kept of a rejected download
