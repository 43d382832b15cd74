"""Engine guards: float32 by default on every device, batch sizes that split evenly over the processes, one warning
line for a missing TensorBoard, and `--restart` that validates everything before it deletes anything."""

from __future__ import annotations

import contextlib
import copy
import json
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pgan_tiny import TINY_PGAN

import ganforge
from ganforge.config import ConfigError, read_config_file, to_dict
from ganforge.distributed import DistInfo
from ganforge.families import resolve_run_config
from ganforge.training import checkpoint as ckpt
from ganforge.training import log as log_module
from ganforge.training.engine import Trainer, _autocast, _check_same_config
from ganforge.training.log import RunLogger

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHAPES = "builtin:shapes?count=64&resolution=32"


def tiny_dcgan(**model: Any) -> dict[str, Any]:
    return {"family": "wgan-gp", "data": SHAPES, "progress": False, "tensorboard": False, "checkpoint_every": 1,
            "sample_count": 4, "model": {"features_g": 2, "features_d": 2, "latent_dim": 8, "batch_size": 4, "steps": 2,
                                         **model}}


# --- precision -------------------------------------------------------------------------------------------------

def test_default_precision_is_float32_on_cuda_too() -> None:
    cuda = torch.device("cuda")  # only the device type matters: no GPU needed
    assert resolve_run_config("pgan", {}).amp == "off"
    assert isinstance(_autocast(cuda, resolve_run_config("biggan", {}).amp), contextlib.nullcontext)
    assert isinstance(_autocast(torch.device("cpu"), "auto"), contextlib.nullcontext)
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else contextlib.nullcontext():
        legacy = _autocast(cuda, "auto")  # runs saved with the former default resume in bf16, as they trained
    assert isinstance(legacy, torch.autocast) and legacy.fast_dtype == torch.bfloat16
    assert _autocast(torch.device("cpu"), "fp16").fast_dtype == torch.float16


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_trains_in_float32(path: Path) -> None:
    assert read_config_file(path).get("amp", "off") == "off"


# --- batch sizes and processes -----------------------------------------------------------------------------------

def test_a_batch_size_that_does_not_split_over_the_processes_is_refused_at_startup(tmp_path) -> None:
    config = resolve_run_config(None, tiny_dcgan(batch_size=4))
    with pytest.raises(ConfigError, match=r"^model.batch_size: batch size 4 is not divisible by the 3 processes"):
        Trainer(config, tmp_path / "run", dist=DistInfo(rank=0, world_size=3))
    assert not (tmp_path / "run").exists()


class OneOfTwo(DistInfo):
    """Rank 0 of two, in one process: its votes (the resume check's) are its own."""

    def max_over_ranks(self, value: int, *, after_long_work: bool = False) -> int:
        return value


def test_every_entry_of_a_pgan_batch_table_is_checked_up_front(tmp_path) -> None:
    data = copy.deepcopy(TINY_PGAN)
    data["model"]["schedule"]["batch_per_resolution"] = {4: 4, 16: 6}  # 6 is used only at the last scale
    config = resolve_run_config(None, data)
    with pytest.raises(ConfigError, match=r"^model.schedule.batch_per_resolution.16: batch size 6 is not divisible "
                                          r"by the 4 processes"):
        Trainer(config, tmp_path / "run", dist=DistInfo(rank=0, world_size=4))
    family = Trainer(config, tmp_path / "ok", dist=OneOfTwo(rank=0, world_size=2)).family
    assert family.batch_sizes() == {"model.schedule.batch_per_resolution.4": 4, "model.schedule.batch_size": 4,
                                    "model.schedule.batch_per_resolution.16": 6}


