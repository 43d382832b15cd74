"""Sources → prepared store: CelebA 128 crop, image folders / zips (optionally class folders), MNIST.

Decoding runs in a process pool and results stream into the store writer in order, so memory stays at a
few batches whatever the dataset size. Bad files (unreadable, truncated, not images, damaged or encrypted zip
members) never stop a run: each is skipped, logged, and listed in the manifest's `skipped` entries so the user can
see exactly what was left out. Hidden files and folders (.ipynb_checkpoints, .git) are not read.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import multiprocessing
import os
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ganforge.data.images import PREPARE_EXTENSIONS, ImageError, center_crop_resize, is_power_of_two, load_rgb
from ganforge.data.store import CLASS_COLUMN, DatasetError, StoreWriter
from ganforge.download import download

log = logging.getLogger(__name__)

CELEBA_SIZE = (178, 218)  # width, height of the aligned CelebA images
CELEBA_CROP_BOX = (25, 57, 153, 185)  # PIL (left, top, right, bottom): rows 121±64, columns 89±64
CELEBA_MAX_ITER_AT_SCALE = [48000, 96000, 96000, 96000, 96000, 96000]  # zoo preset for celeba_cropped
_BATCH = 256  # decoded images handed to the store writer at a time


class PrepareError(DatasetError):
    """A source that cannot be turned into a store; the message names the path and what was expected."""


def _resolve_workers(workers: int) -> int:
    if workers < 0:
        raise PrepareError(f"workers must be ≥ 0 (0 = one per CPU core), got {workers}")
    return workers or os.cpu_count() or 1


def _check_resolution(resolution: int) -> None:
    if not isinstance(resolution, int) or not is_power_of_two(resolution) or resolution < 4:
        raise PrepareError(f"resolution must be a power of two ≥ 4 (4, 8, …, 128, 256, …), got {resolution!r}")


def _decode_all(
    decode: Callable[[Any], tuple[np.ndarray | None, str]], items: list[Any], workers: int
) -> Iterator[tuple[int, np.ndarray | None, str]]:
    """(item index, CHW image or None, failure reason) per item, in order, decoded by `workers` processes."""
    if workers == 1:
        yield from ((i, *decode(item)) for i, item in enumerate(items))
        return
    chunksize = max(1, min(64, len(items) // (4 * workers)))
    with multiprocessing.Pool(workers) as pool:  # an error or a stop: the `with` terminates the workers
        for i, result in enumerate(pool.imap(decode, items, chunksize=chunksize)):
            yield (i, *result)
        pool.close()  # done: the workers leave on their own (terminate's SIGTERM reaches a forked worker through
        pool.join()  # whatever signal handlers its parent process had; a test run once hung there)


def _write_decoded(
    writer: StoreWriter,
    results: Iterable[tuple[int, np.ndarray | None, str]],
    names: list[str],
) -> tuple[list[int], list[dict]]:
    """Stream decoded images into the writer in batches; returns kept item indices and skipped entries."""
    kept: list[int] = []
    skipped: list[dict] = []
    batch: list[np.ndarray] = []
    for index, image, reason in results:
        if image is None:
            log.debug("skipping %s: %s", names[index], reason)
            skipped.append({"file": names[index], "reason": reason})
            continue
        kept.append(index)
        batch.append(image)
        if len(batch) == _BATCH:
            writer.add(np.stack(batch))
            batch = []
    if batch:
        writer.add(np.stack(batch))
    if skipped and kept:  # with nothing kept the caller's error carries the summary
        log.warning("%s (all listed under 'skipped' in the manifest)", skip_summary(skipped, len(names)))
    return kept, skipped


def skip_summary(skipped: list[dict], total: int, examples: int = 3) -> str:
    """One line for any number of skipped files: the count, then per reason (most common first; at most three
    reasons once more than ten files were skipped) how many files and the first few names, so 10,000 bad files do
    not print 10,000 lines while a handful are all named."""
    by_reason: dict[str, list[str]] = {}
    for entry in skipped:
        by_reason.setdefault(entry["reason"], []).append(entry["file"])
    common = sorted(by_reason.items(), key=lambda item: -len(item[1]))[: 3 if len(skipped) > 10 else None]
    parts = [f"{len(files)} × {reason} ({', '.join(files[:examples])}{', …' if len(files) > examples else ''})"
             for reason, files in common]
    more = f"; {len(by_reason) - len(common)} other reason(s)" if len(by_reason) > len(common) else ""
    return f"skipped {len(skipped)} of {total} files: " + "; ".join(parts) + more


def _atomic_write_text(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


# --- CelebA -------------------------------------------------------------------------------------------


def _celeba_crop(path: Path) -> tuple[np.ndarray | None, str]:
    """Aligned 178×218 CelebA image → the PGGAN 128×128 face crop, CHW."""
    try:
        image = load_rgb(path, str(path))
    except ImageError as error:
        return None, error.reason
    height, width = image.shape[:2]
    if (width, height) != CELEBA_SIZE:
        return None, f"size {width}×{height}, expected aligned CelebA {CELEBA_SIZE[0]}×{CELEBA_SIZE[1]}"
    left, top, right, bottom = CELEBA_CROP_BOX
    return np.ascontiguousarray(image[top:bottom, left:right].transpose(2, 0, 1)), ""


def _list_images(directory: Path) -> list[Path]:
    """The images directly in `directory`; hidden files (macOS `._` copies, editors' backups) are not read."""
    return sorted(p for p in directory.iterdir()
                  if p.suffix.lower() in PREPARE_EXTENSIONS and p.is_file() and not p.name.startswith("."))


def prepare_celeba_cropped(src_dir: Path, out: Path, *, workers: int = 0, overwrite: bool = False) -> Path:
    """Aligned CelebA JPEGs → 128×128 face-crop store (pyramid to 4) plus the zoo-style config beside it."""
    src_dir, out = Path(src_dir), Path(out).absolute()
    if not src_dir.is_dir():
        raise PrepareError(f"{src_dir} is not a directory; expected the aligned CelebA folder img_align_celeba/")
    files = _list_images(src_dir)
    if not files:
        raise PrepareError(f"{src_dir} holds no images ({', '.join(PREPARE_EXTENSIONS)}); expected img_align_celeba/")
    names = [file.name for file in files]
    with StoreWriter(out, resolution=128, channels=3, overwrite=overwrite) as writer:
        _, skipped = _write_decoded(writer, _decode_all(_celeba_crop, files, _resolve_workers(workers)), names)
        if writer.count == 0:
            raise PrepareError(f"{src_dir}: none of the {len(files)} images is a valid aligned CelebA image "
                               f"({CELEBA_SIZE[0]}×{CELEBA_SIZE[1]}); {skip_summary(skipped, len(files))}")
        writer.finish(source=str(src_dir.absolute()), skipped=skipped)
    config = {"pathDB": str(out), "config": {"maxIterAtScale": CELEBA_MAX_ITER_AT_SCALE}}
    _atomic_write_text(out / "config_celeba_cropped.json", json.dumps(config, indent=2) + "\n")
    return out


# --- image folders and zips ---------------------------------------------------------------------------


def _walk_images(root: Path) -> list[Path]:
    """Image files under root, recursively; symlinks are followed, but never back into their own ancestors."""
    found: list[Path] = []
    for directory, subdirs, filenames in os.walk(root, followlinks=True):
        here = Path(directory)
        real = here.resolve()
        if any((root / ancestor).resolve() == real for ancestor in here.relative_to(root).parents):
            subdirs.clear()  # a symlink loop: this folder is already being walked above us
            continue
        subdirs[:] = [name for name in subdirs if not name.startswith(".")]  # .ipynb_checkpoints is no class
        found.extend(
            here / name
            for name in filenames
            if Path(name).suffix.lower() in PREPARE_EXTENSIONS and not name.startswith(".")
        )
    return sorted(found)


def _zip_members(archive: Path) -> list[tuple[int, str]]:
    """(member index, member name) of the images in a zip; duplicates stay distinct by index."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise PrepareError(f"{archive}: not a readable .zip archive ({error}: damaged, or cut short by a download or "
                           "copy); fetch it again") from None
    with zf:
        members = [
            (index, info.filename)
            for index, info in enumerate(zf.infolist())
            if not info.is_dir()
            and Path(info.filename).suffix.lower() in PREPARE_EXTENSIONS
            and not info.filename.startswith("__MACOSX/")
            and not any(part.startswith(".") for part in Path(info.filename).parts)
        ]
    return sorted(members, key=lambda member: (member[1], member[0]))


def _class_labels(relative_parts: list[tuple[str, ...]]) -> tuple[np.ndarray, list[str], tuple[str, ...]] | None:
    """Class index per image when every image sits in a first-level sub-folder (below any shared root), the
    classes, and that shared root (relative parts)."""
    parts, root = relative_parts, ()
    while all(len(p) > 1 for p in parts) and len({p[0] for p in parts}) == 1:
        root += (parts[0][0],)
        parts = [p[1:] for p in parts]  # e.g. a zip whose only top-level entry is train/
    if not all(len(p) > 1 for p in parts):
        return None
    classes = sorted({p[0] for p in parts})
    lookup = {name: i for i, name in enumerate(classes)}
    return np.array([lookup[p[0]] for p in parts], dtype=np.int64), classes, root


def _warn_of_empty_class_folders(src: Path, root: tuple[str, ...], classes: list[str]) -> None:
    """Class folders without an image are no class of the store (torchvision's ImageFolder refuses them): said,
    since the other classes' indices then differ from a listing of every folder."""
    base = src.joinpath(*root)
    empty = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")
                   and p.name not in classes) if base.is_dir() else []
    if empty:
        log.warning("%s: class folder(s) %s hold no images and are not classes of the store (the %d classes are "
                    "numbered without them)", base, ", ".join(empty), len(classes))


class _FolderDecoder:
    """Picklable per-item decoder: item is a file path or a (member index, name) of `archive`; `channels` 1 keeps
    PIL's luma of each RGB image (ITU-R 601, its "L" mode: a grey image's own values)."""

    def __init__(self, resolution: int, archive: Path | None, resample: Image.Resampling, channels: int = 3) -> None:
        self.resolution, self.archive, self.resample, self.channels = resolution, archive, resample, channels
        self._zip: zipfile.ZipFile | None = None

    def __getstate__(self) -> dict:
        return {"resolution": self.resolution, "archive": self.archive, "resample": self.resample,
                "channels": self.channels, "_zip": None}

    def __call__(self, item: Path | tuple[int, str]) -> tuple[np.ndarray | None, str]:
        try:
            if self.archive is None:
                image = load_rgb(item, str(item))
            else:
                index, name = item
                try:
                    if self._zip is None:
                        self._zip = zipfile.ZipFile(self.archive)  # one handle per worker process
                    data = self._zip.read(self._zip.infolist()[index])
                except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as error:
                    # a damaged member, an unsupported compression, a password-protected member (RuntimeError)
                    return None, f"cannot read from the archive ({error})"
                image = load_rgb(data, f"{self.archive}:{name}")
        except ImageError as error:
            return None, error.reason
        square = center_crop_resize(image, self.resolution, self.resample)
        if self.channels == 1:
            return np.asarray(Image.fromarray(square).convert("L"))[None], ""
        return np.ascontiguousarray(square.transpose(2, 0, 1)), ""


Decoded = tuple[int, np.ndarray | None, str]  # an item's index, its CHW image (None: skipped) and why it was skipped


class _ColourSeen:
    """Whether any RGB image decoded so far has colour (where none has, the store could be grey)."""

    def __init__(self) -> None:
        self.seen = False

    def watch(self, results: Iterable[Decoded]) -> Iterator[Decoded]:
        for item in results:
            image = item[1]
            if not self.seen and image is not None and len(image) == 3:
                self.seen = not (np.array_equal(image[0], image[1]) and np.array_equal(image[1], image[2]))
            yield item


RESIZE_FILTERS = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR}


