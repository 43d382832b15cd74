"""Latent draws whose sample i is the same whatever the count drawn.

torch's CPU normal sampler fills a tensor in blocks of 16 values and, where the size is no multiple of 16, draws
the last block again (and below 16 values uses another method), so `randn(n, width)` from one seed changes sample
n − 1 with n wherever n·width is no multiple of 16 (BigGAN's width 120, DCGAN's 100): `generate --n 5` and
`--n 8` gave different images under one name. Drawn as a whole number of blocks and cut, a draw is a prefix of
any longer one; where n·width is a multiple of 16 the values are `randn`'s own. Used where a seed names samples
(`LoadedModel.latents`, what `generate` draws); training's fixed samples and metric ticks keep the families' own
`randn` draws, which saved runs' grids and metric records were made with.
"""

from __future__ import annotations

import torch

_BLOCK = 16  # values per block of torch's CPU normal sampler


def normal_draws(n: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, 1) values [n, width] from `generator`, the first rows of any longer draw from the same state."""
    count = n * width
    padded = max(_BLOCK, -(-count // _BLOCK) * _BLOCK)
    return torch.randn(padded, generator=generator)[:count].view(n, width)
