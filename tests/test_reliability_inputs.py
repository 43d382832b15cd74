"""Hostile and odd input through the command line: image folders and zips of every awkward kind, a prepare killed
mid-way, invalid configs, foreign checkpoints and malicious pickles. Each input works as a user would expect, is
skipped with a per-file warning and a count, or stops with a one-line error naming the file or key (exit 2)."""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from reliability_runs import TINY_RUNS, child_env, tiny_run, write_config

import ganforge
from ganforge.cli import main
from ganforge.config import ConfigError, to_dict
from ganforge.data.store import DatasetError, open_dataset
from ganforge.families import resolve_run_config
from ganforge.training import checkpoint as ckpt


def run_cli(capsys: pytest.CaptureFixture, *argv: Any) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `ganforge ARGV` run in this process."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"ganforge {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# --- datasets -------------------------------------------------------------------------------------------------

def hostile_folder(root: Path) -> dict[str, Any]:
    """Every awkward image kind in one folder; returns the expected 8×8 RGB value of each good one, by file name."""
    root.mkdir()
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    (root / "truncated.jpg").write_bytes(encoded(noise, "JPEG")[:300])
    (root / "truncated.png").write_bytes(encoded(noise, "PNG")[:300])
    (root / "zero.png").write_bytes(b"")
    (root / "notes.jpg").write_text("a shopping list, not a photo")
    Image.new("L", (20, 20), 128).save(root / "gray.png")
    Image.new("RGBA", (20, 20), (255, 0, 0, 0)).save(root / "rgba.png")  # fully transparent: white, as viewers show
    palette = Image.new("P", (20, 20), 3)
    palette.putpalette([0, 0, 0] * 3 + [200, 100, 50] + [0, 0, 0] * 252)
    palette.save(root / "palette.png")
    Image.fromarray(np.full((20, 20), 65535, dtype=np.uint16)).save(root / "sixteen.png")
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(root / "cmyk.jpg")  # pure red in CMYK
    sideways = np.zeros((8, 16, 3), np.uint8)
    sideways[:, :8], sideways[:, 8:] = (255, 0, 0), (0, 0, 255)  # left red, right blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": upright, red is on top
    Image.fromarray(sideways).save(root / "exif.jpg", exif=exif, quality=100)
    Image.new("RGB", (2, 2), (0, 255, 0)).save(root / "tiny.png")
    Image.new("RGB", (6000, 4000), (10, 20, 30)).save(root / "huge.png", compress_level=1)
    os.symlink((root / "gray.png").absolute(), root / "link.png")
    os.symlink(root.absolute(), root / "loop")  # a symlinked folder that contains itself
    return {"cmyk.jpg": (255, 0, 0), "exif.jpg": None, "gray.png": (128, 128, 128), "huge.png": (10, 20, 30),
            "link.png": (128, 128, 128), "palette.png": (200, 100, 50), "rgba.png": (255, 255, 255),
            "sixteen.png": (255, 255, 255), "tiny.png": (0, 255, 0)}


@pytest.mark.slow
def test_hostile_image_folder_converts_the_good_and_skips_the_bad_by_name(tmp_path, capsys, caplog) -> None:
    expected = hostile_folder(tmp_path / "src")
    out = tmp_path / "store"
    with caplog.at_level(logging.WARNING):
        code, printed, _ = run_cli(capsys, "prepare", "folder", tmp_path / "src", "-o", out, "--resolution", 8,
                                   "--workers", 1)
    assert code == 0 and "9 images at 8x8, levels [4, 8], 4 files skipped" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    skipped = {Path(entry["file"]).name: entry["reason"] for entry in manifest["skipped"]}
    assert sorted(skipped) == ["notes.jpg", "truncated.jpg", "truncated.png", "zero.png"]
    assert "0 bytes" in skipped["zero.png"] and "cannot identify image file" in skipped["notes.jpg"]
    assert all("truncated" in skipped[name].lower() for name in ("truncated.jpg", "truncated.png"))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert all(any(name in message for message in warned) for name in skipped)
    assert any("skipped 4 of 13 files" in message for message in warned)

    images = np.asarray(open_dataset(out).images(8)).transpose(0, 2, 3, 1)
    assert manifest["count"] == len(expected) == len(images)
    for (name, colour), image in zip(sorted(expected.items()), images, strict=True):
        if colour is not None:
            assert np.abs(image.astype(int) - colour).max() <= 1, (name, image[0, 0])
    upright = images[sorted(expected).index("exif.jpg")].astype(int)
    assert upright[0, :, 0].min() > 200 and upright[-1, :, 2].min() > 200  # red row on top, blue at the bottom


def test_zip_with_duplicate_member_names_keeps_both(tmp_path, capsys) -> None:
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name: that is the point
        zf.writestr("a.png", encoded(Image.new("RGB", (8, 8), (255, 0, 0)), "PNG"))
        zf.writestr("a.png", encoded(Image.new("RGB", (8, 8), (0, 0, 255)), "PNG"))
    code, _, _ = run_cli(capsys, "prepare", "folder", archive, "-o", tmp_path / "store", "--resolution", 8,
                      "--workers", 1)
    assert code == 0
    images = np.asarray(open_dataset(tmp_path / "store").images(8))
    assert sorted(images[:, :, 0, 0].tolist()) == [[0, 0, 255], [255, 0, 0]]


def test_empty_and_all_broken_folders_are_one_line_errors_naming_the_folder(tmp_path, capsys) -> None:
    empty, broken = tmp_path / "empty", tmp_path / "broken"
    empty.mkdir()
    broken.mkdir()
    (broken / "x.png").write_bytes(b"\x89PNG garbage")
    for folder, problem in ((empty, "contains no images"), (broken, "none of its 1 image files")):
        code, _, err = run_cli(capsys, "prepare", "folder", folder, "-o", tmp_path / "out", "--resolution", 8)
        assert code == 2
        line = one_line_error(err, "prepare")
        assert str(folder) in line and problem in line
        assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_domain_folder_with_one_image_trains_stargan2(tmp_path, capsys) -> None:
    src = tmp_path / "domains"
    for domain, count, colour in (("cats", 3, (200, 50, 50)), ("dogs", 1, (50, 50, 200))):
        (src / domain).mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (32, 32), colour).save(src / domain / f"{index}.png")
    assert run_cli(capsys, "prepare", "folder", src, "-o", tmp_path / "store", "--resolution", 32,
                   "--workers", 1)[0] == 0
    store = open_dataset(tmp_path / "store")
    assert store.label_columns == [("class", ["cats", "dogs"])] and store.labels[:, 0].tolist() == [0, 0, 0, 1]
    config = tiny_run("stargan2", data=str(tmp_path / "store"))
    config["model"].update(domain_column="class", batch_size=2, steps=1)
    assert ganforge.train(config, tmp_path / "run").step == 1


