"""Face alignment as StarGAN v2's `--mode align` (official core/wing.py, `FaceAligner`): photos of faces brought to
the CelebA-HQ framing its face models were trained on, from 98 facial landmarks (the FAN of models/fan.py).

One similarity transform per face takes its landmarks onto the CelebA-HQ mean landmarks (`celeba_lm_mean.npz`, at
256 px, scaled to the output size): rotation from the face's axis (eye-to-eye direction plus the mouth-to-eyes
direction turned by 90°, Progressive GAN's CelebA-HQ recipe) to the mean's, scale from the eyes' and mouth corners'
distances to the landmark centroid, translation centroid to centroid. Before warping, the picture is mirror-padded
by half its size on each side and the padding fades, towards the outer edge, into a blurred copy, so that a face
near the border is not cut by black; the warp is OpenCV's Lanczos-4 `warpPerspective`, the top-left output square kept.
OpenCV and SciPy (for the blur, which is what scikit-image's `gaussian` computes) come with the `faces` extra.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ganforge.download import LayoutCheckedFile

REFERENCE_SIZE = 256  # the mean landmarks' image size
EYE_LEFT = [*range(60, 68), 96]  # the WFLW eye contour and its pupil
EYE_RIGHT = [*range(68, 76), 97]
MOUTH_LEFT, MOUTH_RIGHT = 76, 82
SCALE_POINTS = [96, 97, MOUTH_LEFT, MOUTH_RIGHT]  # pupils and mouth corners: the scale is measured at these
NUM_LANDMARKS = 98
BLUR_TRUNCATE = 4.0  # scikit-image's (and SciPy's) Gaussian support, in sigmas


class FaceAlignError(ValueError):
    """A landmark file or a setting of face alignment that cannot be used; the message names it."""


def read_landmark_mean(path: str | Path) -> np.ndarray:
    """The (98, 2) mean landmarks at 256 px of an official `celeba_lm_mean.npz` (key 'mean'), read without pickle."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise FaceAlignError(f"{path}: not a readable .npz of mean landmarks ({type(err).__name__}: {err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise FaceAlignError(f"{path}: expected an .npz archive holding an array 'mean', got a bare .npy array")
    with archive:
        if "mean" not in archive.files:
            raise FaceAlignError(f"{path}: expected the celeba_lm_mean.npz layout with an array 'mean', found "
                                 f"{', '.join(archive.files) or 'no arrays'}")
        try:
            mean = np.asarray(archive["mean"], dtype=np.float64)
        except (OSError, ValueError, TypeError, zipfile.BadZipFile) as err:
            raise FaceAlignError(f"{path}: its array 'mean' does not read as numbers ({err})") from None
    if mean.shape != (NUM_LANDMARKS, 2) or not np.isfinite(mean).all():
        raise FaceAlignError(f"{path}: 'mean' must hold {NUM_LANDMARKS} finite (x, y) landmarks, got shape "
                             f"{mean.shape}")
    return mean


LANDMARK_MEAN = LayoutCheckedFile(
    name="celeba_lm_mean.npz", url="https://www.dropbox.com/s/91fth49gyb7xksk/celeba_lm_mean.npz?dl=1",
    env="GANFORGE_LANDMARK_MEAN", option="--landmark-mean",
    description="The CelebA-HQ mean face landmarks of StarGAN v2's face alignment", sha256="",
    read=read_landmark_mean, layout="its layout, an array 'mean' of 98 (x, y) landmarks")


def _eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return landmarks[EYE_LEFT].mean(axis=0), landmarks[EYE_RIGHT].mean(axis=0)


def face_axis(landmarks: np.ndarray) -> np.ndarray:
    """The unit x-axis of a face: eye to eye, corrected by the mouth-to-eyes direction turned by 90°."""
    left, right = _eye_centres(landmarks)
    mouth = (landmarks[MOUTH_LEFT] + landmarks[MOUTH_RIGHT]) * 0.5
    up = (left + right) * 0.5 - mouth
    axis = (right - left) - np.array([up[1], -up[0]])
    return axis / np.linalg.norm(axis)


def _translation(offset: np.ndarray) -> np.ndarray:
    matrix = np.eye(3)
    matrix[:2, 2] = offset
    return matrix


def similarity_to_reference(landmarks: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The 3×3 similarity taking `landmarks` onto `reference` (both (98, 2), (x, y) pixels), as the official
    `landmarks2mat`: about the centroid, rotate the face's axis onto the reference's, scale, move the centroid."""
    source_axis, target_axis = face_axis(landmarks), face_axis(reference)
    cos = float(np.clip(source_axis @ target_axis, -1.0, 1.0))
    cross = source_axis[0] * target_axis[1] - source_axis[1] * target_axis[0]
    sin = np.sqrt(1.0 - cos * cos) * np.sign(cross)
    rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    source_centre, target_centre = landmarks.mean(axis=0), reference.mean(axis=0)
    spread = (np.linalg.norm(reference - target_centre, axis=1) / np.linalg.norm(landmarks - source_centre, axis=1))
    scale = np.diag([spread[SCALE_POINTS].mean()] * 2 + [1.0])
    return _translation(target_centre) @ scale @ rotation @ _translation(-source_centre)


def face_libraries() -> tuple[Any, Any]:
    """(cv2, scipy.ndimage), or a one-line error saying which extra to install."""
    try:
        import cv2
        from scipy import ndimage
    except ImportError as err:
        raise FaceAlignError(f"face alignment needs OpenCV and SciPy ({err.name} is missing): "
                             "pip install 'ganforge[faces]'") from None
    return cv2, ndimage


def mirror_padded(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 image, landmarks) padded by half the size on each side, as the official `pad_mirror`: reflected,
    fading towards the outer edge (weight ramps over a quarter of the padded size, to the 4th power) into a copy
    downsampled ×2, blurred (σ = size // 100 pixels there, edges repeated) and upsampled back."""
    cv2, ndimage = face_libraries()
    height, width = image.shape[:2]
    padded = np.pad(image, ((height // 2, height // 2), (width // 2, width // 2), (0, 0)), mode="reflect")
    small = cv2.resize(padded, (width, height)).astype(np.float64) / 255.0
    sigma = height // 100
    small = ndimage.gaussian_filter(small, sigma=(sigma, sigma, 0), mode="nearest", truncate=BLUR_TRUNCATE)
    big_height, big_width = padded.shape[:2]
    blurred = cv2.resize(small, (big_width, big_height)) * 255.0
    ramp_y = np.clip(np.arange(big_height) / (big_height // 4), 0, 1)
    ramp_x = np.clip(np.arange(big_width) / (big_width // 4), 0, 1)
    weight = np.minimum(np.minimum(ramp_y, ramp_y[::-1])[:, None], np.minimum(ramp_x, ramp_x[::-1])[None, :])
    weight = (weight ** 4)[:, :, None]
    shifted = landmarks + np.array([big_width // 4, big_height // 4])
    return padded * weight + blurred * (1.0 - weight), shifted


def align_face(image: np.ndarray, landmarks: np.ndarray, reference: np.ndarray, size: int) -> np.ndarray:
    """An H×W×3 uint8 face with its 98 landmarks (x, y pixels) → the size×size×3 uint8 face in the framing of
    `reference` (the mean landmarks at 256 px, scaled by size / 256)."""
    cv2, _ = face_libraries()
    padded, shifted = mirror_padded(image, landmarks)
    matrix = similarity_to_reference(shifted, reference * (size / REFERENCE_SIZE))
    height, width = padded.shape[:2]
    warped = cv2.warpPerspective(padded, matrix, (max(width, size), max(height, size)), flags=cv2.INTER_LANCZOS4)
    return np.clip(np.floor(warped[:size, :size] + 0.5), 0, 255).astype(np.uint8)
