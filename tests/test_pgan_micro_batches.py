"""PGAN's `model.micro_batches`: the step computed in slices that keep D's minibatch-stddev groups whole."""

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import assert_same_update

from ganforge.augment.config import AugmentConfig
from ganforge.config import ConfigError
from ganforge.data.store import open_dataset
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
    assert_same_update(whole, sliced, whole_logs, sliced_logs, rel=1e-4, abs_=1e-6)


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
                                          r"multiple of 4 images, or counts for some resolutions"):
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
    def suggestion(step: int, config: Any) -> str:
        trainer = Trainer(config, tmp_path / f"run{len(list(tmp_path.iterdir()))}")
        return trainer.out_of_memory_message(trainer.family.plan(step), torch.OutOfMemoryError("CUDA out of memory"))

    # 4 groups of 4: 2 slices, not 3; at this resolution only
    assert "or resume with --set 'model.micro_batches={4: 2}' (the same update computed in more slices)" in (
        suggestion(0, tiny(schedule={"batch_size": 16})))
    assert "micro_batches" not in suggestion(0, tiny(schedule={"batch_size": 4}))  # one group: nothing keeps it
    # batches that fall with the resolution (as the official ones do): the last one stays whole
    falling = {"batch_size": None, "batch_per_resolution": {4: 16, 8: 16, 16: 4}}
    assert "--set 'model.micro_batches={8: 2}'" in suggestion(3, tiny(schedule=falling))
    assert "--set 'model.micro_batches={4: 2, 8: 4}'" in suggestion(3, tiny(schedule=falling,
                                                                            micro_batches={4: 2, 8: 2}))
    augmented = tiny(schedule={"batch_size": 16})
    augmented.augment = AugmentConfig(kind="diffaugment")
    assert "(the same update computed in more slices, its augmentations drawn per slice)" in suggestion(0, augmented)


def test_counts_per_resolution_slice_only_those(tmp_path) -> None:
    """{resolution: count}: the other resolutions run whole; keys must be the networks' resolutions."""
    falling = {"batch_size": None, "batch_per_resolution": {4: 4, 8: 8, 16: 4}}
    trainer = Trainer(tiny(micro_batches={8: 2}, schedule=falling), tmp_path / "run")
    assert [trainer.family.micro_batches_at(res) for res in (4, 8, 16)] == [1, 2, 1]
    assert [phase.micro_batches for phase in trainer.family.phases(3, trainer.family.plan(3))] == [2, 2]
    assert [phase.micro_batches for phase in trainer.family.phases(0, trainer.family.plan(0))] == [1, 1]
    for resolution in (32, 0):
        with pytest.raises(ConfigError, match=rf"model\.micro_batches\.{resolution}: {resolution} px is not one of "):
            tiny(micro_batches={resolution: 2})
    with pytest.raises(ConfigError, match=r"model\.micro_batches\.8: 2 slices of the 4 images at 8 px"):
        Trainer(tiny(micro_batches={8: 2}, schedule={"batch_size": 4}), tmp_path / "refused")


def test_every_phase_is_sliced(tmp_path) -> None:
    """D's phase, the lazy R1 phase and G's phase all run on slices: G makes 4 images at a time, and D scores 4
    reals with 4 fakes per call in its phase (one call for both), 4 reals for R1 and 4 fakes in G's phase."""
    trainer = Trainer(tiny(micro_batches=2, loss="logistic-r1", r1_interval=2), tmp_path / "run")
    sizes: dict[str, list[int]] = {"G": [], "D": []}
    for name, seen in sizes.items():
        trainer.family.nets[name].register_forward_pre_hook(
            lambda _module, args, seen=seen: seen.append(args[0].shape[0]))
    phases = trainer.family.phases(0, trainer.family.plan(0))
    assert [(phase.name, phase.micro_batches, phase.data) for phase in phases] == [
        ("D", 2, "fresh"), ("D_r1", 2, "previous"), ("G", 2, "previous")]
    trainer.train_step(trainer.family.plan(0))
    assert sizes == {"G": [4, 4, 4, 4], "D": [8, 8, 4, 4, 4, 4]}


def test_a_resume_may_slice_the_batch_and_lengthen_the_schedule_at_once(tmp_path, capsys) -> None:
    """A run that ran out of memory goes on in slices at some resolutions (the `--set` the message gives), and
    may be lengthened in the same resume; anything else is still refused."""
    from ganforge.cli import main
    from ganforge.training.engine import train

    train(tiny(), tmp_path / "run", until=4)
    longer = tiny(micro_batches={8: 2, 16: 2}, schedule={"max_iter_at_scale": [3, 8, 12]})
    assert train(longer, tmp_path / "run", until=6).step == 6
    with pytest.raises(ConfigError, match=r"model\.latent_dim: 16 → 8"):
        train(tiny(micro_batches=2, latent_dim=8), tmp_path / "run", until=8)
    config = tmp_path / "run" / "config.json"
    assert main(["train", "pgan", "-c", str(config), "--run-dir", str(tmp_path / "run"), "--until", "7",
                 "--set", "model.micro_batches={8: 2}"]) == 0
    assert "resuming from step 6" in capsys.readouterr().out


def test_a_paper_batch_share_of_partial_stddev_groups_is_refused_before_anything_is_written(tmp_path) -> None:
    """Batch 12 over 2 processes (6 each) with groups of 4 failed in the first step, inside minibatch_stddev, after
    config.json, the log and the report were written, calling the share "batch size"."""
    with pytest.raises(ConfigError, match=r"^model\.mbstd_group_size 4: the paper variant's minibatch stddev at 4 px "
                                          r"needs the batch \(6\) to be a multiple of its group size 4"):
        Trainer(tiny(variant="paper", schedule={"batch_size": 6}), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    family = PGANFamily(tiny(variant="paper", schedule={"batch_size": 12}).model, open_dataset(DATA),
                        torch.device("cpu"), DistInfo())
    family.check_shares(1)
    with pytest.raises(ConfigError, match=r"each process's share \(12 over 2 processes: 6\) to be a multiple of its "
                                          r"group size 4"):
        family.check_shares(2)
