"""Reference statistics files: the Inception pool3 mean and covariance of an image set as an `.npz` in the layout
pytorch-fid and TTUR publish (`mu` float64 [2048], `sigma` float64 [2048, 2048]), so that FID can be computed
against statistics computed elsewhere, and published, without the images.

Files written here also hold `fid_mode` (the resize protocol, see `ganforge.metrics.inception`), `resolution` (the
images' size before that resize, so that training compares only images of that size with them) and `count` (the
number of images); files from elsewhere lack them and are read as they are, their protocol unknown (TTUR's files are
legacy-tf; pytorch-fid's own files use torch's bilinear resize, neither mode). Files are read with
allow_pickle=False: a statistics file never runs code.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ganforge.errors import ConfigError
from ganforge.metrics._images import ImageSource, iter_image_batches
from ganforge.metrics.fid import FeatureStats
from ganforge.metrics.float32 import reference_float32
from ganforge.metrics.inception import FID_MODES, iter_features, load_inception

POOL_DIM = 2048  # Inception pool3 features


class StatsFileError(ValueError):
    """A statistics file that is missing, unreadable, or not the mu/sigma layout."""


@dataclass(frozen=True)
class ReferenceStats:
    """Mean [2048] and covariance [2048, 2048] (float64) of an image set's pool3 features, and what is known of
    how they were made (`count`, `fid_mode`: None when a foreign file does not say)."""

    mean: np.ndarray
    cov: np.ndarray
    count: int | None = None
    fid_mode: str | None = None
    resolution: int | None = None


def read_stats(path: str | Path, fid_mode: str | None = None) -> ReferenceStats:
    """Read and check a statistics file; with `fid_mode`, a file that records another mode is refused."""
    path = Path(path)
    if not path.is_file():
        raise StatsFileError(f"{path}: no such statistics file (expected an .npz with 'mu' and 'sigma')")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise StatsFileError(f"{path}: not a readable .npz statistics file ({err})") from None
    missing = [key for key in ("mu", "sigma") if key not in arrays]
    if missing:
        raise StatsFileError(f"{path}: expected the keys 'mu' and 'sigma' (pytorch-fid / TTUR layout), "
                             f"found {sorted(arrays)}")
    mu, sigma = arrays["mu"], arrays["sigma"]
    if mu.shape != (POOL_DIM,) or sigma.shape != (POOL_DIM, POOL_DIM):
        raise StatsFileError(f"{path}: expected 'mu' of shape ({POOL_DIM},) and 'sigma' of shape ({POOL_DIM}, "
                             f"{POOL_DIM}) (Inception pool3), got {mu.shape} and {sigma.shape}")
    for key, value in (("mu", mu), ("sigma", sigma)):
        if value.dtype.kind != "f":
            raise StatsFileError(f"{path}: expected floating-point '{key}', got {value.dtype}")
        if not np.isfinite(value).all():
            raise StatsFileError(f"{path}: '{key}' holds non-finite values (NaN or infinity)")
    recorded_mode = _optional_text(path, arrays, "fid_mode")
    if recorded_mode is not None and recorded_mode not in FID_MODES:
        raise StatsFileError(f"{path}: 'fid_mode' {recorded_mode!r} is not one of {', '.join(FID_MODES)}")
    if fid_mode is not None and recorded_mode is not None and recorded_mode != fid_mode:
        raise ConfigError(f"{path}: statistics made with fid_mode {recorded_mode}, and this evaluation uses "
                          f"{fid_mode}; give --fid-mode {recorded_mode} (FIDs of different modes do not compare)")
    count = arrays.get("count")
    if count is not None and (count.shape != () or count.dtype.kind not in "iu" or int(count) < 2):
        raise StatsFileError(f"{path}: 'count' must be an integer of at least 2, got {count!r}")
    resolution = arrays.get("resolution")
    if resolution is not None and (resolution.shape != () or resolution.dtype.kind not in "iu" or int(resolution) < 1):
        raise StatsFileError(f"{path}: 'resolution' must be a positive integer, got {resolution!r}")
    return ReferenceStats(mu.astype(np.float64), sigma.astype(np.float64),
                          None if count is None else int(count), recorded_mode,
                          None if resolution is None else int(resolution))


def _optional_text(path: Path, arrays: dict[str, np.ndarray], key: str) -> str | None:
    value = arrays.get(key)
    if value is None:
        return None
    if value.shape != () or value.dtype.kind != "U":
        raise StatsFileError(f"{path}: '{key}' must be a text value, got {value.dtype} {value.shape}")
    return str(value)


def check_stats_output(path: str | Path, *inputs: str | Path) -> Path:
    """Refuse an output path before anything is computed: not an .npz, a folder, one of the `inputs`, or in a
    folder that cannot be written. An existing file at `path` is replaced: it is the named output."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give the statistics file's name, e.g. {path / 'stats.npz'}")
    if path.suffix != ".npz":
        raise ConfigError(f"{path}: a statistics file must end in .npz (the pytorch-fid / TTUR layout)")
    if any(path.resolve() == Path(source).resolve() for source in inputs):
        raise ConfigError(f"{path}: is the input; write the statistics to another file")
    existing = next(folder for folder in path.resolve().parents if folder.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f"{path}: cannot be written ({existing} is not a writable folder)")
    return path