def test_killed_prepare_leaves_the_old_store_or_nothing_loadable(tmp_path) -> None:
    src, out = tmp_path / "src", tmp_path / "store"
    src.mkdir()
    for index in range(1000):
        Image.new("RGB", (48, 48), (index % 256, 0, 0)).save(src / f"{index:04d}.png", compress_level=0)
    old = tmp_path / "old"
    shutil.copytree(src, old, ignore=lambda folder, names: names[3:])  # a 3-image store to be replaced
    assert main(["prepare", "folder", str(old), "-o", str(out), "--resolution", "8", "--workers", "1"]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "ganforge.cli", "prepare", "folder", str(src), "-o", str(out),
                             "--resolution", "8", "--workers", "1", "--overwrite"], env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("store.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(random.Random(0).uniform(0.01, 0.1))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    partial = list(tmp_path.glob("store.tmp-*"))
    assert len(partial) == 1  # killed while writing: the half store is a temp folder that does not load
    with pytest.raises(DatasetError, match="not a ganforge store"):
        open_dataset(partial[0])
    assert open_dataset(out).count == 3  # the old store is intact


# --- configs --------------------------------------------------------------------------------------------------

BAD_CONFIGS = [  # (family, key path, value, text the one-line error must contain)
    ("pgan", "model.latent_dim", "many", "model.latent_dim: expected an integer"),
    ("pgan", "model.widths", "8,8", "model.widths: expected a list"),
    ("biggan", "model.g_lr", "fast", "model.g_lr"),
    ("wgan-gp", "model.critic_steps", 2.5, "model.critic_steps"),
    ("pgan", "model.latnt_dim", 8, "unknown config key 'model.latnt_dim': did you mean 'latent_dim'"),
    ("stargan2", "chekpoint_every", 1, "unknown config key 'chekpoint_every': did you mean 'checkpoint_every'"),
    ("wgan-gp", "model.batch_size", -4, "model.batch_size: expected a positive integer, got -4"),
    ("biggan", "model.steps", -1, "model.steps: expected a positive integer, got -1"),
    ("stargan2", "model.style_dim", 0, "model.style_dim: expected a positive integer"),
    ("pgan", "sample_count", -3, "sample_count: expected a positive integer"),
    ("pgan", "model.resolution", 12, "model.resolution: expected a power of two"),
    ("stargan2", "model.resolution", 24, "model.resolution: 24"),
    ("pgan", "model.schedule.max_iter_at_scale", [3, 4], "model.schedule.max_iter_at_scale: 2 entries but "
                                                         "resolution 16 has 3 scales"),
    ("pgan", "model.widths", [8, 8], "widths must list one width per scale 4..16 (3 entries)"),
]


@pytest.mark.parametrize(("family", "key", "value", "message"), BAD_CONFIGS)
def test_bad_config_is_a_one_line_error_naming_the_key(tmp_path, capsys, family: str, key: str, value: Any,
                                                       message: str) -> None:
    config = tiny_run(family)
    *parents, leaf = key.split(".")
    section = config
    for part in parents:
        section = section[part]
    section[leaf] = value
    path = write_config(config, tmp_path / "config.json")
    code, _, err = run_cli(capsys, "train", family, "-c", path, "--run-dir", tmp_path / "run")
    assert code == 2
    assert message in one_line_error(err, "train")
    assert not ckpt.checkpoint_steps(tmp_path / "run")


# --- checkpoints ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pgan_checkpoint(tmp_path_factory) -> Path:
    """The step-1 checkpoint record of a tiny PGAN run (16×16, paper variant)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("pgan") / "run"
    ganforge.train(TINY_RUNS["pgan"], run, until=1)
    torch.set_num_threads(threads)
    return ckpt.checkpoint_dir(run) / "00000001.json"


def foreign_target(kind: str) -> tuple[str, dict[str, Any]]:
    """(family, config) of a run that the tiny PGAN checkpoint does not belong to."""
    if kind == "family":
        return "wgan-gp", tiny_run("wgan-gp", data=TINY_RUNS["pgan"]["data"])
    config = tiny_run("pgan")
    if kind == "resolution":
        config.update(data="builtin:shapes?count=64&resolution=32")
        config["model"].update(resolution=32, widths=[8, 8, 4, 4])
        config["model"]["schedule"]["max_iter_at_scale"] = [3, 4, 4, 4]
    else:
        config["model"]["variant"] = "zoo"
    return "pgan", config


@pytest.mark.parametrize(("kind", "refusal"), [
    ("family", "checkpoint of family 'pgan', not 'wgan-gp'"),
    ("resolution", "does not match this config"),
    ("variant", "does not match this config"),
])
@pytest.mark.slow
def test_checkpoint_of_another_family_resolution_or_variant_is_refused(tmp_path, capsys, pgan_checkpoint: Path,
                                                                        kind: str, refusal: str) -> None:
    family, config = foreign_target(kind)
    path = write_config(config, tmp_path / "config.json")
    run = tmp_path / "run"
    folder = ckpt.checkpoint_dir(run)
    folder.mkdir(parents=True)
    shutil.copy(pgan_checkpoint.with_suffix(".safetensors"), folder)
    record = json.loads(pgan_checkpoint.read_text())
    (folder / pgan_checkpoint.name).write_text(json.dumps(record))
    code, _, err = run_cli(capsys, "train", family, "-c", path, "--run-dir", run)
    expected = f"{run} is a pgan run, not wgan-gp" if kind == "family" else "was trained with a different config"
    assert code == 2 and expected in one_line_error(err, "train")
    # even with its recorded config and data made to match (hand-edited), the weights themselves are refused
    record["config"] = to_dict(resolve_run_config(family, copy.deepcopy(config), []))
    record["dataset"] = {k: v for k, v in open_dataset(config["data"]).manifest.items() if k != "skipped"}
    (folder / pgan_checkpoint.name).write_text(json.dumps(record))
    code, _, err = run_cli(capsys, "train", family, "-c", path, "--run-dir", run)
    assert code == 2
    line = one_line_error(err, "train")
    assert refusal in line and "00000001" in line
    assert ckpt.checkpoint_steps(run) == [1]  # nothing trained on top of it


class _WritesMarker:
    """Unpickling this runs code that creates `marker`: a loader that executes pickled code is caught by it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",)


def _malicious(path: Path, marker: Path, legacy: bool) -> Path:
    torch.save({"config": _WritesMarker(marker), "netG": {"w": torch.zeros(1)}}, path,
               _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize(("loader", "name", "legacy"), [
    ("pgan-zoo", "celeba.pth", False), ("pgan-zoo", "celeba.pt", True), ("stargan2", "100000_nets_ema.ckpt", True),
    ("stargan2", "100000_nets.ckpt", False), ("biggan-pytorch", "G.pth", False),
    ("inception", "pt_inception.pth", False),
])
def test_malicious_pickle_is_refused_without_running_it(tmp_path, capsys, loader: str, name: str,
                                                        legacy: bool) -> None:
    marker = tmp_path / "pwned"
    data = TINY_RUNS["stargan2"]["data"]
    if loader == "biggan-pytorch":
        weights = tmp_path / "weights"
        weights.mkdir()
        for file in ("G.pth", "D.pth", "G_ema.pth", "state_dict.pth"):
            _malicious(weights / file, marker, legacy)
        argv = ["import", loader, weights, "-o", tmp_path / "run", "--data", data]
    elif loader == "inception":
        fake = tmp_path / "fake"
        fake.mkdir()
        for index in range(2):
            Image.new("RGB", (16, 16), (index, 0, 0)).save(fake / f"{index}.png")
        argv = ["evaluate", "--fake", fake, "--real", fake, "--metrics", "fid", "--inception-weights",
                _malicious(tmp_path / name, marker, legacy)]
    else:
        argv = ["import", loader, _malicious(tmp_path / name, marker, legacy), "-o", tmp_path / "run", "--data", data]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "Traceback" not in err
    assert err.startswith(f"ganforge {argv[0]}: error: ") and (name in err or "weights" in err)
    assert "add_safe_globals" not in err  # torch's advice to allow the class is not for a file from elsewhere
    assert not marker.exists()
    assert not (tmp_path / "run").exists()
    if loader != "inception":  # see the next test
        one_line_error(err, argv[0])


def test_a_damaged_legacy_torch_file_is_refused_in_one_line(tmp_path) -> None:
    """A legacy (non-zip) file whose storage keys a flipped byte broke fails an assert inside torch's reader."""
    from ganforge.safe_load import load_weights_only

    path = tmp_path / "G_ema.pth"
    torch.save({"w": torch.arange(6.0), "v": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    data = bytearray(path.read_bytes())
    keys = [index for index in range(len(data) - 1) if data[index : index + 1].isdigit()]  # storage keys are digits
    for index in keys[-3:]:
        data[index] = ord("9")
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"^{path}: refused to load as weights \(") as refusal:
        load_weights_only(path, what="weights")
    assert "\n" not in str(refusal.value)


def test_refused_inception_weights_are_a_one_line_error(tmp_path, capsys) -> None:
    from ganforge.metrics.inception import load_inception

    marker = tmp_path / "pwned"
    with pytest.raises(ValueError) as refusal:
        load_inception(_malicious(tmp_path / "pt_inception.pth", marker, legacy=False))
    assert not marker.exists()
    assert "\n" not in str(refusal.value)


@pytest.mark.slow
def test_generate_on_a_stargan2_run_is_a_clear_error(tmp_path, capsys) -> None:
    config = tiny_run("stargan2")
    config["model"].update(steps=1, batch_size=2)
    ganforge.train(config, tmp_path / "run")
    code, out, err = run_cli(capsys, "generate", tmp_path / "run", "-o", tmp_path / "out", "--n", 1)
    # StarGAN v2 translates images: generate refuses (exit 2, one line) and names the command that does it
    assert code == 2 and out == ""
    assert "ganforge translate RUN --src DIR --ref DIR -o OUT" in one_line_error(err, "generate")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_image_set_metrics_on_a_stargan2_run_are_refused_before_training(tmp_path, capsys) -> None:
    # its samples are (source, translation) pairs: an image-set FID or SWD of them would score real images as
    # generated ones (biased low, and a best checkpoint ranked by it meaningless); its own protocol is allowed
    config_path = write_config(tiny_run("stargan2"), tmp_path / "stargan2.json")
    code, out, err = run_cli(capsys, "train", "stargan2", "-c", config_path, "--run", tmp_path / "run",
                             "--set", "metrics=[swd]", "--set", "metrics_every=1")
    assert code == 2 and out == ""
    line = one_line_error(err, "train")
    assert "(source, translation) pairs" in line and "ganforge evaluate RUN [--step N]" in line
    assert "whose metrics are ['fid', 'lpips']" in line
    assert not (tmp_path / "run").exists()
    protocol = {**tiny_run("stargan2"), "metrics": ["fid"]}
    assert resolve_run_config("stargan2", {**protocol, "best_metric": "FID_latent/mean"}).metrics == ["fid"]
    with pytest.raises(ConfigError, match=r"best_metric: 'LPIPS_latent/mean' is not an output of metrics \['fid'\]"):
        resolve_run_config("stargan2", {**protocol, "best_metric": "LPIPS_latent/mean"})
    with pytest.raises(ConfigError, match="fid_mode: 'clean' is for the Inception metrics of image sets"):
        resolve_run_config("stargan2", {**protocol, "fid_mode": "clean"})


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 "
                                                          "has a total capacity of 79.10 GiB of which 1.2 GiB is free"),
                                   MemoryError(),  # torch's CPU allocator raises a plain RuntimeError:
                                   RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't "
                                                "allocate memory: you tried to allocate 68719476736 bytes.")])
