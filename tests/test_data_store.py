"""The on-disk store: round trip, atomic writes, refusing to clobber, reader validation, builtin specs."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ganforge.data import store as store_module
from ganforge.data.images import build_pyramid
from ganforge.data.store import (
    DatasetError,
    ImageDataset,
    StoreWriter,
    open_dataset,
    parse_builtin_spec,
    write_store,
)

COLUMNS = [("class", ["cat", "dog", "fox"])]


def _images(count: int, resolution: int = 16, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, channels, resolution, resolution), dtype=np.uint8)


def _store(path: Path, count: int = 6, seed: int = 0) -> Path:
    labels = (np.arange(count) % 3)[:, None]
    images = _images(count, seed=seed)
    return write_store(path, images, resolution=16, source="test", labels=labels, label_columns=COLUMNS)


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_a_manifest_without_a_labels_key_is_a_store_without_labels(tmp_path: Path) -> None:
    out = write_store(tmp_path / "store", _images(3), resolution=16, source="x")
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["labels"]  # a hand-written or older manifest: it passed the checks, then raised KeyError
    (out / "manifest.json").write_text(json.dumps(manifest))
    dataset = open_dataset(out)
    assert (dataset.count, dataset.label_columns, dataset.labels) == (3, [], None)


def test_round_trip_keeps_images_labels_and_manifest(tmp_path: Path) -> None:
    images = _images(7)
    labels = np.array([[0], [1], [2], [0], [1], [2], [2]])
    skipped = [{"file": "bad.jpg", "reason": "truncated"}]
    out = write_store(
        tmp_path / "store",
        images,
        resolution=16,
        source="my folder",
        labels=labels,
        label_columns=COLUMNS,
        skipped=skipped,
    )
    assert out == (tmp_path / "store").absolute()
    dataset = open_dataset(out)
    assert isinstance(dataset, ImageDataset)
    assert (dataset.count, dataset.resolution, dataset.channels, dataset.levels) == (7, 16, 3, [4, 8, 16])
    assert isinstance(dataset.images(16), np.memmap)
    np.testing.assert_array_equal(dataset.images(16), images)
    np.testing.assert_array_equal(dataset.images(8), build_pyramid(images)[8])
    np.testing.assert_array_equal(dataset.images(4), build_pyramid(images)[4])
    assert dataset.labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.labels, labels)
    assert dataset.label_columns == COLUMNS
    assert dataset.source == str(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == dataset.manifest
    assert manifest["format"] == "ganforge-store" and manifest["version"] == 1
    assert manifest["source"] == "my folder" and manifest["count"] == 7 and manifest["levels"] == [4, 8, 16]
    assert manifest["labels"] == [{"name": "class", "classes": ["cat", "dog", "fox"]}]
    assert manifest["skipped"] == skipped
    assert manifest["created_by"].startswith("ganforge ")
    # the level files are ordinary .npy arrays any numpy can read
    np.testing.assert_array_equal(np.load(out / "images_8.npy"), build_pyramid(images)[8])


def test_batches_from_a_generator_stream_in_order(tmp_path: Path) -> None:
    images = _images(600, resolution=8, channels=1)
    batches = (images[start : start + 70] for start in range(0, 600, 70))
    dataset = open_dataset(write_store(tmp_path / "s", batches, resolution=8, channels=1, source="gen"))
    assert (dataset.count, dataset.channels, dataset.labels, dataset.label_columns) == (600, 1, None, [])
    np.testing.assert_array_equal(dataset.images(8), images)
    np.testing.assert_array_equal(dataset.images(4), build_pyramid(images)[4])


def test_streaming_write_keeps_memory_bounded(tmp_path: Path) -> None:
    def batches() -> Iterator[np.ndarray]:
        for seed in range(32):
            yield _images(64, resolution=64, seed=seed)  # 32 × 786 kB = 25 MB in total

    tracemalloc.start()
    try:
        write_store(tmp_path / "big", batches(), resolution=64, source="stream")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8e6, f"peak {peak / 1e6:.1f} MB: the writer should hold a few batches, not the dataset"
    assert open_dataset(tmp_path / "big").count == 2048


def test_failure_mid_write_leaves_no_store_and_no_temporary(tmp_path: Path) -> None:
    def failing() -> Iterator[np.ndarray]:
        yield _images(4)
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_store(tmp_path / "out", failing(), resolution=16, source="x")
    assert _siblings(tmp_path / "out") == []


def test_failure_while_overwriting_keeps_the_old_store_intact(tmp_path: Path) -> None:
    out = _store(tmp_path / "out", count=5)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def failing() -> Iterator[np.ndarray]:
        yield _images(3, seed=9)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_store(out, failing(), resolution=16, source="x", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _siblings(out) == ["out"]


def test_failed_rename_puts_the_old_store_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _store(tmp_path / "out", count=5)
    real_replace = store_module.os.replace

    def replace(source: Path, target: Path) -> None:
        if ".tmp-" in str(source):
            raise OSError("rename failed")
        real_replace(source, target)

    monkeypatch.setattr(store_module.os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        write_store(out, _images(2), resolution=16, source="x", overwrite=True)
    monkeypatch.undo()
    assert open_dataset(out).count == 5
    assert _siblings(out) == ["out"]


def test_overwrite_rules(tmp_path: Path) -> None:
    out = _store(tmp_path / "out", count=5)
    with pytest.raises(DatasetError, match=r"already holds a ganforge store; --overwrite \(Python: overwrite=True\)"):
        _store(out, count=4)
    assert open_dataset(out).count == 5
    # overwrite=True replaces the store completely, its files only: the user's own beside it stay
    (out / "celeba_stats.npz").write_bytes(b"mine")
    (out / "notes").mkdir()
    (out / "notes" / "todo.txt").write_text("mine too")
    write_store(out, _images(2, resolution=8, seed=3), resolution=8, source="new", overwrite=True)
    assert open_dataset(out).count == 2 and open_dataset(out).labels is None
    assert _siblings(out) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["celeba_stats.npz", "notes", "manifest.json", "images_4.npy", "images_8.npy"])  # no 16 px level left over
    assert (out / "celeba_stats.npz").read_bytes() == b"mine" and (out / "notes" / "todo.txt").read_text() == "mine too"
    # what is the store's comes from its manifest: a user's file named like a level it does not have is the user's,
    # and one named like a file of the new store is kept aside, never overwritten
    (out / "images_16.npy").write_bytes(b"my own 16 px array")
    with pytest.warns(UserWarning, match=r"your file\(s\) images_16\.npy have the names of the new store's files"):
        write_store(out, _images(2, resolution=16, seed=4), resolution=16, source="newer", overwrite=True)
    retired = [p for p in tmp_path.iterdir() if p.name.startswith("out.old-")]
    assert len(retired) == 1 and (retired[0] / "images_16.npy").read_bytes() == b"my own 16 px array"
    assert open_dataset(out).count == 2 and (out / "celeba_stats.npz").read_bytes() == b"mine"

    user_files = tmp_path / "holiday"
    user_files.mkdir()
    (user_files / "photo.jpg").write_bytes(b"precious")
    for overwrite in (False, True):
        with pytest.raises(DatasetError, match="not a ganforge store; refusing to overwrite"):
            write_store(user_files, _images(2), resolution=16, source="x", overwrite=overwrite)
    assert (user_files / "photo.jpg").read_bytes() == b"precious"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert open_dataset(write_store(empty, _images(2), resolution=16, source="x")).count == 2


def test_overwrite_through_a_symlink_replaces_the_store_it_names(tmp_path: Path) -> None:
    """data/store -> /big/disk/store: the new store lands in the linked folder (on its disk), the link stays, and the
    user's files there are kept."""
    target = _store(tmp_path / "disk" / "store", count=5)
    (target / "notes.txt").write_text("mine")
    link = tmp_path / "data" / "store"
    link.parent.mkdir()
    link.symlink_to(target, target_is_directory=True)
    write_store(link, _images(3, resolution=8), resolution=8, source="new", overwrite=True)
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert open_dataset(link).count == 3 and (target / "notes.txt").read_text() == "mine"
    assert _siblings(target) == ["store"] and sorted(p.name for p in link.parent.iterdir()) == ["store"]
    dangling = tmp_path / "data" / "elsewhere"
    dangling.symlink_to(tmp_path / "unmounted" / "store", target_is_directory=True)
    with pytest.raises(DatasetError, match=r"elsewhere links to .*unmounted/store, whose folder .*unmounted does not "
                                           r"exist \(a disk not mounted\?\)"):
        write_store(dangling, _images(3, resolution=8), resolution=8, source="new")
    assert not (tmp_path / "unmounted").exists()


