"""Sources → store: CelebA 128 crop, image folders and zips with class folders, MNIST and its download."""

from __future__ import annotations

import gzip
import io
import json
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_path
from PIL import Image

from ganforge.data.prepare import (
    MNIST_FILES,
    PrepareError,
    download_mnist,
    prepare_celeba_cropped,
    prepare_folder,
    prepare_mnist,
)
from ganforge.data.store import open_dataset


def _noise(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _expected_folder_image(pixels: np.ndarray, resolution: int) -> np.ndarray:
    """Centre crop + LANCZOS done directly with PIL, independently of the code under test."""
    height, width = pixels.shape[:2]
    side = min(height, width)
    left, top = (width - side) // 2, (height - side) // 2
    square = Image.fromarray(pixels).crop((left, top, left + side, top + side))
    return np.asarray(square.resize((resolution, resolution), Image.Resampling.LANCZOS)).transpose(2, 0, 1)


# --- CelebA ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_celeba_cropped_on_the_shared_images(tmp_path: Path) -> None:
    source = shared_path("data", "celeba", "img_align_celeba")
    out = prepare_celeba_cropped(source, tmp_path / "celeba", workers=2)
    dataset = open_dataset(out)
    assert (dataset.count, dataset.resolution, dataset.levels) == (6000, 128, [4, 8, 16, 32, 64, 128])
    assert dataset.manifest["skipped"] == [] and dataset.labels is None

    files = sorted(source.glob("*.jpg"))
    for index in (0, 4321):
        with Image.open(files[index]) as original:
            crop = np.asarray(original.convert("RGB").crop((25, 57, 153, 185))).transpose(2, 0, 1)
        np.testing.assert_array_equal(dataset.images(128)[index], crop)
        blocks = crop.reshape(3, 64, 2, 64, 2).astype(np.float64).mean(axis=(2, 4))
        np.testing.assert_array_equal(dataset.images(64)[index], np.rint(blocks).astype(np.uint8))

    config = json.loads((out / "config_celeba_cropped.json").read_text())
    assert config == {
        "pathDB": str(out.absolute()),
        "config": {"maxIterAtScale": [48000, 96000, 96000, 96000, 96000, 96000]},
    }


def test_celeba_skips_wrong_sizes_and_broken_files(tmp_path: Path) -> None:
    source = tmp_path / "img_align_celeba"
    source.mkdir()
    faces = [_noise(218, 178, seed) for seed in range(2)]
    Image.fromarray(faces[0]).save(source / "000001.png")
    Image.fromarray(_noise(100, 100, 5)).save(source / "000002.png")
    Image.fromarray(faces[1]).save(source / "000003.png")
    (source / "000004.jpg").write_bytes(b"")
    (source / "list_attr_celeba.txt").write_text("not an image, ignored\n")
    Image.fromarray(faces[0]).save(source / ".000001-copy.png")  # hidden: not read (it was stored as a face)
    (source / "._000003.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata: not read either

    dataset = open_dataset(prepare_celeba_cropped(source, tmp_path / "out", workers=1))
    assert dataset.count == 2
    np.testing.assert_array_equal(dataset.images(128)[1], faces[1][57:185, 25:153].transpose(2, 0, 1))
    skipped = dataset.manifest["skipped"]
    assert [entry["file"] for entry in skipped] == ["000002.png", "000004.jpg"]
    assert "size 100×100, expected aligned CelebA 178×218" in skipped[0]["reason"]
    assert "empty file" in skipped[1]["reason"]


def test_celeba_without_valid_images_is_an_error(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    Image.fromarray(_noise(10, 10, 0)).save(source / "a.png")
    with pytest.raises(PrepareError, match="none of the 1 images is a valid aligned CelebA image"):
        prepare_celeba_cropped(source, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="holds no images"):
        prepare_celeba_cropped(tmp_path / "empty", tmp_path / "out", workers=1)
    with pytest.raises(PrepareError, match="is not a directory"):
        prepare_celeba_cropped(tmp_path / "missing", tmp_path / "out", workers=1)


# --- folders and zips -----------------------------------------------------------------------------------


def _class_folder(root: Path) -> dict[str, np.ndarray]:
    """cats/ and dogs/ with images of different sizes and formats, plus a broken file and a non-image."""
    pictures = {
        "cats/a.png": _noise(20, 30, 0),
        "cats/b.jpg": _noise(16, 16, 1),
        "dogs/c.bmp": _noise(40, 24, 2),
        "dogs/deep/d.png": _noise(8, 8, 3),
    }
    for name, pixels in pictures.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
    (root / "dogs" / "broken.png").write_text("not an image")
    (root / "cats" / "README.txt").write_text("ignored")
    return {name: np.asarray(Image.open(root / name).convert("RGB")) for name in pictures}


def test_folder_with_class_subfolders(tmp_path: Path) -> None:
    source = tmp_path / "pets"
    decoded = _class_folder(source)
    dataset = open_dataset(prepare_folder(source, tmp_path / "store", resolution=16, workers=2))
    assert dataset.count == 4 and dataset.resolution == 16
    assert dataset.label_columns == [("class", ["cats", "dogs"])]
    np.testing.assert_array_equal(dataset.labels[:, 0], [0, 0, 1, 1])
    for index, name in enumerate(sorted(decoded)):
        np.testing.assert_array_equal(dataset.images(16)[index], _expected_folder_image(decoded[name], 16))
    skipped = dataset.manifest["skipped"]
    assert len(skipped) == 1 and skipped[0]["file"].endswith("broken.png")
    assert "not a readable image" in skipped[0]["reason"]
    assert dataset.manifest["source"] == str(source.absolute())


def test_folder_classes_below_a_shared_root_and_symlinks(tmp_path: Path) -> None:
    source = tmp_path / "src"
    _class_folder(source / "train")
    (source / "train" / "birds").symlink_to(source / "train" / "cats", target_is_directory=True)
    (source / "train" / "loop").mkdir()
    (source / "train" / "loop" / "again").symlink_to(source / "train" / "loop", target_is_directory=True)
    dataset = open_dataset(prepare_folder(source, tmp_path / "store", resolution=8, workers=1))
    assert dataset.label_columns == [("class", ["birds", "cats", "dogs"])]
    assert dataset.count == 6  # cats seen twice: once through the symlink
    np.testing.assert_array_equal(dataset.labels[:, 0], [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(dataset.images(8)[0], dataset.images(8)[2])


def test_folder_with_loose_images_has_no_labels(tmp_path: Path) -> None:
    source = tmp_path / "mixed"
    _class_folder(source)
    Image.fromarray(_noise(9, 9, 4)).save(source / "top.png")
    dataset = open_dataset(prepare_folder(source, tmp_path / "store", resolution=4, workers=1))
    assert dataset.count == 5 and dataset.labels is None and dataset.label_columns == []


def test_zip_with_duplicate_member_names(tmp_path: Path) -> None:
    archive = tmp_path / "images.zip"
    pictures = [_noise(12, 12, seed) for seed in range(3)]
    encoded = []
    for pixels in pictures:
        path = tmp_path / "tmp.png"
        Image.fromarray(pixels).save(path)
        encoded.append(path.read_bytes())
    with zipfile.ZipFile(archive, "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("photos/x.png", encoded[0])
        zf.writestr("photos/y.png", encoded[1])
        zf.writestr("photos/x.png", encoded[2])
        zf.writestr("photos/broken.gif", b"GIF89a-truncated")
        zf.writestr("__MACOSX/photos/._x.png", b"resource fork")
    dataset = open_dataset(prepare_folder(archive, tmp_path / "store", resolution=8, workers=1))
    assert dataset.count == 3 and dataset.labels is None
    # sorted by name, duplicates kept in archive order
    for index, pixels in enumerate([pictures[0], pictures[2], pictures[1]]):
        np.testing.assert_array_equal(dataset.images(8)[index], _expected_folder_image(pixels, 8))
    assert [entry["file"] for entry in dataset.manifest["skipped"]] == [f"{archive}:photos/broken.gif"]


def test_zip_with_class_folders(tmp_path: Path) -> None:
    archive = tmp_path / "classes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for index, name in enumerate(["train/b/1.png", "train/a/2.png", "train/b/3.png"]):
            path = tmp_path / "tmp.png"
            Image.fromarray(_noise(4, 4, index)).save(path)
            zf.write(path, name)
    dataset = open_dataset(prepare_folder(archive, tmp_path / "store", resolution=4, workers=1))
    assert dataset.label_columns == [("class", ["a", "b"])]
    np.testing.assert_array_equal(dataset.labels[:, 0], [0, 1, 1])


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="power of two ≥ 4"):
        prepare_folder(tmp_path, tmp_path / "out", resolution=48)
    with pytest.raises(PrepareError, match="does not exist"):
        prepare_folder(tmp_path / "missing", tmp_path / "out", resolution=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match="contains no images"):
        prepare_folder(tmp_path / "empty", tmp_path / "out", resolution=8)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PrepareError, match="neither a folder nor a .zip"):
        prepare_folder(tmp_path / "notes.txt", tmp_path / "out", resolution=8)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"\xff\xd8 nope")
    with pytest.raises(PrepareError, match="none of its 1 image files could be decoded"):
        prepare_folder(bad, tmp_path / "out", resolution=8, workers=1)
    assert not (tmp_path / "out").exists()
    with pytest.raises(PrepareError, match="workers must be ≥ 0"):
        prepare_folder(bad, tmp_path / "out", resolution=8, workers=-1)


def test_hidden_folders_are_no_classes_and_a_class_without_images_is_refused_or_named(tmp_path: Path,
                                                                                       caplog) -> None:
    """.ipynb_checkpoints was a class; a class folder whose images all fail to decode was a class no image has (a
    conditional G sampled it, D never saw it); an empty class folder shifts ImageFolder's numbering: said."""
    source = tmp_path / "pets"
    _class_folder(source)
    (source / ".ipynb_checkpoints").mkdir()
    Image.fromarray(_noise(8, 8, 5)).save(source / ".ipynb_checkpoints" / "a-checkpoint.png")
    (source / "birds").mkdir()
    dataset = open_dataset(prepare_folder(source, tmp_path / "store", resolution=8, workers=1))
    assert dataset.label_columns == [("class", ["cats", "dogs"])] and dataset.count == 4
    assert f"{source}: class folder(s) birds hold no images and are not classes of the store" in caplog.text
    (source / "birds" / "x.png").write_text("junk")
    with pytest.raises(PrepareError, match=rf"^{source}: no image of class folder\(s\) birds could be decoded; a "
                                           "class without images cannot be trained"):
        prepare_folder(source, tmp_path / "other", resolution=8, workers=1)
    assert not (tmp_path / "other").exists()


def test_damaged_or_encrypted_zip_members_are_skipped_and_a_cut_zip_is_named(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(_noise(8, 8, 0)).save(buffer, "PNG")
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", buffer.getvalue())
        zf.writestr("b.bmp", bytes(4000))  # compresses well: its deflate stream is easy to break
        zf.writestr("c.png", buffer.getvalue())
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("b.bmp")
    start = info.header_offset + 30 + len(info.filename)  # local header, name, no extra field
    data[start : start + 8] = b"\xff" * 8  # a damaged member: zlib.error on reading
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    data = bytearray(archive.read_bytes())  # b.bmp marked password-protected, as `zip -P` marks it: the flag bit
    central = data.index(b"PK\x01\x02")  # in its local header and its central directory entry
    while data[central + 46 : central + 51] != b"b.bmp":
        central = data.index(b"PK\x01\x02", central + 4)
    data[info.header_offset + 6] |= 0x1
    data[central + 8] |= 0x1
    encrypted = tmp_path / "encrypted.zip"
    encrypted.write_bytes(bytes(data))
    for source in (damaged, encrypted):
        dataset = open_dataset(prepare_folder(source, tmp_path / source.stem, resolution=8, workers=1))
        assert dataset.count == 2
        [skipped] = dataset.manifest["skipped"]
        assert skipped["file"] == f"{source}:b.bmp" and skipped["reason"].startswith("cannot read from the archive")
    cut = tmp_path / "cut.zip"
    cut.write_bytes(archive.read_bytes()[:-30])
    with pytest.raises(PrepareError, match=r"cut.zip: not a readable .zip archive \(no end-of-archive record"):
        prepare_folder(cut, tmp_path / "o", resolution=8)
    data = bytearray(archive.read_bytes())  # the central directory damaged: zipfile.BadZipFile's traceback before
    central = data.index(b"PK\x01\x02")
    data[central : central + 4] = b"XXXX"
    (tmp_path / "badcd.zip").write_bytes(bytes(data))
    with pytest.raises(PrepareError, match=r"badcd.zip: not a readable .zip archive \(Bad magic number for central"):
        prepare_folder(tmp_path / "badcd.zip", tmp_path / "o", resolution=8)


def test_sigterm_unwinds_a_prepare_as_ctrl_c_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scheduler's cancel (SIGTERM) left the temporary store, all of its images, beside the output."""
    import signal

    from ganforge import cli
    from ganforge.data import prepare

    source = tmp_path / "pets"
    _class_folder(source)

    def terminated(*args: object) -> object:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while the store is half written
        raise AssertionError("SIGTERM did not interrupt")

    monkeypatch.setattr(prepare, "_write_decoded", terminated)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["prepare", "folder", str(source), "-o", str(tmp_path / "out"), "--resolution", "8", "--workers",
                  "1"])
    assert stopped.value.code == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pets"] and signal.getsignal(signal.SIGTERM) is before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a worker as multiprocessing's pool does on Linux")
def test_a_forked_decoding_worker_still_dies_of_sigterm_under_that_handler() -> None:
    """The pool ends its forked workers with SIGTERM: a worker that inherited the handler raised SystemExit inside
    the pool's code instead of dying, and the pool's join hung (a 300 s CI timeout)."""
    import signal
    import time

    from ganforge import cli

    with cli._terminate_unwinds():
        pid = os.fork()
        if pid == 0:  # the worker
            time.sleep(30)
            os._exit(0)
        time.sleep(0.2)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


# --- MNIST ----------------------------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_mnist_training_and_test_sets_from_the_shared_files(tmp_path: Path) -> None:
    source = shared_path("data", "mnist")
    raw = np.frombuffer(gzip.decompress((source / "train-images-idx3-ubyte.gz").read_bytes()), np.uint8, offset=16)
    raw = raw.reshape(-1, 28, 28)
    dataset = open_dataset(prepare_mnist(source, tmp_path / "mnist"))
    assert (dataset.count, dataset.channels, dataset.resolution) == (60000, 1, 32)
    assert dataset.label_columns == [("digit", [str(d) for d in range(10)])]
    assert dataset.labels[0, 0] == 5 and dataset.labels[1, 0] == 0
    np.testing.assert_array_equal(np.bincount(dataset.labels[:, 0])[:3], [5923, 6742, 5958])
    images = dataset.images(32)
    for border in (images[:, :, :2], images[:, :, -2:], images[:, :, :, :2], images[:, :, :, -2:]):
        assert not border.any()
    np.testing.assert_array_equal(images[::997, 0, 2:30, 2:30], raw[::997])

    test_set = open_dataset(prepare_mnist(source, tmp_path / "mnist-test", split="test"))
    assert test_set.count == 10000 and test_set.labels[0, 0] == 7


def test_mnist_64_is_the_padded_digit_upsampled_with_lanczos(tmp_path: Path) -> None:
    digits = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(digits, 0x803))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.array([3, 1, 4]), 0x801)))
    dataset = open_dataset(prepare_mnist(tmp_path, tmp_path / "out", resolution=64))
    assert dataset.resolution == 64 and dataset.levels == [4, 8, 16, 32, 64]
    np.testing.assert_array_equal(dataset.labels[:, 0], [3, 1, 4])
    padded = Image.fromarray(np.pad(digits[1], 2))
    expected = np.asarray(padded.resize((64, 64), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(dataset.images(64)[1, 0], expected)


def test_mnist_errors_name_files_and_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(PrepareError) as missing:
        prepare_mnist(tmp_path, tmp_path / "out")
    message = str(missing.value)
    assert str(tmp_path) in message
    assert "train-images-idx3-ubyte.gz  from  https://ossci-datasets.s3.amazonaws.com/mnist/" in message
    assert "train-labels-idx1-ubyte.gz" in message and "t10k" not in message

    digits = np.zeros((2, 28, 28), dtype=np.uint8)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(digits, 0x801))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([1, 2]), 0x801))
    with pytest.raises(PrepareError, match="train-images-idx3-ubyte: not an idx file with magic 0x00000803"):
        prepare_mnist(tmp_path, tmp_path / "out")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((2, 28, 27)), 0x803))
    with pytest.raises(PrepareError, match=r"items of shape \(28, 27\), expected \(28, 28\)"):
        prepare_mnist(tmp_path, tmp_path / "out")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(digits, 0x803)[:-5])
    with pytest.raises(PrepareError, match="bytes, expected 1584"):
        prepare_mnist(tmp_path, tmp_path / "out")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((3, 28, 28)), 0x803))
    with pytest.raises(PrepareError, match="2 labels for 3 images"):
        prepare_mnist(tmp_path, tmp_path / "out")
    packed = bytearray(gzip.compress(_idx_bytes(np.zeros((3, 28, 28)), 0x803)))
    packed[20:40] = bytes(b ^ 0x5A for b in packed[20:40])  # a damaged deflate stream: zlib.error's traceback before
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(bytes(packed))
    with pytest.raises(PrepareError, match=r"train-images-idx3-ubyte.gz: cannot read \("):
        prepare_mnist(tmp_path, tmp_path / "out")
    (tmp_path / "train-images-idx3-ubyte.gz").unlink()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(np.zeros((3, 28, 28)), 0x803))
    with pytest.raises(PrepareError, match="power of two ≥ 32"):
        prepare_mnist(tmp_path, tmp_path / "out", resolution=28)
    with pytest.raises(PrepareError, match="split must be one of"):
        prepare_mnist(tmp_path, tmp_path / "out", split="validation")


