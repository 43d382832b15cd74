"""builtin:shapes: determinism, label balance and meaning, resolution-free scenes, anti-aliasing."""

from __future__ import annotations

import numpy as np
import pytest

from ganforge.data.builtin import BACKGROUND_CLASSES, SHAPE_CLASSES, _shape_distance, make_shapes
from ganforge.data.images import box_mean2x


def _border(images: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels, [N, 3, 4·(R − 1)]."""
    top, bottom = images[:, :, 0, :], images[:, :, -1, :]
    left, right = images[:, :, 1:-1, 0], images[:, :, 1:-1, -1]
    return np.concatenate([top, bottom, left, right], axis=2)


def test_same_seed_gives_identical_bytes_whatever_was_drawn_before() -> None:
    images, labels, columns = make_shapes(40, 16, seed=7)
    make_shapes(40, 32, seed=7)  # another resolution in between must not disturb the stream
    again, labels_again, _ = make_shapes(40, 16, seed=7)
    assert images.dtype == np.uint8 and images.shape == (40, 3, 16, 16)
    assert images.tobytes() == again.tobytes()
    np.testing.assert_array_equal(labels, labels_again)
    other, other_labels, _ = make_shapes(40, 16, seed=8)
    assert np.mean(other != images) > 0.5
    assert columns == [("shape", SHAPE_CLASSES), ("background", BACKGROUND_CLASSES)]


def test_labels_cover_every_class_evenly() -> None:
    _, labels, columns = make_shapes(400, 8, seed=0)
    assert labels.dtype == np.int64 and labels.shape == (400, 2)
    for column, (_, classes) in enumerate(columns):
        np.testing.assert_array_equal(np.bincount(labels[:, column], minlength=len(classes)), [100] * 4)
    # the two labels are drawn independently: every combination occurs
    combinations = np.bincount(labels[:, 0] * 4 + labels[:, 1], minlength=16)
    assert combinations.min() > 10


def test_backgrounds_look_like_their_label_and_shapes_stay_inside() -> None:
    images, labels, _ = make_shapes(200, 32, seed=1)
    border = _border(images).astype(np.int64)
    background = labels[:, 1]
    brightness = border.mean(axis=(1, 2))
    assert brightness[background == BACKGROUND_CLASSES.index("dark")].max() < 70
    assert brightness[background == BACKGROUND_CLASSES.index("light")].min() > 150
    plain = np.isin(background, [BACKGROUND_CLASSES.index("dark"), BACKGROUND_CLASSES.index("light")])
    # a plain border is one colour: no shape reaches the edge
    assert np.all(border[plain].max(axis=2) == border[plain].min(axis=2))
    # patterned borders vary
    assert np.all(border[~plain].std(axis=2).max(axis=1) > 1)


def test_shapes_cover_a_plausible_area_with_soft_edges() -> None:
    images, labels, _ = make_shapes(120, 32, seed=2)
    plain = labels[:, 1] < 2
    for image in images[plain]:
        background = image[:, 0, 0].astype(np.int64)[:, None, None]
        distance = np.abs(image.astype(np.int64) - background).max(axis=0)
        changed = np.mean(distance > 0)
        assert 0.02 < changed < 0.5
        # analytic coverage gives intermediate edge pixels, not just background and shape colours
        assert len(np.unique(distance)) > 3


def test_circles_are_filled_and_rings_are_hollow() -> None:
    images, labels, _ = make_shapes(160, 64, seed=3)
    for shape in ("circle", "ring"):
        selected = (labels[:, 0] == SHAPE_CLASSES.index(shape)) & (labels[:, 1] < 2)
        for image in images[selected]:
            background = image[:, 0, 0].astype(np.int64)[:, None, None]
            inside = np.abs(image.astype(np.int64) - background).max(axis=0) > 40
            rows, cols = np.nonzero(inside)
            centre = inside[int(round(rows.mean())), int(round(cols.mean()))]
            assert centre == (shape == "circle")


def test_scenes_are_the_same_at_every_resolution() -> None:
    fine, _, _ = make_shapes(32, 64, seed=4)
    coarse, _, _ = make_shapes(32, 32, seed=4)
    difference = np.abs(np.rint(box_mean2x(fine)).astype(np.int64) - coarse)
    assert difference.mean() < 2.5
    assert np.percentile(difference, 99) < 40


def test_every_power_of_two_from_4_to_256_and_errors() -> None:
    for resolution in (4, 256):
        images, _, _ = make_shapes(3, resolution, seed=0)
        assert images.shape == (3, 3, resolution, resolution)
    with pytest.raises(ValueError, match="power of two in 4..256, got 48"):
        make_shapes(3, 48)
    with pytest.raises(ValueError, match="count must be a positive integer, got 0"):
        make_shapes(0, 16)


def test_corner_rounding_rounds_corners_with_the_edges_in_place() -> None:
    """Hand computation on the distance functions: a rounding radius ρ (a fraction of the inradius) leaves each
    edge's midpoint on the outline and moves a square's corner (√2 − 1)·ρ and a triangle's apex ρ outside it."""
    size = np.array([0.2], dtype=np.float32)
    half, triangle_half_side = 0.85 * 0.2, 0.95 * 0.2
    zero = np.zeros(1, dtype=np.float32)
    for fraction in (0.0, 0.35, 0.65):
        square = _shape_distance("square", np.float32([half, half]), np.float32([0.0, half]), size, fraction)
        radius = fraction * half
        np.testing.assert_allclose(square, [0.0, (np.sqrt(2) - 1) * radius], atol=1e-6)
        inradius = triangle_half_side / np.sqrt(3)
        # the base's midpoint (below the centroid by the inradius) and the apex (2 inradii above it)
        triangle = _shape_distance("triangle", np.float32([0.0, 0.0]), np.float32([-inradius, 2 * inradius]), size,
                                   fraction)
        np.testing.assert_allclose(triangle, [0.0, fraction * inradius], atol=1e-6)
        for kind in ("circle", "ring"):
            assert _shape_distance(kind, zero, zero, size, fraction) == _shape_distance(kind, zero, zero, size)


def test_corner_rounding_changes_only_squares_and_triangles_and_zero_is_the_dataset() -> None:
    sharp, labels, _ = make_shapes(400, 32, seed=3)
    np.testing.assert_array_equal(make_shapes(400, 32, seed=3, corner_rounding=0.0)[0], sharp)
    changed = (make_shapes(400, 32, seed=3, corner_rounding=0.5)[0] != sharp).reshape(400, -1).any(1)
    angular = np.isin(labels[:, 0], [SHAPE_CLASSES.index("square"), SHAPE_CLASSES.index("triangle")])
    np.testing.assert_array_equal(changed, angular)
    with pytest.raises(ValueError, match=r"corner_rounding must be in \[0, 1\).*got 1.0"):
        make_shapes(3, 16, corner_rounding=1.0)
