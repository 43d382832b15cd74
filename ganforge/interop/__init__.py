"""Official checkpoints → ordinary ganforge runs (config.json + one checkpoint) that sample, evaluate and train on
like any run.

Every importer has the same signature, `(files, out, *, data=None, overrides=()) -> run directory`: `files` are
the official file(s) or folder, `data` the dataset the run trains on further, `overrides` parsed `--set` pairs.
`ganforge import SOURCE` looks SOURCE up in `IMPORTERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ganforge.interop.biggan import import_biggan_pytorch
from ganforge.interop.pgan_zoo import import_pgan_zoo
from ganforge.interop.stargan2 import import_stargan2_run

Importer = Callable[..., Path]  # (files, out, *, data=None, overrides=()) -> the run directory

IMPORTERS: dict[str, Importer] = {
    "pgan-zoo": import_pgan_zoo,
    "stargan2": import_stargan2_run,
    "biggan-pytorch": import_biggan_pytorch,
}

