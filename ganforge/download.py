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
