"""End to end on real CIFAR-10 images from ../shared: prepare a 200-image class-folder slice, train the tiny BigGAN
through the CLI, resume, then per-class sheets, interpolations, a truncation sweep scored by the FID Inception network
(stand-in weights) and an NPZ export read back with allow_pickle=False; BigGAN options on a PGAN run are refused."""

from __future__ import annotations

import copy
import importlib.util
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import shared_path
from pgan_tiny import TINY_PGAN
from PIL import Image

import ganforge
from ganforge.cli import main
from ganforge.data.prepare_labelled import CIFAR10_CLASSES
from ganforge.data.store import open_dataset
from ganforge.models.biggan import sample_latents
from ganforge.viz import class_sampling as cs
from ganforge.viz.grid import caption_size, label_grid, make_grid, text_width

pytestmark = pytest.mark.slow  # end to end: every test uses the module's trained CIFAR-10 run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PER_CLASS = 20


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory) -> Path:
    """A 200-image CIFAR-10 store (20 per class) and a tiny BigGAN trained on it to step 2, then resumed to 4."""
    source = shared_path("data", "cifar10-jpeg", "train.zip")
    root = tmp_path_factory.mktemp("cifar")
    with zipfile.ZipFile(source) as full, zipfile.ZipFile(root / "slice.zip", "w") as part:
        for name in CIFAR10_CLASSES:
            for index in range(PER_CLASS):
                member = f"train/{name}/{index:04d}.jpg"
                part.writestr(member, full.read(member))
    assert main(["prepare", "folder", str(root / "slice.zip"), "-o", str(root / "store"), "--resolution", "32",
                 "--workers", "1"]) == 0
    config = yaml.safe_load((CONFIGS / "biggan_tiny.yaml").read_text())
    config["data"] = str(root / "store")
    (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    run = root / "run"
    assert main(["train", "biggan", "-c", str(root / "tiny.yaml"), "--run-dir", str(run), "--until", "2"]) == 0
    assert main(["train", "biggan", "--run-dir", str(run)]) == 0
    return run


def test_store_and_resumed_run(cifar_run):
    dataset = open_dataset(cifar_run.parent / "store")
    assert dataset.count == 200 and dataset.label_columns == [("class", sorted(CIFAR10_CLASSES))]
    assert np.bincount(dataset.labels[:, 0]).tolist() == [PER_CLASS] * 10
    log = [json.loads(line) for line in (cifar_run / "log.jsonl").read_text().splitlines()]
    assert [(row["step"], row.get("event")) for row in log] == [(2, None), (2, "resume"), (4, None)]
    model = ganforge.load(cifar_run)
    assert model.step == 4 and model.family.n_classes == 10


def test_sheets_and_interpolations(cifar_run, tmp_path):
    out = tmp_path / "out"
    assert main(["generate", str(cifar_run), "-o", str(out), "--per-class", "3", "--interpolate-class", "4",
                 "--n", "2", "--truncation", "0.8"]) == 0
    sizes = {}
    for name in ("per_class.png", "interp_z.png", "interp_class.png", "interp_both.png"):
        with Image.open(out / name) as image:
            sizes[name] = image.size
    model = ganforge.load(cifar_run)
    caption = cs.model_caption(model, truncation=0.8)
    title = f"{caption}\nrows: classes; columns: one z each"
    top, left = caption_size(title, CIFAR10_CLASSES)  # rows named by the store's classes
    assert sizes["per_class.png"] == (max(left + 2 + 3 * 34, text_width(title) + 6), top + 2 + 10 * 34)
    interp_title = f"{caption}\ninterpolation in class: a row per path, 4 frames"
    interp_labels = cs.interpolation_row_labels(model, "class", 2, truncation=0.8)
    assert all(" -> " in label and label.split(" -> ")[0] in CIFAR10_CLASSES for label in interp_labels)
    assert sizes["interp_class.png"] == label_grid(np.zeros((2 + 2 * 34, 2 + 4 * 34, 3), np.uint8),
                                                   interp_title, interp_labels).shape[1::-1]
    sheet = cs.class_sheet(model, 3, range(10), truncation=0.8)
    with Image.open(out / "per_class.png") as image:
        pixels = np.asarray(image)[top:, left:]
    np.testing.assert_array_equal(pixels[2 + 34 * 9:34 * 10, 2 + 34:34 * 2], cs.to_uint8(sheet[28:29])[0])


def test_truncation_sweep_with_stand_in_inception(cifar_run, tmp_path, capsys):
    recipe = shared_path("fixtures", "inception", "recipe.py")
    spec = importlib.util.spec_from_file_location("inception_recipe", recipe)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    layout = json.loads((recipe.parent / "layout.json").read_text())
    weights = tmp_path / "standin.pth"
    torch.save(module.standin_state_dict(layout), weights)

    out = tmp_path / "sweep"
    assert main(["generate", str(cifar_run), "-o", str(out), "--truncation-sweep", "0.5,none", "--sweep-n", "3",
                 "--inception-weights", str(weights)]) == 0
    printed = capsys.readouterr().out.splitlines()
    result = json.loads((out / "truncation_sweep.json").read_text())
    assert result["step"] == 4 and [row["truncation"] for row in result["rows"]] == [0.5, None]
    assert all(row["is_mean"] >= 1 and row["fid"] > 0 and row["n"] == 3 for row in result["rows"])
    assert result["rows"][0]["fid"] != result["rows"][1]["fid"]
    assert [line.split()[0] for line in printed[1:3]] == ["0.5", "none"]


def test_truncation_applies_to_plain_grids(cifar_run, tmp_path):
    assert main(["generate", str(cifar_run), "-o", str(tmp_path), "--grid", "--n", "4", "--truncation", "0.3"]) == 0
    model = ganforge.load(cifar_run)
    z = sample_latents(4, model.family.arch.g_dim_z, truncation=0.3, generator=torch.Generator().manual_seed(0))
    classes = model.latents(4, seed=0)["y"]  # drawn uniformly, like every sample of the model
    names = model.family.sample_cell_labels({"y": classes})  # CIFAR-10's class names, one under each cell
    assert set(names) <= {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
    expected = label_grid(make_grid(cs.to_uint8(model.generate({"z": z, "y": classes})), min_cell=64,
                                    cell_labels=names), f"{cs.model_caption(model, truncation=0.3)}, seed 0")
    with Image.open(tmp_path / "grid.png") as grid:
        np.testing.assert_array_equal(np.asarray(grid), expected)


def test_npz_round_trip(cifar_run, tmp_path):
    path = tmp_path / "samples.npz"
    assert main(["generate", str(cifar_run), "--npz", str(path), "--n", "12",
                 "--truncation", "0.7", "--truncation-method", "scale", "--seed", "3"]) == 0
    with np.load(path, allow_pickle=False) as archive:
        x, y = archive["x"], archive["y"]
    assert x.shape == (12, 3, 32, 32) and x.dtype == np.uint8 and y.min() >= 0 and y.max() < 10
    model = ganforge.load(cifar_run)
    batches = list(cs.iter_samples(model, 12, seed=3, truncation=0.7, method="scale"))
    np.testing.assert_array_equal(x, batches[0][0])
    np.testing.assert_array_equal(y, batches[0][1])


def test_biggan_options_are_refused_on_a_pgan_run(tmp_path, capsys):
    run = tmp_path / "pgan"
    ganforge.train(copy.deepcopy(TINY_PGAN), run, until=1)
    for option in (["--per-class", "2"], ["--truncation", "0.5"]):
        assert main(["generate", str(run), "-o", str(tmp_path / "out"), *option]) == 2
        also = " and runs with model.conditions (PGAN, DCGAN, WGAN, WGAN-GP)" if option[0] == "--per-class" else ""
        assert f"{option[0]} applies to class-conditional BigGAN runs{also}; this run's family is 'pgan'" in \
            capsys.readouterr().err
