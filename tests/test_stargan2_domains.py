"""Domain stores for StarGAN v2: CelebA split by an attribute (real subset from ../shared), the official
train/val folder layout, the deterministic validation split, errors, the CLI, and training on train only."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image
from stargan2_tiny_run import DOMAINS, SPLIT_COUNTS, train_tiny_run, write_domain_folders

import ganforge
from ganforge.cli import main
from ganforge.data.domains import (
    prepare_celeba_domains,
    prepare_domain_folders,
    read_celeba_attributes,
    validation_mask,
)
from ganforge.data.images import center_crop_resize, load_rgb
from ganforge.data.store import DatasetError, open_dataset


def celeba() -> tuple[Path, Path]:
    root = shared_path("data", "celeba-10k-89x109")
    return root / "img_align_celeba_89x109", root / "list_attr_celeba.txt"


def test_attribute_file_gives_the_documented_male_female_counts() -> None:
    names, rows = read_celeba_attributes(celeba()[1])
    male = np.array([row[names.index("Male")] for row in rows.values()])
    assert len(names) == 40 and len(rows) == 10000
    assert ((male == 1).sum(), (male == -1).sum()) == (4217, 5783)


def test_celeba_subset_split_by_male(tmp_path: Path) -> None:
    images, attr_file = celeba()
    stores = prepare_celeba_domains(images, tmp_path / "out", attr_file=attr_file, attr="Male", resolution=32,
                                    val_fraction=0.1, limit=120)
    names, rows = read_celeba_attributes(attr_file)
    files = list(rows)[:120]
    male = np.array([rows[f][names.index("Male")] == 1 for f in files]).astype(int)
    assert stores.domains == ["female", "male"]
    val = validation_mask(files, male, 0.1)
    for split, selected in (("train", ~val), ("val", val)):
        store = open_dataset(tmp_path / "out" / split)
        assert store.label_columns == [("domain", ["female", "male"])] and store.resolution == 32
        np.testing.assert_array_equal(store.labels[:, 0], male[selected])
        assert stores.counts[split] == {"female": int((male[selected] == 0).sum()),
                                        "male": int((male[selected] == 1).sum())}
        first = np.asarray(files)[selected][0]
        expected = center_crop_resize(load_rgb(images / first, first), 32, Image.BILINEAR).transpose(2, 0, 1)
        np.testing.assert_array_equal(store.images(32)[0], expected)
        # training stores keep every image again at 5/4 of the size, cut from the original, to crop from
        assert store.crop_source == (40 if split == "train" else None) and store.levels == [4, 8, 16, 32]
        if split == "train":
            source = center_crop_resize(load_rgb(images / first, first), 40).transpose(2, 0, 1)
            np.testing.assert_array_equal(store.images(40)[0], source)
    assert stores.counts["val"] == {"female": math.ceil(0.1 * (male == 0).sum()),
                                    "male": math.ceil(0.1 * (male == 1).sum())}


def test_validation_split_is_per_domain_and_independent_of_order() -> None:
    names = [f"{i:06d}.jpg" for i in range(200)]
    domains = np.arange(200) % 2
    mask = validation_mask(names, domains, 0.25)
    assert (mask & (domains == 0)).sum() == 25 and (mask & (domains == 1)).sum() == 25
    order = np.random.default_rng(0).permutation(200)
    shuffled = validation_mask([names[i] for i in order], domains[order], 0.25)
    np.testing.assert_array_equal(shuffled, mask[order])
    assert not validation_mask(names, domains, 0.0).any()
    with pytest.raises(DatasetError, match="val_fraction must be in"):
        validation_mask(names, domains, 1.0)


@pytest.mark.slow
def test_other_attributes_name_their_domains(tmp_path: Path) -> None:
    images, attr_file = celeba()
    stores = prepare_celeba_domains(images, tmp_path / "out", attr_file=attr_file, attr="Eyeglasses",
                                    resolution=8, val_fraction=0.0, limit=400)
    assert stores.domains == ["eyeglasses", "not_eyeglasses"] and stores.val is None
    with pytest.raises(DatasetError, match=r"no attribute 'Beard'; it has 5_o_Clock_Shadow"):
        prepare_celeba_domains(images, tmp_path / "x", attr_file=attr_file, attr="Beard", resolution=8)


def test_official_folder_layout(tmp_path: Path) -> None:
    root = write_domain_folders(tmp_path / "folders")
    stores = prepare_domain_folders(root, tmp_path / "out", resolution=16)
    assert stores.domains == DOMAINS
    assert stores.counts == {split: {d: n for d in DOMAINS} for split, n in SPLIT_COUNTS.items()}
    val = open_dataset(stores.val)
    assert val.label_columns == [("domain", DOMAINS)] and val.resolution == 16
    np.testing.assert_array_equal(val.labels[:, 0], np.repeat([0, 1], SPLIT_COUNTS["val"]))
    # the official loaders' Resize([16, 16]) of the PIL image, for validation and training images alike
    for split, store in (("val", val), ("train", open_dataset(stores.train))):
        first = sorted((root / split / "dark").iterdir())[0]
        with Image.open(first) as image:
            official = np.asarray(image.convert("RGB").resize((16, 16), Image.BILINEAR)).transpose(2, 0, 1)
        np.testing.assert_array_equal(store.images(16)[0], official)
        lanczos = center_crop_resize(load_rgb(first, "x"), 16).transpose(2, 0, 1)
        assert not np.array_equal(official, lanczos)  # the filter matters


def test_folder_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="has no train/ folder"):
        prepare_domain_folders(tmp_path, tmp_path / "out", resolution=16)
    root = write_domain_folders(tmp_path / "folders")
    (root / "val" / "light").rename(root / "val" / "bright")
    with pytest.raises(DatasetError, match=r"has domains \['bright', 'dark'\] but .* has \['dark', 'light'\]"):
        prepare_domain_folders(root, tmp_path / "out", resolution=16)
    with pytest.raises(DatasetError, match="resolution must be a power of two"):
        prepare_domain_folders(root, tmp_path / "out", resolution=24)


def test_the_train_and_val_stores_are_replaced_together_or_not_at_all(tmp_path: Path) -> None:
    """OUT/train was replaced before OUT/val was checked (an error then left a new train beside an old val), an
    OUT/val the new source had no split for stayed to be paired with the new train, and a domain with no
    decodable image became an empty domain."""
    root = write_domain_folders(tmp_path / "folders")
    out = tmp_path / "out"
    prepare_domain_folders(root, out, resolution=8)
    before = {split: (out / split / "manifest.json").read_text() for split in ("train", "val")}
    for name in ("manifest.json", "labels.npy", "images_4.npy", "images_8.npy"):
        (out / "val" / name).unlink()
    (out / "val" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="val is a non-empty directory that is not a ganforge store"):
        prepare_domain_folders(root, out, resolution=16, overwrite=True)
    assert (out / "train" / "manifest.json").read_text() == before["train"]  # untouched
    (out / "val" / "notes.txt").unlink()
    prepare_domain_folders(root, out, resolution=8, overwrite=True)
    train_only = tmp_path / "train_only"
    (train_only / "train").mkdir(parents=True)
    for domain in DOMAINS:
        (root / "train" / domain).rename(train_only / "train" / domain)
    with pytest.raises(DatasetError, match=r"val holds the validation store of an earlier prepare, and this source "
                                           "has no validation split"):
        prepare_domain_folders(train_only, out, resolution=16)
    stores = prepare_domain_folders(train_only, out, resolution=16, overwrite=True)
    assert stores.val is None and not (out / "val").exists() and open_dataset(out / "train").resolution == 16
    (train_only / "train" / "blank").mkdir()
    (train_only / "train" / "blank" / "x.png").write_text("not an image")
    with pytest.raises(DatasetError, match=r"train: no train image of domain\(s\) blank \(none given, or none "
                                           r"could be decoded\); every domain needs images in each split"):
        prepare_domain_folders(train_only, tmp_path / "new", resolution=8)
    assert not (tmp_path / "new").exists()


def test_cli_prepare_domains(tmp_path: Path, capsys) -> None:
    root = write_domain_folders(tmp_path / "folders")
    copies = root / "train" / "dark" / ".ipynb_checkpoints"  # Jupyter's copies: not read (they were 3 more "dark")
    copies.mkdir()
    for image in sorted((root / "train" / "dark").glob("*.png"))[:3]:
        (copies / image.name).write_bytes(image.read_bytes())
    assert main(["prepare", "domains", str(root), "-o", str(tmp_path / "out"), "--resolution", "16"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {tmp_path / 'out' / 'train'}: 6 dark, 6 light" in printed
    assert main(["prepare", "domains", str(root), "-o", str(tmp_path / "out"), "--resolution", "16"]) == 2
    assert "already holds a ganforge store" in capsys.readouterr().err


def test_cli_prepare_celeba_domains(tmp_path: Path, capsys) -> None:
    images, attr_file = celeba()
    assert main(["prepare", "celeba-domains", str(images), "--attr-file", str(attr_file), "-o",
                 str(tmp_path / "out"), "--resolution", "8", "--limit", "50", "--val-fraction", "0.2"]) == 0
    assert "evaluation uses" in capsys.readouterr().out
    assert open_dataset(tmp_path / "out" / "val").count + open_dataset(tmp_path / "out" / "train").count == 50


@pytest.mark.slow
def test_the_family_trains_on_the_train_store_and_its_domain_column(tmp_path: Path) -> None:
    run, stores = train_tiny_run(tmp_path)
    model = ganforge.load(run, device="cpu")
    assert model.config.data == str(stores / "train")
    assert model.family.domain_column == "domain" and model.family.domain_names == DOMAINS
