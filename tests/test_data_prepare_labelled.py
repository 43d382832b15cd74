"""CIFAR-10 (binary release: tarball, extracted folder, download with md5, offline message) and BigGAN-PyTorch
HDF5 files (NCHW uint8, StudioGAN's NHWC, float pixels rounded) → stores, through the API and the CLI."""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ganforge.cli import main
from ganforge.data import prepare_labelled
from ganforge.data.prepare import PrepareError
from ganforge.data.prepare_labelled import (
    CIFAR10_CLASSES,
    CIFAR10_URL,
    download_cifar10,
    float_to_uint8,
    prepare_cifar10,
    prepare_hdf5,
)
from ganforge.data.store import open_dataset

RNG = np.random.default_rng(0)


def cifar_records(labels: list[int]) -> tuple[bytes, np.ndarray]:
    """A binary batch (label byte + R, G, B planes per record) and the images it encodes."""
    images = RNG.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    records = np.concatenate([np.array(labels, np.uint8)[:, None], images.reshape(len(labels), -1)], axis=1)
    return records.tobytes(), images


@pytest.fixture(scope="module")
def cifar_files() -> dict[str, tuple[bytes, np.ndarray, list[int]]]:
    files = {}
    for index, name in enumerate([f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]):
        labels = [(index + k) % 10 for k in range(3)]
        data, images = cifar_records(labels)
        files[name] = (data, images, labels)
    return files