def test_an_uneven_shard_is_an_error_not_a_smaller_share() -> None:
    with pytest.raises(ValueError, match="batch size 5 is not divisible by the number of processes 2"):
        DistInfo(rank=1, world_size=2).shard(torch.arange(5))
    assert DistInfo(rank=1, world_size=2).shard(torch.arange(6)).tolist() == [1, 3, 5]
    # contiguous blocks (the zoo PGAN's consecutive minibatch-stddev groups), numpy index arrays alike
    assert DistInfo(rank=1, world_size=2, contiguous=True).shard(torch.arange(6)).tolist() == [3, 4, 5]
    assert DistInfo(rank=0, world_size=3, contiguous=True).shard(np.arange(6)).tolist() == [0, 1]


# --- TensorBoard ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("setting", "lines"), [(True, 1), (None, 0), (False, 0)])
def test_tensorboard_without_the_package(tmp_path, monkeypatch, capsys, setting, lines: int) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the import fails as if not installed
    logger = RunLogger(tmp_path, total_steps=1, start_step=0, enabled=True, progress=False, tensorboard=setting)
    logger.log({"step": 1, "loss": 0.5})
    logger.close()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == lines and all("tensorboard: true, but the tensorboard package is not installed" in line
                                     for line in err)
    assert (tmp_path / "log.jsonl").read_text().count("\n") == 1


def test_img_per_s_leaves_out_the_time_of_samples_metrics_and_checkpoints(tmp_path, monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(log_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    logger = RunLogger(tmp_path, total_steps=4, start_step=0, enabled=True, progress=False, tensorboard=False)
    for _ in range(2):  # two steps of 64 images, a second each
        clock[0] += 1.0
        logger.count_images(64)
    assert logger.throughput() == 64.0
    with logger.maintenance():
        clock[0] += 30.0  # a metric tick
    for _ in range(2):
        clock[0] += 1.0
        logger.count_images(64)
    assert logger.throughput() == 64.0  # not 128 images / 32 s
    logger.close()


def test_a_training_run_leaves_its_checkpoint_time_out_of_img_per_s(tmp_path, monkeypatch) -> None:
    save = Trainer.save_checkpoint

    def slow_save(self, *args, **kwargs):  # 20 real images a step (5 critic batches of 4): counted, these 0.5 s
        # would cap img/s at 40; a tiny step alone takes milliseconds
        time.sleep(0.5)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "save_checkpoint", slow_save)
    ganforge.train({**tiny_dcgan(), "log_every": 1, "model": {**tiny_dcgan()["model"], "steps": 3}}, tmp_path / "run")
    rates = [r["img_per_s"] for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines())
             if "img_per_s" in r]
    assert len(rates) == 3 and min(rates[1:]) > 100, rates


# --- resume and restart ----------------------------------------------------------------------------------------------

def test_a_saved_config_without_a_key_added_since_compares_at_its_default(tmp_path) -> None:
    requested = to_dict(resolve_run_config(None, tiny_dcgan()))
    saved = copy.deepcopy(requested)
    del saved["model"]["critic_batches"]  # written before the key existed: the run drew fresh batches
    _check_same_config(tmp_path, saved, requested)
    requested["model"]["critic_batches"] = "reuse"
    with pytest.raises(ConfigError, match="different config"):
        _check_same_config(tmp_path, saved, requested)


@pytest.mark.slow
def test_restart_validates_the_dataset_and_networks_before_deleting_anything(tmp_path) -> None:
    run = tmp_path / "run"
    ganforge.train(tiny_dcgan(), run)
    (run / "best.json").write_text('{"metric": "swd_avg", "best": [{"step": 2, "value": 1.0}]}')
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    for broken in ({**tiny_dcgan(), "data": str(tmp_path / "no-such-store")},
                   tiny_dcgan(resolution=64)):  # beyond the dataset: the family refuses to build
        with pytest.raises((ValueError, OSError)):
            ganforge.train(broken, run, restart=True)
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    trainer = Trainer(resolve_run_config(None, tiny_dcgan(lr=3e-4)), run, restart=True)
    assert ckpt.checkpoint_steps(run) == [] and not (run / "best.json").exists() and trainer.step == 0
