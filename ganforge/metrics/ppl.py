"""Perceptual path length (Karras et al., StyleGAN, 2019), as stylegan2-ada-pytorch's `ppl_zfull` / `ppl_zend`
compute it: how much the image changes, in LPIPS, for a step of ε along a path between two latents.

Per sample: z0, z1 ~ N(0, I) and t ~ U(0, 1) ("full"; t = 0 for "end"); the images at slerp(z0, z1, t) and at
t + ε (ε = 1e-4); both cropped to the centre as the reference does for faces (rows 3/8-7/8, columns 2/8-6/8 of the
image), box-averaged by the factor that brings the whole image to 256 px where it is larger (stylegan2-ada-pytorch's
factor; the TF StyleGAN code takes it from the crop, which differs at 512 px and above), grey images repeated to
RGB; the distance is LPIPS-VGG16(x_t, x_t+ε) / ε², all in full float32 (the reference turns TF32 off: a step of
1e-4 is below TF32's rounding). A conditional generator's two ends share the classes of a random training image.
The path length is the mean of the distances between their 1st and 99th percentiles (lower and higher sample,
respectively), which drops the paths that cross a discontinuity.

The reference's slerp walks the unit sphere (its generators normalise z first, as PGAN's does); here the direction
is that slerp's and the length moves linearly from |z0| to |z1|, which for such generators is the same image (a
conditional PGAN normalises z together with its one-hot classes, where the length moves the image slightly) and
for the others (DCGAN, BigGAN) keeps the latents on the Gaussian shell they were trained on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

EPSILON = 1e-4
SAMPLINGS = ("full", "end")
LPIPS_SIZE = 256  # the reference box-averages larger images to this size before LPIPS
DISCARD = (1, 99)  # percentiles of the distances kept


def unit_slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The reference's slerp of the rows' directions at `t` [n, 1], scaled by the linearly interpolated norm."""
    a, b = z0 / z0.norm(dim=-1, keepdim=True), z1 / z1.norm(dim=-1, keepdim=True)
    cos = (a * b).sum(dim=-1, keepdim=True)
    towards = b - cos * a
    towards = towards / towards.norm(dim=-1, keepdim=True)
    angle = t * torch.acos(cos)
    direction = a * torch.cos(angle) + towards * torch.sin(angle)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    return direction * torch.lerp(z0.norm(dim=-1, keepdim=True), z1.norm(dim=-1, keepdim=True), t)


def lpips_view(images: torch.Tensor, crop: bool) -> torch.Tensor:
    """Generated images [-1, 1] as the reference hands them to LPIPS: the centre crop, box-averaged by the factor
    that brings the whole image to 256 px (of 1024 px images, a crop of 512 averaged to 128), RGB."""
    factor = images.shape[2] // LPIPS_SIZE
    if crop:
        c = images.shape[2] // 8
        images = images[:, :, c * 3:c * 7, c * 2:c * 6]
    if factor > 1:
        images = F.avg_pool2d(images, factor)
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


def path_distances(generate: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                   draw: Callable[[int, torch.Generator], dict[str, torch.Tensor]],
                   lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], n: int, *, sampling: str = "full",
                   epsilon: float = EPSILON, crop: bool = True, batch_size: int = 32, seed: int = 0) -> np.ndarray:
    """The `n` scaled distances LPIPS(x_t, x_t+ε) / ε² of the paths: `draw(k, generator)` gives k generator inputs
    (a "z" and, for a conditional generator, classes, which both ends of a path share), `generate(inputs)` their
    images in [-1, 1]."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"perceptual path length: sampling {sampling!r}, expected one of {', '.join(SAMPLINGS)}")
    generator = torch.Generator().manual_seed(seed + 2**21)
    distances = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        t = torch.rand(count, 1, generator=generator) * (1.0 if sampling == "full" else 0.0)
        first, second = draw(count, generator), draw(count, generator)
        z0, z1 = first["z"].double(), second["z"].double()
        ends = torch.cat([unit_slerp(z0, z1, t.double()), unit_slerp(z0, z1, t.double() + epsilon)]).float()
        inputs = {**{key: torch.cat([value, value]) for key, value in first.items()}, "z": ends}
        with torch.no_grad():
            images = lpips_view(generate(inputs).float(), crop)
            if not torch.isfinite(images).all():  # one NaN distance would make the whole path length NaN
                raise ValueError("perceptual path length: the generator gives NaN or infinite pixel values (a "
                                 "generator whose training diverged?)")
            at_t, after = images.chunk(2)
            distances.append((lpips(at_t, after).double() / epsilon**2).cpu())
    return torch.cat(distances).numpy()


def path_length(distances: np.ndarray) -> float:
    """The mean of the distances from the 1st percentile (its lower sample) to the 99th (its higher sample)."""
    low = np.percentile(distances, DISCARD[0], method="lower")
    high = np.percentile(distances, DISCARD[1], method="higher")
    return float(distances[(low <= distances) & (distances <= high)].mean())
