"""Reference statistics files: the Inception pool3 mean and covariance of an image set as an `.npz` in the layout
pytorch-fid and TTUR publish (`mu` float64 [2048], `sigma` float64 [2048, 2048]), so that FID can be computed
against statistics computed elsewhere, and published, without the images. The same layout holds DINOv2's class-token
statistics for FD_DINOv2 (`mu` [1024], `sigma` [1024, 1024], and `network` "dinov2"): the whole of ImageNet's
training set once, instead of its features at every evaluation.

Files written here also hold `fid_mode` (the resize protocol, see `ganforge.metrics.inception`), `resolution` (the
side of the square images before that resize, so that training compares only images of that size with them) and
`count` (the number of images); files from elsewhere lack them and are read as they are, their protocol unknown
(TTUR's files are legacy-tf; pytorch-fid's `--save-stats` files are `pytorch-fid`). Files are read with
allow_pickle=False: a statistics file never runs code.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ganforge.errors import ConfigError
from ganforge.metrics._images import ImageSource, iter_image_batches, limit_images
from ganforge.metrics.dinov2 import FEATURES as DINOV2_FEATURES
from ganforge.metrics.dinov2 import load_dinov2, resolve_dinov2_weights
from ganforge.metrics.fid import FeatureStats
from ganforge.metrics.float32 import reference_float32
from ganforge.metrics.inception import FID_MODES, load_inception
from ganforge.metrics.registry import INCEPTION_BLOCKS

POOL_DIM = 2048  # Inception pool3 features
# a statistics file's network → feature size; "inception768" etc.: Inception's blocks (pytorch-fid --dims)
FEATURE_DIMS = {"inception": POOL_DIM, **{f"inception{width}": width for width in INCEPTION_BLOCKS},
                "dinov2": DINOV2_FEATURES}
# what a file without a 'network' key (TTUR's, pytorch-fid's `--save-stats [--dims D]`) holds, by its size
FOREIGN_NETWORKS = {dim: network for network, dim in FEATURE_DIMS.items() if network.startswith("inception")}


class StatsFileError(ValueError):
    """A statistics file that is missing, unreadable, or not the mu/sigma layout."""


@dataclass(frozen=True)
class ReferenceStats:
    """Mean [D] and covariance [D, D] (float64) of an image set's features (Inception pool3, D 2048; or DINOv2's
    class token, D 1024: `network`), and what is known of how they were made (`count`, `fid_mode`: None when a
    foreign file does not say, and for DINOv2, which has one resize)."""

    mean: np.ndarray
    cov: np.ndarray
    count: int | None = None
    fid_mode: str | None = None
    resolution: int | None = None
    network: str = "inception"


def read_stats(path: str | Path, fid_mode: str | None = None) -> ReferenceStats:
    """Read and check a statistics file; with `fid_mode`, an Inception file that records another mode is
    refused."""
    path = Path(path)
    if not path.is_file():
        raise StatsFileError(f"{path}: no such statistics file (expected an .npz with 'mu' and 'sigma')")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        # numpy's words for a file that is no .npz suggest loading it with pickle, never to be followed here
        reason = "no .npz archive of arrays" if "allow_pickle" in str(err) else str(err)
        raise StatsFileError(f"{path}: not a readable .npz statistics file ({reason})") from None
    missing = [key for key in ("mu", "sigma") if key not in arrays]
    if missing:
        raise StatsFileError(f"{path}: expected the keys 'mu' and 'sigma' (pytorch-fid / TTUR layout), "
                             f"found {sorted(arrays)}")
    mu, sigma = arrays["mu"], arrays["sigma"]
    # files from elsewhere (TTUR's, pytorch-fid's) say nothing: Inception features, of the block their size names
    network = _optional_text(path, arrays, "network") or FOREIGN_NETWORKS.get(mu.shape[0] if mu.ndim == 1 else 0,
                                                                              "inception")
    if network not in FEATURE_DIMS:
        raise StatsFileError(f"{path}: 'network' {network!r} is not one of {', '.join(FEATURE_DIMS)}")
    dim = FEATURE_DIMS[network]
    if mu.shape != (dim,) or sigma.shape != (dim, dim):
        raise StatsFileError(f"{path}: expected 'mu' of shape ({dim},) and 'sigma' of shape ({dim}, {dim}) "
                             f"({FEATURES_NAMED[network]}), got {mu.shape} and {sigma.shape}")
    for key, value in (("mu", mu), ("sigma", sigma)):
        if value.dtype.kind != "f":
            raise StatsFileError(f"{path}: expected floating-point '{key}', got {value.dtype}")
        if not np.isfinite(value).all():
            raise StatsFileError(f"{path}: '{key}' holds non-finite values (NaN or infinity)")
    scale = max(float(np.abs(sigma).max()), 1e-30)  # float32 files round their symmetric halves apart
    if float(np.abs(sigma - sigma.T).max()) > 1e-4 * scale or float(np.diag(sigma).min()) < 0:
        raise StatsFileError(f"{path}: 'sigma' is not a covariance matrix (it must be symmetric with a non-negative "
                             "diagonal); the file is damaged or holds something else")
    recorded_mode = _optional_text(path, arrays, "fid_mode")
    inception = network.startswith("inception")
    if recorded_mode is not None and (recorded_mode not in FID_MODES or not inception):
        raise StatsFileError(f"{path}: 'fid_mode' {recorded_mode!r} is not one of {', '.join(FID_MODES)}"
                             if inception else f"{path}: 'fid_mode' is for Inception statistics, and "
                             f"this file holds {network}'s")
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
                          None if resolution is None else int(resolution), network)


FEATURES_NAMED = {"inception": "Inception pool3", "dinov2": "DINOv2 class-token",
                  **{f"inception{width}": f"Inception's {width}-d block" for width in INCEPTION_BLOCKS}}


def stats_network(path: str | Path) -> str:
    """The network whose features a statistics file summarises ("inception" unless it says; checked by
    `read_stats`, which reads the whole file)."""
    return read_stats(path).network


def _optional_text(path: Path, arrays: dict[str, np.ndarray], key: str) -> str | None:
    value = arrays.get(key)
    if value is None:
        return None
    if value.shape != () or value.dtype.kind != "U":
        raise StatsFileError(f"{path}: '{key}' must be a text value, got {value.dtype} {value.shape}")
    return str(value)


def check_stats_output(path: str | Path, *inputs: str | Path, overwrite: bool = False) -> Path:
    """Refuse an output path before anything is computed: not an .npz, a folder, one of the `inputs`, in a folder
    that cannot be written, or an existing file unless `overwrite` (statistics of ImageNet take hours to make)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; give the statistics file's name, e.g. {path / 'stats.npz'}")
    if path.suffix != ".npz":
        raise ConfigError(f"{path}: a statistics file must end in .npz (the pytorch-fid / TTUR layout)")
    if any(path.resolve() == Path(source).resolve() for source in inputs):
        raise ConfigError(f"{path}: is the input; write the statistics to another file")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path}: exists; --overwrite (Python: overwrite=True) replaces it, or give another name")
    existing = next(folder for folder in path.resolve().parents if folder.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f"{path}: cannot be written ({existing} is not a writable folder)")
    return path