def write_stats(path: str | Path, stats: ReferenceStats) -> Path:
    """Write `stats` atomically (a temporary file beside it, then a rename)."""
    path = check_stats_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if stats.fid_mode is None else {"fid_mode": np.array(stats.fid_mode)}
    if stats.count is not None:
        extra["count"] = np.array(stats.count, dtype=np.int64)
    if stats.resolution is not None:
        extra["resolution"] = np.array(stats.resolution, dtype=np.int64)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:  # a file object: np.savez does not append a second .npz
        np.savez(handle, mu=np.asarray(stats.mean, dtype=np.float64), sigma=np.asarray(stats.cov, dtype=np.float64),
                 **extra)
    os.replace(tmp, path)
    return path


def stats_of_features(features: np.ndarray | FeatureStats, fid_mode: str | None) -> ReferenceStats:
    """The statistics of pool3 features [N, 2048] (or of their streaming `FeatureStats`)."""
    stats = features if isinstance(features, FeatureStats) else FeatureStats.from_features(features)
    if stats.dim != POOL_DIM:
        raise ValueError(f"statistics: expected Inception pool3 features [N, {POOL_DIM}], got dimension {stats.dim}")
    return ReferenceStats(stats.mean.numpy(), stats.cov.numpy(), stats.count, fid_mode)


def image_set_stats(images: ImageSource, *, fid_mode: str, inception_weights: str | Path | None = None,
                    n: int | None = None, device: torch.device | str | None = None,
                    batch_size: int = 64) -> ReferenceStats:
    """Inception pool3 statistics of a uint8 image set (the first `n` images), resized by `fid_mode`; streamed into
    running sums, so ImageNet's 1.28M images need 32 MB of sums, not a 10 GB feature array (BigGAN-PyTorch's
    moments script runs out of memory there, its issue #13)."""
    model = load_inception(inception_weights, device=device, fid_mode=fid_mode)
    stats = FeatureStats(POOL_DIM)
    sizes: set[int] = set()

    def sized(batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        for batch in batches:
            sizes.add(int(batch.shape[-1]))
            yield batch

    with torch.no_grad(), reference_float32():
        for pools, _ in iter_features(model, sized(iter_image_batches(images, batch_size=batch_size, name="images")),
                                      batch_size=batch_size, n=n):
            stats.update(pools)
    if stats.count < 2:
        raise ValueError(f"statistics: a covariance needs at least 2 images, got {stats.count}")
    return replace(stats_of_features(stats, fid_mode), resolution=sizes.pop() if len(sizes) == 1 else None)
