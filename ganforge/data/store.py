"""The prepared dataset on disk (a uint8 NCHW pyramid + labels + manifest) and its reader.

Levels are plain .npy files so readers can memory-map them: training and metrics touch only the rows
they need, and many processes share the page cache. A store may also keep one "crop source" level larger than its
resolution (any size, listed as `crop_source` in the manifest), from which random crops are cut and downsampled
to the training size instead of upsampled (StarGAN v2's augmentation); readers that do not use it ignore it.
A store is written into a temporary sibling folder and renamed into place when complete, so an interrupted
`prepare` never leaves a half store behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import secrets
import shutil
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from ganforge.data.images import build_pyramid, is_power_of_two
from ganforge.version import __version__

STORE_FORMAT = "ganforge-store"
STORE_VERSION = 1
MANIFEST_NAME = "manifest.json"
LABELS_NAME = "labels.npy"
CLASS_COLUMN = "class"  # the label column of a store whose classes are its images' class folders (or CIFAR's)
MIN_RESOLUTION = 4
_WRITE_CHUNK = 256  # images per write step: bounds memory for big in-memory arrays
_NPY_HEADER_BYTES = 128  # fixed header size so the row count can be filled in after streaming

LabelColumns = list[tuple[str, list[str]]]


class DatasetError(ValueError):
    """A dataset spec or store that cannot be used; the message names the path and what was expected."""


def level_file(resolution: int) -> str:
    """File name of one pyramid level inside a store."""
    return f"images_{resolution}.npy"


def pyramid_levels(resolution: int) -> list[int]:
    """[4, 8, …, resolution]: the levels a store of this resolution holds."""
    return [MIN_RESOLUTION << i for i in range(resolution.bit_length() - MIN_RESOLUTION.bit_length() + 1)]


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A .npy v1.0 header for a C-ordered uint8 array, padded to a fixed size (format per the NumPy docs)."""
    description = repr({"descr": "|u1", "fortran_order": False, "shape": shape})
    prefix = b"\x93NUMPY\x01\x00"
    body_length = _NPY_HEADER_BYTES - len(prefix) - 2
    body = description.encode("latin1").ljust(body_length - 1) + b"\n"
    if len(body) != body_length:
        raise ValueError(f"array shape {shape} is too large for a store level header")
    return prefix + body_length.to_bytes(2, "little") + body


