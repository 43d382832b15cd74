"""The command line end to end for PGAN: train/resume, generate, info, import of a zoo checkpoint, errors."""

import json

import numpy as np
import pytest
import safetensors.torch
import torch
import yaml
from conftest import shared_path
from pgan_tiny import TINY_PGAN
from PIL import Image

import ganforge
from ganforge.cli import main
from ganforge.viz.grid import label_grid


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_PGAN))
    return path


@pytest.mark.slow
def test_train_resume_generate_from_the_command_line(tmp_path, tiny_config, capsys):
    run = tmp_path / "run"
    assert main(["train", "pgan", "-c", str(tiny_config), "--run", str(run), "--until", "10"]) == 0
    assert "stopped at step 10 (--until)" in capsys.readouterr().out  # a normal stop, resumable
    assert main(["train", "pgan", "--run", str(run)]) == 0  # resumes from the run's own config
    assert "finished at step 20" in capsys.readouterr().out

    out = tmp_path / "gen"
    assert main(["generate", str(run), "--n", "5", "-o", str(out), "--seed", "3"]) == 0
    files = sorted(out.glob("0003-*.png"))
    assert len(files) == 5
    first = np.asarray(Image.open(files[0]))
    assert first.shape == (16, 16, 3)
    expected = ganforge.load(run).generate(n=5, seed=3)[0]
    expected_u8 = (expected * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(first, expected_u8)

    assert main(["generate", str(run), "--n", "4", "-o", str(out), "--grid"]) == 0
    captioned = label_grid(np.zeros((2 * 18 + 2, 2 * 18 + 2, 3), np.uint8), "EMA, step 20, seed 0")
    assert Image.open(out / "grid.png").size == captioned.shape[1::-1]  # 2x2 cells of 16 px + padding, captioned
    assert main(["generate", str(run), "--n", "3", "-o", str(out), "--interpolate", "4", "--step", "16"]) == 0
    captioned = label_grid(np.zeros((2 * 18 + 2, 4 * 18 + 2, 3), np.uint8),
                           "EMA, step 16, seed 0\ninterpolation: a row per path, 4 frames")
    assert Image.open(out / "interpolation.png").size == captioned.shape[1::-1]  # 2 paths x 4 frames, captioned


def test_info_prints_exact_parameter_counts_without_training(capsys):
    assert main(["info", "pgan", "--set", "data=builtin:shapes", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parameters"] == {"G": 22_933_394, "D": 22_941_313, "G_ema": 22_933_394}
    assert report["widths"] == [512, 512, 512, 512, 256, 128]
    assert main(["info", "pgan", "--set", "model.variant=zoo", "--set", "model.resolution=1024",
                 "--set", "model.schedule.max_iter_at_scale=[48000,96000,96000,96000,96000,96000,96000,96000,200000]",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parameters"]["G"] == 23_086_795 and report["parameters"]["D"] == 23_087_249


def test_errors_are_one_line_messages_naming_the_problem(tmp_path, capsys):
    assert main(["train", "pgan", "--run", str(tmp_path / "r"), "--set", "model.lamda_gp=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'model.lamda_gp': did you mean 'lambda_gp'" in err and "Traceback" not in err
    assert main(["train", "pgan", "--run", str(tmp_path / "r"), "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "no_run"), "-o", str(tmp_path / "o")]) == 2
    assert "no such run directory or checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_zoo_checkpoint_import_samples_and_trains_further(tmp_path, capsys):
    zoo_dir = shared_path("fixtures", "official", "pgan_zoo")
    run = tmp_path / "imported"
    assert main(["import", "pgan-zoo", str(zoo_dir / "small_s3_i100.pt"), "-o", str(run)]) == 0
    io = safetensors.torch.load_file(str(zoo_dir / "small_io.safetensors"))
    model = ganforge.load(run)
    assert model.config.model.variant == "zoo" and model.plan.resolution == 32 and model.plan.progress["alpha"] == 0
    torch.testing.assert_close(model.generate(io["z"], raw=True), io["avgG_out_a0"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.generate(io["z"], net="G", raw=True), io["netG_out_a0"], atol=1e-5, rtol=1e-5)
    # the zoo train config beside the file gave the schedule; the file name gave the position (scale 3, iter 100)
    assert model.config.model.schedule.max_iter_at_scale == [16, 32, 32, 100] and model.step == 180
    planned = tmp_path / "imported_s1_planned"  # from mid-run, beside the train config: grows on as planned
    assert main(["import", "pgan-zoo", str(zoo_dir / "small_s1_i32.pt"), "-o", str(planned)]) == 0
    model = ganforge.load(planned)
    assert model.config.model.resolution == 32 and model.config.model.schedule.max_iter_at_scale == [16, 32, 32, 100]
    # it samples as the zoo's checkpoint does: the last trained step's scale (8 px, stable), not the next one's start
    assert model.step == 48 and model.plan.resolution == 8 and model.plan.progress["alpha"] == 0.0
    torch.testing.assert_close(model.generate(io["z"], raw=True), io["s1_avgG_out_a0"], atol=1e-5, rtol=1e-5)
    assert model.config.data == "builtin:shapes?count=64&resolution=32"  # a placeholder: 64 images, not 4,096
    from ganforge.data.store import write_store

    grey = write_store(tmp_path / "grey", np.zeros((4, 1, 32, 32), np.uint8), resolution=32, channels=1, source="t")
    assert main(["train", "pgan", "--run", str(planned), "--data", str(grey)]) == 2  # other data, not other channels
    assert "does not fit the imported networks of" in capsys.readouterr().err
    earlier = tmp_path / "imported_s1"
    assert main(["import", "pgan-zoo", str(zoo_dir / "small_s1_i32.pt"), "-o", str(earlier), "--set",
                 "model.resolution=16", "--set", "model.widths=[32,32,16]", "--set",
                 "model.schedule.max_iter_at_scale=[16,32,8]", "--set", "model.schedule.alpha_jump_size=2"]) == 0
    grown = ganforge.load(earlier)
    assert grown.step == 48 and grown.plan.resolution == 8 and grown.plan.progress["alpha"] == 0.0
    torch.testing.assert_close(grown.nets["G_ema"](io["z"], 1, 0.0), io["s1_avgG_out_a0"], atol=1e-5, rtol=1e-5)
    # the import bound the built-in data only to shape the networks: its first training may name the real data
    rng = np.random.default_rng(0)
    faces = write_store(tmp_path / "faces", rng.integers(0, 256, (16, 3, 32, 32), dtype=np.uint8), resolution=32,
                        source="test")
    assert main(["train", "pgan", "--run", str(earlier), "--data", str(faces)]) == 0  # grows on to 16x16, fading
    assert "finished at step 56" in capsys.readouterr().out
    assert ganforge.load(earlier).plan.resolution == 16
    assert json.loads((earlier / "config.json").read_text())["data"] == str(faces)
    # once trained on, other data is a different config; the refusal says how to train the weights on it
    assert main(["train", "pgan", "--run", str(earlier), "--data", "builtin:shapes?resolution=16"]) == 2
    assert capsys.readouterr().err.rstrip().endswith(
        f"To train its weights on other data, start a new run from them: --init-from {earlier} --run NEW_DIR "
        "(--restart would delete them).")


def test_zoo_hub_model_by_name_fails_offline_with_what_to_fetch(tmp_path, monkeypatch, capsys):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    assert main(["import", "pgan-zoo", "celeba", "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "celebaCropped_s5_i83000-2b0acc76.pth" in err and "https://" in err and str(tmp_path / "cache") in err
