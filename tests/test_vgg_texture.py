"""The zoo's VGG-19 texture descriptor (inspirational generation's `-f vgg19`): torchvision's layout, the statistics
by hand, the zoo's own LossTexture code as the oracle where its checkout is at hand, and the weights' handling."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import reference_checkout

from ganforge.metrics.vgg_texture import (
    VGGFeatures,
    VGGTexture,
    VGGWeightsError,
    load_vgg_texture,
    texture_statistics,
)

# torchvision's vgg19().features: the convolution indices up to conv5_1 and their kernel shapes
TORCHVISION_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
                     14: (256, 256), 16: (256, 256), 19: (512, 256), 21: (512, 512), 23: (512, 512), 25: (512, 512),
                     28: (512, 512)}


def random_features(seed: int = 0, arch: str = "vgg19") -> VGGFeatures:
    torch.manual_seed(seed)
    features = VGGFeatures(arch)
    for conv in features.features:
        if isinstance(conv, torch.nn.Conv2d):  # a He-like scale keeps the activations finite and non-zero
            torch.nn.init.normal_(conv.weight, 0.0, (2.0 / (9 * conv.in_channels)) ** 0.5)
            torch.nn.init.normal_(conv.bias, 0.0, 0.1)
    return features


def test_layout_is_torchvisions_and_taps_are_relu3_1_relu4_1_relu5_1() -> None:
    features = VGGFeatures()
    assert {k: tuple(v.shape) for k, v in features.state_dict().items()} == {
        **{f"features.{i}.weight": (o, c, 3, 3) for i, (o, c) in TORCHVISION_CONVS.items()},
        **{f"features.{i}.bias": (o,) for i, (o, _) in TORCHVISION_CONVS.items()}}
    assert features.taps == [11, 20, 29]
    assert all(isinstance(features.features[i], torch.nn.ReLU) for i in features.taps)
    assert [type(features.features[i]).__name__ for i in (4, 9, 18, 27)] == ["MaxPool2d"] * 4
    assert VGGFeatures(blocks=(1, 2)).taps == [1, 6] and len(VGGFeatures(blocks=(1, 2)).features) == 7
    with pytest.raises(ValueError, match=r"increasing numbers from 1 to 5"):
        VGGFeatures(blocks=(4, 3))
    vgg16 = VGGFeatures("vgg16")  # torchvision's vgg16().features: three convolutions in blocks 3-5
    assert vgg16.taps == [11, 18, 25] and sorted(int(k.split(".")[1]) for k in vgg16.state_dict() if k.endswith(
        "weight")) == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24]


def test_texture_statistics_are_means_and_biased_variances_by_hand() -> None:
    taps = [torch.randn(2, 3, 4, 4) * 2 + 1, torch.randn(2, 5, 2, 2)]
    expected = []
    for tap in taps:
        expected += [tap.mean(dim=(2, 3)), tap.var(dim=(2, 3), unbiased=False)]
    torch.testing.assert_close(texture_statistics(taps), torch.cat(expected, dim=1), rtol=1e-5, atol=1e-5)


def test_descriptor_resizes_normalises_and_reads_the_taps_by_hand() -> None:
    features = random_features()
    texture = VGGTexture(features, size=64)
    images = torch.rand(2, 3, 48, 48) * 2 - 1
    x = F.interpolate(images, size=(64, 64), mode="bilinear", align_corners=False)
    x = (x - torch.tensor([-0.03, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor([0.458, 0.448, 0.45]).view(
        1, 3, 1, 1)
    taps = []
    for index, layer in enumerate(features.features):
        x = layer(x)
        if index in (11, 20, 29):
            taps.append(x)
    out = texture(images)
    assert out.shape == (2, 2 * (256 + 512 + 512))
    torch.testing.assert_close(out, texture_statistics(taps))
    grey = images[:, :1]
    torch.testing.assert_close(texture(grey), texture(grey.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match=r"too small"):
        VGGTexture(features, size=16)


@pytest.mark.parametrize("arch", ["vgg19", "vgg16"])
def test_equals_the_zoos_loss_texture_features(arch: str) -> None:
    """The zoo's own LossTexture.getFeatures and FeatureTransform (its checkout), fed our layers (torchvision
    is not needed: only its `features` sequence is read) and the mean/std its save_feature_extractor.py saves."""
    zoo = reference_checkout("pytorch_GAN_zoo")
    sys.path.insert(0, str(zoo))
    try:
        from models.loss_criterions.loss_texture import LossTexture, extractRelUIndexes
        from models.networks.constant_net import FeatureTransform
    finally:
        sys.path.remove(str(zoo))
    features = random_features(1, arch)
    reference = LossTexture.__new__(LossTexture)
    torch.nn.Module.__init__(reference)
    reference.featuresSeq = features.features
    reference.indexLayers = extractRelUIndexes(features.features, [3, 4, 5])
    transform = FeatureTransform(mean=[2 * p - 1 for p in (0.485, 0.456, 0.406)],
                                 std=[2 * s for s in (0.229, 0.224, 0.225)], size=128)
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    expected = reference.getFeatures(transform(images), detach=False, prepImg=False)
    torch.testing.assert_close(VGGTexture(features)(images), expected, rtol=1e-4, atol=1e-5)


def test_weights_load_from_a_torchvision_state_dict_and_bad_files_are_refused(tmp_path) -> None:
    features = random_features(2)
    full = {**features.state_dict(), "features.30.weight": torch.zeros(512, 512, 3, 3),
            "classifier.0.weight": torch.zeros(2, 2)}  # entries past relu5_1 and the head are not read
    path = tmp_path / "vgg19.pth"
    torch.save(full, path)
    texture = load_vgg_texture("vgg19", path, size=32)
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(texture(images), VGGTexture(features, size=32)(images))
    assert not any(p.requires_grad for p in texture.parameters()) and not texture.training
    broken = {k: v for k, v in full.items() if k != "features.28.weight"}
    torch.save(broken, path)
    with pytest.raises(VGGWeightsError, match=r"features\.28\.weight"):
        load_vgg_texture("vgg19", path)
    with pytest.raises(VGGWeightsError, match=r"does not exist"):
        load_vgg_texture("vgg19", tmp_path / "missing.pth")