def is_store_folder(path: Path) -> bool:
    """A folder holding a ganforge store's manifest."""
    try:
        manifest = json.loads((path / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == STORE_FORMAT


def _store_files(folder: Path) -> set[str]:
    """The files the store in `folder` consists of, as its manifest lists them (replaced with the store); anything
    else in the folder is the user's, even a file named like a level the store does not have."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())  # _check_destination read it already
    levels = list(manifest.get("levels", [])) + ([manifest["crop_source"]] if manifest.get("crop_source") else [])
    return {MANIFEST_NAME, *(level_file(int(level)) for level in levels)} | ({LABELS_NAME} if manifest.get("labels")
                                                                            else set())


def _check_destination(out: Path, overwrite: bool) -> None:
    """Refuse to clobber anything that is not an old store the caller agreed to replace."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DatasetError(f"{out} exists and is not a directory; choose another output path")
    if not any(out.iterdir()):
        return
    if not is_store_folder(out):
        raise DatasetError(
            f"{out} is a non-empty directory that is not a ganforge store; refusing to overwrite it "
            "(choose a new or empty output directory)"
        )
    if not overwrite:
        raise DatasetError(f"{out} already holds a ganforge store; --overwrite (Python: overwrite=True) replaces it")


def _check_labels(labels: np.ndarray | None, label_columns: LabelColumns | None, count: int) -> None:
    if labels is None and label_columns is None:
        return
    if labels is None or label_columns is None:
        raise DatasetError("labels and label_columns must be given together (one label column per class list)")
    if labels.dtype.kind not in "iu" or labels.shape != (count, len(label_columns)):
        raise DatasetError(
            f"labels must be an integer array of shape ({count}, {len(label_columns)}), "
            f"got {labels.dtype} {labels.shape}"
        )
    for column, (name, classes) in enumerate(label_columns):
        values = labels[:, column]
        if values.min() < 0 or values.max() >= len(classes):
            raise DatasetError(
                f"label column {name!r} has values in [{values.min()}, {values.max()}], "
                f"expected indices into its {len(classes)} classes"
            )


def _check_batch(images: np.ndarray, expected: tuple[int, int, int]) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape[1:] != expected:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        shape = ", ".join(map(str, expected))
        raise DatasetError(f"store batches must be uint8 arrays of shape (N, {shape}), got {got}")


class StoreWriter:
    """Streams full-resolution batches into a new store; `finish` renames it into place.

    Use as a context manager: leaving the block without `finish` (e.g. on an exception) deletes the
    temporary folder and leaves `out` exactly as it was.
    """

    def __init__(self, out: Path, *, resolution: int, channels: int = 3, overwrite: bool = False,
                 crop_source: int | None = None) -> None:
        if not is_power_of_two(resolution) or resolution < MIN_RESOLUTION:
            raise DatasetError(f"store resolution must be a power of two ≥ {MIN_RESOLUTION}, got {resolution}")
        if channels not in (1, 3):
            raise DatasetError(f"store channels must be 1 or 3, got {channels}")
        if crop_source is not None and crop_source <= resolution:
            raise DatasetError(f"a crop source must be larger than the store resolution {resolution}, "
                               f"got {crop_source}")
        self.out = Path(out).absolute()
        if self.out.is_symlink():  # a link to a store on another disk: the new store replaces the folder it names
            target = self.out.resolve()
            if not target.parent.is_dir():  # never write onto the disk an unmounted one was linked from
                raise DatasetError(f"{self.out} links to {target}, whose folder {target.parent} does not exist (a "
                                   "disk not mounted?); mount it or choose another output path")
            self.out = target
        self.resolution, self.channels, self.overwrite = resolution, channels, overwrite
        self.crop_source = crop_source
        self.count = 0
        self._finished = False
        _check_destination(self.out, overwrite)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._tmp: Path | None = self.out.with_name(f"{self.out.name}.tmp-{secrets.token_hex(4)}")
        self._tmp.mkdir()
        self._files: dict[int, BinaryIO] = {}
        try:
            for level in pyramid_levels(resolution) + ([crop_source] if crop_source else []):
                handle = open(self._tmp / level_file(level), "wb")  # noqa: SIM115 - closed in finish/abort
                self._files[level] = handle
                handle.write(_npy_header((0, channels, level, level)))
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._tmp is not None:
            self.abort()

    def add(self, images: np.ndarray, crop_source: np.ndarray | None = None) -> None:
        """Append a uint8 NCHW batch at the store's full resolution (its pyramid is built here), and the same images
        at the crop-source size when the store keeps one."""
        _check_batch(images, (self.channels, self.resolution, self.resolution))
        if (crop_source is None) != (self.crop_source is None):
            raise DatasetError(f"this store {'keeps' if self.crop_source else 'has no'} a crop source: "
                               f"{'give' if self.crop_source else 'do not give'} crop-source images")
        if crop_source is not None:
            _check_batch(crop_source, (self.channels, self.crop_source, self.crop_source))
            if len(crop_source) != len(images):
                raise DatasetError(f"{len(crop_source)} crop-source images for {len(images)} images")
            self._files[self.crop_source].write(np.ascontiguousarray(crop_source).tobytes())
        for start in range(0, len(images), _WRITE_CHUNK):
            chunk = np.ascontiguousarray(images[start : start + _WRITE_CHUNK])
            for level, array in build_pyramid(chunk, MIN_RESOLUTION).items():
                self._files[level].write(np.ascontiguousarray(array).tobytes())
        self.count += len(images)

    def finish(
        self,
        *,
        source: str,
        labels: np.ndarray | None = None,
        label_columns: LabelColumns | None = None,
        skipped: list[dict] | None = None,
        preprocessing: dict[str, str] | None = None,
        commit: bool = True,
    ) -> Path:
        """Write labels and manifest, then atomically move the store to `out` (replacing an old store);
        `preprocessing` says how the images were made from the source (e.g. the resize filter), for whoever
        compares two stores of one source. `commit` False leaves the complete store in its temporary folder until
        `commit()` (stores written together, such as a train/val pair, replace the old ones only once all are made)."""
        if self.count == 0:
            raise DatasetError(f"no images to write to {self.out}; a store needs at least one image")
        _check_labels(labels, label_columns, self.count)
        for level, handle in self._files.items():
            handle.seek(0)
            handle.write(_npy_header((self.count, self.channels, level, level)))
            handle.close()
        self._files = {}
        if labels is not None:
            np.save(self._tmp / LABELS_NAME, labels.astype(np.int64))
        manifest = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "source": source,
            "count": self.count,
            "resolution": self.resolution,
            "channels": self.channels,
            "levels": pyramid_levels(self.resolution),
            "labels": [{"name": name, "classes": list(classes)} for name, classes in label_columns or []],
            "skipped": list(skipped or []),
            "created_by": f"ganforge {__version__}",
        }
        if self.crop_source:
            manifest["crop_source"] = self.crop_source
        if preprocessing:
            manifest["preprocessing"] = dict(preprocessing)
        (self._tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        self._finished = True
        if commit:
            self._move_into_place()
        return self.out

    def commit(self) -> Path:
        """Move a store `finish(commit=False)` completed into place."""
        if not self._finished or self._tmp is None:
            raise DatasetError(f"{self.out}: nothing to commit (finish the store first, once)")
        self._move_into_place()
        return self.out

    def _move_into_place(self) -> None:
        _check_destination(self.out, self.overwrite)  # the destination may have changed while we worked
        retired, owned = None, set()
        if self.out.exists():
            if any(self.out.iterdir()):
                owned = _store_files(self.out)
                retired = self.out.with_name(f"{self.out.name}.old-{secrets.token_hex(4)}")
                os.replace(self.out, retired)
            else:
                self.out.rmdir()
        try:
            os.replace(self._tmp, self.out)
        except BaseException:
            if retired is not None:
                os.replace(retired, self.out)  # put the old store back
            raise
        self._tmp = None
        if retired is not None:
            clashing = []
            try:
                for entry in retired.iterdir():  # the user's own files beside the old store (statistics, notes) stay
                    if entry.name in owned:
                        continue
                    if (self.out / entry.name).exists():  # named like a file of the new store: never overwritten
                        clashing.append(entry.name)
                    else:
                        os.replace(entry, self.out / entry.name)
            except OSError as err:
                raise DatasetError(f"{self.out}: the new store is in place, but moving your other files from the old "
                                   f"folder failed ({err}); they are still in {retired}") from None
            if clashing:
                warnings.warn(f"{self.out}: your file(s) {', '.join(sorted(clashing))} have the names of the new "
                              f"store's files; they are kept in {retired}", stacklevel=3)
            else:
                shutil.rmtree(retired)

    def abort(self) -> None:
        """Discard everything written so far; `out` is left untouched."""
        for handle in self._files.values():
            handle.close()
        self._files = {}
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def remove_store(folder: Path) -> None:
    """Delete the store in `folder` (its own files, as its manifest lists them; the user's files beside it stay, and
    the folder goes only when that empties it)."""
    folder = Path(folder)
    for name in _store_files(folder) - {MANIFEST_NAME}:
        (folder / name).unlink(missing_ok=True)
    (folder / MANIFEST_NAME).unlink()  # last: until then the folder is still recognisably a (broken) store
    if not any(folder.iterdir()):
        folder.rmdir()


def write_store(
    out: Path,
    images: np.ndarray | Iterable[np.ndarray],
    *,
    resolution: int,
    channels: int = 3,
    source: str,
    labels: np.ndarray | None = None,
    label_columns: LabelColumns | None = None,
    skipped: list[dict] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a store from one uint8 NCHW array or an iterable of such batches; returns `out`.

    `skipped` entries ({"file": …, "reason": …}) are recorded in the manifest for the user to inspect.
    """
    batches = [images] if isinstance(images, np.ndarray) else images
    with StoreWriter(out, resolution=resolution, channels=channels, overwrite=overwrite) as writer:
        for batch in batches:
            writer.add(batch)
        return writer.finish(source=source, labels=labels, label_columns=label_columns, skipped=skipped)


class ImageDataset:
    """A prepared dataset: per-resolution uint8 NCHW arrays, optional labels, and its manifest."""

    def __init__(
        self,
        levels: dict[int, np.ndarray],
        *,
        labels: np.ndarray | None,
        manifest: dict[str, Any],
        fingerprint: str,
        source: str,
        crop_source: np.ndarray | None = None,
    ) -> None:
        self._levels = dict(levels)
        self.labels = labels
        self.manifest = manifest
        self.fingerprint = fingerprint
        self.source = source
        self.resolution: int = manifest["resolution"]
        self.count: int = manifest["count"]
        self.channels: int = manifest["channels"]
        self.levels: list[int] = sorted(levels)
        self.crop_source: int | None = None  # the size of the larger crop-source level, when kept
        if crop_source is not None:
            self.crop_source = crop_source.shape[-1]
            self._levels[self.crop_source] = crop_source
        self.label_columns: LabelColumns = [(item["name"], list(item["classes"])) for item in manifest["labels"]]

    def images(self, res: int) -> np.ndarray:
        """uint8 NCHW [count, channels, res, res] (memory-mapped for stores); `res` a level or the crop source."""
        if res not in self._levels:
            raise ValueError(f"{self.source} has no level {res}; available resolutions: {self.levels}"
                             f"{f' and the crop source {self.crop_source}' if self.crop_source else ''}")
        return self._levels[res]

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"ImageDataset({self.source!r}, count={self.count}, resolution={self.resolution})"


def _require(condition: bool, path: Path, expected: str) -> None:
    if not condition:
        raise DatasetError(f"{path}: invalid ganforge store manifest, expected {expected}")


def _validate_manifest(manifest: Any, path: Path) -> None:
    _require(isinstance(manifest, dict), path, "a JSON object")
    _require(
        manifest.get("format") == STORE_FORMAT,
        path,
        f'"format": "{STORE_FORMAT}" (got {manifest.get("format")!r})',
    )
    _require(
        manifest.get("version") == STORE_VERSION,
        path,
        f'"version": {STORE_VERSION} (got {manifest.get("version")!r}); re-create it with `ganforge prepare`',
    )
    resolution, count, channels = manifest.get("resolution"), manifest.get("count"), manifest.get("channels")
    _require(
        isinstance(resolution, int) and is_power_of_two(resolution) and resolution >= MIN_RESOLUTION,
        path,
        f'"resolution" a power of two ≥ {MIN_RESOLUTION} (got {resolution!r})',
    )
    _require(isinstance(count, int) and count > 0, path, f'"count" a positive integer (got {count!r})')
    _require(channels in (1, 3), path, f'"channels" 1 or 3 (got {channels!r})')
    expected_levels = pyramid_levels(resolution)
    _require(
        manifest.get("levels") == expected_levels,
        path,
        f'"levels": {expected_levels} (got {manifest.get("levels")!r})',
    )
    columns = manifest.get("labels", [])
    _require(
        isinstance(columns, list)
        and all(
            isinstance(column, dict)
            and isinstance(column.get("name"), str)
            and isinstance(column.get("classes"), list)
            and column["classes"]
            for column in columns
        ),
        path,
        '"labels" a list of {"name": str, "classes": [non-empty list]}',
    )
    crop_source = manifest.get("crop_source")
    _require(
        crop_source is None or (isinstance(crop_source, int) and crop_source > resolution),
        path,
        f'"crop_source" absent or a size above the resolution {resolution} (got {crop_source!r})',
    )


def _load_level(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path} is missing; expected a uint8 array of shape {shape} (re-run `ganforge prepare`)")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path} is not a readable .npy array ({error})") from error
    if array.dtype != np.uint8 or array.shape != shape:
        raise DatasetError(f"{path} holds {array.dtype} {array.shape}, expected uint8 {shape}")
    return array


@functools.cache
def _announce_train_store(folder: Path) -> None:
    """Once per folder: `prepare celeba-domains|domains` wrote OUT/train and OUT/val, and OUT was given as data."""
    print(f"data: {folder} holds the train/ and val/ stores of `ganforge prepare`; using {folder / 'train'}",
          file=sys.stderr)


def _open_store(path: Path) -> ImageDataset:
    if not path.exists():
        raise DatasetError(f"{path} does not exist; expected a ganforge store directory or builtin:shapes")
    if not path.is_dir():
        raise DatasetError(f"{path} is not a directory; expected a ganforge store directory or builtin:shapes")
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file() and (path / "train" / MANIFEST_NAME).is_file():
        _announce_train_store(path)
        return _open_store(path / "train")
    if not manifest_path.is_file():
        raise DatasetError(f"{path} is not a ganforge store (no {MANIFEST_NAME}); create one with `ganforge prepare …`")
    try:
        manifest_text = manifest_path.read_text()
        manifest = json.loads(manifest_text)
    except (OSError, ValueError) as error:
        raise DatasetError(f"{manifest_path}: not valid JSON ({error})") from error
    _validate_manifest(manifest, manifest_path)
    manifest.setdefault("labels", [])  # a store of unlabelled images may leave the key out
    count, channels = manifest["count"], manifest["channels"]
    levels = {
        level: _load_level(path / level_file(level), (count, channels, level, level)) for level in manifest["levels"]
    }
    labels = None
    array_files = [path / level_file(level) for level in manifest["levels"]]
    crop_size = manifest.get("crop_source")
    crop_source = None
    if crop_size:
        crop_source = _load_level(path / level_file(crop_size), (count, channels, crop_size, crop_size))
        array_files.append(path / level_file(crop_size))
    if manifest["labels"]:
        labels_path = path / LABELS_NAME
        if not labels_path.is_file():
            raise DatasetError(f"{labels_path} is missing; the manifest lists label columns")
        try:
            labels = np.load(labels_path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DatasetError(f"{labels_path} is not a readable .npy array ({error})") from error
        expected_shape = (count, len(manifest["labels"]))
        if labels.dtype != np.int64 or labels.shape != expected_shape:
            raise DatasetError(f"{labels_path} holds {labels.dtype} {labels.shape}, expected int64 {expected_shape}")
        for column, entry in enumerate(manifest["labels"]):  # an edited file would index past the class lists
            values, classes = labels[:, column], entry["classes"]
            if len(values) and (values.min() < 0 or values.max() >= len(classes)):
                raise DatasetError(f"{labels_path}: column {entry['name']!r} has values in [{values.min()}, "
                                   f"{values.max()}], expected 0..{len(classes) - 1} (its {len(classes)} classes in "
                                   f"{manifest_path})")
        array_files.append(labels_path)
    digest = hashlib.sha256(manifest_text.encode())
    for file in array_files:
        stat = file.stat()
        digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return ImageDataset(
        levels, labels=labels, manifest=manifest, fingerprint=digest.hexdigest(), source=str(path.absolute()),
        crop_source=crop_source,
    )


_BUILTIN_DEFAULTS = {"count": 4096, "resolution": 128, "seed": 0}


def parse_builtin_spec(spec: str) -> tuple[str, dict[str, int]]:
    """`builtin:shapes?count=2048&resolution=64&seed=0` → ("shapes", {count, resolution, seed})."""
    parts = urlsplit(spec)
    name = parts.path
    if parts.scheme != "builtin" or name != "shapes":
        raise DatasetError(f"unknown built-in dataset {spec!r}; available: builtin:shapes")
    params = dict(_BUILTIN_DEFAULTS)
    given: set[str] = set()
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in params:
            raise DatasetError(f"{spec!r}: unknown parameter {key!r}; expected one of {sorted(params)}")
        if key in given:
            raise DatasetError(f"{spec!r}: parameter {key} given twice; give it once")
        given.add(key)
        try:
            params[key] = int(value)
        except ValueError:
            raise DatasetError(f"{spec!r}: parameter {key}={value!r} must be an integer") from None
    if params["count"] < 1:
        raise DatasetError(f"{spec!r}: count must be ≥ 1, got {params['count']}")
    if params["seed"] < 0:
        raise DatasetError(f"{spec!r}: seed must be ≥ 0, got {params['seed']}")
    if not is_power_of_two(params["resolution"]) or not 4 <= params["resolution"] <= 256:
        raise DatasetError(f"{spec!r}: resolution must be a power of two in 4..256, got {params['resolution']}")
    return name, params


def _open_builtin(spec: str) -> ImageDataset:
    from ganforge.data.builtin import SHAPES_VERSION, shapes_pyramid  # lazy: stores need no generator

    _, params = parse_builtin_spec(spec)
    levels, labels, label_columns = shapes_pyramid(params["count"], params["resolution"], params["seed"])
    canonical = f"builtin:shapes?count={params['count']}&resolution={params['resolution']}&seed={params['seed']}"
    manifest = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "source": canonical,
        "count": params["count"],
        "resolution": params["resolution"],
        "channels": 3,
        "levels": sorted(levels),
        "labels": [{"name": name, "classes": list(classes)} for name, classes in label_columns],
        "skipped": [],
        "created_by": f"ganforge {__version__}",
    }
    fingerprint = hashlib.sha256(f"{canonical}&generator={SHAPES_VERSION}".encode()).hexdigest()
    return ImageDataset(levels, labels=labels, manifest=manifest, fingerprint=fingerprint, source=canonical)


def resolved_data_spec(spec: str) -> str:
    """A store path made absolute (a run resumes and evaluates from any working directory); builtin: unchanged."""
    return spec if spec.startswith("builtin:") else os.path.abspath(os.path.expanduser(spec))


def open_dataset(spec: str | Path) -> ImageDataset:
    """Open a store directory or a `builtin:shapes[?count=…&resolution=…&seed=…]` spec."""
    if str(spec).startswith("builtin:"):  # a Path of one too (a CLI argument typed as a path)
        return _open_builtin(str(spec))
    return _open_store(Path(spec))