def write_tarball(path: Path, files: dict[str, tuple[bytes, np.ndarray, list[int]]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, (data, _, _) in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def check_store(out: Path, files, names: list[str]) -> None:
    dataset = open_dataset(out)
    assert dataset.label_columns == [("class", CIFAR10_CLASSES)] and dataset.resolution == 32
    np.testing.assert_array_equal(dataset.images(32), np.concatenate([files[n][1] for n in names]))
    assert dataset.labels[:, 0].tolist() == sum((files[n][2] for n in names), [])


def test_cifar10_from_the_tarball_checks_md5(tmp_path, cifar_files, monkeypatch):
    tarball = write_tarball(tmp_path / "cifar-10-binary.tar.gz", cifar_files)
    with pytest.raises(PrepareError, match=r"cifar-10-binary.tar.gz: md5 [0-9a-f]{32}, expected c32a1d4a"):
        prepare_cifar10(tarball, tmp_path / "store")
    monkeypatch.setattr(prepare_labelled, "CIFAR10_MD5", hashlib.md5(tarball.read_bytes()).hexdigest())
    check_store(prepare_cifar10(tarball, tmp_path / "train"), cifar_files, [f"data_batch_{i}.bin" for i in range(1, 6)])
    # a folder holding the tarball (where --download puts it) works too, and the test split
    check_store(prepare_cifar10(tmp_path, tmp_path / "test", split="test"), cifar_files, ["test_batch.bin"])


def test_cifar10_from_the_extracted_folder_by_cli(tmp_path, cifar_files, capsys):
    folder = tmp_path / "src" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name, (data, _, _) in cifar_files.items():
        (folder / name).write_bytes(data)
    assert main(["prepare", "cifar10", str(tmp_path / "src"), "-o", str(tmp_path / "test"), "--split", "test"]) == 0
    assert "wrote" in capsys.readouterr().out
    check_store(tmp_path / "test", cifar_files, ["test_batch.bin"])
    (folder / "test_batch.bin").write_bytes(cifar_files["test_batch.bin"][0][:-1])
    with pytest.raises(PrepareError, match=r"test_batch.bin: 9218 bytes is not a whole number of 3073-byte"):
        prepare_cifar10(folder, tmp_path / "bad", split="test")
    with pytest.raises(PrepareError, match="split must be one of"):
        prepare_cifar10(folder, tmp_path / "bad", split="valid")


def test_cifar10_rejects_cifar100_labels(tmp_path):
    data, _ = cifar_records([3, 57])
    (tmp_path / "test_batch.bin").write_bytes(data)
    with pytest.raises(PrepareError, match="label 57 found, CIFAR-10 labels are 0..9"):
        prepare_cifar10(tmp_path, tmp_path / "out", split="test")


def test_cifar10_missing_names_url_and_place(tmp_path):
    with pytest.raises(PrepareError) as error:
        prepare_cifar10(tmp_path, tmp_path / "out")
    message = str(error.value)
    assert CIFAR10_URL in message and f"put cifar-10-binary.tar.gz in {tmp_path}" in message


def test_download_offline_and_online(tmp_path, cifar_files, monkeypatch, capsys):
    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    target = tmp_path / "cifar"
    assert main(["prepare", "cifar10", str(target), "-o", str(tmp_path / "out"), "--download"]) == 2
    message = capsys.readouterr().err
    assert "could not download CIFAR-10 (<urlopen error no network>)" in message
    assert CIFAR10_URL in message and f"put cifar-10-binary.tar.gz in {target}" in message
    assert not list(target.iterdir())  # no partial file left behind

    payload = write_tarball(tmp_path / "served.tar.gz", cifar_files).read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    monkeypatch.setattr(prepare_labelled, "CIFAR10_MD5", hashlib.md5(payload).hexdigest())
    archive = download_cifar10(target)
    assert archive == target / "cifar-10-binary.tar.gz" and archive.read_bytes() == payload
    monkeypatch.setattr(prepare_labelled, "CIFAR10_MD5", "0" * 32)
    with pytest.raises(PrepareError, match="delete it and download it again"):
        download_cifar10(target)

    # an extracted release already there: --download fetches nothing (offline stays offline) and prepares from it
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    extracted = tmp_path / "extracted"
    (extracted / "cifar-10-batches-bin").mkdir(parents=True)
    for name, (data, _, _) in cifar_files.items():
        (extracted / "cifar-10-batches-bin" / name).write_bytes(data)
    assert download_cifar10(extracted) == extracted
    assert main(["prepare", "cifar10", str(extracted), "-o", str(tmp_path / "from_folder"), "--download"]) == 0
    assert not (extracted / "cifar-10-binary.tar.gz").exists()


# --- HDF5 ---------------------------------------------------------------------------------------------------


def write_hdf5(path: Path, **datasets: np.ndarray) -> Path:
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as handle:
        for key, value in datasets.items():
            handle.create_dataset(key, data=value, chunks=True)
    return path


def test_hdf5_uint8_nchw_as_biggan_pytorch_writes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prepare_labelled, "_HDF5_CHUNK", 3)  # several chunks
    images = RNG.integers(0, 256, (7, 3, 8, 8), dtype=np.uint8)
    labels = np.array([0, 2, 1, 2, 0, 1, 1], dtype=np.int64)
    source = write_hdf5(tmp_path / "ILSVRC8.hdf5", imgs=images, labels=labels)
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nfox\n")
    assert main(["prepare", "hdf5", str(source), "-o", str(tmp_path / "store"), "--class-names", str(names)]) == 0
    dataset = open_dataset(tmp_path / "store")
    np.testing.assert_array_equal(dataset.images(8), images)
    assert dataset.labels[:, 0].tolist() == labels.tolist()
    assert dataset.label_columns == [("class", ["cat", "dog", "fox"])]
    assert prepare_hdf5(source, tmp_path / "plain").name == "plain"
    assert open_dataset(tmp_path / "plain").label_columns == [("class", ["0", "1", "2"])]


def test_hdf5_nhwc_and_float_pixels_are_rounded(tmp_path):
    pixels = np.array([0.0, 0.998, 1.002, 127.49, 127.51, 254.6, 255.0])  # in 0..255 units
    images = np.resize(pixels, (2, 4, 4, 3))  # StudioGAN's N×H×W×C layout
    as_float = (images / 127.5 - 1).astype(np.float32)  # the networks' [-1, 1]
    source = write_hdf5(tmp_path / "f.hdf5", imgs=as_float, labels=np.array([1, 0]))
    dataset = open_dataset(prepare_hdf5(source, tmp_path / "store"))
    expected = np.rint(images).astype(np.uint8).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(dataset.images(4), expected)
    assert not np.array_equal(expected, images.astype(np.uint8).transpose(0, 3, 1, 2))  # truncation would differ
    assert float_to_uint8(np.array([0.0, 0.5, 1.0]), (0.0, 1.0), "x").tolist() == [0, 128, 255]


def test_hdf5_errors_name_file_key_and_value(tmp_path):
    images = np.zeros((2, 3, 4, 4), dtype=np.uint8)
    source = write_hdf5(tmp_path / "a.hdf5", imgs=images, labels=np.array([0, 1]), other=np.array([1.0]))
    with pytest.raises(PrepareError, match=r"a.hdf5: no dataset 'x'; it holds \['imgs', 'labels', 'other'\]"):
        prepare_hdf5(source, tmp_path / "o", images_key="x")
    import h5py

    with h5py.File(tmp_path / "g.hdf5", "w") as handle:
        handle.create_dataset("train/imgs", data=images)
        handle.create_dataset("labels", data=np.array([0, 1]))
    with pytest.raises(PrepareError, match=r"g.hdf5: no dataset 'train' \(a group of them\); it holds \['labels', "
                                           r"'train'\] .* a group's dataset as GROUP/NAME"):
        prepare_hdf5(tmp_path / "g.hdf5", tmp_path / "o", images_key="train")  # AttributeError's traceback before
    assert open_dataset(prepare_hdf5(tmp_path / "g.hdf5", tmp_path / "g", images_key="train/imgs")).count == 2
    with pytest.raises(PrepareError, match=r"a.hdf5:labels has labels in \[0, 1\], expected indices into 1 class"):
        prepare_hdf5(source, tmp_path / "o", class_names=["only"])
    bad = write_hdf5(tmp_path / "b.hdf5", imgs=np.zeros((2, 3, 6, 6), np.uint8), labels=np.array([0, 1]))
    with pytest.raises(PrepareError, match=r"b.hdf5:imgs has shape \(2, 3, 6, 6\); expected at least one image"):
        prepare_hdf5(bad, tmp_path / "o")
    loud = write_hdf5(tmp_path / "c.hdf5", imgs=np.full((1, 3, 4, 4), 200.0), labels=np.array([0]))
    with pytest.raises(PrepareError, match=r"c.hdf5:imgs\[0:\]: float pixels in \[200, 200\], outside .*\[-1, 1\]"):
        prepare_hdf5(loud, tmp_path / "o")
    assert main(["prepare", "hdf5", str(loud), "-o", str(tmp_path / "o"), "--float-range=0,255"]) == 0
    assert open_dataset(tmp_path / "o").images(4).max() == 200
    with pytest.raises(SystemExit):
        main(["prepare", "hdf5", str(loud), "-o", str(tmp_path / "o"), "--float-range=0"])
    with pytest.raises(PrepareError, match=r"low < high, got \(1.0, 0.0\)"):
        prepare_hdf5(loud, tmp_path / "o", float_range=(1.0, 0.0))
    holes = write_hdf5(tmp_path / "n.hdf5", imgs=np.where(np.eye(4) > 0, np.nan, 0.5) * np.ones((1, 3, 4, 4)),
                       labels=np.array([0]))
    with pytest.raises(PrepareError, match=r"n.hdf5:imgs\[0:\]: float pixels include NaN or infinite values \(12 of "
                                           r"them\)"):
        prepare_hdf5(holes, tmp_path / "n")  # NaN compares false with the range: it was stored as 0
    with pytest.raises(PrepareError, match=r"a.hdf5:imgs holds uint8 pixels: a float range \(0, 1\) would do nothing"):
        prepare_hdf5(source, tmp_path / "n", float_range=(0.0, 1.0))
    with pytest.raises(PrepareError, match="class names a are given more than once"):
        prepare_hdf5(source, tmp_path / "n", class_names=["a", "a", "b"])
    assert not (tmp_path / "n").exists()
    (tmp_path / "text.hdf5").write_text("not hdf5")
    with pytest.raises(PrepareError, match="text.hdf5: not a readable HDF5 file"):
        prepare_hdf5(tmp_path / "text.hdf5", tmp_path / "o")
