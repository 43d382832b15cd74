"""Precision/recall's feature network: torch-fidelity's VGG-16 fc2 extractor in torchvision's layout (its ImageNet
file loads as it is), against a hand-written forward pass of that layout; and where its weights come from."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganforge.metrics.inception import resize_bilinear_tf1
from ganforge.metrics.vgg16_fc2 import VGG16FC2, load_vgg16_fc2
from ganforge.metrics.vgg_texture import VGGWeightsError

# torchvision's vgg16(): the convolutions' indices in `features` (a ReLU after each, a max pool after each block)
CONVOLUTIONS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
POOLS_AFTER = (2, 7, 14, 21, 28)


def test_the_layout_is_torchvisions_vgg16_without_its_class_layer():
    shapes = {key: tuple(value.shape) for key, value in VGG16FC2().state_dict().items()}
    widths = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    expected = {}
    for position, index in enumerate(CONVOLUTIONS):
        expected[f"features.{index}.weight"] = (widths[position + 1], widths[position], 3, 3)
        expected[f"features.{index}.bias"] = (widths[position + 1],)
    expected.update({"classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,),
                     "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,)})
    assert shapes == expected  # classifier.6 (the 1,000 classes) is not part of it


def _by_hand(state: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """torch-fidelity's FeatureExtractorVGG16 written out: TF1 bilinear to 224, (x - 255·mean) / (255·std),
    torchvision's VGG-16 up to fc2, then ReLU ("fc2_relu")."""
    x = resize_bilinear_tf1(images.float(), 224)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    x = (x - mean) / std
    for index in CONVOLUTIONS:
        x = F.relu(F.conv2d(x, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1))
        if index in POOLS_AFTER:
            x = F.max_pool2d(x, 2)
    x = F.adaptive_avg_pool2d(x, 7).flatten(1)
    x = F.relu(F.linear(x, state["classifier.0.weight"], state["classifier.0.bias"]))
    return F.relu(F.linear(x, state["classifier.3.weight"], state["classifier.3.bias"]))


@pytest.mark.slow
def test_features_are_the_fc2_relu_of_the_resized_normalised_images():
    torch.manual_seed(0)
    model = VGG16FC2().eval()
    with torch.no_grad():  # weights scaled so activations neither vanish nor explode through 15 layers
        for key, value in model.state_dict().items():
            if key.endswith("weight"):
                value.mul_(2.0)
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 3, 40, 36), dtype=np.uint8))
    with torch.no_grad():
        ours, expected = model(images), _by_hand(model.state_dict(), images)
    assert ours.shape == (2, 4096) and ours.dtype == torch.float32
    assert (ours > 0).float().mean() > 0.1  # not a vanished signal
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="VGG-16: expected uint8 N x 3 x H x W images"):
        model(images.float())


def test_a_file_of_another_layout_is_refused(tmp_path):
    wrong = tmp_path / "vgg16-397923af.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 5, 5)}, wrong)
    with pytest.raises(VGGWeightsError, match="torchvision's VGG16 layout"):
        load_vgg16_fc2(wrong)


def test_offline_without_the_file_says_which_file_and_where(monkeypatch, tmp_path):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *args, **kwargs: (_ for _ in ()).throw(
        urllib.error.URLError("no network")))
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GANFORGE_VGG16_WEIGHTS", raising=False)
    with pytest.raises(VGGWeightsError) as info:
        load_vgg16_fc2()
    message = str(info.value)
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    assert message.endswith("or set the environment variable GANFORGE_VGG16_WEIGHTS to its path.")
