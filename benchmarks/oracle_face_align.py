"""ganforge's face alignment (`ganforge align-faces`) against the official StarGAN v2 `--mode align` functions.

    python benchmarks/oracle_face_align.py --refs DIR    # DIR holds a clovaai/stargan-v2 checkout; ~5 s

The official core/wing.py is imported as it is (it needs munch, OpenCV and scikit-image; its `gaussian(...,
multichannel=True)` call, which new scikit-image refuses (upstream issue #154), is handed on as `channel_axis=-1`).
Compared on seeded inputs: landmarks decoded from random heatmaps (`get_preds_fromhm`), and for a random picture
with the landmarks of a turned, shrunk face: the mirrored border (`pad_mirror`), the transform (`landmarks2mat`,
its mean landmarks stored as float32 as the official `FaceAligner` keeps them) and the aligned image as the official
`align` and `save_image` make it (uint8). Exit status 1 when a difference exceeds what float32 rounding explains.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

from ganforge.data.face_align import align_face, face_libraries, mirror_padded, similarity_to_reference
from ganforge.models.fan import landmarks_from_heatmaps


def official_module(refs: Path):  # noqa: ANN201 - the official module
    checkout = next((p for p in sorted(refs.iterdir()) if "stargan-v2" in p.name.lower()), None)
    if checkout is None:
        sys.exit(f"{refs}: no stargan-v2 checkout in it")
    sys.path.insert(0, str(checkout))
    try:
        import core.wing as wing  # the official module
        from skimage.filters import gaussian
    except ImportError as err:
        sys.exit(f"oracle_face_align: the official core/wing.py needs {err.name} here (pip install munch "
                 "opencv-python-headless scikit-image)")

    wing.gaussian = lambda image, sigma, multichannel=True: gaussian(image, sigma,
                                                                     channel_axis=-1 if multichannel else None)
    return wing


def face(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(mean landmarks at 256 px, the landmarks of a turned, shrunk, off-centre copy at `size`)."""
    mean = rng.uniform(60, 200, size=(98, 2))
    mean[60:68] = [100, 110] + rng.normal(0, 3, (8, 2))
    mean[68:76] = [156, 110] + rng.normal(0, 3, (8, 2))
    mean[96], mean[97], mean[76], mean[82] = [100, 110], [156, 110], [105, 180], [151, 180]
    angle = 0.3
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = (mean - 128) @ rotation.T * 0.8 * size / 256 + [size * 0.45, size * 0.55] + rng.normal(0, 1, (98, 2))
    return mean, moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refs", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    args = parser.parse_args()
    wing = official_module(args.refs)
    cv2, _ = face_libraries()
    failed = False
    torch.manual_seed(0)
    heatmaps = torch.rand(2, 98, 64, 64)
    difference = float((wing.get_preds_fromhm(heatmaps.clone()) - landmarks_from_heatmaps(heatmaps)).abs().max())
    print(f"landmarks from heatmaps: max |official - ganforge| {difference:.1e}")
    failed |= difference > 0
    rng = np.random.default_rng(0)
    for size in args.sizes:
        mean, landmarks = face(size, rng)
        picture = cv2.GaussianBlur(rng.uniform(0, 255, (size, size, 3)).astype(np.uint8), (0, 0), 3)
        aligner = wing.FaceAligner.__new__(wing.FaceAligner)  # its __init__ loads files; set what align reads
        aligner.CELEB_REF = np.float32(mean) * (size // 256)
        aligner.xaxis_ref = wing.landmarks2xaxis(aligner.CELEB_REF)
        aligner.output_size = size
        padded, shifted = wing.pad_mirror(picture.copy(), landmarks.copy())
        ours_padded, ours_shifted = mirror_padded(picture, landmarks)
        matrix = aligner.landmarks2mat(shifted)
        rows, cols, _ = padded.shape
        warped = cv2.warpPerspective(padded, matrix, (max(cols, size), max(rows, size)), flags=cv2.INTER_LANCZOS4)
        image = wing.np2tensor(warped[:size, :size])
        official = ((image + 1) / 2).clamp(0, 1).mul(255).add(0.5).clamp(0, 255).to(torch.uint8).numpy()
        ours = align_face(picture, landmarks, mean, size).transpose(2, 0, 1)
        levels = np.abs(official.astype(int) - ours.astype(int))
        pad_difference = float(np.abs(padded - ours_padded).max() + np.abs(shifted - ours_shifted).max())
        matrix_difference = float(np.abs(matrix - similarity_to_reference(ours_shifted, mean * size / 256)).max())
        print(f"{size} px: mirrored border {pad_difference:.1e}, transform {matrix_difference:.1e} (float32 mean), "
              f"aligned uint8: max {levels.max()} level, {100 * (levels > 0).mean():.4f}% of values differ")
        failed |= pad_difference > 1e-9 or matrix_difference > 1e-3 or levels.max() > 1 or (levels > 0).mean() > 1e-3
    print("FAILED" if failed else "the official alignment, to float32 rounding")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