def prepare_folder(src: Path, out: Path, *, resolution: int, overwrite: bool = False, workers: int = 0,
                   resize: str = "lanczos", channels: int = 3) -> Path:
    """A folder (recursive) or .zip of images → centre-cropped store; first-level sub-folders are classes.
    `resize` "bilinear" is BigGAN-PyTorch's make_hdf5.py (CenterCropLongEdge, then torchvision's Resize of the PIL
    image), "lanczos" (default) the sharper filter. `channels` 1: a grey store (each image's luma), whose networks
    read and draw one channel (PGAN, DCGAN/WGAN; BigGAN and StarGAN v2 draw RGB); where every image of an RGB store
    is grey, a warning says so."""
    _check_resolution(resolution)
    if resize not in RESIZE_FILTERS:
        raise PrepareError(f"--resize {resize!r}: expected one of {', '.join(RESIZE_FILTERS)}")
    if channels not in (1, 3):
        raise PrepareError(f"--channels {channels}: expected 1 (grey) or 3 (RGB)")
    src = Path(src)
    if not src.exists():
        raise PrepareError(f"{src} does not exist; expected a folder or a .zip of images")
    items: list[Any]
    if src.is_dir():
        files = _walk_images(src)
        items, names = files, [str(file) for file in files]
        relative = [file.relative_to(src).parts for file in files]
        archive = None
    elif zipfile.is_zipfile(src):
        members = _zip_members(src)
        items, names = members, [f"{src}:{name}" for _, name in members]
        relative = [tuple(Path(name).parts) for _, name in members]
        archive = src.absolute()
    elif src.suffix.lower() == ".zip":
        raise PrepareError(f"{src}: not a readable .zip archive (no end-of-archive record: cut short by a download "
                           "or copy, or damaged); fetch it again")
    else:
        raise PrepareError(f"{src} is neither a folder nor a .zip archive of images")
    if not items:
        raise PrepareError(f"{src} contains no images (looked for {', '.join(PREPARE_EXTENSIONS)})")
    classes = _class_labels(relative)
    if classes is not None and archive is None:
        _warn_of_empty_class_folders(src, classes[2], classes[1])
    decoder = _FolderDecoder(resolution, archive, RESIZE_FILTERS[resize], channels)
    with StoreWriter(out, resolution=resolution, channels=channels, overwrite=overwrite) as writer:
        colour = _ColourSeen()
        kept, skipped = _write_decoded(writer, colour.watch(_decode_all(decoder, items, _resolve_workers(workers))),
                                       names)
        if writer.count == 0:
            raise PrepareError(f"{src}: none of its {len(items)} image files could be decoded; "
                               f"{skip_summary(skipped, len(items))}")
        if channels == 3 and not colour.seen:
            log.warning("%s: every image is grey; --channels 1 (Python: channels=1) makes a grey store, a third of "
                        "the size, whose networks read and draw one channel", src)
        labels, columns = None, None
        if classes is not None:
            labels, columns = classes[0][kept][:, None], [(CLASS_COLUMN, classes[1])]
            if lost := [name for k, name in enumerate(classes[1]) if not (labels == k).any()]:
                raise PrepareError(f"{src}: no image of class folder(s) {', '.join(lost)} could be decoded; a class "
                                   f"without images cannot be trained or sampled (fix or remove the folder); "
                                   f"{skip_summary(skipped, len(items))}")
        return writer.finish(source=str(src.absolute()), labels=labels, label_columns=columns, skipped=skipped,
                             preprocessing={"crop": "centre", "resize": resize})


