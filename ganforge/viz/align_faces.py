"""`ganforge align-faces IN -o OUT`: a folder of face photos in the framing of StarGAN v2's CelebA-HQ models (the
official `python main.py --mode align`), to translate with `ganforge translate` or to prepare as training domains.

Each picture is centre-cropped to a square (the official code squeezes it) and resized to size×size (bilinear, as
the official `Resize`); the FAN finds its 98 landmarks and data/face_align.py warps it onto the CelebA-HQ mean
landmarks. The outputs keep the input file names; nothing in OUT is overwritten.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ganforge.data.face_align import LANDMARK_MEAN, FaceAlignError, align_face, face_libraries, read_landmark_mean
from ganforge.data.images import PREPARE_EXTENSIONS, center_crop_resize, load_rgb
from ganforge.data.loader import to_float_images
from ganforge.data.store import DatasetError
from ganforge.distributed import DistInfo, pick_device
from ganforge.download import locate_weights
from ganforge.metrics.inception import default_cache_dir
from ganforge.models.fan import WING_WEIGHTS, FanWeightsError, face_landmarks, load_fan

MIN_SIZE = 64  # the FAN's heatmaps are 64×64: landmarks of a smaller output would be coarser than its pixels


def align_faces(inputs: Path, out: Path, *, size: int = 256, wing_weights: str | Path | None = None,
                landmark_mean: str | Path | None = None, device: str = "auto", batch_size: int = 8) -> list[Path]:
    """Align every image directly in `inputs` (as the official `os.listdir`) into `out`; the paths written. All or
    nothing: a photo that cannot be read stops the run and removes what it wrote, so a rerun finds `out` as it was."""
    if size < MIN_SIZE:
        raise FaceAlignError(f"--size {size}: expected at least {MIN_SIZE} (the landmark heatmaps are 64×64)")
    listed = sorted(p for p in Path(inputs).iterdir() if p.is_file() and not p.name.startswith(".")) \
        if Path(inputs).is_dir() else []
    files = [p for p in listed if p.suffix.lower() in PREPARE_EXTENSIONS]
    if not files:
        raise DatasetError(f"{inputs}: no images ({', '.join(PREPARE_EXTENSIONS)}) directly in this folder")
    if skipped := [p.name for p in listed if p not in files]:
        warnings.warn(f"{inputs}: {len(skipped)} file{'s' if len(skipped) > 1 else ''} skipped, not images by "
                      f"their names: {', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}", stacklevel=2)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FaceAlignError(f"--out {out}: is a file, not a folder for the aligned faces")
    if out.resolve() == Path(inputs).resolve():
        raise FaceAlignError(f"--out {out} is the input folder; the aligned faces would replace the photos")
    targets = [out / file.name for file in files]
    existing = [target for target in targets if target.exists()]
    if existing:
        raise FaceAlignError(f"{existing[0]} already exists ({len(existing)} of the {len(targets)} outputs do); "
                             "nothing was written: choose another --out folder")
    face_libraries()  # before anything is downloaded or loaded
    torch_device = pick_device(device, DistInfo())
    cache = default_cache_dir() / "weights"
    fan = load_fan(locate_weights(WING_WEIGHTS, wing_weights, cache, FanWeightsError), torch_device)
    reference = read_landmark_mean(locate_weights(LANDMARK_MEAN, landmark_mean, cache, FaceAlignError))
    created = [folder for folder in (out, *out.parents) if not folder.exists()]
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            images = [center_crop_resize(load_rgb(file, str(file)), size, Image.Resampling.BILINEAR)
                      for file in chunk]
            x = to_float_images(np.stack(images).transpose(0, 3, 1, 2), torch_device)
            landmarks = face_landmarks(fan, x).double().cpu().numpy()
            for image, points, target in zip(images, landmarks, targets[start:start + batch_size], strict=True):
                written.append(target)
                Image.fromarray(align_face(image, points, reference, size)).save(target)
    except BaseException:  # a bad photo, Ctrl-C: this run's outputs go, so that a rerun is not refused
        for target in written:
            target.unlink(missing_ok=True)
        for folder in created:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return targets