def test_running_out_of_memory_in_a_step_is_one_line_naming_step_batch_and_checkpoint(tmp_path, capsys, monkeypatch,
                                                                                       error) -> None:
    from ganforge.training.engine import Trainer

    real_step = Trainer.train_step

    def step_that_runs_out(self, plan):
        if self.step == 5:
            raise error
        return real_step(self, plan)

    monkeypatch.setattr(Trainer, "train_step", step_that_runs_out)
    config = tiny_run("wgan-gp", checkpoint_every=4)
    code, _, err = run_cli(capsys, "train", "wgan-gp", "-c", write_config(config, tmp_path / "c.json"),
                           "--run", tmp_path / "run")
    line = one_line_error(err, "train")
    assert code == 2
    memory = "cpu" if isinstance(error, torch.OutOfMemoryError) else "host"  # the device's, else the machine's
    assert f"out of {memory} memory in step 6 at 32 px with a batch of 4" in line
    assert "from the newest checkpoint, step 4" in line and "smaller batch" in line
    assert ("(CUDA out of memory. Tried to allocate 2.00 GiB)" in line) == isinstance(error, torch.OutOfMemoryError)
    assert ckpt.checkpoint_steps(tmp_path / "run") == [4]  # nothing half-done was saved


def test_a_stargan2_run_out_of_memory_goes_on_in_micro_batches(tmp_path, capsys, monkeypatch) -> None:
    from ganforge.training.engine import Trainer

    real_step = Trainer.train_step

    def whole_batches_do_not_fit(self, plan):
        if self.family.config.micro_batches == 1 and self.step == 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(self, plan)

    monkeypatch.setattr(Trainer, "train_step", whole_batches_do_not_fit)
    config = write_config(tiny_run("stargan2", checkpoint_every=4), tmp_path / "c.json")
    code, _, err = run_cli(capsys, "train", "stargan2", "-c", config, "--run", tmp_path / "run")
    assert code == 2 and "or resume with --set model.micro_batches=2 (the same update" in one_line_error(err, "train")
    code, out, _ = run_cli(capsys, "train", "stargan2", "-c", config, "--run", tmp_path / "run",
                           "--set", "model.micro_batches=2")
    assert code == 0 and "resuming from step 4" in out and ckpt.checkpoint_steps(tmp_path / "run")[-1] == 6
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["micro_batches"] == 2


def test_device_memory_running_out_outside_training_is_one_line(capsys, monkeypatch) -> None:
    import ganforge.cli as cli

    def out_of_memory(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(cli, "cmd_generate", out_of_memory)  # build_parser looks it up when main builds it
    code, _, err = run_cli(capsys, "generate", "RUN", "-o", "OUT")
    assert code == 2
    assert "out of memory (a batch size" in one_line_error(err, "generate")
    monkeypatch.setattr(cli, "cmd_generate", lambda args: (_ for _ in ()).throw(RuntimeError("a bug, not memory")))
    with pytest.raises(RuntimeError, match="a bug, not memory"):  # other runtime errors keep their traceback
        main(["generate", "RUN", "-o", "OUT"])
