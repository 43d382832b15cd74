"""Domain-labelled train/val stores for image-to-image translation (StarGAN v2).

`prepare_celeba_domains` splits aligned CelebA by one attribute of the official `list_attr_celeba.txt`;
`prepare_domain_folders` reads the official `<root>/train/<domain>/`, `<root>/val/<domain>/` layout. Both write
two stores, `OUT/train` and `OUT/val`, each with one label column "domain" holding the same sorted class list,
so a run trains on `--data OUT/train` (the family takes the first label column as its domains) and never sees
a validation image; evaluation finds `OUT/val` beside the training store.

Each image is stored as the official loaders make it: `transforms.Resize([S, S])` of the PIL image, PIL's bilinear
resize (non-square originals are centre-cropped first; the official resize squeezes them). So every evaluation
image (sources, references, the FID reals of the official protocol) and every uncropped training image is the
official pixels. Training stores also keep a crop source: every image again at 5/4 of the resolution (e.g. 320 px
for 256), cut from the original with LANCZOS, a sharp stand-in for the original. StarGAN v2's random resized crops
are cut from it and downsampled, as the official loader crops the original image: the smallest crop (80% of the
area at aspect 0.9) has sides ≥ 0.85 of its source's, so none is ever upsampled. (Originals smaller than that are
upsampled here, once.)

The CelebA validation split is deterministic and independent of the folder listing order: in each domain the
⌈fraction·n⌉ images with the smallest sha256(file name) are validation images.

Both stores are made in temporary folders and replace the old pair only once both are complete and every domain
has images in each: an error while making them leaves OUT as it was (the two renames that then put them in place
follow each other), and an OUT/val of an earlier prepare does not stay beside a new OUT/train (with --overwrite it
is removed when the new source has no validation split; without, refused).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ganforge.data.images import IMAGE_EXTENSIONS, ImageError, center_crop_resize, is_power_of_two, load_rgb
from ganforge.data.store import DatasetError, StoreWriter, is_store_folder, remove_store

log = logging.getLogger(__name__)

DOMAIN_COLUMN = "domain"
SPLITS = ("train", "val")
_BATCH = 256
CROP_SOURCE_FACTOR = 1.25  # crop source size / resolution: 0.85 × 1.25 > 1, so crops only downsample
# attribute → (name when absent, name when present); other attributes give ("not_<attr>", "<attr>")
_ATTRIBUTE_DOMAINS = {"Male": ("female", "male")}
STORED_RESAMPLE = Image.Resampling.BILINEAR  # torchvision's Resize of a PIL image, as the official loaders resize


@dataclass
class DomainStores:
    """What a domain `prepare` wrote: the stores, the domain names and the image count per split and domain."""

    train: Path
    val: Path | None
    domains: list[str]
    counts: dict[str, dict[str, int]]


def read_celeba_attributes(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Official attribute file (count line, names line, `file ±1 …` rows) → (names, file → int8 row)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise DatasetError(f"cannot read the attribute file {path}: {err}") from err
    if len(lines) < 2:
        raise DatasetError(f"{path}: expected a count line and an attribute-names line, got {len(lines)} line(s)")
    names = lines[1].split()
    rows: dict[str, np.ndarray] = {}
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()
        if not fields:
            continue
        values = fields[1:]
        if len(values) != len(names) or any(v not in ("1", "-1") for v in values):
            raise DatasetError(f"{path}, line {number}: expected a file name and {len(names)} values of 1 or -1, "
                               f"got {line[:80]!r}")
        rows[fields[0]] = np.array(values, dtype=np.int8)
    return names, rows


def _domain_names(attribute: str) -> list[str]:
    absent, present = _ATTRIBUTE_DOMAINS.get(attribute, (f"not_{attribute.lower()}", attribute.lower()))
    return sorted([absent, present])


def _name_key(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def validation_mask(names: list[str], domains: np.ndarray, fraction: float) -> np.ndarray:
    """True for the validation images: per domain the ⌈fraction·n⌉ names with the smallest sha256."""
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {fraction}")
    mask = np.zeros(len(names), dtype=bool)
    for domain in np.unique(domains):
        members = np.flatnonzero(domains == domain)
        chosen = sorted(members, key=lambda i: _name_key(names[i]))[: math.ceil(fraction * len(members))]
        mask[chosen] = True
    return mask


def crop_source_size(resolution: int) -> int:
    """Size of the crop-source level kept beside a training store of `resolution`."""
    return math.ceil(resolution * CROP_SOURCE_FACTOR)


@dataclass
class _Split:
    """One store to write: its images, their domain indices, and the source named in its manifest."""

    files: list[Path]
    labels: list[int]
    source: str


def _write_splits(splits: dict[str, _Split], out: Path, resolution: int, domains: list[str],
                  overwrite: bool) -> dict[str, dict[str, int]]:
    """Every split into a temporary store, checked, then all moved into place (`OUT/<split>`) together. Returns
    the stored image count of each split and domain."""
    stale_val = "val" not in splits and is_store_folder(out / "val")
    if stale_val and not overwrite:
        raise DatasetError(f"{out / 'val'} holds the validation store of an earlier prepare, and this source has no "
                           "validation split: evaluation would pair it with the new training store; --overwrite "
                           "removes it (or choose another output folder)")
    created = not out.exists()
    try:
        counts = _write_checked(splits, out, resolution, domains, overwrite)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # OUT as it was: absent
        raise
    if stale_val:
        remove_store(out / "val")
    return counts


def _write_checked(splits: dict[str, _Split], out: Path, resolution: int, domains: list[str],
                   overwrite: bool) -> dict[str, dict[str, int]]:
    with contextlib.ExitStack() as stack:
        writers = {split: stack.enter_context(StoreWriter(
            out / split, resolution=resolution, overwrite=overwrite,
            crop_source=crop_source_size(resolution) if split == "train" else None)) for split in splits}  # each
        counts = {split: _fill_split(writers[split], plan, domains) for split, plan in splits.items()}  # checked
        for split, by_domain in counts.items():
            if empty := [name for name, n in by_domain.items() if n == 0]:
                raise DatasetError(f"{splits[split].source}: no {split} image of domain(s) {', '.join(empty)} (none "
                                   "given, or none could be decoded); every domain needs images in each split")
        for writer in writers.values():
            writer.commit()
    return counts


def _fill_split(writer: StoreWriter, split: _Split, domains: list[str]) -> dict[str, int]:
    """Decode, centre-crop and store a split's files with their domain labels (and the crop source where the store
    keeps one), finished but not yet in place; bad files are skipped and listed. Returns the count per domain."""
    files, labels, source = split.files, split.labels, split.source
    resolution = writer.resolution
    kept: list[int] = []
    skipped: list[dict] = []
    source_size = writer.crop_source

    def batches() -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        batch: list[np.ndarray] = []
        sources: list[np.ndarray] = []
        for index, file in enumerate(files):
            try:
                original = load_rgb(file, str(file))
                image = center_crop_resize(original, resolution, STORED_RESAMPLE)
            except ImageError as err:
                log.warning("skipping %s: %s", file, err.reason)
                skipped.append({"file": str(file), "reason": err.reason})
                continue
            kept.append(index)
            batch.append(image.transpose(2, 0, 1))
            if source_size:
                sources.append(center_crop_resize(original, source_size).transpose(2, 0, 1))
            if len(batch) == _BATCH:
                yield np.stack(batch), (np.stack(sources) if sources else None)
                batch, sources = [], []
        if batch:
            yield np.stack(batch), (np.stack(sources) if sources else None)

    for batch, sources in batches():
        writer.add(batch, sources)
    if writer.count == 0:
        raise DatasetError(f"{source}: none of the {len(files)} images for {writer.out} could be decoded")
    column = np.asarray(labels, dtype=np.int64)[kept][:, None]
    writer.finish(source=source, labels=column, label_columns=[(DOMAIN_COLUMN, domains)], skipped=skipped,
                  commit=False)
    return {name: int((column == k).sum()) for k, name in enumerate(domains)}


def _check_resolution(resolution: int) -> None:
    if not is_power_of_two(resolution) or resolution < 4:
        raise DatasetError(f"resolution must be a power of two ≥ 4, got {resolution!r}")


def prepare_celeba_domains(img_dir: Path, out: Path, *, attr_file: Path, attr: str = "Male", resolution: int = 128,
                           val_fraction: float = 0.1, limit: int | None = None,
                           overwrite: bool = False) -> DomainStores:
    """Aligned CelebA + its attribute file → `out/train` and `out/val` stores with domains "attr / not attr".

    Images are centre-cropped to a square and resized (bilinear, as the official loaders) to `resolution`. `limit`
    keeps the first `limit` rows of the attribute file whose image exists (a quick subset); the split is made
    within them.
    """
    _check_resolution(resolution)
    img_dir, out = Path(img_dir), Path(out)
    if not img_dir.is_dir():
        raise DatasetError(f"{img_dir} is not a directory; expected the aligned CelebA images (img_align_celeba/)")
    names, rows = read_celeba_attributes(attr_file)
    if attr not in names:
        raise DatasetError(f"{attr_file}: no attribute {attr!r}; it has {', '.join(names)}")
    column = names.index(attr)
    files = [name for name in rows if (img_dir / name).is_file()]
    if not files:
        raise DatasetError(f"none of the {len(rows)} images listed in {attr_file} is in {img_dir}")
    if len(files) < len(rows):
        log.warning("%d of the %d images listed in %s are not in %s", len(rows) - len(files), len(rows), attr_file,
                    img_dir)
    if limit is not None:
        if limit < 2:
            raise DatasetError(f"limit must be at least 2 images, got {limit}")
        files = files[:limit]
    domains = _domain_names(attr)
    present = domains.index(_ATTRIBUTE_DOMAINS.get(attr, ("", attr.lower()))[1])
    labels = np.array([present if rows[f][column] == 1 else 1 - present for f in files])
    for k, name in enumerate(domains):
        if not (labels == k).any():
            raise DatasetError(f"{attr_file}: no image of {img_dir} is in domain {name!r} ({attr} = "
                               f"{1 if k == present else -1}); use more images")
    is_val = validation_mask(files, labels, val_fraction)
    source = f"{img_dir.absolute()} split by {attr} of {Path(attr_file).absolute()}"
    for k, name in enumerate(domains):
        if not (~is_val & (labels == k)).any():
            raise DatasetError(f"{attr_file}: --val-fraction {val_fraction} leaves no training image of domain "
                               f"{name!r} ({int((labels == k).sum())} in all); use more images or a smaller fraction")
    splits = {split: _Split([img_dir / f for f in np.asarray(files)[selected]], labels[selected].tolist(),
                            f"{source} ({split})")
              for split, selected in (("train", ~is_val), ("val", is_val)) if selected.any()}
    counts = _write_splits(splits, out, resolution, domains, overwrite)
    return DomainStores(train=out / "train", val=out / "val" if "val" in splits else None, domains=domains,
                        counts=counts)


def _domain_files(split_dir: Path) -> dict[str, list[Path]]:
    """Sorted image files of each domain sub-folder (recursively) of one split folder."""
    found = {}
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(folder).parts))  # hidden: not
        # read, in hidden folders neither (.ipynb_checkpoints/ holds copies of the images beside it)
        if files:
            found[folder.name] = files
    return found


def prepare_domain_folders(root: Path, out: Path, *, resolution: int, overwrite: bool = False) -> DomainStores:
    """`root/train/<domain>/` (and optionally `root/val/<domain>/`, same domains) → `out/train`, `out/val`."""
    _check_resolution(resolution)
    root, out = Path(root), Path(out)
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DatasetError(f"{root} has no train/ folder; expected {root}/train/<domain>/ and {root}/val/<domain>/ "
                           "(one sub-folder of images per domain)")
    per_split = {"train": _domain_files(train_dir)}
    if (root / "val").is_dir():
        per_split["val"] = _domain_files(root / "val")
    domains = sorted(per_split["train"])
    if len(domains) < 2:
        raise DatasetError(f"{train_dir} has {len(domains)} domain folder(s) with images ({', '.join(domains)}); "
                           "translation needs at least 2")
    if "val" in per_split and sorted(per_split["val"]) != domains:
        raise DatasetError(f"{root / 'val'} has domains {sorted(per_split['val'])} but {train_dir} has {domains}; "
                           "both splits need the same domain folders")
    splits = {split: _Split([f for name in domains for f in by_domain[name]],
                            [k for k, name in enumerate(domains) for _ in by_domain[name]],
                            str((root / split).absolute()))
              for split, by_domain in per_split.items()}
    counts = _write_splits(splits, out, resolution, domains, overwrite)
    return DomainStores(train=out / "train", val=out / "val" if "val" in splits else None, domains=domains,
                        counts=counts)