def test_download_offline_names_each_file_its_url_and_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, timeout: float) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    present = shared_path("data", "mnist", "t10k-labels-idx1-ubyte.gz")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(present.read_bytes()))
    with pytest.raises(PrepareError) as failure:
        download_mnist(tmp_path)
    message = str(failure.value)
    assert "could not download MNIST" in message and str(tmp_path) in message
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        assert f"{name}.gz  from  https://ossci-datasets.s3.amazonaws.com/mnist/{name}.gz" in message
    assert "t10k-labels" not in message


def test_download_verifies_checksums(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = shared_path("data", "mnist")
    mirror = {url: source / url.rsplit("/", 1)[1] for url, _ in MNIST_FILES.values()}
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(mirror[url].read_bytes()))
    target = tmp_path / "mnist"
    assert download_mnist(target) == target
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{name}.gz" for name in MNIST_FILES)
    assert (target / "t10k-labels-idx1-ubyte.gz").read_bytes() == (source / "t10k-labels-idx1-ubyte.gz").read_bytes()

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(
        PrepareError, match="damaged/train-labels-idx1-ubyte.gz .delete it to download it again.: checksum"
    ):
        download_mnist(damaged)

    corrupt = gzip.compress(b"not mnist")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(corrupt))
    with pytest.raises(PrepareError, match="checksum mismatch .* expected 6bbc9ace898e44ae57da46a324031adb"):
        download_mnist(tmp_path / "other")
    assert not (tmp_path / "other" / "train-images-idx3-ubyte.gz").exists()


