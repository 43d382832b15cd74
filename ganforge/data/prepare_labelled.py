"""Class-labelled datasets BigGAN trains on: CIFAR-10 (official binary release) and BigGAN-PyTorch HDF5 files.

CIFAR-10 is read from the *binary* release (`cifar-10-binary.tar.gz`: fixed-size records of one label byte and
3,072 pixel bytes). The popular "python version" is a set of pickles, and unpickling runs arbitrary code from
the file, so ganforge never reads it. The tarball is read member by member without extracting it.

BigGAN-PyTorch's `make_hdf5.py` writes `imgs` (uint8 N×3×H×W) and `labels` (int64 N); users keep those files
(tens of GB for ImageNet), so they are streamed chunk by chunk into a store. Float images, if a file holds
them, are mapped to uint8 by *rounding* (BigGAN-PyTorch's own conversion truncates, shifting pixels by one).
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ganforge.data.images import is_power_of_two
from ganforge.data.prepare import PrepareError
from ganforge.data.store import CLASS_COLUMN, write_store
from ganforge.download import download, file_digest

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"  # published on the CIFAR page for the binary version
CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_SPLITS = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
_RECORD = 1 + 3 * 32 * 32  # label byte + R, G, B planes of 32×32, row-major
_HDF5_CHUNK = 1024  # images read from an HDF5 file at a time: bounds memory for ImageNet-sized files


def _check_archive(path: Path) -> None:
    digest = file_digest(path, "md5")
    if digest != CIFAR10_MD5:
        raise PrepareError(f"{path}: md5 {digest}, expected {CIFAR10_MD5} for {CIFAR10_URL} (a partial or different "
                           "file; delete it and download it again)")


def _missing_cifar10_message(directory: Path, why: str) -> str:
    return (f"{why}; download {CIFAR10_URL} (md5 {CIFAR10_MD5}) on a machine with internet and put "
            f"{CIFAR10_ARCHIVE} in {directory} (or its extracted {CIFAR10_FOLDER}/ folder), then run "
            f"`ganforge prepare cifar10 {directory} -o OUT` again")


def download_cifar10(directory: Path) -> Path:
    """Fetch the binary CIFAR-10 tarball into `directory` (unless there) and verify its md5; returns the file, or the
    directory itself when it already holds the extracted batches (nothing to fetch: works offline)."""
    directory = Path(directory)
    every_batch = [name for names in CIFAR10_SPLITS.values() for name in names]
    for folder in (directory, directory / CIFAR10_FOLDER):
        if all((folder / name).is_file() for name in every_batch):
            return directory
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / CIFAR10_ARCHIVE
    if not archive.is_file():
        try:
            download(CIFAR10_URL, archive, check=_check_archive)
        except OSError as error:
            raise PrepareError(_missing_cifar10_message(directory, f"could not download CIFAR-10 ({error})")) from None
    _check_archive(archive)
    return archive


def _cifar10_batches(src: Path, names: list[str]) -> Iterator[tuple[str, bytes]]:
    """(origin, bytes) of each named batch file, from the tarball or an extracted folder."""
    if src.is_dir():
        for folder in (src, src / CIFAR10_FOLDER):
            if all((folder / name).is_file() for name in names):
                for name in names:
                    yield str(folder / name), (folder / name).read_bytes()
                return
        if (src / CIFAR10_ARCHIVE).is_file():
            src = src / CIFAR10_ARCHIVE
        else:
            raise PrepareError(_missing_cifar10_message(src, f"{src} holds neither {', '.join(names)} nor "
                                                             f"{CIFAR10_ARCHIVE}"))
    if not src.is_file() or not tarfile.is_tarfile(src):
        raise PrepareError(f"{src} is not the CIFAR-10 binary tarball ({CIFAR10_ARCHIVE}) or a folder holding its "
                           f"files; get it from {CIFAR10_URL} (images in class folders, or a .zip of them: `ganforge "
                           "prepare folder`)")
    _check_archive(src)
    with tarfile.open(src, "r:*") as archive:
        members = {Path(member.name).name: member for member in archive.getmembers() if member.isfile()}
        for name in names:
            if name not in members:
                raise PrepareError(f"{src}: no member {name}; expected the {CIFAR10_ARCHIVE} layout")
            yield f"{src}:{members[name].name}", archive.extractfile(members[name]).read()


def _decode_cifar10(origin: str, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One binary batch → uint8 images [N, 3, 32, 32] and int64 labels [N]."""
    if not data or len(data) % _RECORD:
        raise PrepareError(f"{origin}: {len(data)} bytes is not a whole number of {_RECORD}-byte CIFAR-10 records")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        raise PrepareError(f"{origin}: label {labels.max()} found, CIFAR-10 labels are 0..9 (is this CIFAR-100?)")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def prepare_cifar10(src: Path, out: Path, *, split: str = "train", overwrite: bool = False) -> Path:
    """CIFAR-10 binary tarball (or its extracted folder) → a 32×32 store labelled "class" with the 10 names."""
    if split not in CIFAR10_SPLITS:
        raise PrepareError(f"CIFAR-10 split must be one of {sorted(CIFAR10_SPLITS)}, got {split!r}")
    src = Path(src)
    if not src.exists():
        raise PrepareError(_missing_cifar10_message(src.parent if src.suffix else src, f"{src} does not exist"))
    images, labels = [], []
    for origin, data in _cifar10_batches(src, CIFAR10_SPLITS[split]):
        batch, batch_labels = _decode_cifar10(origin, data)
        images.append(batch)
        labels.append(batch_labels)
    return write_store(out, images, resolution=32, source=f"{src.absolute()} (CIFAR-10 {split})",
                       labels=np.concatenate(labels)[:, None], label_columns=[(CLASS_COLUMN, list(CIFAR10_CLASSES))],
                       overwrite=overwrite)


