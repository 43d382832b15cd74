"""`ganforge train --restart`: a bad --data leaves the run intact with a one-line error, and without -c the run's own
saved config is what starts over."""

from __future__ import annotations

import json

import pytest

from ganforge.cli import main
from ganforge.training import checkpoint as ckpt

SHAPES = "builtin:shapes?count=64&resolution=32"
TINY = ["--set", "model.features_g=2", "--set", "model.features_d=2", "--set", "model.latent_dim=8",
        "--set", "model.batch_size=4", "--set", "progress=false", "--set", "tensorboard=false",
        "--set", "checkpoint_every=1", "--set", "sample_count=4"]


@pytest.fixture()
def trained_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "wgan-gp", "--run", str(run), "--data", SHAPES, *TINY, "--set", "model.steps=2",
                 "--set", "model.lambda_gp=5"]) == 0
    capsys.readouterr()
    return run


def test_restart_with_a_mistyped_data_path_keeps_every_checkpoint(trained_run, tmp_path, capsys) -> None:
    files = sorted(p.name for p in (trained_run / "checkpoints").iterdir())
    assert main(["train", "wgan-gp", "--run", str(trained_run), "--restart", "--data", str(tmp_path / "celba64")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ganforge train: error:") and "celba64" in err
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == files


@pytest.mark.slow
def test_restart_without_a_config_starts_over_with_the_runs_own_config(trained_run, capsys) -> None:
    old = {step: json.loads((trained_run / "checkpoints" / f"{step:08d}.json").read_text())["time"]
           for step in ckpt.checkpoint_steps(trained_run)}
    assert main(["train", "wgan-gp", "--run", str(trained_run), "--restart", "--until", "1"]) == 0
    assert "stopped at step 1 (--until)" in capsys.readouterr().out
    assert ckpt.checkpoint_steps(trained_run) == [1]  # step 2 of the old run is gone, step 1 is new
    assert json.loads((trained_run / "checkpoints" / "00000001.json").read_text())["time"] != old[1]
    saved = json.loads((trained_run / "config.json").read_text())
    assert saved["model"]["lambda_gp"] == 5 and saved["model"]["features_g"] == 2 and saved["data"] == SHAPES


def test_weights_options_of_train_reach_the_config(tmp_path, capsys) -> None:
    """The missing-weights messages name --inception-weights and --wing-weights: train takes both (as config keys
    inception_weights and model.wing_weights), and import takes --wing-weights."""
    missing = tmp_path / "nowhere.pth"
    argv = ["train", "wgan-gp", "--run", str(tmp_path / "run"), "--data", SHAPES, *TINY, "--set", "metrics=[fid]"]
    assert main([*argv, "--inception-weights", str(missing)]) == 2
    assert f"file {missing} (from the argument) does not exist" in capsys.readouterr().err
    assert main(["train", "stargan2", "--run", str(tmp_path / "sg"), "--data", SHAPES, "--set", "model.w_hpf=1",
                 "--wing-weights", str(missing)]) == 2
    assert f"file {missing} (from the argument) does not exist" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "sg").exists()