def test_folder_with_bilinear_resize_is_biggan_pytorchs_make_hdf5(tmp_path: Path, capsys) -> None:
    """`--resize bilinear`: BigGAN-PyTorch's ImageNet preprocessing before its uint8 cast, written out: the long edge
    centre-cropped as torchvision's center_crop (offset int(round(margin / 2)), here 3.5 → 4) and PIL's bilinear
    resize (torchvision's Resize of a PIL image)."""
    from ganforge.cli import main

    source = tmp_path / "pictures" / "class_a"
    source.mkdir(parents=True)
    pixels = _noise(27, 20, 5)  # 27 rows: a margin of 7 rows
    Image.fromarray(pixels).save(source / "x.png")
    out = tmp_path / "store"
    assert main(["prepare", "folder", str(source.parent), "-o", str(out), "--resolution", "8",
                 "--resize", "bilinear", "--workers", "1"]) == 0
    picture = Image.fromarray(pixels)
    top = int(round((27 - 20) / 2.0))
    official = np.asarray(picture.crop((0, top, 20, top + 20)).resize((8, 8), Image.BILINEAR))
    np.testing.assert_array_equal(open_dataset(out).images(8)[0], official.transpose(2, 0, 1))
    # the manifest says how the images were made: two stores of one folder tell their filters apart
    assert open_dataset(out).manifest["preprocessing"] == {"crop": "centre", "resize": "bilinear"}
    assert main(["prepare", "folder", str(source.parent), "-o", str(tmp_path / "sharp"), "--resolution", "8",
                 "--workers", "1"]) == 0
    assert open_dataset(tmp_path / "sharp").manifest["preprocessing"]["resize"] == "lanczos"
    with pytest.raises(SystemExit):
        main(["prepare", "folder", str(source.parent), "-o", str(tmp_path / "other"), "--resolution", "8",
              "--resize", "bicubic"])
    assert "invalid choice: 'bicubic'" in capsys.readouterr().err


