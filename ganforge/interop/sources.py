"""What every importer checks first: its source files as paths, and an output folder that holds no run yet."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ganforge.training.checkpoint import checkpoint_steps


def import_paths(files: str | Path | Iterable[str | Path], out: str | Path,
                 error: type[Exception]) -> tuple[list[Path], Path]:
    """`files` as a list of paths and `out` as a path; importing into an existing run is refused, since its
    checkpoints would then mix with the imported one."""
    out = Path(out)
    if checkpoint_steps(out):
        raise error(f"{out} already holds a run; import into a new directory")
    return ([Path(files)] if isinstance(files, (str, Path)) else [Path(f) for f in files]), out
