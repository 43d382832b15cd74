"""The top-level `augment:` config section (torch-free, so that ganforge.config can import it)."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from ganforge.errors import ConfigError
from ganforge.settings import Settings

POLICIES = ("color", "translation", "cutout")  # DiffAugment's
BLIT = ("xflip", "rotate90", "xint")  # ADA's transform groups
GEOM = ("scale", "rotate", "aniso", "xfrac")
COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
PIPELINES: dict[str, tuple[str, ...]] = {
    "blit": BLIT,
    "geom": GEOM,
    "color": COLOR,
    "bg": BLIT + GEOM,
    "bgc": BLIT + GEOM + COLOR,
}

DEFAULT_POLICY = "color,translation,cutout"
DEFAULT_PIPELINE = "bgc"
DEFAULT_TARGET = 0.6
DEFAULT_SPEED_KIMG = 500.0
DEFAULT_INTERVAL = 4

# keys each kind uses; a key set for another kind would do nothing and is an error
_KEYS_OF_KIND = {
    "none": (),
    "diffaugment": ("policy",),
    "ada": ("pipeline", "p", "target", "speed_kimg", "interval"),
}


@dataclasses.dataclass
class AugmentConfig(Settings):
    """The top-level `augment:` section. Unset keys take the paper's values for the chosen kind."""

    kind: Literal["none", "diffaugment", "ada"] = "none"
    policy: str | None = None  # diffaugment: comma-separated subset of color, translation, cutout
    pipeline: str | None = None  # ada: which transforms (bgc = blit, geometric, colour)
    p: float | None = None  # ada: a fixed probability instead of the adaptive controller
    target: float | None = None  # ada: the r_t = E[sign(D(real))] the controller steers to
    speed_kimg: float | None = None  # ada: thousands of real images for p to move by 1
    interval: int | None = None  # ada: steps between adjustments of p

    def __post_init__(self) -> None:
        for key in ("policy", "pipeline", "p", "target", "speed_kimg", "interval"):
            if getattr(self, key) is not None and key not in _KEYS_OF_KIND[self.kind]:
                raise ConfigError(f"augment.{key}: does nothing with augment.kind {self.kind!r}"
                                  + (f" (it is used with kind {_kind_using(key)!r})" if _kind_using(key) else ""))
        if self.policy is not None:
            names = [name.strip() for name in self.policy.split(",")]
            if not self.policy.strip() or any(n not in POLICIES for n in names) or len(set(names)) != len(names):
                raise ConfigError(f"augment.policy: {self.policy!r} is not a comma-separated list of distinct "
                                  f"policies from {', '.join(POLICIES)}")
        if self.pipeline is not None and self.pipeline not in PIPELINES:
            raise ConfigError(f"augment.pipeline: {self.pipeline!r} is not one of {', '.join(PIPELINES)}")
        if self.p is not None:
            if not 0 < self.p <= 1:
                raise ConfigError(f"augment.p: expected a probability in (0, 1], got {self.p}"
                                  + (" (0 augments nothing: augment.kind none)" if self.p == 0 else ""))
            for key in ("target", "speed_kimg", "interval"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"augment.{key}: does nothing with a fixed augment.p (drop one of the two)")
        if self.target is not None and not 0 <= self.target < 1:  # the official range is [0, 1]
            raise ConfigError(f"augment.target: expected a value in [0, 1), got {self.target}"
                              + (" (r_t is at most 1: p would never rise)" if self.target == 1 else ""))
        if self.speed_kimg is not None and not 0 < self.speed_kimg < math.inf:
            raise ConfigError(f"augment.speed_kimg: expected a positive finite number, got {self.speed_kimg}")
        if self.interval is not None and self.interval < 1:
            raise ConfigError(f"augment.interval: expected a positive integer, got {self.interval}")

    @property
    def adaptive(self) -> bool:
        return self.kind == "ada" and self.p is None


def _kind_using(key: str) -> str | None:
    return next((kind for kind, keys in _KEYS_OF_KIND.items() if key in keys), None)