def test_writer_rejects_bad_batches_and_labels(tmp_path: Path) -> None:
    with StoreWriter(tmp_path / "w", resolution=16) as writer:
        with pytest.raises(DatasetError, match=r"shape \(N, 3, 16, 16\), got uint8 \(2, 3, 8, 8\)"):
            writer.add(_images(2, resolution=8))
        with pytest.raises(DatasetError, match="got float32"):
            writer.add(np.zeros((2, 3, 16, 16), dtype=np.float32))
        with pytest.raises(DatasetError, match="no images to write"):
            writer.finish(source="x")
        writer.add(_images(3))
        with pytest.raises(DatasetError, match=r"shape \(3, 1\)"):
            writer.finish(source="x", labels=np.zeros((2, 1), dtype=np.int64), label_columns=COLUMNS)
        with pytest.raises(DatasetError, match="'class' has values in \\[0, 3\\]"):
            writer.finish(source="x", labels=np.array([[0], [3], [1]]), label_columns=COLUMNS)
        with pytest.raises(DatasetError, match="given together"):
            writer.finish(source="x", labels=np.zeros((3, 1), dtype=np.int64))
    assert _siblings(tmp_path / "w") == []
    with pytest.raises(DatasetError, match="power of two"):
        StoreWriter(tmp_path / "w", resolution=24)
    with pytest.raises(DatasetError, match="channels must be 1 or 3"):
        StoreWriter(tmp_path / "w", resolution=16, channels=4)


