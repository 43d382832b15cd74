"""DCGAN / WGAN / WGAN-GP end to end on tiny runs: builtin shapes and an MNIST slice, grids and the progress GIF,
stop-and-resume equal to an uninterrupted run, sampling that cannot change training, generate and the CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from conftest import shared_path
from PIL import Image

import ganforge
from ganforge.cli import main
from ganforge.data.prepare import read_idx
from ganforge.data.store import write_store
from ganforge.viz.grid import caption_size, label_grid

SHAPES = "builtin:shapes?count=256&resolution=32"
OBJECTIVES = ("dcgan", "wgan", "wgan-gp")
LOSS_KEYS = {"dcgan": {"loss_D", "loss_G"}, "wgan": {"loss_D", "loss_G", "wdist"},
             "wgan-gp": {"loss_D", "loss_G", "wdist", "gp"}}


@pytest.fixture(scope="module")
def mnist_slice(tmp_path_factory) -> str:
    """256 test digits from ../shared, padded 28 → 32 like `prepare_mnist`, as a 1-channel store."""
    images = shared_path("data", "mnist", "t10k-images-idx3-ubyte.gz")
    digits = read_idx(images, 0x00000803, (28, 28))[:256]
    store = tmp_path_factory.mktemp("mnist") / "mnist32"
    write_store(store, np.pad(digits, ((0, 0), (2, 2), (2, 2)))[:, None], resolution=32, channels=1,
                source="MNIST t10k slice")
    return str(store)


def tiny(family: str, data: str, **model: Any) -> dict[str, Any]:
    """4 steps of a tiny run; a high learning rate so that the grids visibly change (the GIF drops equal frames)."""
    return {"family": family, "data": data, "progress": False, "tensorboard": False, "log_every": 2,
            "sample_every": 2, "checkpoint_every": 2, "sample_count": 9,
            "model": {"features_g": 2, "features_d": 2, "latent_dim": 8, "batch_size": 4, "steps": 4,
                      "lr": 0.005, **model}}


def tensors_of(run: Path, step: int) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(run / "checkpoints" / f"{step:08d}.safetensors"))


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def check_run(config: dict[str, Any], tmp_path: Path, channels: int) -> Path:
    """Train straight through and in pieces; both must end with identical checkpoints. Returns the straight run."""
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert not ganforge.train(config, straight).interrupted
    assert ganforge.train(config, pieces, until=3).step == 3  # stops between checkpoints 2 and 4
    ganforge.train(config, pieces)
    assert_same_tensors(tensors_of(straight, 4), tensors_of(pieces, 4))

    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    assert all(LOSS_KEYS[config["family"]] <= set(r) and all(np.isfinite(r[k]) for k in r) for r in log)
    saved = json.loads((straight / "config.json").read_text())
    assert saved["family"] == config["family"]
    model = ganforge.load(straight)
    assert type(model.family).name == config["family"] and model.step == 4
    z = torch.randn(3, 8)
    for net in model.nets:
        if net.startswith("G"):
            images = model.generate(z, net=net)
            assert images.shape == (3, channels, 32, 32) and images.abs().max() <= 1
    return straight


@pytest.mark.slow
@pytest.mark.parametrize("family", OBJECTIVES)
@pytest.mark.parametrize("dataset", ["shapes", "mnist"])
def test_tiny_run_writes_grids_and_gif_and_resumes_exactly(tmp_path, family: str, dataset: str,
                                                            request: pytest.FixtureRequest) -> None:
    data = SHAPES if dataset == "shapes" else request.getfixturevalue("mnist_slice")
    channels = 3 if dataset == "shapes" else 1
    run = check_run(tiny(family, data, ema_decay=0.9), tmp_path, channels)
    samples = run / "samples"
    assert sorted(p.name for p in samples.glob("*.png")) == [
        "00000002-G.png", "00000002.png", "00000004-G.png", "00000004.png"]
    grid = np.asarray(Image.open(samples / "00000004.png"))
    # 9 fixed latents: 3×3 cells of 32 px shown at 64 px, 2 px padding, under the caption; MNIST grids are
    # single-channel
    top = caption_size("EMA, step 4")[0]
    assert grid.shape == ((top + 200, 200, 3) if channels == 3 else (top + 200, 200))
    gif = Image.open(samples / "progress.gif")
    assert gif.n_frames == 2 and gif.size == (200, top + 200)


@pytest.mark.slow
def test_reuse_runs_resume_exactly(tmp_path) -> None:
    check_run(tiny("wgan-gp", SHAPES, critic_batches="reuse", ema_decay=0.9), tmp_path, channels=3)


@pytest.mark.slow
def test_tutorial_style_run_without_ema(tmp_path) -> None:
    run = check_run(tiny("dcgan", SHAPES), tmp_path, 3)
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["00000002-G.png", "00000004-G.png"]
    assert not any(k.startswith("net/G_ema/") for k in tensors_of(run, 4))
    assert sorted(ganforge.load(run).nets) == ["D", "G"]


@pytest.mark.slow
def test_writing_grids_does_not_change_training(tmp_path) -> None:
    # BatchNorm generators (every objective's) sample on batch statistics: grids must not move running stats,
    # EMA buffers or RNG streams
    often, never = tiny("dcgan", SHAPES, ema_decay=0.5), tiny("dcgan", SHAPES, ema_decay=0.5)
    often["sample_every"], never["sample_every"] = 1, 1000
    ganforge.train(often, tmp_path / "often")
    ganforge.train(never, tmp_path / "never")
    assert len(list((tmp_path / "often" / "samples").glob("*-G.png"))) == 4
    assert_same_tensors(tensors_of(tmp_path / "often", 4), tensors_of(tmp_path / "never", 4))


@pytest.mark.slow
def test_command_line_train_resume_generate(tmp_path, capsys) -> None:
    run, out = tmp_path / "run", tmp_path / "gen"
    args = ["--data", SHAPES, "--run", str(run), "--set", "model.features_g=4", "--set", "model.features_d=4",
            "--set", "model.steps=3", "--set", "model.batch_size=4", "--set", "model.ema_decay=0.9",
            "--set", "progress=false", "--set", "tensorboard=false"]
    assert main(["train", "wgan-gp", *args, "--until", "2"]) == 0
    assert "stopped at step 2 (--until)" in capsys.readouterr().out
    assert main(["train", "wgan-gp", "--run", str(run)]) == 0  # resumes from the run's own config
    assert "finished at step 3" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["model"]["lambda_gp"] == 10.0
    with pytest.warns(UserWarning, match=r"--n 4: the generator samples on its batch's statistics"):
        assert main(["generate", str(run), "--n", "4", "-o", str(out), "--grid"]) == 0
    captioned = label_grid(np.zeros((2 * 34 + 2, 2 * 34 + 2, 3), np.uint8), "EMA, step 3, seed 0")
    assert Image.open(out / "grid.png").size == captioned.shape[1::-1]  # 2×2 cells of 32 px + padding, captioned
    assert main(["train", "wgan", "--run", str(run)]) == 2  # a wgan-gp run is not a wgan run
    assert "is for 'wgan-gp' but 'wgan' was asked for" in capsys.readouterr().err


@pytest.mark.parametrize(("family", "d_norm_params"), [("dcgan", 2 * (16 + 32)), ("wgan", 16 + 32),
                                                       ("wgan-gp", 2 * (16 + 32))])
def test_info_reports_the_parameter_counts(capsys, family: str, d_norm_params: int) -> None:
    # features 8 at 32×32: G 100→128@4→64@8→32@16→3@32, D 3→8@16→16@8→32@4→1
    assert main(["info", family, "--set", "model.resolution=32", "--set", "model.features_g=8",
                 "--set", "model.features_d=8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    g = 100 * 128 * 16 + 2 * 128 + 128 * 64 * 16 + 2 * 64 + 64 * 32 * 16 + 2 * 32 + 32 * 3 * 16 + 3
    d = 3 * 8 * 16 + 8 + 8 * 16 * 16 + 16 * 32 * 16 + 32 * 16 + 1 + d_norm_params
    assert report["parameters"] == {"G": g, "D": d}
    assert report["objective"] == family


def test_interpolation_frames_count_as_the_batch_size_of_the_warning(tmp_path) -> None:
    """--n 2 --interpolate 20 draws 20 frames in one batch: no batch-statistics warning; --interpolate 3 (3 frames)
    warns and names both options."""
    run = tmp_path / "run"
    assert main(["train", "wgan-gp", "--data", SHAPES, "--run", str(run), "--set", "model.features_g=4", "--set",
                 "model.features_d=4", "--set", "model.steps=1", "--set", "model.batch_size=4", "--set",
                 "progress=false", "--set", "tensorboard=false"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["generate", str(run), "--n", "2", "--interpolate", "20", "-o", str(tmp_path / "a")]) == 0
    with pytest.warns(UserWarning, match=r"--n 2 with --interpolate 3: the generator samples on its batch's"):
        assert main(["generate", str(run), "--n", "2", "--interpolate", "3", "-o", str(tmp_path / "b")]) == 0
