"""DCGAN-style generator and critic (Radford et al. 2016), as in the WGAN-GP tutorial, at any power-of-two size.

Generator: z → ConvTranspose 4×4 to `features·16` channels at 4×4, stride-2 ConvTranspose blocks halving the width
up to resolution/2, a last ConvTranspose to the image channels and tanh. Critic: the mirror image, a stride-2 Conv
with LeakyReLU(0.2), stride-2 Conv blocks doubling the width down to 4×4, then a 4×4 Conv to one logit per image.
Convolutions drop their bias where a norm follows (the norm's shift replaces it). 64×64 gives exactly the
tutorial's layers; 32 removes a block, 128 adds one.

Class-conditional (`label_sizes`, one class count per label column), as the tutorial's conditional WGAN-GP: G reads
z beside a learnt embedding of each class (`embed_size` wide, N(0, 1) initialised as torch's), the critic the image
beside one more channel per column, a learnt res×res map of its class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ganforge.nn.cross_replica import CrossReplicaBatchNorm2d

CriticNorm = Literal["batch", "instance", "none"]


def check_resolution(resolution: int) -> None:
    """Both nets start or end at 4×4 and double per block, so the size must be a power of two ≥ 8."""
    if not isinstance(resolution, int) or resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two ≥ 8 (e.g. 32, 64, 128), got {resolution!r}")


def generator_widths(resolution: int, features: int) -> list[int]:
    """Channels at 4×4, 8×8, …, resolution/2: features·16 halving per doubling (64×64: ·16, ·8, ·4, ·2)."""
    check_resolution(resolution)
    blocks = resolution.bit_length() - 3  # 4×4 … resolution/2
    return [max(1, features * 16 >> i) for i in range(blocks)]


def critic_widths(resolution: int, features: int) -> list[int]:
    """Channels at resolution/2, …, 4×4: features doubling per halving (64×64: ·1, ·2, ·4, ·8)."""
    check_resolution(resolution)
    return [features << i for i in range(resolution.bit_length() - 3)]


def init_dcgan_weights(module: nn.Module, batch_norm_mean: float) -> None:
    """Conv weights N(0, 0.02) and BatchNorm weights N(`batch_norm_mean`, 0.02), as the references initialise
    them: DCGAN's (PyTorch's example, the tutorial's DCGAN since 2022-12) at 1, the WGAN and WGAN-GP tutorials' at
    0; biases and InstanceNorm keep torch's."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, batch_norm_mean, 0.02)


def _critic_norm(kind: CriticNorm, channels: int) -> nn.Module | None:
    if kind == "batch":
        return CrossReplicaBatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return None
    raise ValueError(f"critic norm must be 'batch', 'instance' or 'none', got {kind!r}")


class DCGANGenerator(nn.Module):
    """z [N, z_dim] (or the tutorial's [N, z_dim, 1, 1]), and with `label_sizes` classes [N, columns] → images
    [N, channels, res, res] in [-1, 1]."""

    def __init__(self, z_dim: int = 100, channels: int = 3, features: int = 64, resolution: int = 64,
                 label_sizes: Sequence[int] = (), embed_size: int = 100, batch_norm_mean: float = 1.0) -> None:
        super().__init__()
        widths = generator_widths(resolution, features)
        self.z_dim = z_dim
        self.embeddings = nn.ModuleList(nn.Embedding(size, embed_size) for size in label_sizes)
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim + embed_size * len(label_sizes), widths[0], 4, 1, 0,
                                                      bias=False),
                                   CrossReplicaBatchNorm2d(widths[0]), nn.ReLU(inplace=True)]
        for width_in, width_out in zip(widths, widths[1:], strict=False):
            layers += [nn.ConvTranspose2d(width_in, width_out, 4, 2, 1, bias=False),
                       CrossReplicaBatchNorm2d(width_out), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self, batch_norm_mean)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if z.dim() == 4:
            z = z.flatten(1)
        z = torch.cat([z, *_embedded(self.embeddings, labels)], dim=1) if len(self.embeddings) else z
        return self.net(z[:, :, None, None])


def _embedded(embeddings: nn.ModuleList, labels: torch.Tensor | None) -> list[torch.Tensor]:
    """Each label column's class embedding [N, width]; a conditional network needs its labels."""
    if labels is None or labels.shape[1:] != (len(embeddings),):
        got = "none" if labels is None else f"shape {tuple(labels.shape)}"
        raise ValueError(f"a class-conditional DCGAN network takes labels [N, {len(embeddings)}], got {got}")
    return [embedding(labels[:, column].long()) for column, embedding in enumerate(embeddings)]


class DCGANCritic(nn.Module):
    """Images → one unbounded score (logit) per image, shape [N]; the DCGAN sigmoid lives in its loss."""

    def __init__(self, channels: int = 3, features: int = 64, resolution: int = 64,
                 norm: CriticNorm = "batch", label_sizes: Sequence[int] = (), batch_norm_mean: float = 1.0) -> None:
        super().__init__()
        widths = critic_widths(resolution, features)
        self.resolution = resolution
        self.embeddings = nn.ModuleList(nn.Embedding(size, resolution * resolution) for size in label_sizes)
        layers: list[nn.Module] = [nn.Conv2d(channels + len(label_sizes), widths[0], 4, 2, 1),
                                   nn.LeakyReLU(0.2, inplace=True)]
        for width_in, width_out in zip(widths, widths[1:], strict=False):
            norm_layer = _critic_norm(norm, width_out)
            layers.append(nn.Conv2d(width_in, width_out, 4, 2, 1, bias=norm_layer is None))
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(nn.LeakyReLU(0.2, inplace=True))
        layers.append(nn.Conv2d(widths[-1], 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)
        init_dcgan_weights(self, batch_norm_mean)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if len(self.embeddings):
            size = (images.shape[0], 1, self.resolution, self.resolution)
            maps = [embedded.view(size).to(images.dtype) for embedded in _embedded(self.embeddings, labels)]
            images = torch.cat([images, *maps], dim=1)
        return self.net(images).flatten()
