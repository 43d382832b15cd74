"""`ganforge info` from a config alone: class/domain counts from the config, else the dataset, else a stated default."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ganforge.cli import main
from ganforge.data.store import write_store

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CIFAR = str(CONFIGS / "biggan_cifar10.yaml")
# G of the CIFAR arch has 3 blocks × 2 class-conditional BNs × (gain + bias) × 256 channels of per-class tables,
# D one projection embedding of 256 per class: each class beyond 10 adds 3,072 to G and 256 to D
G_CIFAR, D_CIFAR = 4_304_387, 4_207_361


@pytest.fixture(autouse=True)
def fresh_clone(tmp_path, monkeypatch):
    """The configs' relative `data:` paths point nowhere, as on a fresh clone."""
    monkeypatch.chdir(tmp_path)


def info(capsys, *args: str) -> dict:
    assert main(["info", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_biggan_cifar10_counts_from_the_config_without_data(capsys):
    assert main(["info", "biggan", "-c", CIFAR]) == 0
    out = capsys.readouterr().out
    assert "G             4,304,387 parameters" in out and "D             4,207,361 parameters" in out
    assert "classes: 10" in out and "note" not in out


def test_without_a_count_or_data_the_default_is_used_and_said(capsys):
    report = info(capsys, "biggan", "-c", CIFAR, "--set", "model.n_classes=null")
    assert report["classes"] == 1000
    assert report["parameters"]["G"] == G_CIFAR + 990 * 3_072 and report["parameters"]["D"] == D_CIFAR + 990 * 256
    assert report["notes"] == ["model.n_classes: 1000 (a default: the config does not set it and data/cifar10 is "
                               "not a labelled dataset here; set model.n_classes for other counts)"]
    report = info(capsys, "stargan2", "-c", str(CONFIGS / "stargan2_celeba_hq.yaml"))
    assert report["domains"] == ["0", "1"] and report["parameters"]["G"] == 43_467_395
    assert report["notes"][0].startswith("model.num_domains: 2 (a default")


def test_a_present_dataset_gives_the_count_and_must_agree_with_the_config(tmp_path, capsys):
    images = np.zeros((7, 3, 32, 32), dtype=np.uint8)
    write_store(tmp_path / "data" / "cifar10", images, resolution=32, source="test", labels=np.arange(7)[:, None],
                label_columns=[("class", [f"c{i}" for i in range(7)])])
    report = info(capsys, "biggan", "-c", CIFAR, "--set", "model.n_classes=null")
    assert report["classes"] == 7 and report["label_column"] == "class" and "notes" not in report
    assert report["parameters"]["G"] == G_CIFAR - 3 * 3_072
    assert main(["info", "biggan", "-c", CIFAR]) == 2
    assert capsys.readouterr().err == ("ganforge info: error: model.n_classes: 10 but the label column 'class' of "
                                       "data/cifar10 has 7 classes\n")


@pytest.mark.parametrize("family", ["dcgan", "wgan-gp", "stargan2", "biggan"])
def test_a_resolution_from_absent_data_is_asked_for_not_invented(capsys, family):
    """These families size their networks from the data: without it (and without model.resolution) `info` says what
    to give, where it described networks for an invented 65,536-pixel side (a 2.9-trillion-parameter DCGAN critic)."""
    assert main(["info", family, "--data", "data/absent"]) == 2
    assert capsys.readouterr().err == (f"ganforge info: error: data/absent: not at hand here, and the {family} "
                                       "networks take their resolution from the data; give --data STORE, or --set "
                                       "model.resolution=R\n")
    resolution = 128 if family == "biggan" else 32  # BigGAN's default attention is at 64 px
    parameters = info(capsys, family, "--data", "data/absent", "--set", f"model.resolution={resolution}")["parameters"]
    assert 0 < parameters["D"] < 10**8


def test_info_refuses_the_metric_settings_train_refuses(capsys) -> None:
    from ganforge.cli import main

    assert main(["info", "wgan-gp", "--set", "kid_subsets=10"]) == 2
    assert capsys.readouterr().err.strip() == ("ganforge info: error: kid_subsets: set for kid, which is not among the "
                                               "metrics (none)")


@pytest.mark.parametrize(("args", "message"), [
    (["pgan", "--data", "builtin:foo"], "unknown built-in dataset 'builtin:foo'"),
    (["pgan", "--set", "augment.kind=ada"], "augment: ADA's adaptive p steers by the sign of D's outputs on reals"),
])
def test_info_refuses_what_train_refuses(capsys, args, message) -> None:
    """`info` describes the networks `train` would build: a data spec that cannot be read or an augmentation train
    refuses is said, not described."""
    assert main(["info", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ganforge info: error: {message}") and err.count("\n") == 1


def test_a_resolution_above_the_datas_is_described_with_a_note(capsys) -> None:
    report = info(capsys, "pgan", "--data", "builtin:shapes?resolution=32")
    assert report["widths"] == [512, 512, 512, 512, 256, 128]  # the 128 px networks asked for
    assert report["notes"] == ["model.resolution: 128, but the images of builtin:shapes?resolution=32 are 32 px: "
                               "train refuses this data (prepare it at that size, or give --data with images that "
                               "large)"]

