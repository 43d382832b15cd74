"""Every grid says what it shows: a caption strip above (EMA or G, the step, seed or truncation) and row labels
beside (class names, source / reference domains), drawn with PIL's bitmap font outside the grid, whose pixels stay
exactly those of the unlabelled grid."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from reliability_runs import tiny_run

from ganforge.api import LoadedModel, build_family
from ganforge.families import resolve_run_config
from ganforge.training.engine import Trainer
from ganforge.viz import class_sampling as cs
from ganforge.viz.generate import GenerateRequest, write_generated
from ganforge.viz.grid import (
    CAPTION_BACKGROUND,
    caption_size,
    label_grid,
    line_height,
    make_grid,
    sample_caption,
    text_width,
    to_uint8,
)
from ganforge.viz.translate import latent_captions, reference_captions

SHAPES = "builtin:shapes?count=64&resolution=32"


def _random_grid(count: int, size: int, channels: int, columns: int) -> np.ndarray:
    images = np.random.default_rng(0).integers(0, 256, (count, size, size, channels), dtype=np.uint8)
    return make_grid(images, columns=columns)


def _ink(strip: np.ndarray) -> int:
    return int((strip != CAPTION_BACKGROUND).any(axis=-1).sum())


@pytest.mark.parametrize("channels", [1, 3])
def test_the_caption_strips_surround_the_grid_and_leave_its_pixels_unchanged(channels):
    grid = _random_grid(6, 16, channels, columns=3)  # 2 rows of 16 px cells: 38 × 56 px
    labelled = label_grid(grid, "EMA, step 1200\nrows: classes", ["circle", "a much longer name"])
    top, left = caption_size("EMA, step 1200\nrows: classes", ["circle", "a much longer name"])
    assert top == 2 * line_height() + 6 and line_height() == 12  # two 11 px lines, 1 px apart, 3 px margins
    assert left > 6 * 18  # the longest label (18 characters of 6 px) and its margins
    assert labelled.shape == (top + 38, left + 56, channels) and labelled.dtype == np.uint8
    assert np.array_equal(labelled[top:, left:], grid)  # the grid, pixel for pixel
    assert _ink(labelled[:line_height() + 3]) > 20 and _ink(labelled[line_height() + 3:top]) > 20  # both lines
    row_strip = labelled[top:, :left]
    assert _ink(row_strip[2:18]) > 20 and _ink(row_strip[20:36]) > 20  # a label beside each row of cells
    assert _ink(row_strip[:2]) == _ink(row_strip[18:20]) == 0  # centred on their rows
    assert np.array_equal(label_grid(grid, "G, step 3")[caption_size("G, step 3")[0]:, :56], grid)  # no row strip


def test_a_title_wider_than_the_grid_widens_the_canvas_with_background():
    grid = _random_grid(1, 8, 3, columns=1)  # 12 × 12 px
    labelled = label_grid(grid, "EMA, step 123456")
    top = caption_size("EMA, step 123456")[0]
    assert labelled.shape[1] == 6 * 16 + 6 and np.array_equal(labelled[top:, :12], grid)
    assert (labelled[top:, 12:] == CAPTION_BACKGROUND).all()


def test_row_labels_must_match_the_grid_rows():
    with pytest.raises(ValueError, match="5 row labels for a grid 38 px high"):
        label_grid(_random_grid(6, 16, 3, columns=3), "x", ["a", "b", "c", "d", "e"])


def test_caption_texts():
    assert sample_caption("G_ema", True, 1200) == "EMA, step 1200"
    assert sample_caption("G", False, 8) == "G, step 8"
    domains = ["cat", "dog", "wild"]
    assert reference_captions("EMA, step 5", domains, torch.tensor([2, 0])) == (
        "reference-guided, EMA, step 5\ntop: sources; each row: a reference, then the sources in its style",
        ["source", "ref: wild", "ref: cat"])
    title, rows = latent_captions("EMA, step 5", domains, 0.7, 2)
    assert title == "latent-guided, psi 0.7, EMA, step 5\ntop: sources; then 2 random styles per target domain"
    assert rows == ["source", "to cat", "to cat", "to dog", "to dog", "to wild", "to wild"]


@pytest.fixture(scope="module")
def biggan() -> LoadedModel:
    """An untrained tiny BigGAN on the shapes, whose first label column names the classes."""
    torch.manual_seed(0)
    config = resolve_run_config(None, {"family": "biggan", "data": SHAPES, "model": {
        "g_ch": 4, "d_ch": 4, "latent_dim": 16, "shared_dim": 8, "g_attention": [], "d_attention": [],
        "batch_size": 4, "steps": 4, "ema_start": 1, "ema_decay": 0.9}})
    family = build_family(config, torch.device("cpu"))
    for net in family.nets.values():
        net.eval().requires_grad_(False)
    return LoadedModel(family=family, config=config, step=7, plan=family.plan(0))


def test_class_sheets_name_their_rows_by_the_stores_classes(biggan, tmp_path):
    assert biggan.family.class_names() == ["circle", "square", "triangle", "ring"]
    assert cs.model_caption(biggan) == "EMA, step 7"
    assert cs.model_caption(biggan, truncation=0.5, method="scale") == "EMA, step 7, truncation 0.5 (scale)"
    [first, second] = cs.write_class_sheets(biggan, tmp_path, 2, rows_per_sheet=3, truncation=0.5)
    title = "EMA, step 7, truncation 0.5 (resample)\nrows: classes; columns: one z each"
    raw = make_grid(to_uint8(cs.class_sheet(biggan, 2, range(3), truncation=0.5)), columns=2)
    assert np.array_equal(np.asarray(Image.open(first)), label_grid(raw, title, ["circle", "square", "triangle"]))
    ring = np.asarray(Image.open(second))  # one row under the same title, which is wider than the grid
    top, left = caption_size(title, ["ring"])
    assert ring.shape[:2] == (top + 2 + 34, text_width(title) + 6)
    raw = make_grid(to_uint8(cs.class_sheet(biggan, 2, [3], truncation=0.5)), columns=2)
    assert np.array_equal(ring[top:, left:left + 2 + 2 * 34], raw)


def test_class_names_fall_back_to_numbers_without_named_classes(biggan):
    placeholder = copy.copy(biggan.family)
    placeholder.dataset = copy.copy(biggan.family.dataset)
    placeholder.dataset.label_columns = []
    assert placeholder.class_names() == ["class 0", "class 1", "class 2", "class 3"]


@pytest.mark.parametrize("channels", [1, 3])
def test_cell_labels_go_under_each_cell_and_leave_the_images_unchanged(channels):
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, channels), dtype=np.uint8)
    names = ["circle", "sq", "a name far wider than its cell", "ring", "x"]
    grid = make_grid(images, columns=3, cell_labels=names)
    strip = line_height() + 3
    assert grid.shape == (2 * (16 + strip + 2) + 2, 3 * 18 + 2, channels)  # a label strip under each of 2 rows
    for index, name in enumerate(names):
        r, c = divmod(index, 3)
        top, left = 2 + r * (16 + strip + 2), 2 + c * 18
        assert np.array_equal(grid[top:top + 16, left:left + 16], images[index])
        under = grid[top + 16:top + 16 + strip, left:left + 16]
        assert _ink(under) > 5, name  # every cell's label is written under it, cut to its 16 px
    sixth = 2 + (16 + strip + 2) + 16, 2 + 2 * 18  # where the empty sixth cell's label would be
    assert _ink(grid[sixth[0]:sixth[0] + strip, sixth[1]:sixth[1] + 16]) == 0
    assert np.array_equal(make_grid(images, columns=3), _random_grid(5, 16, channels, columns=3))  # none asked
    two_lines = make_grid(images, columns=3, cell_labels=[f"{name}\nline 2" for name in names])
    assert two_lines.shape[0] == 2 * (16 + 2 * line_height() + 3 + 2) + 2
    second = two_lines[2 + 16 + line_height():2 + 16 + 2 * line_height() + 3, 2:18]
    assert _ink(second) > 5  # the second line, under the first
    with pytest.raises(ValueError, match="2 cell labels for 5 images"):
        make_grid(images, cell_labels=["a", "b"])


def test_training_grids_of_conditional_generators_name_each_cells_classes(tmp_path):
    """BigGAN's fixed samples draw their classes at random (as BigGAN-PyTorch's fixed_y), so the grid says which
    class each cell was asked for; a label-conditioned PGAN names the class of every conditioning column."""
    config = tiny_run("biggan", sample_every=2, sample_count=4)
    config["model"]["steps"] = 2
    trainer = Trainer(resolve_run_config(None, json.loads(json.dumps(config))), tmp_path / "biggan")
    trainer.train()
    names = ["circle", "square", "triangle", "ring"]
    assert trainer.fixed_cell_labels == [names[k] for k in trainer.fixed_inputs["y"].tolist()]
    raw = make_grid(to_uint8(trainer.family.generate(trainer.fixed_inputs, "G_ema", trainer.family.plan(1))),
                    min_cell=64, cell_labels=trainer.fixed_cell_labels)
    written = np.asarray(Image.open(tmp_path / "biggan" / "samples" / "00000002.png"))
    assert np.array_equal(written, label_grid(raw, "EMA, step 2"))

    pgan = tiny_run("pgan", sample_count=4)
    pgan["model"]["conditions"] = ["shape", "background"]
    trainer = Trainer(resolve_run_config(None, json.loads(json.dumps(pgan))), tmp_path / "pgan")
    backgrounds = trainer.family.conditioning()[1][1]
    assert trainer.fixed_cell_labels == [f"{names[s]}\n{backgrounds[b]}"
                                         for s, b in trainer.fixed_inputs["labels"].tolist()]
    unconditional = Trainer(resolve_run_config(None, tiny_run("pgan")), tmp_path / "plain")
    assert unconditional.fixed_cell_labels is None


def test_training_grids_and_gif_frames_carry_net_and_step(tmp_path):
    config = tiny_run("wgan-gp", sample_every=2)
    config["model"]["steps"] = 2
    trainer = Trainer(resolve_run_config(None, json.loads(json.dumps(config))), tmp_path / "run")
    trainer.train()
    samples = tmp_path / "run" / "samples"
    inputs = trainer.fixed_inputs
    for net, name, title in (("G_ema", "00000002.png", "EMA, step 2"), ("G", "00000002-G.png", "G, step 2")):
        raw = make_grid(to_uint8(trainer.family.generate(inputs, net, trainer.family.plan(1))), min_cell=64)
        assert np.array_equal(np.asarray(Image.open(samples / name)), label_grid(raw, title)), name
    with Image.open(samples / "progress.gif") as gif:
        frame = np.asarray(gif.convert("L"))
    assert _ink(frame[:caption_size("EMA, step 2")[0], :, None]) > 20  # the frame's caption strip has text


def test_a_damaged_grid_costs_its_gif_frame_with_a_warning_naming_it(tmp_path):
    """The GIF is written in training's `finally`: an exception there ended a finished run with an error."""
    from ganforge.viz.animation import write_progress_gif

    for step in (2, 4):
        Image.fromarray(np.full((8, 8, 3), 40 * step, np.uint8)).save(tmp_path / f"{step:08d}.png")
    damaged = tmp_path / "00000004.png"
    damaged.write_bytes(damaged.read_bytes()[:50])
    with pytest.warns(UserWarning, match=rf"^{damaged}: left out of the progress GIF"):
        gif = write_progress_gif(tmp_path)
    with Image.open(gif) as frames:
        assert frames.n_frames == 1 and np.asarray(frames.convert("RGB"))[0, 0, 0] == 80


