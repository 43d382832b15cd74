"""`init_from` / `--init-from`: a new run's networks start from another run's weights where names and shapes match
(fine-tuning, transfer to another class count or latent size); a resumed run keeps its own."""

from __future__ import annotations

import copy

import pytest
import safetensors.torch
import torch
from pgan_tiny import TINY_PGAN
from reliability_runs import tiny_run, write_config

import ganforge
from ganforge.cli import main
from ganforge.config import ConfigError
from ganforge.families import resolve_run_config
from ganforge.training import checkpoint as ckpt
from ganforge.training.engine import Trainer


def _weights(run, step: int) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(run / "checkpoints" / f"{step:08d}.safetensors"))


def _states(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {f"net/{name}/{key}": value.detach().clone() for name, net in trainer.family.nets.items()
            for key, value in net.state_dict().items()}


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("init") / "source"
    ganforge.train(TINY_PGAN, run)
    return run


def test_matching_tensors_come_from_the_source_and_the_others_stay_fresh(source_run, tmp_path, capsys):
    config = copy.deepcopy(TINY_PGAN)
    config["model"]["latent_dim"] *= 2  # G's first dense layer changes shape; nothing else does
    fresh = _states(Trainer(resolve_run_config(None, copy.deepcopy(config)), tmp_path / "fresh"))
    capsys.readouterr()
    started = _states(Trainer(resolve_run_config(None, {**config, "init_from": str(source_run)}), tmp_path / "new"))
    source = _weights(source_run, 20)
    reshaped = {"net/G/blocks.0.dense.weight", "net/G_ema/blocks.0.dense.weight"}
    assert set(started) == set(fresh) and reshaped < set(started)
    for key, value in started.items():
        assert torch.equal(value, fresh[key] if key in reshaped else source[key]), key
    assert not torch.equal(fresh["net/D/blocks.0.conv.weight"], source["net/D/blocks.0.conv.weight"])  # it did copy
    out = capsys.readouterr().out
    assert out.startswith(f"initialised from {source_run / 'checkpoints' / '00000020.json'} (step 20): 54 of 56 "
                          "tensors copied; different shape, kept fresh: G/blocks.0.dense.weight [256, 16] → [256, 32]")


def test_a_resumed_run_keeps_its_own_weights_and_the_flag_sets_the_key(source_run, tmp_path, capsys):
    config_path = write_config(copy.deepcopy(TINY_PGAN), tmp_path / "c.json")
    run = tmp_path / "tuned"
    assert main(["train", "pgan", "-c", str(config_path), "--run", str(run), "--init-from", str(source_run),
                 "--until", "8"]) == 0
    assert "initialised from" in capsys.readouterr().out
    saved = ckpt.resolve_checkpoint(run)
    assert saved.meta["config"]["init_from"] == str(source_run.resolve())
    resumed = Trainer(resolve_run_config(None, saved.meta["config"]), run)
    assert "initialised from" not in capsys.readouterr().out
    assert all(torch.equal(value, saved.tensors[key]) for key, value in _states(resumed).items())
    # resuming with the config file alone (no --init-from) is the same run, which keeps its record of the source
    assert main(["train", "pgan", "-c", str(config_path), "--run", str(run), "--until", "10"]) == 0
    assert ckpt.resolve_checkpoint(run).meta["config"]["init_from"] == str(source_run.resolve())
    # another source on resume would do nothing (the run has weights): refused, naming the key
    assert main(["train", "pgan", "-c", str(config_path), "--run", str(run), "--init-from", str(tmp_path)]) == 2
    assert "init_from" in capsys.readouterr().err and ckpt.resolve_checkpoint(run).step == 10


def test_an_ema_network_the_source_lacks_starts_as_its_copied_source():
    nets = {"G": torch.nn.Linear(2, 3), "G_ema": torch.nn.Linear(2, 3)}
    tensors = {"net/G/weight": torch.ones(3, 2), "net/G/bias": torch.zeros(3)}
    transfer = ckpt.transfer_network_states(nets, {"G_ema": "G"}, tensors)
    assert (transfer.copied, transfer.total, transfer.reshaped, transfer.absent) == (2, 2, [], [])
    assert torch.equal(nets["G_ema"].weight, torch.ones(3, 2)) and torch.equal(nets["G_ema"].bias, torch.zeros(3))


def test_another_family_or_nothing_that_fits_is_refused(source_run, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"init_from: .*00000020.json is a pgan checkpoint and this run is wgan-gp"):
        Trainer(resolve_run_config(None, tiny_run("wgan-gp", init_from=str(source_run))), tmp_path / "a")
    found = ckpt.resolve_checkpoint(source_run)  # a pgan checkpoint whose tensors all have other names
    monkeypatch.setattr(ckpt, "resolve_checkpoint", lambda path: ckpt.Checkpoint(
        found.step, found.meta, {key.replace("net/", "other/"): value for key, value in found.tensors.items()},
        found.path))
    # 38: G and D; the source "has no" G_ema, which then starts as G (not counted)
    with pytest.raises(ConfigError, match=r"init_from: no tensor of .* fits this run's networks \(0 of 38 tensors "
                                          r"copied; not in the source: G/blocks.0.bias, G/blocks.0.dense.weight"):
        Trainer(resolve_run_config(None, {**TINY_PGAN, "init_from": str(source_run)}), tmp_path / "b")
    monkeypatch.undo()
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        Trainer(resolve_run_config(None, {**TINY_PGAN, "init_from": str(tmp_path / "missing")}), tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
