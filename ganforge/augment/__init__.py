"""Differentiable augmentation of everything the discriminator sees: DiffAugment and ADA (see Augmenter).

`AugmentConfig` lives in the torch-free `ganforge.augment.config`; the rest loads torch on first use.
"""

from typing import Any

__all__ = ["AdaController", "AugmentConfig", "Augmenter", "GlobalNoise"]


def __getattr__(name: str) -> Any:  # lazy, so that ganforge.config can import the config without torch
    if name == "AugmentConfig":
        from ganforge.augment.config import AugmentConfig

        return AugmentConfig
    if name in ("AdaController", "Augmenter"):
        from ganforge.augment import augmenter

        return getattr(augmenter, name)
    if name == "GlobalNoise":
        from ganforge.augment.noise import GlobalNoise

        return GlobalNoise
    raise AttributeError(f"module 'ganforge.augment' has no attribute {name!r}")
