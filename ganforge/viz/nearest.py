"""Nearest training images of generated samples: the memorisation check of GAN papers (and of pytorch_GAN_zoo's
`eval.py nn_metric --showNN`, which searches in a torchvision VGG's features; here in pixels, which needs no
weights): a sample that is a copy of a training image has one at distance near 0.

Every sample and its mirror image are compared with every training image, so a copy of a flipped image (what a run
trained with mirroring sees) is found too; the training images are read chunk by chunk from the store's memory map.
"""

from __future__ import annotations

import numpy as np
import torch

CHUNK_VALUES = 1 << 25  # pixel values of the training images compared at once (128 MB in float32)


def nearest_images(samples: np.ndarray, training: np.ndarray, k: int, *, device: torch.device | None = None,
                   chunk: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For uint8 NCHW `samples` [N, ...] and `training` [M, ...] of one shape: the `k` nearest training images of
    each sample as (indices [N, k], RMS pixel distances in [0, 1] [N, k], whether the sample's mirror image matched
    [N, k]), nearest first. `chunk` training images are compared at once (default: CHUNK_VALUES pixel values'
    worth); the search ranks by float32 distances and the distances returned are recomputed exactly."""
    if samples.shape[1:] != training.shape[1:]:
        raise ValueError(f"samples {samples.shape[1:]} and training images {training.shape[1:]} differ in shape")
    if not 1 <= k <= len(training):
        raise ValueError(f"k = {k}: expected 1 to {len(training)} (the training images)")
    device = device or torch.device("cpu")
    queries = torch.from_numpy(np.ascontiguousarray(samples)).to(device, torch.float32)
    queries = torch.cat([queries, queries.flip(-1)]).flatten(1)  # [2N, D]: the samples, then their mirror images
    n = len(samples)
    chunk = chunk or max(1, CHUNK_VALUES // queries.shape[1])
    best = torch.full((n, 0), float("inf"), device=device)
    best_index = torch.zeros((n, 0), dtype=torch.int64, device=device)
    for start in range(0, len(training), chunk):
        block = torch.from_numpy(np.array(training[start:start + chunk])).to(device, torch.float32).flatten(1)
        distances = torch.cdist(queries, block)  # [2N, m]
        pair = torch.stack([distances[:n], distances[n:]])  # [2, N, m]: as drawn, mirrored
        closest, mirrored = pair.min(dim=0)
        index = torch.arange(start, start + len(block), device=device) + len(training) * mirrored
        joined, joined_index = torch.cat([best, closest], dim=1), torch.cat([best_index, index], dim=1)
        best, order = joined.topk(min(k, joined.shape[1]), dim=1, largest=False)
        best_index = joined_index.gather(1, order)
    index, mirrored = (best_index % len(training)).cpu().numpy(), (best_index >= len(training)).cpu().numpy()
    # exact distances of the k found (float32's matrix-product distances cancel: a one-level difference in one pixel
    # of a 128 px image reads as 0.003)
    chosen = np.asarray(training[np.unique(index)]).astype(np.float64)
    rows = {i: row for row, i in enumerate(np.unique(index))}
    exact = np.empty(index.shape)
    for s, sample in enumerate(samples.astype(np.float64)):
        for j in range(index.shape[1]):
            query = sample[..., ::-1] if mirrored[s, j] else sample
            exact[s, j] = np.sqrt(np.mean((chosen[rows[index[s, j]]] - query) ** 2)) / 255.0
    order = np.argsort(exact, axis=1, kind="stable")  # near ties may swap places once measured exactly
    return (np.take_along_axis(index, order, 1), np.take_along_axis(exact, order, 1),
            np.take_along_axis(mirrored, order, 1))
