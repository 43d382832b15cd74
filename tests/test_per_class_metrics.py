"""`ganforge evaluate RUN --per-class`: a conditional generator's metrics class by class (with FID: intra-class FID,
StudioGAN's iFID), each class's training images against generated images conditioned like them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_inception_standin
from test_biggan_family import make_family

import ganforge
from ganforge.cli import main
from ganforge.data.store import open_dataset
from ganforge.evaluation.run_metrics import _per_class_table, random_subset
from ganforge.families.pgan import PGANFamily
from ganforge.metrics.evaluate import evaluate

DATA = "builtin:shapes?count=64&resolution=16"
SCHEDULE = {"max_iter_at_scale": [2, 2, 2], "alpha_jumps": 1, "alpha_jump_size": 1, "batch_size": 4}


def tiny_run(run_dir: Path, **model) -> Path:
    ganforge.train({"family": "pgan", "data": DATA, "progress": False, "tensorboard": False, "sample_every": 100,
                    "model": {"resolution": 16, "latent_dim": 8, "widths": [8, 8, 8], "schedule": SCHEDULE, **model}},
                   run_dir)
    return run_dir


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("per_class") / "run", variant="zoo", conditions=["background", "shape"])


def test_each_class_is_its_training_images_against_fakes_conditioned_like_them(conditional_run, monkeypatch,
                                                                               capsys) -> None:
    """Per class of `shape`: at most --n of its images (a seeded subset) against as many fakes given those images'
    shape and background classes; each row's SWD is that pair's, the mean row their mean, all recorded."""
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    generate = PGANFamily.generate

    def recorded(self, inputs, net, plan):
        images = generate(self, inputs, net, plan)
        calls.append((inputs["labels"].cpu(), images.cpu()))
        return images

    monkeypatch.setattr(PGANFamily, "generate", recorded)
    assert main(["evaluate", str(conditional_run), "--per-class", "--class-column", "shape", "--metrics", "swd",
                 "--n", "8"]) == 0
    table = capsys.readouterr().out
    record = json.loads((conditional_run / "metrics_per_class.jsonl").read_text().splitlines()[-1])
    store = open_dataset(DATA)
    names = [str(name) for name in store.label_columns[0][1]]
    shape, background = 0, 1  # the store's columns; the generator takes them as (background, shape)
    assert record["column"] == "shape" and list(record["classes"]) == names and record["n"] == 8
    assert len(calls) == len(names)  # 8 images or fewer per class: one batch each
    for index, name in enumerate(names):
        members = np.flatnonzero(store.labels[:, shape] == index)
        members = members[random_subset(len(members), 8, 0)] if len(members) > 8 else members
        labels, fakes = calls[index]
        assert torch.equal(labels, torch.as_tensor(store.labels[members][:, [background, shape]]))
        reals = np.asarray(store.images(16)[members])
        expected = evaluate(fakes, reals, ["swd"], seed=0)["swd"]["avg"]
        assert record["classes"][name]["images"] == len(members)
        assert record["classes"][name]["swd_avg"] == pytest.approx(expected, rel=1e-6)
        assert f"{name} " in table
    assert record["mean"]["swd_avg"] == pytest.approx(np.mean([row["swd_avg"] for row in record["classes"].values()]))
    assert table.splitlines()[0].startswith("step 6: per class of 'shape', each class's training images (at most 8)")


def test_a_run_conditioned_on_several_columns_is_asked_which(conditional_run, tmp_path, capsys,
                                                             standin_vgg16) -> None:
    def refused(*args: str) -> str:
        assert main(["evaluate", *args]) == 2
        return capsys.readouterr().err

    run = str(conditional_run)
    assert "the generator takes the classes of background, shape; name one with --class-column" in refused(
        run, "--per-class", "--metrics", "swd")
    assert "--class-column colour: not a label column the generator takes (it takes background, shape)" in refused(
        run, "--per-class", "--class-column", "colour", "--metrics", "swd")
    assert "--class-column shape: for --per-class" in refused(run, "--class-column", "shape")
    assert "--per-class with --all: it evaluates one checkpoint" in refused(run, "--per-class", "--all")
    assert "--per-class: for `evaluate RUN`, not with --fake" in refused("--fake", run, "--real", DATA,
                                                                            "--per-class")
    assert "a store holding the run's label columns (a folder has no classes)" in refused(
        run, "--per-class", "--class-column", "shape", "--real", str(tmp_path))
    # another store of the same label columns (the run's data moved, or a held-out set) serves
    assert main(["evaluate", run, "--per-class", "--class-column", "shape", "--metrics", "swd", "--n", "4",
                 "--real", "builtin:shapes?count=64&resolution=16&seed=1"]) == 0
    assert "seed=1" in json.loads((conditional_run / "metrics_per_class.jsonl").read_text().splitlines()[-1])["real"]
    # pr needs more than k images per set: at --n 3 nothing could be compared
    assert "--n 3: swd, pr of a class need at least 4 images of it" in refused(
        run, "--per-class", "--class-column", "shape", "--metrics", "swd,pr", "--n", "3")


def test_an_unconditional_run_has_no_classes_to_split_by(tmp_path, capsys) -> None:
    run = tiny_run(tmp_path / "run")
    assert main(["evaluate", str(run), "--per-class", "--metrics", "swd"]) == 2
    assert "--per-class: this run's generator takes no classes (a pgan run without model.conditions)" in (
        capsys.readouterr().err)
    assert not (run / "metrics_per_class.jsonl").exists()


def test_biggan_takes_its_classes_from_the_stores_first_column() -> None:
    family = make_family()
    assert family.generator_label_columns() == [0]
    latents = {"z": torch.zeros(3, 2), "y": torch.zeros(3, dtype=torch.long)}
    rows = torch.tensor([[2, 1], [0, 3], [3, 0]])
    assert family.with_store_labels(latents, rows)["y"].tolist() == [2, 0, 3]


@pytest.mark.slow
def test_intra_class_fid_is_the_mean_of_the_classes_fids(conditional_run, tmp_path, capsys) -> None:
    """With fid the mean row is the intra-class FID, said so under the table, with the small-set warning of
    8 images per class against 2048-d features."""
    weights = write_inception_standin(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    assert main(["evaluate", str(conditional_run), "--per-class", "--class-column", "shape", "--metrics", "fid,swd",
                 "--n", "8",
                 "--inception-weights", str(weights)]) == 0
    table = capsys.readouterr().out
    record = json.loads((conditional_run / "metrics_per_class.jsonl").read_text().splitlines()[-1])
    fids = [row["fid"] for row in record["classes"].values()]
    assert record["mean"]["fid"] == pytest.approx(np.mean(fids)) and len(set(fids)) == len(fids)
    assert record["fid_mode"] == "legacy-tf"
    assert "(the mean FID over the 4 classes is the intra-class FID, StudioGAN's iFID)" in table
    assert "(warning: fid of 2048-d features from a set of" in table


def test_the_table_lines_up_and_says_which_means_lack_a_class() -> None:
    rows = {"0": {"images": 3, "fid": 1.0, "kid_mean": 2.0}, "1": {"images": 4, "fid": 3.0, "kid_mean": float("nan")}}
    rows["1"].pop("kid_mean")  # as flat_outputs drops a non-finite value
    table = _per_class_table(5, "digit", 8, rows, ["fid", "kid_mean"], {"fid": 2.0, "kid_mean": 2.0}, ["fid", "kid"],
                             "legacy-tf", ["7 (1 training image)"], "")
    lines = table.splitlines()
    assert lines[1] == "class  images        fid   kid_mean"
    assert lines[2] == "0           3     1.0000     2.0000"  # every value ends under its header's end
    assert lines[3] == "1           4     3.0000          -"
    assert lines[4] == "mean              2.0000     2.0000"
    assert "(mean of kid_mean over the 1 of 2 classes that gave a finite value)" in lines
    assert "(left out, too few images to compare: 7 (1 training image))" in lines


def test_a_generator_on_batch_statistics_is_noted(tmp_path, capsys) -> None:
    """DCGAN's samples use their batch's statistics: each class's images are made in batches of that class."""
    ganforge.train({"family": "dcgan", "data": "builtin:shapes?count=64&resolution=32", "progress": False,
                    "tensorboard": False, "sample_every": 100,
                    "model": {"features_g": 2, "features_d": 2, "latent_dim": 8, "batch_size": 4, "steps": 1,
                              "conditions": ["shape"]}}, tmp_path / "run")
    assert main(["evaluate", str(tmp_path / "run"), "--per-class", "--metrics", "swd", "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert "each class's images are made in batches of that class alone, here some of fewer than 16" in out
