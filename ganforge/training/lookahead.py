"""Lookahead on every trained network together ("Lookahead-minmax", Chavdarova et al., ICLR 2021).

The inner optimisers (each family's own Adam, its state untouched) take `every` steps; then every weight of every
trained network moves to slow + alpha·(fast − slow) and the slow copy takes that value. Applied to G and D jointly,
it pulls the pair back towards where it was before a round of the rotation that simultaneous gradient steps make
around an equilibrium (in the quick start's high-learning-rate run: a steadier 16 px level, see the README).
"""

from __future__ import annotations

import torch
from torch import nn

from ganforge.config import LookaheadConfig

TENSOR_PREFIX = "lookahead/"


class Lookahead:
    """The slow weights of `nets` (name → module: the networks some optimiser steps) and the pull that joins them
    with the fast ones. Pulls happen after engine steps `every - 1`, `2·every - 1`, ... counted from the run's
    first step, so a resumed run pulls where an uninterrupted one does."""

    def __init__(self, config: LookaheadConfig, nets: dict[str, nn.Module]) -> None:
        self.every = config.every
        self.alpha = config.alpha
        self.nets = nets
        self.slow: dict[str, dict[str, torch.Tensor]] = {}
        self.restart()

    def restart(self) -> None:
        """Slow weights equal to the current ones, as at a run's first step."""
        self.slow = {name: {key: p.detach().clone() for key, p in net.named_parameters()}
                     for name, net in self.nets.items()}

    def after_step(self, step: int) -> bool:
        """Pull if `step` (the engine step just taken) ends a round; returns whether it did."""
        if (step + 1) % self.every:
            return False
        with torch.no_grad():
            for name, net in self.nets.items():
                keys, fast = zip(*net.named_parameters(), strict=True)
                slow = [self.slow[name][key] for key in keys]
                torch._foreach_lerp_(slow, list(fast), self.alpha)
                torch._foreach_copy_(list(fast), slow)
        return True

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The slow weights under `lookahead/<net>/<parameter>`, for a checkpoint."""
        return {f"{TENSOR_PREFIX}{name}/{key}": value
                for name, slow in self.slow.items() for key, value in slow.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the slow weights a checkpoint holds. A checkpoint with none at all was written outside training
        (an importer's): the slow weights then start from the networks' current (just loaded) weights."""
        found = {key: value for key, value in tensors.items() if key.startswith(TENSOR_PREFIX)}
        if not found:
            self.restart()
            return
        expected = self.state_tensors()
        if found.keys() != expected.keys():
            raise ValueError(f"its Lookahead slow weights do not match the networks (missing "
                             f"{sorted(expected.keys() - found.keys())[:3]}, unexpected "
                             f"{sorted(found.keys() - expected.keys())[:3]})")
        with torch.no_grad():
            for key, value in expected.items():
                value.copy_(found[key])