# --- BigGAN-PyTorch HDF5 ------------------------------------------------------------------------------------


def _open_hdf5(path: Path):
    try:
        import h5py
    except ImportError:
        raise PrepareError(f"reading {path} needs h5py: pip install 'ganforge[hdf5]'") from None
    if not path.is_file():
        raise PrepareError(f"{path} does not exist; expected an HDF5 file from BigGAN-PyTorch's make_hdf5.py")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise PrepareError(f"{path}: not a readable HDF5 file ({error})") from None


def _image_layout(path: Path, key: str, shape: tuple[int, ...]) -> tuple[bool, int, int]:
    """(channels_last, channels, resolution): N×C×H×W as BigGAN-PyTorch writes, or N×H×W×C (StudioGAN)."""
    if len(shape) == 4 and shape[1] in (1, 3) and shape[2] == shape[3]:
        channels_last, channels, resolution = False, shape[1], shape[2]
    elif len(shape) == 4 and shape[3] in (1, 3) and shape[1] == shape[2]:
        channels_last, channels, resolution = True, shape[3], shape[1]
    else:
        raise PrepareError(f"{path}:{key} has shape {shape}; expected square images N×C×H×W or N×H×W×C, C 1 or 3")
    if not is_power_of_two(resolution) or resolution < 4 or shape[0] == 0:
        raise PrepareError(f"{path}:{key} has shape {shape}; expected at least one image of a power-of-two size ≥ 4")
    return channels_last, channels, resolution


