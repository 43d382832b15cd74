"""Face alignment (StarGAN v2's `--mode align`): landmark decoding, the similarity transform, the mirrored border,
the warp, and `ganforge align-faces` end to end. Against the official core/wing.py functions, where its checkout,
scikit-image and munch are at hand: tests/test_oracle_vs_reference.py runs benchmarks/oracle_face_align.py."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image
from safetensors.torch import load_file

from ganforge.cli import main
from ganforge.data.face_align import (
    FaceAlignError,
    align_face,
    face_axis,
    mirror_padded,
    read_landmark_mean,
    similarity_to_reference,
)
from ganforge.models.fan import FAN, face_landmarks, landmarks_from_heatmaps, load_fan

pytest.importorskip("cv2", reason="face alignment needs OpenCV: pip install 'ganforge[faces]'")


def reference_face() -> np.ndarray:
    """98 landmarks at 256 px: scattered points with eyes, pupils and mouth corners where a face has them."""
    rng = np.random.default_rng(0)
    points = rng.uniform(60, 200, size=(98, 2))
    points[60:68] = [100, 110] + rng.normal(0, 3, (8, 2))
    points[68:76] = [156, 110] + rng.normal(0, 3, (8, 2))
    points[96], points[97], points[76], points[82] = [100, 110], [156, 110], [105, 180], [151, 180]
    return points


def moved(points: np.ndarray, angle: float, scale: float, offset: tuple[float, float]) -> np.ndarray:
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (points - points.mean(axis=0)) @ rotation.T * scale + offset


# --- landmarks -------------------------------------------------------------------------------------------------

def test_landmarks_are_cell_centres_moved_a_quarter_pixel_towards_the_larger_neighbour() -> None:
    heatmaps = torch.zeros(1, 3, 64, 64)
    heatmaps[0, 0, 10, 20] = 1.0
    heatmaps[0, 0, 10, 21], heatmaps[0, 0, 10, 19] = 0.5, 0.2  # right larger: x + 0.25
    heatmaps[0, 0, 9, 20], heatmaps[0, 0, 11, 20] = 0.4, 0.1  # up larger: y - 0.25
    heatmaps[0, 1, 0, 7] = 1.0  # on the border: no sub-pixel move
    heatmaps[0, 1, 1, 7] = 0.9
    heatmaps[0, 2, 30, 40] = heatmaps[0, 2, 30, 50] = 1.0  # a tie: the first cell; equal neighbours: no move
    got = landmarks_from_heatmaps(heatmaps)
    expected = torch.tensor([[[20.75, 10.25], [7.5, 0.5], [40.5, 30.5]]])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_face_landmarks_are_those_of_the_official_heatmaps() -> None:
    """The stand-in FAN on the fixture's two CelebA faces: landmarks decoded from the official network's heatmaps,
    scaled from 64×64 heatmaps to the 256 px images."""
    fixture = shared_path("fixtures", "official", "stargan_v2", "wing")
    io = load_file(fixture / "wing_io.safetensors")
    fan = load_fan(fixture / "wing_standin.ckpt")
    expected = landmarks_from_heatmaps(io["heatmaps_raw"][:, :-1]) * 4
    torch.testing.assert_close(face_landmarks(fan, io["x"]), expected, rtol=0, atol=0)
    half = torch.nn.functional.interpolate(io["x"], size=128, mode="bilinear")
    heatmaps = fan(torch.nn.functional.interpolate(half, size=256, mode="bilinear") * 0.5 + 0.5)[:, :-1]
    # in pixels of the image given: the 64×64 heatmaps of its 256 px resize, scaled by 128 / 64
    torch.testing.assert_close(face_landmarks(fan, half), landmarks_from_heatmaps(heatmaps) * 2, rtol=0, atol=0)


# --- geometry --------------------------------------------------------------------------------------------------

def test_the_similarity_takes_a_moved_face_back_onto_the_reference() -> None:
    reference = reference_face()
    face = moved(reference, angle=0.4, scale=1.7, offset=(300.0, 210.0))
    matrix = similarity_to_reference(face, reference)
    back = np.c_[face, np.ones(len(face))] @ matrix.T
    np.testing.assert_allclose(back[:, :2], reference, atol=1e-9)
    np.testing.assert_allclose(back[:, 2], 1.0)
    np.testing.assert_allclose(face_axis(reference), [1.0, 0.0], atol=0.02)  # eyes about level, mouth below
    np.testing.assert_allclose(similarity_to_reference(reference, reference), np.eye(3), atol=1e-12)


def test_the_mirrored_border_keeps_the_picture_and_fades_to_its_blur() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    padded, shifted = mirror_padded(image, np.array([[10.0, 20.0]]))
    assert padded.shape == (400, 400, 3)
    np.testing.assert_array_equal(padded[100:300, 100:300], image)  # weight 1 over the picture itself
    np.testing.assert_array_equal(shifted, [[110.0, 120.0]])
    corner = padded[:3, :3]
    assert corner.std() < image.std() / 5  # the outer edge is the blurred copy (σ = 2 px at half size)
    mirrored = padded[100:300, 99]  # the column left of the picture reflects its second column, faded by 1 - 0.99^4
    np.testing.assert_allclose(mirrored, image[:, 1], atol=(1 - 0.99 ** 4) * 255)
    assert np.abs(mirrored - image[:, 1]).max() > 1  # faded, not copied


def test_an_aligned_face_puts_its_pupils_where_the_reference_has_them() -> None:
    """A bright spot at each pupil of a turned, shrunk, off-centre face lands on the reference pupils scaled to
    the output size."""
    reference, size = reference_face(), 128
    face = moved(reference, angle=-0.5, scale=0.6, offset=(90.0, 120.0))
    image = np.full((220, 240, 3), 40, dtype=np.uint8)
    yy, xx = np.mgrid[:220, :240]
    for pupil in face[[96, 97]]:
        image[(xx - pupil[0]) ** 2 + (yy - pupil[1]) ** 2 <= 4] = 255
    aligned = align_face(image, face, reference, size)
    assert aligned.shape == (size, size, 3) and aligned.dtype == np.uint8
    bright = aligned[..., 0].astype(float)
    for pupil in reference[[96, 97]] * size / 256:
        x, y = np.round(pupil).astype(int)
        window = bright[y - 6:y + 7, x - 6:x + 7]
        wy, wx = np.unravel_index(window.argmax(), window.shape)
        assert abs(wx - 6) <= 1 and abs(wy - 6) <= 1 and window.max() > 150


# --- files and the command -------------------------------------------------------------------------------------

def test_landmark_mean_files_are_read_without_pickle_and_checked(tmp_path: Path) -> None:
    np.savez(tmp_path / "good.npz", mean=reference_face())
    np.testing.assert_array_equal(read_landmark_mean(tmp_path / "good.npz"), reference_face())
    np.savez(tmp_path / "key.npz", landmarks=reference_face())
    with pytest.raises(FaceAlignError, match=r"key\.npz: expected the celeba_lm_mean\.npz layout .* found landmarks"):
        read_landmark_mean(tmp_path / "key.npz")
    np.savez(tmp_path / "shape.npz", mean=np.zeros((68, 2)))
    with pytest.raises(FaceAlignError, match=r"must hold 98 finite .* got shape \(68, 2\)"):
        read_landmark_mean(tmp_path / "shape.npz")
    np.savez(tmp_path / "pickled.npz", mean=np.array([{"x": 1}], dtype=object))
    with pytest.raises(FaceAlignError, match="its array 'mean' does not read as numbers"):
        read_landmark_mean(tmp_path / "pickled.npz")
    np.save(tmp_path / "bare.npy", reference_face())
    with pytest.raises(FaceAlignError, match="expected an .npz archive holding an array 'mean', got a bare .npy"):
        read_landmark_mean(tmp_path / "bare.npy")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:100])  # an interrupted download
    with pytest.raises(FaceAlignError, match=r"cut\.npz: not a readable \.npz of mean landmarks"):
        read_landmark_mean(tmp_path / "cut.npz")


def test_the_landmark_mean_is_downloaded_once_and_checked_by_layout(tmp_path: Path, monkeypatch) -> None:
    """No checksum is published: a page that is not the file is refused and not kept; offline, the error names
    the file, its URL and both ways to pass it."""
    import io
    import urllib.error
    import urllib.request

    from ganforge.data.face_align import LANDMARK_MEAN
    from ganforge.download import locate_weights

    monkeypatch.delenv("GANFORGE_LANDMARK_MEAN", raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"<html>Dropbox</html>"))
    with pytest.raises(FaceAlignError, match="not a readable .npz"):
        locate_weights(LANDMARK_MEAN, None, cache, FaceAlignError)
    assert not (cache / "celeba_lm_mean.npz").exists()
    np.savez(tmp_path / "mean.npz", mean=reference_face())
    payload = (tmp_path / "mean.npz").read_bytes()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(payload))
    assert locate_weights(LANDMARK_MEAN, None, cache, FaceAlignError) == cache / "celeba_lm_mean.npz"

    def offline(url, timeout):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(FaceAlignError) as caught:
        locate_weights(LANDMARK_MEAN, None, tmp_path / "empty", FaceAlignError)
    for part in ("celeba_lm_mean.npz", "dropbox.com/s/91fth49gyb7xksk", "--landmark-mean", "GANFORGE_LANDMARK_MEAN"):
        assert part in str(caught.value)


@pytest.fixture
def align_inputs(tmp_path: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    torch.save({"state_dict": FAN().state_dict()}, tmp_path / "wing.ckpt")  # the official file's layout
    np.savez(tmp_path / "lm_mean.npz", mean=reference_face())
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(photos / "wide.png")
    Image.fromarray(rng.integers(0, 256, (70, 70, 3), dtype=np.uint8)).save(photos / "b.jpg")
    (photos / "notes.txt").write_text("not an image")
    return {"photos": photos, "wing": tmp_path / "wing.ckpt", "mean": tmp_path / "lm_mean.npz",
            "out": tmp_path / "aligned"}


def test_align_faces_writes_every_photo_aligned_and_overwrites_nothing(align_inputs, capsys) -> None:
    paths = align_inputs
    argv = ["align-faces", str(paths["photos"]), "-o", str(paths["out"]), "--size", "64", "--device", "cpu",
            "--wing-weights", str(paths["wing"]), "--landmark-mean", str(paths["mean"])]
    with pytest.warns(UserWarning, match="1 file skipped, not images by their names: notes.txt$"):
        assert main(argv) == 0
    assert f"aligned 2 faces into {paths['out']}" in capsys.readouterr().out
    assert sorted(p.name for p in paths["out"].iterdir()) == ["b.jpg", "wide.png"]
    for name in ("b.jpg", "wide.png"):
        with Image.open(paths["out"] / name) as image:
            assert image.size == (64, 64) and image.mode == "RGB"
    before = (paths["out"] / "wide.png").read_bytes()
    assert main(argv) == 2  # a second run would replace the first's faces
    err = capsys.readouterr().err
    assert "b.jpg already exists (2 of the 2 outputs do); nothing was written" in err and "\n" not in err.strip()
    assert (paths["out"] / "wide.png").read_bytes() == before


def test_align_faces_writes_nothing_when_a_photo_cannot_be_read(align_inputs, capsys) -> None:
    """The first batch is written before the bad photo of the second is read: it goes again, so that a rerun
    without that photo is not refused for outputs of a failed run."""
    paths = align_inputs
    for index in range(9):  # the default batch is 8: a full first batch, then the bad photo
        Image.new("RGB", (64, 64), (index, 0, 0)).save(paths["photos"] / f"a{index}.png")
    whole = (paths["photos"] / "b.jpg").read_bytes()
    (paths["photos"] / "zz.jpg").write_bytes(whole[:40])
    argv = ["align-faces", str(paths["photos"]), "-o", str(paths["out"] / "nested"), "--size", "64", "--device",
            "cpu", "--wing-weights", str(paths["wing"]), "--landmark-mean", str(paths["mean"])]
    assert main(argv) == 2
    assert "zz.jpg" in capsys.readouterr().err and not paths["out"].exists()
    (paths["photos"] / "zz.jpg").unlink()
    assert main(argv) == 0 and len(list((paths["out"] / "nested").iterdir())) == 11


@pytest.mark.parametrize(("change", "message"), [
    ({"--size": "32"}, "--size 32: expected at least 64"),
    ({"--wing-weights": "missing.ckpt"}, r"missing\.ckpt \(from the argument\) does not exist"),
    ({"--landmark-mean": "missing.npz"}, r"missing\.npz \(from the argument\) does not exist"),
    ({"-o": "photos"}, "is the input folder"),
    ({"-o": "lm_mean.npz"}, "lm_mean.npz: is a file, not a folder for the aligned faces"),
    ({"IN": "empty"}, r"no images \(\.jpg.*directly in this folder"),
])
def test_align_faces_refusals_name_the_problem(align_inputs, capsys, change, message) -> None:
    paths = align_inputs
    root = paths["photos"].parent
    (root / "empty").mkdir()
    options = {"-o": str(paths["out"]), "--size": "64", "--wing-weights": str(paths["wing"]),
               "--landmark-mean": str(paths["mean"]), "--device": "cpu"}
    inputs = str(root / change.pop("IN")) if "IN" in change else str(paths["photos"])
    options.update({key: str(root / value) if key != "--size" else value for key, value in change.items()})
    assert main(["align-faces", inputs, *[part for item in options.items() for part in item]]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not paths["out"].exists()