def write_stats(path: str | Path, stats: ReferenceStats, overwrite: bool = False) -> Path:
    """Write `stats` atomically (a temporary file beside it, then a rename); an existing file only with `overwrite`."""
    path = check_stats_output(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {} if stats.fid_mode is None else {"fid_mode": np.array(stats.fid_mode)}
    if stats.network != "inception":  # Inception files add no key that would tell their readers otherwise
        extra["network"] = np.array(stats.network)
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


def stats_of_features(features: np.ndarray | FeatureStats, fid_mode: str | None,
                      network: str = "inception") -> ReferenceStats:
    """The statistics of `network`'s features [N, D] (or of their streaming `FeatureStats`)."""
    stats = features if isinstance(features, FeatureStats) else FeatureStats.from_features(features)
    if stats.dim != FEATURE_DIMS[network]:
        raise ValueError(f"statistics: expected {network} features [N, {FEATURE_DIMS[network]}], got dimension "
                         f"{stats.dim}")
    return ReferenceStats(stats.mean.numpy(), stats.cov.numpy(), stats.count, fid_mode, network=network)


def image_set_stats(images: ImageSource, *, fid_mode: str | None, inception_weights: str | Path | None = None,
                    n: int | None = None, device: torch.device | str | None = None, batch_size: int = 64,
                    network: str = "inception", dinov2_weights: str | Path | None = None) -> ReferenceStats:
    """Inception pool3 statistics of a uint8 image set (the first `n` images), resized by `fid_mode`, or with
    `network` "dinov2" DINOv2's class-token statistics (its one resize; `fid_mode` None); streamed into running
    sums, so ImageNet's 1.28M images need 32 MB of sums, not a 10 GB feature array (BigGAN-PyTorch's moments script
    runs out of memory there, its issue #13)."""
    if network == "dinov2":
        model = load_dinov2(resolve_dinov2_weights(dinov2_weights), device=device)

        def features(batch: torch.Tensor) -> torch.Tensor:
            return model(batch).cpu()
    else:
        inception = load_inception(inception_weights, device=device, fid_mode=fid_mode)
        output = str(FEATURE_DIMS[network])  # pool3's "2048", or a block's width (`InceptionV3FID.features`)

        def features(batch: torch.Tensor) -> torch.Tensor:
            return inception.features(batch)[output].cpu()
    stats = FeatureStats(FEATURE_DIMS[network])
    sizes: set[tuple[int, int]] = set()
    with torch.no_grad(), reference_float32():
        for batch in limit_images(iter_image_batches(images, batch_size=batch_size, name="images"), n):
            sizes.add((int(batch.shape[-2]), int(batch.shape[-1])))
            for start in range(0, batch.shape[0], batch_size):  # a caller's larger batches, in network-sized ones
                stats.update(features(batch[start : start + batch_size]))
    if stats.count < 2:
        raise ValueError(f"statistics: a covariance needs at least 2 images, got {stats.count}")
    size = sizes.pop() if len(sizes) == 1 else None  # a resolution is a square's side
    return replace(stats_of_features(stats, fid_mode, network), resolution=size[0] if size and size[0] == size[1]
                   else None)
