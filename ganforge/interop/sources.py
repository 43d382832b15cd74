"""What every importer checks first: its source files as paths, and an output folder that holds no run yet."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ganforge.training.checkpoint import checkpoint_steps, is_partial_run


def import_paths(files: str | Path | Iterable[str | Path], out: str | Path,
                 error: type[Exception]) -> tuple[list[Path], Path]:
    """`files` as a list of paths and `out` as a path; `out` must be new or empty: an existing run's checkpoints
    would mix with the imported one, and its config, logs and metrics (or anyone's files) would be replaced or
    mixed in."""
    out = Path(out)
    if checkpoint_steps(out):
        raise error(f"{out} already holds a run; import into a new directory")
    if out.exists() and not out.is_dir():
        raise error(f"{out} exists and is not a directory; import into a new directory")
    if out.is_dir() and (held := sorted(entry.name for entry in out.iterdir() if not is_partial_run(entry))):
        raise error(f"{out} is not empty ({', '.join(held[:3])}{', …' if len(held) > 3 else ''}); import into a new "
                    "or empty directory")
    return ([Path(files)] if isinstance(files, (str, Path)) else [Path(f) for f in files]), out


def check_shapes_kept(shapes: dict[str, tuple[Any, Any]], where: str, error: type[Exception]) -> None:
    """`shapes`: model key → (the imported run's value, the checkpoint's). A --set that changes a network shape the
    checkpoint fixes would fail in load_state_dict as a traceback; said here, naming the setting."""
    changed = [f"model.{key} {ours!r} (the checkpoint's: {theirs!r})" for key, (ours, theirs) in shapes.items()
               if ours != theirs]
    if changed:
        raise error(f"{where}: the networks' shapes are the checkpoint's, and --set changes {', '.join(changed)}; "
                    "leave that setting out (training settings may change)")
