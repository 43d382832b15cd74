"""DINOv2 ViT-L/14 features for FD_DINOv2 (Stein et al. 2023, "Exposing flaws of generative model evaluation
metrics"; dgm-eval), the Fréchet distance EDM2 and later papers report beside FID.

The network is our own ViT with the official `dinov2_vitl14` layout (facebookresearch/dinov2, torch hub): patch 14,
width 1024, 24 blocks of 16 heads, LayerScale, GELU MLP, LayerNorm eps 1e-6, a 37 x 37 position grid (518 px)
resized bicubically to the input's grid with the official 0.1 offset. Its feature is the final-norm class token
(`model(x)` of the hub model), 1,024 numbers. Preprocessing is dgm-eval's default for DINOv2: each uint8 RGB image
is resized by PIL's bicubic filter to 224 x 224 (anti-aliased, back to uint8, as torchvision's Resize does on a PIL
image), scaled to [0, 1] and normalised with the ImageNet mean and std. The weights file is the official
`dinov2_vitl14_pretrain.pth`, read without running pickled code.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ganforge.download import LayoutCheckedFile, locate_weights
from ganforge.metrics.inception import default_cache_dir
from ganforge.metrics.vgg_texture import IMAGENET_MEAN, IMAGENET_STD
from ganforge.safe_load import check_layout, load_state_dict_file

INPUT_SIZE = 224  # dgm-eval's resize for every DINOv2 encoder
DINOV2_PROTOCOL = "dgm-eval-pil-bicubic-224"  # recorded with cached real features: how images were resized
FEATURES = 1024
# Used by DINOv2's masked-image pre-training only: in the official file, not in an inference network.
TRAINING_ONLY_KEYS = ("mask_token",)


class DINOv2WeightsError(ValueError):
    """The DINOv2 weights are missing, unreadable or not the ViT-L/14 layout."""


class _LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head width)) v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class _MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.ls1 = _LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _MLP(dim, 4 * dim)
        self.ls2 = _LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DINOv2(nn.Module):
    """A DINOv2 vision transformer (ViT-L/14 by default); `forward(uint8 images)` -> class-token features."""

    def __init__(self, dim: int = FEATURES, depth: int = 24, heads: int = 16, patch: int = 14,
                 grid: int = 37) -> None:
        super().__init__()
        self.patch = patch
        self.patch_embed = _PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def position_embedding(self, height: int, width: int) -> torch.Tensor:
        """The class token's embedding and the 37 x 37 grid's, resized to the input's patch grid as the official
        `interpolate_pos_encoding` does (bicubic, no antialiasing, scale (n + 0.1) / 37)."""
        grid = int(math.isqrt(self.pos_embed.shape[1] - 1))
        rows, cols = height // self.patch, width // self.patch
        if (rows, cols) == (grid, grid):
            return self.pos_embed
        pos = self.pos_embed.float()
        patches = pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, mode="bicubic", antialias=False,
                                scale_factor=((rows + 0.1) / grid, (cols + 0.1) / grid))
        return torch.cat([pos[:, :1], patches.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)], dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Class-token features [N, dim] of normalised float images [N, 3, H, W] (H, W multiples of the patch)."""
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        tokens = tokens + self.position_embedding(x.shape[2], x.shape[3]).to(tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"DINOv2: expected uint8 N x 3 (or 1) x H x W images, got {images.dtype} "
                             f"{tuple(images.shape)}")
        x = resize_pil_bicubic_uint8(images.expand(-1, 3, -1, -1), INPUT_SIZE).to(self.mean.device)
        return self.embed((x.float() / 255 - self.mean) / self.std)


def resize_pil_bicubic_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 N x 3 x H x W images resized to size x size by PIL's bicubic filter on the RGB image (anti-aliased
    when shrinking, rounded to uint8): torchvision's `Resize((size, size), BICUBIC)` on a PIL image."""
    pixels = images.permute(0, 2, 3, 1).cpu().numpy()
    out = np.stack([np.asarray(Image.fromarray(image, "RGB").resize((size, size), Image.Resampling.BICUBIC))
                    for image in pixels])
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def read_dinov2_state(path: Path) -> dict[str, torch.Tensor]:
    """The official ViT-L/14 state dict from `path` (weights-only), its training-only entries dropped, checked
    against our network's layout before anything is loaded."""
    state = load_state_dict_file(path, what="DINOv2 weights", error=DINOv2WeightsError)
    state = {key: value for key, value in state.items() if key not in TRAINING_ONLY_KEYS}
    with torch.device("meta"):
        expected = DINOv2().state_dict()
    check_layout(state, expected, source=f"DINOv2 weights {path}", layout="the official dinov2_vitl14 layout",
                 error=DINOv2WeightsError)
    return state


DINOV2_WEIGHTS = LayoutCheckedFile(
    name="dinov2_vitl14_pretrain.pth",
    url="https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth",
    env="GANFORGE_DINOV2_WEIGHTS", option="--dinov2-weights (Python: dinov2_weights=)",
    description="The DINOv2 ViT-L/14 weights", sha256="", read=read_dinov2_state,
    layout=("the official dinov2_vitl14 layout (torch hub's facebookresearch/dinov2): 304,367,616 parameters and "
            "the training-only mask token"))


def resolve_dinov2_weights(weights: str | Path | None = None, cache_dir: str | Path | None = None) -> Path:
    """The DINOv2 file: the argument, else $GANFORGE_DINOV2_WEIGHTS, else the cache (downloaded there once)."""
    return locate_weights(DINOV2_WEIGHTS, weights, Path(cache_dir or default_cache_dir() / "weights"),
                          DINOv2WeightsError)


def load_dinov2(weights: str | Path | None = None, device: torch.device | str | None = None,
                cache_dir: str | Path | None = None) -> DINOv2:
    """The DINOv2 ViT-L/14 feature network in eval mode, weights loaded strictly."""
    state = read_dinov2_state(resolve_dinov2_weights(weights, cache_dir))
    model = DINOv2()
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False).to(device or "cpu")
