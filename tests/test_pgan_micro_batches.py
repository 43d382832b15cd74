"""PGAN's `model.micro_batches`: the step computed in slices that keep D's minibatch-stddev groups whole."""

from pathlib import Path
from typing import Any

import pytest
import torch

from ganforge.config import ConfigError
from ganforge.distributed import DistInfo
from ganforge.families import resolve_run_config
from ganforge.families.pgan import PGANFamily
from ganforge.training.engine import Trainer

DATA = "builtin:shapes?count=64&resolution=16"


def tiny(**model: Any):
    schedule = {"max_iter_at_scale": [3, 8, 8], "alpha_jumps": 2, "alpha_jump_size": 2, "batch_size": 8,
                **model.pop("schedule", {})}
    base = {"resolution": 16, "latent_dim": 16, "widths": [16, 16, 8], "schedule": schedule, **model}
    return resolve_run_config("pgan", {"data": DATA, "progress": False, "tensorboard": False, "model": base})


def recorded_steps(run_dir: Path, steps: int, **model: Any) -> tuple[list[tuple[str, list[torch.Tensor]]],
                                                                     list[dict[str, float]]]:
    """`steps` training steps: the gradient each optimiser steps with, and each step's log values."""
    trainer = Trainer(tiny(**model), run_dir)
    stepped: list[tuple[str, list[torch.Tensor]]] = []
    for name, optimizer in trainer.family.optimizers.items():
        def recording(*args, name=name, optimizer=optimizer, step=optimizer.step, **kwargs):
            stepped.append((name, [p.grad.clone() for group in optimizer.param_groups for p in group["params"]
                                   if p.grad is not None]))
            return step(*args, **kwargs)

        optimizer.step = recording
    return stepped, trainer.stepped_losses(steps)


@pytest.mark.parametrize("model", [
    {"variant": "paper"},  # strided groups: the slices interleave
    {"variant": "zoo"},  # consecutive groups: the slices are blocks
    {"variant": "zoo", "conditions": ["shape"]},  # AC-GAN: the fakes' drawn classes are shared like the latents
    {"variant": "paper", "conditions": ["shape"]},
    {"variant": "paper", "loss": "logistic-r1", "r1_interval": 2},  # the lazy R1 phase slices too
    {"variant": "paper", "loss": "logistic-r1", "r1_interval": 1, "styles": True},
], ids=["paper", "zoo", "zoo-conditional", "paper-conditional", "lazy-r1", "r1-styles"])
def test_micro_batches_give_the_whole_batch_update(tmp_path, model) -> None:
    """A batch of 8 in 2 slices of 4 (one minibatch-stddev group each) through a scale's end and the next scale's
    fade: every optimiser steps with the whole batch's gradient (to float rounding, relative to the network's
    largest) and the logs are the whole batch's means. A slice that split the groups would give D other
    statistics: in 4 slices (groups of 2) the gradients differ far beyond rounding."""
    whole, whole_logs = recorded_steps(tmp_path / "whole", 5, **model)
    sliced, sliced_logs = recorded_steps(tmp_path / "sliced", 5, micro_batches=2, **model)
    assert [name for name, _ in sliced] == [name for name, _ in whole]
    for (name, expected), (_, got) in zip(whole, sliced, strict=True):
        scale = max(float(g.abs().max()) for g in expected)
        worst = max(float((g - e).abs().max()) for g, e in zip(got, expected, strict=True))
        assert worst < 1e-4 * scale, (name, worst, scale)
    for expected, got in zip(whole_logs, sliced_logs, strict=True):
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), key


def test_slices_that_split_the_groups_would_not_give_the_whole_batch_update(tmp_path, monkeypatch) -> None:
    """What the group check guards: with the check lifted, 4 slices of 2 (half groups) move the gradients far
    beyond rounding, so the equality above does test the grouping."""
    monkeypatch.setattr(PGANFamily, "check_shares", lambda self, world_size: None)
    whole, _ = recorded_steps(tmp_path / "whole", 1)
    split, _ = recorded_steps(tmp_path / "split", 1, micro_batches=4)
    expected, got = whole[0][1], split[0][1]  # D's first step
    scale = max(float(g.abs().max()) for g in expected)
    assert max(float((g - e).abs().max()) for g, e in zip(got, expected, strict=True)) > 1e-2 * scale


def test_micro_batches_that_would_split_a_group_or_gdpp_are_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"^model\.micro_batches: 4 slices of the 8 images at 4 px would split D's "
                                          r"minibatch-stddev groups of 4 \(model\.mbstd_group_size 4\), .* a "
                                          r"multiple of 4 images$"):
        Trainer(tiny(micro_batches=4), tmp_path / "run")
    with pytest.raises(ConfigError, match=r"model\.micro_batches: 3 slices of the 8 images"):
        Trainer(tiny(micro_batches=3), tmp_path / "run")
    # the zoo groups a batch its group size does not divide as one group: no slice keeps it whole
    with pytest.raises(ConfigError, match=r"groups of 6 "):
        Trainer(tiny(variant="zoo", micro_batches=2, schedule={"batch_size": 6}), tmp_path / "run")
    # a process's share is what is sliced: 4 images each, in 2 slices of 2
    with pytest.raises(ConfigError, match=r"model\.micro_batches: 2 slices of the 4 images per process \(batch 8 "
                                          r"over 2 processes\) at 4 px"):
        Trainer(tiny(micro_batches=2), tmp_path / "run", dist=DistInfo(rank=0, world_size=2))
    with pytest.raises(ConfigError, match=r"model\.micro_batches: expected an integer >= 1, got 0"):
        tiny(micro_batches=0)
    with pytest.raises(ConfigError, match=r"model\.micro_batches: 2 with model\.gdpp 1\.0: GDPP compares"):
        tiny(micro_batches=2, gdpp=1.0)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_out_of_memory_suggests_slices_that_keep_the_groups(tmp_path) -> None:
    trainer = Trainer(tiny(schedule={"batch_size": 16}), tmp_path / "run")
    message = trainer.out_of_memory_message(trainer.family.plan(0), torch.OutOfMemoryError("CUDA out of memory"))
    assert "or resume with --set model.micro_batches=2 (the same update" in message  # 4 groups of 4: 2, not 3
    trainer = Trainer(tiny(schedule={"batch_size": 4}), tmp_path / "small")
    message = trainer.out_of_memory_message(trainer.family.plan(0), torch.OutOfMemoryError("CUDA out of memory"))
    assert "micro_batches" not in message  # one group: no slice keeps it whole

