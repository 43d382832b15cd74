"""A training step reads nothing back from the device: losses, log values and the non-finite check stay there
until the log point, so on a GPU the host never waits for the device inside a step."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from reliability_runs import FAMILIES, tiny_run

import ganforge
from ganforge.families import resolve_run_config
from ganforge.training.engine import NonFiniteError, Trainer

PACKAGE = Path(ganforge.__file__).resolve().parent
# the training code whose reads would stall a GPU; the data loader works on host tensors by design
WATCHED = (PACKAGE / "training", PACKAGE / "families", PACKAGE / "nn", PACKAGE / "models", PACKAGE / "losses.py",
           PACKAGE / "augment")
READS = ("item", "__float__", "__bool__", "tolist", "cpu", "numpy")
LOG_EVERY = 4


@contextmanager
def counted_host_reads() -> Iterator[list[str]]:
    """Every device→host read (the methods in READS) called from the watched code, as 'file:line method'."""
    calls: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name: str):
        original = originals[name]

        def read(self, *args, **kwargs):
            caller = sys._getframe(1)
            path = Path(caller.f_code.co_filename)
            if any(path == watched or watched in path.parents for watched in WATCHED):
                calls.append(f"{path.name}:{caller.f_lineno} {name}")
            return original(self, *args, **kwargs)
        return read

    for name in READS:
        setattr(torch.Tensor, name, counting(name))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@pytest.mark.parametrize("family", FAMILIES)
def test_steps_between_log_points_read_nothing_from_the_device(tmp_path, family):
    # with Lookahead (pulls after steps 2 and 5): the per-step option that touches every trained weight
    config = resolve_run_config(None, tiny_run(family, 2, log_every=LOG_EVERY, sample_every=1000,
                                               checkpoint_every=1000, lookahead={"every": 3, "alpha": 0.5}))
    trainer = Trainer(config, tmp_path / "run")
    inside_steps: list[list[str]] = []
    between_steps: list[list[str]] = []
    original_step = trainer.train_step

    def watched_step(plan):
        between_steps.append(list(calls))
        calls.clear()
        logs = original_step(plan)
        inside_steps.append(list(calls))
        calls.clear()
        return logs

    trainer.train_step = watched_step
    with counted_host_reads() as calls:
        trainer.train(until=2 * LOG_EVERY)
    assert len(inside_steps) == 2 * LOG_EVERY
    assert inside_steps == [[]] * (2 * LOG_EVERY)
    # between steps 1-2, 2-3, 3-4 and 5-6, 6-7, 7-8 nothing is read, but after a step checkpointed for good (PGAN's
    # scale end at step 6: a host point); at the log point after step 4, once
    quiet = [step for step in (1, 2, 3, 5, 6, 7) if step not in trainer.kept_steps]
    assert len(quiet) >= 5 and [between_steps[step] for step in quiet] == [[]] * len(quiet)
    assert len(between_steps[4]) == 1
    records = [line for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines() if '"step"' in line]
    assert len(records) == 2


def test_nan_detected_at_the_log_point_names_its_first_step_and_phase_and_writes_nothing(tmp_path):
    config = tiny_run("wgan-gp", log_every=LOG_EVERY, checkpoint_every=2)
    config["model"]["lambda_gp"] = 1e308  # the penalty overflows: the D loss is inf
    with pytest.raises(NonFiniteError, match=r"^step 1, phase D: loss is inf; stopping"):
        ganforge.train(config, tmp_path / "run")
    assert not list((tmp_path / "run").glob("checkpoints/*.safetensors"))