# --- MNIST --------------------------------------------------------------------------------------------

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
# file name → (download URL of the gzip, md5 of the *uncompressed* bytes)
MNIST_FILES: dict[str, tuple[str, str]] = {
    name: (f"{MNIST_URL}{name}.gz", md5)
    for name, md5 in (
        ("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb"),
        ("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624"),
        ("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea"),
        ("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637"),
    )
}
_MNIST_SPLITS = {"train": "train", "test": "t10k"}
_IDX_UBYTE_IMAGES, _IDX_UBYTE_LABELS = 0x00000803, 0x00000801


def _find_mnist_file(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise PrepareError(f"{path}: cannot read ({error})") from error


def _missing_mnist_message(directory: Path, missing: list[str], why: str) -> str:
    lines = [f"{why}; put these MNIST files (gzipped or not) in {directory}:"]
    lines += [f"  {name}.gz  from  {MNIST_FILES[name][0]}" for name in missing]
    return "\n".join(lines)


def _check_md5(data: bytes, expected: str, origin: str) -> None:
    digest = hashlib.md5(data).hexdigest()
    if digest != expected:
        raise PrepareError(f"{origin}: checksum mismatch (md5 of uncompressed data {digest}, expected {expected})")


def _gunzip(payload: bytes, origin: str) -> bytes:
    try:
        return gzip.decompress(payload)
    except (OSError, EOFError, zlib.error) as error:
        raise PrepareError(f"{origin}: downloaded data is not gzip ({error})") from error


def download_mnist(directory: Path) -> Path:
    """Fetch the MNIST files missing from `directory` and verify every file's checksum; returns it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    unreachable: list[str] = []
    for name, (url, md5) in MNIST_FILES.items():
        present = _find_mnist_file(directory, name)
        if present is not None:
            _check_md5(_read_maybe_gzip(present), md5, f"{present} (delete it to download it again)")
            continue
        try:
            download(url, directory / f"{name}.gz", check=lambda path, md5=md5, url=url: _check_md5(
                _gunzip(path.read_bytes(), url), md5, url))
        except PrepareError:
            raise
        except OSError as error:
            log.warning("cannot download %s: %s", url, error)
            unreachable.append(name)
    if unreachable:
        raise PrepareError(_missing_mnist_message(directory, unreachable, "could not download MNIST (offline?)"))
    return directory


def read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """Read an idx ubyte file (gz or plain), checking its magic number and per-item shape."""
    data = _read_maybe_gzip(path)
    dims = len(item_shape) + 1
    header_size = 4 + 4 * dims
    if len(data) < header_size or int.from_bytes(data[:4], "big") != magic:
        found = data[:4].hex() if len(data) >= 4 else "nothing"
        raise PrepareError(f"{path}: not an idx file with magic {magic:#010x} (found {found})")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    if shape[1:] != item_shape:
        raise PrepareError(f"{path}: items of shape {shape[1:]}, expected {item_shape}")
    expected = header_size + int(np.prod(shape))
    if len(data) != expected:
        raise PrepareError(f"{path}: {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def prepare_mnist(src: Path, out: Path, *, resolution: int = 32, split: str = "train", overwrite: bool = False) -> Path:
    """Official MNIST idx files → 1-channel store: 28 px zero-padded to 32 (LANCZOS-upsampled beyond)."""
    if not isinstance(resolution, int) or not is_power_of_two(resolution) or resolution < 32:
        raise PrepareError(f"MNIST resolution must be a power of two ≥ 32 (32, 64, …), got {resolution!r}")
    if split not in _MNIST_SPLITS:
        raise PrepareError(f"MNIST split must be one of {sorted(_MNIST_SPLITS)}, got {split!r}")
    src = Path(src)
    prefix = _MNIST_SPLITS[split]
    wanted = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    found = {name: _find_mnist_file(src, name) for name in wanted}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise PrepareError(_missing_mnist_message(src, missing, f"MNIST {split} files missing"))
    digits = read_idx(found[wanted[0]], _IDX_UBYTE_IMAGES, (28, 28))
    labels = read_idx(found[wanted[1]], _IDX_UBYTE_LABELS, ())
    if not len(digits) or len(labels) != len(digits) or labels.max() > 9:
        raise PrepareError(
            f"{found[wanted[1]]}: {len(labels)} labels for {len(digits)} images, "
            "expected one digit 0..9 per image (and at least one image)"
        )

    def batches() -> Iterator[np.ndarray]:
        for start in range(0, len(digits), 4096):
            padded = np.pad(digits[start : start + 4096], ((0, 0), (2, 2), (2, 2)))
            if resolution > 32:
                size = (resolution, resolution)
                resized = [Image.fromarray(digit).resize(size, Image.Resampling.LANCZOS) for digit in padded]
                padded = np.stack([np.asarray(image) for image in resized])
            yield padded[:, None]

    with StoreWriter(out, resolution=resolution, channels=1, overwrite=overwrite) as writer:
        for batch in batches():
            writer.add(batch)
        return writer.finish(
            source=f"{src.absolute()} (MNIST {split})",
            labels=labels.astype(np.int64)[:, None],
            label_columns=[("digit", [str(d) for d in range(10)])],
        )
