"""VGG-16's fc2 features: the space improved precision and recall are measured in (Kynkäänniemi et al. 2019;
torch-fidelity's `prc`; stylegan2-ada's pr50k3 runs its own conversion of the authors' VGG-16), as torch-fidelity
extracts them.

uint8 RGB → float32 → TF1 bilinear resize to 224 (the `resize_bilinear_tf1` of the FID Inception's legacy-tf mode)
→ ImageNet normalisation on the 0-255 scale → torchvision's VGG-16 `features`, 7×7 average pool, `classifier` fc1,
ReLU, (dropout: off in eval), fc2 → ReLU: 4,096 features per image (torch-fidelity's "fc2_relu"). The module is our
own in torchvision's layout, so torchvision's ImageNet file (`vgg16-397923af.pth`, IMAGENET1K_V1, the one
torch-fidelity downloads) loads as it is; its last layer (`classifier.6`, the 1,000 classes) is not read. The file
comes from `$GANFORGE_VGG16_WEIGHTS` or the cache (downloaded there once, checked against the sha256 prefix in its
name).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.metrics.inception import resize_bilinear_tf1
from ganforge.metrics.vgg_texture import IMAGENET_MEAN, IMAGENET_STD, load_vgg_weights, vgg_layers

INPUT_SIZE = 224
FEATURES = 4096
VGG16_PROTOCOL = "tf1-bilinear-224"  # the resize, part of the key of cached real-set features


class VGG16FC2(nn.Module):
    """uint8 [N, 3, H, W] images → VGG-16 fc2 features after their ReLU [N, 4096] (float32)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*vgg_layers("vgg16"))
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, FEATURES), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(FEATURES, FEATURES))
        self.register_buffer("mean", torch.tensor([255 * m for m in IMAGENET_MEAN]).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor([255 * s for s in IMAGENET_STD]).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"VGG-16: expected uint8 N x 3 x H x W images, got {images.dtype} {tuple(images.shape)}")
        x = resize_bilinear_tf1(images.to(self.mean.device).float(), INPUT_SIZE)
        x = self.avgpool(self.features((x - self.mean) / self.std))
        return F.relu(self.classifier(torch.flatten(x, 1)))


def load_vgg16_fc2(weights: str | Path | None = None, device: torch.device | str | None = None) -> VGG16FC2:
    """The extractor with torchvision's ImageNet VGG-16 (`weights`, else $GANFORGE_VGG16_WEIGHTS, else the cache),
    in eval mode and without weight gradients; a file of another layout is refused naming what differs."""
    model = load_vgg_weights(VGG16FC2(), "vgg16", weights, option="")
    return model.eval().requires_grad_(False).to(device or "cpu")
