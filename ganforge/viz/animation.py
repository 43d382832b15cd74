"""Training-progress animation: the fixed-latent grids of a run assembled into one GIF, no display needed."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image


def write_progress_gif(samples_dir: Path, out: Path | None = None, *, frame_ms: int = 200,
                       max_frames: int = 200) -> Path | None:
    """`samples/<step>.png` (EMA grids, or `<step>-G.png` for runs without EMA) in step order →
    `samples/progress.gif`; None when there are no grids.

    With more than `max_frames` grids, frames are taken evenly so the file stays small; the last grid is kept.
    """
    samples_dir = Path(samples_dir)
    grids = sorted(p for p in samples_dir.glob("*.png") if p.stem.isdigit())
    if not grids:
        grids = sorted(p for p in samples_dir.glob("*-G.png") if p.stem[:-2].isdigit())
    if not grids:
        return None
    if len(grids) > max_frames:
        stride = len(grids) / max_frames
        grids = [grids[int(i * stride)] for i in range(max_frames - 1)] + [grids[-1]]
    frames = []
    for path in grids:  # a damaged grid (a full disk, a hand edit) costs its frame, not the end of the run
        try:
            with Image.open(path) as image:
                frames.append(image.convert("RGB"))
        except (OSError, ValueError) as err:
            warnings.warn(f"{path}: left out of the progress GIF ({err})", stacklevel=2)
    if not frames:
        return None
    size = frames[-1].size
    frames = [f if f.size == size else f.resize(size, Image.NEAREST) for f in frames]  # PGAN grids grow
    out = out or samples_dir / "progress.gif"
    tmp = out.with_name(f".{out.name}.tmp")
    frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    tmp.replace(out)
    return out