def float_to_uint8(values: np.ndarray, value_range: tuple[float, float], origin: str) -> np.ndarray:
    """Float pixels spanning `value_range` → uint8 0..255 by rounding to nearest (never truncating)."""
    low, high = value_range
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise PrepareError(f"{origin}: float pixels include NaN or infinite values ({bad} of them); no pixel value "
                           "can stand for them")
    found_low, found_high = float(values.min()), float(values.max())
    slack = 1e-3 * (high - low)
    if found_low < low - slack or found_high > high + slack:
        raise PrepareError(f"{origin}: float pixels in [{found_low:g}, {found_high:g}], outside the expected range "
                           f"[{low:g}, {high:g}] (pass the file's range, e.g. --float-range 0,1)")
    scaled = (values.astype(np.float64) - low) * (255.0 / (high - low))
    return np.rint(scaled).clip(0, 255).astype(np.uint8)


def prepare_hdf5(src: Path, out: Path, *, images_key: str = "imgs", labels_key: str = "labels",
                 class_names: list[str] | None = None, float_range: tuple[float, float] | None = None,
                 overwrite: bool = False) -> Path:
    """A BigGAN-PyTorch HDF5 file (`imgs`, `labels`) → a store labelled "class".

    Class names default to "0", "1", …; pass the original names (e.g. the sorted ImageNet folder names) to keep
    them. Float images are taken to span `float_range` (default -1..1, as BigGAN-PyTorch's loaders normalise) and
    are rounded to uint8.
    """
    src = Path(src)
    if float_range is not None and (len(float_range) != 2 or not float_range[0] < float_range[1]):
        raise PrepareError(f"float_range must be (low, high) with low < high, got {float_range}")
    if class_names is not None and len(set(class_names)) < len(class_names):
        twice = sorted({name for name in class_names if class_names.count(name) > 1})
        raise PrepareError(f"class names {', '.join(twice)} are given more than once; each class needs a name of "
                           "its own")
    with _open_hdf5(src) as handle:
        for key in (images_key, labels_key):
            if key not in handle or not hasattr(handle[key], "shape"):  # a group has no shape
                raise PrepareError(f"{src}: no dataset {key!r}" + (" (a group of them)" if key in handle else "")
                                   + f"; it holds {sorted(handle.keys())} (choose others with --images-key / "
                                   "--labels-key, a group's dataset as GROUP/NAME)")
        images, labels = handle[images_key], np.asarray(handle[labels_key])
        channels_last, channels, resolution = _image_layout(src, images_key, images.shape)
        count = images.shape[0]
        if labels.dtype.kind not in "iu" or labels.reshape(-1).shape != (count,):
            raise PrepareError(f"{src}:{labels_key} is {labels.dtype} {labels.shape}; expected {count} integer labels")
        labels = labels.reshape(-1).astype(np.int64)
        classes = class_names or [str(i) for i in range(int(labels.max()) + 1)]
        if labels.min() < 0 or labels.max() >= len(classes):
            raise PrepareError(f"{src}:{labels_key} has labels in [{labels.min()}, {labels.max()}], expected indices "
                               f"into {len(classes)} class names")
        kind = images.dtype.kind
        if images.dtype != np.uint8 and kind != "f":
            raise PrepareError(f"{src}:{images_key} holds {images.dtype}; expected uint8 (or float) pixels")
        if kind != "f" and float_range is not None:
            raise PrepareError(f"{src}:{images_key} holds uint8 pixels: a float range ({float_range[0]:g}, "
                               f"{float_range[1]:g}) would do nothing; leave it out")
        value_range = float_range or (-1.0, 1.0)

        def batches() -> Iterator[np.ndarray]:
            for start in range(0, count, _HDF5_CHUNK):
                batch = images[start : start + _HDF5_CHUNK]
                if kind == "f":
                    batch = float_to_uint8(batch, value_range, f"{src}:{images_key}[{start}:]")
                yield np.ascontiguousarray(batch.transpose(0, 3, 1, 2) if channels_last else batch)

        return write_store(out, batches(), resolution=resolution, channels=channels,
                           source=f"{src.absolute()} (HDF5 {images_key}, {labels_key})", labels=labels[:, None],
                           label_columns=[(CLASS_COLUMN, list(classes))], overwrite=overwrite)
