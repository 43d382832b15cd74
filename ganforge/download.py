"""Downloads and file digests shared by every place that fetches data or weights.

A download streams into a temporary file beside its destination, is checked, and only then renamed into place, so
an interrupted or wrong download never leaves a file that a later run would trust. Callers wrap the OSError
(offline, refused, disk full) into their own message naming the file, its URL and where to put it by hand.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks (weights files are hundreds of MB)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, destination: str | Path, *, check: Callable[[Path], None] | None = None,
             timeout: float = 60) -> Path:
    """Fetch `url` to `destination`; `check(temp_path)` raises to reject the file, which is then deleted."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    temp = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle, urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                handle.write(block)
        if check is not None:
            check(temp)
        os.replace(temp, destination)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return destination


@dataclass(frozen=True)
class WeightsFile:
    """A pretrained file ganforge can use but not ship, and every way a user can provide it."""

    name: str  # file name in the cache
    url: str
    env: str  # environment variable holding a local path
    option: str  # CLI option, e.g. --inception-weights ("" where only the environment variable serves)
    description: str  # e.g. "the FID Inception weights"
    sha256: str  # the whole digest, or the prefix a release publishes in its file name (torch hub's convention)
    size: int | None = None  # bytes, where published

    @property
    def identity(self) -> str:
        """How the file is recognised, for messages."""
        digest = f"sha256 {self.sha256}" if len(self.sha256) == 64 else f"sha256 starts with {self.sha256}"
        return digest if self.size is None else f"{digest}, {self.size} bytes"

    def check(self, path: Path) -> None:
        """Refuse a download that is not this file (`download` then keeps nothing of it)."""
        digest, size = file_digest(path), path.stat().st_size
        if not digest.startswith(self.sha256) or (self.size is not None and size != self.size):
            raise ValueError(f"downloaded {self.url} but it is not the expected file ({self.identity}; got sha256 "
                             f"{digest}, {size} bytes); not saved")


@dataclass(frozen=True)
class LayoutCheckedFile(WeightsFile):
    """A file whose publisher gives no checksum: a download is accepted only when `read` accepts it (an HTML page
    or another file is refused and deleted); `layout` says what it must hold, for messages."""

    read: Callable[[Path], object] = field(kw_only=True)
    layout: str = field(kw_only=True)

    @property
    def identity(self) -> str:
        return f"no published checksum; recognised by {self.layout}"

    def check(self, path: Path) -> None:
        try:
            self.read(path)
        except ValueError as err:  # it names the temporary file the download went to, which is deleted now
            reason = str(err).replace(f"{path}: ", "").replace(str(path), "the download")
            raise ValueError(f"downloaded {self.url} but it is not the file expected ({self.identity}): {reason}; "
                             "not saved") from None


def locate_weights(spec: WeightsFile, explicit: str | Path | None, cache_dir: Path, error: type[Exception]) -> Path:
    """The file from the argument, else the environment variable, else the cache (downloaded there once and
    checked). Offline, `error` says which file, where to get it and where to put it."""
    for candidate, origin in ((explicit, "argument"), (os.environ.get(spec.env), f"${spec.env}")):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise error(f"{spec.description} file {path} (from the {origin}) does not exist")
            return path
    cached = Path(cache_dir) / spec.name
    if cached.is_file():
        return cached
    try:
        download(spec.url, cached, check=spec.check)
    except ValueError as err:
        raise error(str(err)) from err
    except OSError as err:  # URLError and socket errors are OSErrors
        raise error(f"{spec.description} {spec.name} are not available and could not be downloaded ({err}). "
                    f"Get {spec.url} ({spec.identity}) on a machine with internet and put it at {cached}, or "
                    + (f"pass its path with {spec.option} PATH or the environment variable {spec.env}." if spec.option
                       else f"set the environment variable {spec.env} to its path.")) from err
    return cached
