"""MS-SSIM diversity of generated images, exactly as the official Progressive GAN metric computes it.

That metric is a port of tensorflow/models' numpy `msssim.py` (not `tf.image.ssim_multiscale`): Gaussian window
11 / sigma 1.5 shrunk (with sigma scaled) for images smaller than 11, 'valid' filtering, K1 0.01, K2 0.03,
dynamic range 255, SSIM and contrast-structure maps averaged over height, width *and* channels per image,
2x2 box downsampling between the 5 scales, negative values clipped to 0 and the per-image products averaged
only at the end. Images are compared in consecutive pairs (0, 1), (2, 3), ...; lower means more diverse.
Computed in float64 (the official code uses float32 FFT convolutions; they agree to ~1e-6).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ganforge.metrics._images import ImageSetError, ImageSizeError, ImageSource, iter_image_batches, limit_images

MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_taps(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian; even sizes are centred between pixels like the official `_FSpecialGauss`."""
    offset = 0.5 if size % 2 == 0 else 0.0
    x = torch.arange(size, dtype=torch.float64) - size // 2 + offset
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor, *, max_val: float, filter_size: int, filter_sigma: float,
                 k1: float, k2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean SSIM and contrast-structure terms of float64 N x C x H x W images at one scale."""
    h, w = x.shape[2:]
    size = min(filter_size, h, w)
    taps = _gaussian_taps(size, size * filter_sigma / filter_size).tolist()  # Python floats: no device reads

    def blur(img: torch.Tensor) -> torch.Tensor:  # separable 'valid' filtering as shifted sums (fast in float64)
        out_w, out_h = img.shape[-1] - size + 1, img.shape[-2] - size + 1
        rows = img[..., :out_w] * taps[0]
        for k in range(1, size):
            rows.add_(img[..., k : k + out_w], alpha=taps[k])
        cols = rows[..., :out_h, :] * taps[0]
        for k in range(1, size):
            cols.add_(rows[..., k : k + out_h, :], alpha=taps[k])
        return cols

    mu_x, mu_y, xx, yy, xy = blur(torch.stack([x, y, x * x, y * y, x * y]))
    sigma_xx = xx - mu_x * mu_x
    sigma_yy = yy - mu_y * mu_y
    sigma_xy = xy - mu_x * mu_y
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    v1 = 2.0 * sigma_xy + c2
    v2 = sigma_xx + sigma_yy + c2
    ssim = ((2.0 * mu_x * mu_y + c1) * v1) / ((mu_x * mu_x + mu_y * mu_y + c1) * v2)
    return ssim.mean(dim=(1, 2, 3)), (v1 / v2).mean(dim=(1, 2, 3))


def msssim_pairs(x: torch.Tensor, y: torch.Tensor, *, max_val: float = 255.0, filter_size: int = 11,
                 filter_sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
                 weights: tuple[float, ...] = MSSSIM_WEIGHTS) -> torch.Tensor:
    """Official MS-SSIM of each image pair (x[i], y[i]) of N x C x H x W images on the 0..255 scale -> [N]."""
    if x.shape != y.shape or x.ndim != 4:
        raise ImageSetError(f"MS-SSIM: expected two N x C x H x W batches of one shape, got {tuple(x.shape)} "
                            f"and {tuple(y.shape)}")
    if min(x.shape[2:]) < 2 ** (len(weights) - 1):
        raise ImageSizeError(f"MS-SSIM: images of {x.shape[2]}x{x.shape[3]} are too small for {len(weights)} scales")
    x, y = x.double(), y.double()
    ssims, css = [], []
    for scale in range(len(weights)):
        if scale:  # 2x2 box mean between scales (odd edges dropped); none after the last one
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        ssim, cs = _ssim_and_cs(x, y, max_val=max_val, filter_size=filter_size, filter_sigma=filter_sigma, k1=k1, k2=k2)
        ssims.append(ssim)
        css.append(cs)
    weight = torch.tensor(weights, dtype=torch.float64, device=x.device)
    cs = torch.stack(css[:-1]).clamp(min=0.0)
    last_ssim = ssims[-1].clamp(min=0.0)
    return torch.prod(cs ** weight[:-1, None], dim=0) * last_ssim ** weight[-1]


class MSSSIMPairs:
    """Streaming MS-SSIM over consecutive pairs (0, 1), (2, 3), ... of a batch stream; pairs may straddle batches."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = device or "cpu"
        self.values: list[torch.Tensor] = []
        self.leftover: torch.Tensor | None = None

    def update(self, batch: torch.Tensor) -> None:
        """Add uint8 N x 3 x H x W images; an odd last image waits for the next batch."""
        if self.leftover is not None:
            batch = torch.cat([self.leftover, batch])
        even = batch.shape[0] - batch.shape[0] % 2
        self.leftover = batch[even:] if even < batch.shape[0] else None
        if even:
            pairs = batch[:even].to(self.device)
            self.values.append(msssim_pairs(pairs[0::2], pairs[1::2]).cpu())

    def result(self) -> dict[str, Any]:
        """{"mean", "per_pair", "pairs"}; the mean is over pairs, as the official code averages at the end."""
        if not self.values:
            raise ImageSetError("MS-SSIM: needs at least 2 images (one pair)")
        per_pair = torch.cat(self.values)
        return {"mean": float(per_pair.mean()), "per_pair": per_pair.tolist(), "pairs": int(per_pair.numel())}


def msssim(images: ImageSource, *, n: int | None = None, batch_size: int = 64,
           device: torch.device | str | None = None) -> dict[str, Any]:
    """Official PGGAN MS-SSIM over consecutive pairs of a (generated) image set: {"mean", "per_pair", "pairs"}.

    `images` is a uint8 NCHW array/tensor or an iterable of batches (pairs may straddle batches); with an odd
    count the last image is unused. `n` caps the number of images read.
    """
    pairs = MSSSIMPairs(device)
    for batch in limit_images(iter_image_batches(images, batch_size=batch_size, name="MS-SSIM images"), n):
        pairs.update(batch)
    return pairs.result()