def test_generate_grids_are_captioned_and_single_images_are_not(biggan, tmp_path):
    """A class-conditional grid names each cell's class (cells enlarged to 64 px to fit it), as training grids do."""
    [grid] = write_generated(biggan, GenerateRequest(out=tmp_path, n=4, seed=3, grid=True)).files
    inputs = biggan.latents(4, 3)
    images = biggan.generate(inputs)
    classes = [biggan.family.class_names()[k] for k in inputs["y"].tolist()]
    expected = label_grid(make_grid(to_uint8(images), min_cell=64, cell_labels=classes), "EMA, step 7, seed 3")
    assert np.array_equal(np.asarray(Image.open(grid)), expected)
    files = write_generated(biggan, GenerateRequest(out=tmp_path / "single", n=2, seed=3)).files
    assert np.array_equal(np.asarray(Image.open(files[0])), to_uint8(images[:1])[0])  # a sample, not a grid


def test_generated_images_are_written_batch_by_batch_and_equal_one_big_batch(biggan, tmp_path, monkeypatch):
    """50,000 images for an FID set must not sit in memory together: each batch of 64 is written before the next
    is generated, and the files are the samples of the same latents generated at once."""
    events = []
    from ganforge.viz import generate as generate_module

    generate, save = biggan.generate, generate_module.save_image
    monkeypatch.setattr(biggan, "generate", lambda inputs: events.append("batch") or generate(inputs))
    monkeypatch.setattr(generate_module, "save_image", lambda image, path: events.append("file") or save(image, path))
    files = write_generated(biggan, GenerateRequest(out=tmp_path, n=130, seed=3)).files
    assert [e for e in events if e == "batch"] == ["batch"] * 3
    assert events.index("file") < events.index("batch", 1)  # a file before the second batch
    monkeypatch.undo()
    latents = biggan.latents(130, 3)
    classes = biggan.family.sample_cell_labels(latents)  # each file names the class it was asked for
    assert [f.name for f in files] == [f"0003-{i:05d}-{name}.png" for i, name in enumerate(classes)]
    assert len(set(classes)) > 1
    expected = to_uint8(biggan.generate({k: v[64:128] for k, v in latents.items()}))
    assert np.array_equal(np.asarray(Image.open(files[100])), expected[36])


def test_file_name_parts_of_class_labels() -> None:
    """A cell label has a line per label column; file names join the columns and keep only safe characters."""
    from ganforge.viz.generate import _file_name_part

    assert _file_name_part("square\ndark") == "square-dark"
    assert _file_name_part("hot dog/bun") == "hot_dog_bun" and _file_name_part("n02.x") == "n02.x"
    assert _file_name_part("café") == "café" and _file_name_part("猫") == "猫"  # names in any script stay
    assert _file_name_part('a:b*c?"d<e>f|g\th') == "a_b_c__d_e_f_g_h"
    assert len(_file_name_part("猫" * 60).encode()) == 99  # cut at 100 bytes, never inside a character