def test_fingerprint_is_stable_for_a_store_and_differs_between_stores(tmp_path: Path) -> None:
    first = _store(tmp_path / "a")
    assert open_dataset(first).fingerprint == open_dataset(first).fingerprint
    assert len(open_dataset(first).fingerprint) == 64
    assert open_dataset(_store(tmp_path / "b", count=5)).fingerprint != open_dataset(first).fingerprint


def test_reader_errors_name_the_path_and_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nowhere does not exist"):
        open_dataset(tmp_path / "nowhere")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(DatasetError, match=r"plain is not a ganforge store \(no manifest.json\); create one with"):
        open_dataset(plain)

    out = _store(tmp_path / "s")
    manifest = json.loads((out / "manifest.json").read_text())

    def reopen_with(**changes: object) -> None:
        (out / "manifest.json").write_text(json.dumps({**manifest, **changes}))
        open_dataset(out)

    with pytest.raises(DatasetError, match='expected "format": "ganforge-store"'):
        reopen_with(format="something-else")
    with pytest.raises(DatasetError, match='"version": 1 \\(got 7\\)'):
        reopen_with(version=7)
    with pytest.raises(DatasetError, match='"levels": \\[4, 8, 16\\]'):
        reopen_with(levels=[8, 16])
    with pytest.raises(
        DatasetError, match="images_4.npy holds uint8 \\(6, 3, 4, 4\\), expected uint8 \\(9, 3, 4, 4\\)"
    ):
        reopen_with(count=9)
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="manifest.json: not valid JSON"):
        open_dataset(out)
    (out / "manifest.json").write_text(json.dumps(manifest))

    np.save(out / "images_8.npy", np.zeros((6, 3, 8, 4), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"images_8.npy holds uint8 \(6, 3, 8, 4\), expected uint8 \(6, 3, 8, 8\)"):
        open_dataset(out)
    (out / "images_8.npy").unlink()
    with pytest.raises(DatasetError, match="images_8.npy is missing"):
        open_dataset(out)

    labelled = _store(tmp_path / "l")
    np.save(labelled / "labels.npy", np.zeros((6, 1), dtype=np.float32))
    with pytest.raises(DatasetError, match="labels.npy holds float32 \\(6, 1\\), expected int64"):
        open_dataset(labelled)
    np.save(labelled / "labels.npy", np.array([[0], [1], [2], [7], [0], [1]], dtype=np.int64))  # edited by hand
    with pytest.raises(DatasetError, match=r"labels.npy: column 'class' has values in \[0, 7\], expected 0..2 \(its 3 "
                                           r"classes in .*l/manifest.json\)"):
        open_dataset(labelled)  # not an IndexError (a device assert on CUDA) in the middle of training
    (labelled / "labels.npy").unlink()
    with pytest.raises(DatasetError, match="labels.npy is missing"):
        open_dataset(labelled)


def test_asking_for_a_missing_level_lists_the_available_ones(tmp_path: Path) -> None:
    dataset = open_dataset(_store(tmp_path / "s"))
    with pytest.raises(ValueError, match=r"no level 32; available resolutions: \[4, 8, 16\]"):
        dataset.images(32)


def test_pickled_objects_are_never_loaded(tmp_path: Path) -> None:
    out = _store(tmp_path / "s")
    np.save(out / "labels.npy", np.array([[object()]] * 6, dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="labels.npy is not a readable .npy array"):
        open_dataset(out)


# --- builtin specs --------------------------------------------------------------------------------------


def test_builtin_spec_defaults_and_parameters() -> None:
    assert parse_builtin_spec("builtin:shapes") == ("shapes", {"count": 4096, "resolution": 128, "seed": 0})
    assert parse_builtin_spec("builtin:shapes?seed=3&count=20&resolution=8") == (
        "shapes",
        {"count": 20, "resolution": 8, "seed": 3},
    )
    with pytest.raises(DatasetError, match="unknown built-in dataset 'builtin:faces'"):
        parse_builtin_spec("builtin:faces")
    with pytest.raises(DatasetError, match="unknown parameter 'size'"):
        parse_builtin_spec("builtin:shapes?size=3")
    with pytest.raises(DatasetError, match="parameter count='ten' must be an integer"):
        parse_builtin_spec("builtin:shapes?count=ten")
    with pytest.raises(DatasetError, match="power of two in 4..256, got 48"):
        parse_builtin_spec("builtin:shapes?resolution=48")
    with pytest.raises(DatasetError, match="count must be ≥ 1"):
        parse_builtin_spec("builtin:shapes?count=0")
    with pytest.raises(DatasetError, match=r"^'builtin:shapes\?seed=-1': seed must be ≥ 0, got -1$"):
        parse_builtin_spec("builtin:shapes?seed=-1")
    with pytest.raises(DatasetError, match=r"^'builtin:shapes\?count=5&count=7': parameter count given twice"):
        parse_builtin_spec("builtin:shapes?count=5&count=7")


def test_builtin_dataset_has_a_consistent_pyramid_labels_and_manifest() -> None:
    dataset = open_dataset("builtin:shapes?count=24&resolution=16&seed=5")
    assert (dataset.count, dataset.resolution, dataset.channels, dataset.levels) == (24, 16, 3, [4, 8, 16])
    assert dataset.source == "builtin:shapes?count=24&resolution=16&seed=5"
    assert dataset.manifest["source"] == dataset.source and dataset.manifest["count"] == 24
    assert dataset.label_columns[0][0] == "shape" and dataset.label_columns[1][0] == "background"
    assert dataset.labels.shape == (24, 2)
    for resolution in (8, 4):
        np.testing.assert_array_equal(dataset.images(resolution), build_pyramid(dataset.images(16))[resolution])
    # cached: a second open shares the arrays, which are read-only so nobody corrupts the cache
    again = open_dataset("builtin:shapes?seed=5&resolution=16&count=24")
    assert again.images(16) is dataset.images(16)
    assert again.fingerprint == dataset.fingerprint
    assert not dataset.images(16).flags.writeable
    assert open_dataset("builtin:shapes?count=24&resolution=16&seed=6").fingerprint != dataset.fingerprint