def test_folder_of_grey_images_as_a_one_channel_store(tmp_path: Path, caplog) -> None:
    """--channels 1: each image's luma as PIL's L mode computes it (a grey file keeps its own values); an RGB store
    of images that are all grey says that --channels 1 exists, one with a coloured image does not."""
    source = tmp_path / "grey"
    source.mkdir()
    greys = [np.random.default_rng(seed).integers(0, 256, (12, 12), dtype=np.uint8) for seed in range(3)]
    for index, pixels in enumerate(greys):
        Image.fromarray(pixels).save(source / f"{index}.png")  # mode L files
    with caplog.at_level("WARNING"):
        rgb = open_dataset(prepare_folder(source, tmp_path / "rgb", resolution=8, workers=1))
    assert rgb.channels == 3 and "every image is grey; --channels 1" in caplog.text
    caplog.clear()
    grey = open_dataset(prepare_folder(source, tmp_path / "one", resolution=8, workers=1, channels=1))
    assert grey.channels == 1 and "every image is grey" not in caplog.text
    np.testing.assert_array_equal(grey.images(8)[:, 0], rgb.images(8)[:, 0])  # luma of R = G = B is that value
    coloured = _noise(16, 16, 7)
    Image.fromarray(coloured).save(source / "3.png")
    with caplog.at_level("WARNING"):
        mixed = open_dataset(prepare_folder(source, tmp_path / "mixed", resolution=16, workers=1, channels=1))
        open_dataset(prepare_folder(source, tmp_path / "mixed_rgb", resolution=16, workers=1))
    assert "every image is grey" not in caplog.text
    luma = np.asarray(Image.fromarray(coloured).convert("L"))
    np.testing.assert_array_equal(mixed.images(16)[3, 0], luma)  # 16 px: no resize
    with pytest.raises(PrepareError, match=r"--channels 2: expected 1 \(grey\) or 3 \(RGB\)"):
        prepare_folder(source, tmp_path / "two", resolution=8, channels=2)
