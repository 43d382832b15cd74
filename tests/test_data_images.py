"""Image decoding of awkward user files, centre crop + resize, and the exact 2×2 box pyramid."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganforge.data.images import ImageError, box_mean2x, build_pyramid, center_crop_resize, load_rgb


def _save(image: Image.Image, path: Path, **options: object) -> Path:
    image.save(path, **options)
    return path


# --- box pyramid ----------------------------------------------------------------------------------------


def test_box_mean_matches_hand_computation() -> None:
    # each 2×2 block below has the sum noted; mean = sum / 4
    image = np.array(
        [
            [1, 2, 1, 2, 0, 1, 255, 255],
            [3, 4, 3, 6, 2, 4, 255, 253],
            [1, 1, 3, 4, 0, 0, 9, 9],
            [2, 2, 3, 4, 0, 1, 9, 9],
        ],
        dtype=np.uint8,
    )
    # sums / 4, unrounded: 10, 12, 7, 1018; 6, 14, 1, 36
    expected = np.array([[2.5, 3, 1.75, 254.5], [1.5, 3.5, 0.25, 9]], dtype=np.float32)
    result = box_mean2x(image)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(box_mean2x(result), [[2.625, 66.375]])  # (2.5 + 3 + 1.5 + 3.5) / 4, ...


def test_box_mean_rejects_odd_sizes_and_other_types() -> None:
    with pytest.raises(ValueError, match="even height and width"):
        box_mean2x(np.zeros((3, 5, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8 or float32"):
        box_mean2x(np.zeros((4, 4), dtype=np.float64))


def _dataset_tool_levels(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """PGGAN dataset_tool.py's TFRecordExporter.add_image, as written there: the float32 image is averaged level
    after level, and only the stored copy of each level is rounded."""
    stored = []
    img = image
    for lod in range(levels):
        if lod:
            img = img.astype(np.float32)
            img = (img[:, 0::2, 0::2] + img[:, 0::2, 1::2] + img[:, 1::2, 0::2] + img[:, 1::2, 1::2]) * 0.25
        stored.append(np.rint(img).clip(0, 255).astype(np.uint8))
    return stored


def test_the_pyramid_is_dataset_tools_rounding_each_level_only_when_stored() -> None:
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 32, 32), dtype=np.uint8)
    pyramid = build_pyramid(images, min_resolution=4)
    for image, index in zip(images, range(len(images)), strict=True):
        for level in _dataset_tool_levels(image, 4):
            np.testing.assert_array_equal(pyramid[level.shape[-1]][index], level)
    # where rounding every level first would differ: blocks of means 0.5, 0.5, 0.5, 1.5 average to 0.75 → 1, while
    # their rounded values 0, 0, 0, 2 average to 0.5 → 0
    tiny = np.array([[[1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 2, 2], [0, 0, 1, 1]]], dtype=np.uint8)
    assert build_pyramid(tiny[None], min_resolution=1)[1].item() == 1
    blocks = images.reshape(5, 3, 4, 8, 4, 8).astype(np.float64).mean(axis=(3, 5))  # and the exact block means
    np.testing.assert_array_equal(pyramid[4], np.rint(blocks).astype(np.uint8))


def test_build_pyramid_halves_repeatedly_down_to_the_minimum() -> None:
    images = np.random.default_rng(1).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    pyramid = build_pyramid(images, min_resolution=4)
    assert sorted(pyramid) == [4, 8, 16, 32]
    assert pyramid[32] is images
    np.testing.assert_array_equal(pyramid[16], np.rint(box_mean2x(images)).astype(np.uint8))
    assert sorted(build_pyramid(images, min_resolution=16)) == [16, 32]
    with pytest.raises(ValueError, match="square power-of-two"):
        build_pyramid(np.zeros((1, 3, 24, 24), dtype=np.uint8))
    with pytest.raises(ValueError, match="min_resolution"):
        build_pyramid(images, min_resolution=64)


# --- decoding -------------------------------------------------------------------------------------------


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    rgb = load_rgb(_save(Image.fromarray(gray), tmp_path / "g.png"), "g.png")
    assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, np.repeat(gray[:, :, None], 3, axis=2))


def test_rgba_and_la_are_composited_over_white(tmp_path: Path) -> None:
    rgba = np.array([[[255, 0, 0, 255], [255, 0, 0, 128], [0, 0, 255, 0]]], dtype=np.uint8)
    rgb = load_rgb(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"), "a.png")
    # half-transparent red over white: 255·a + 255·(1 − a) = 255 for red; 255·(1 − 128/255) = 127 for G, B
    np.testing.assert_array_equal(rgb[0], [[255, 0, 0], [255, 127, 127], [255, 255, 255]])

    la = np.array([[[0, 0], [0, 255]]], dtype=np.uint8)
    rgb = load_rgb(_save(Image.fromarray(la, "LA"), tmp_path / "la.png"), "la.png")
    np.testing.assert_array_equal(rgb[0], [[255, 255, 255], [0, 0, 0]])


def test_palette_images_use_their_palette_and_transparency(tmp_path: Path) -> None:
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette_image.putdata([0, 1])
    rgb = load_rgb(_save(palette_image, tmp_path / "p.png"), "p.png")
    np.testing.assert_array_equal(rgb[0], [[10, 20, 30], [200, 100, 50]])

    rgb = load_rgb(_save(palette_image, tmp_path / "t.png", transparency=0), "t.png")
    np.testing.assert_array_equal(rgb[0], [[255, 255, 255], [200, 100, 50]])

    rgb = load_rgb(_save(palette_image, tmp_path / "p.gif"), "p.gif")
    np.testing.assert_array_equal(rgb[0], [[10, 20, 30], [200, 100, 50]])


def test_sixteen_bit_png_is_scaled_to_eight_bits_with_rounding(tmp_path: Path) -> None:
    values = np.array([[0, 257, 65535, 32896, 384, 386, 1000]], dtype=np.uint16)
    rgb = load_rgb(_save(Image.fromarray(values), tmp_path / "deep.png"), "deep.png")
    # /257 then round: 0, 1, 255, 128, 1.494 → 1, 1.502 → 2, 3.89 → 4 (clipping would give 255 for most)
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 255, 128, 1, 2, 4])
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


def test_tiff_and_netpbm_folders_are_read_by_prepare_and_evaluate(tmp_path: Path) -> None:
    """pytorch-fid reads .tif/.tiff/.ppm/.pgm folders (its issue #50); so do `prepare folder` and `evaluate`,
    a 16-bit TIFF scaled like a 16-bit PNG; GIFs only `prepare` reads (a run's progress.gif is no sample)."""
    from ganforge.data.prepare import prepare_folder
    from ganforge.data.store import open_dataset
    from ganforge.evaluation.run_metrics import iter_image_set

    colour = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    deep = np.full((8, 8), 32896, dtype=np.uint16)  # /257 → 128
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(colour).save(folder / "a.tif")
    Image.fromarray(deep).save(folder / "b.tiff")
    Image.fromarray(colour).save(folder / "c.ppm")
    Image.fromarray(colour[..., 1]).save(folder / "d.pgm")
    Image.fromarray(colour).save(folder / "e.gif")  # prepare reads GIFs; an image set to evaluate leaves them out
    expected = np.stack([colour, np.full((8, 8, 3), 128, np.uint8), colour, np.repeat(colour[..., 1:2], 3, axis=2)])
    read = np.concatenate(list(iter_image_set(folder)))
    np.testing.assert_array_equal(read, expected.transpose(0, 3, 1, 2))
    store = open_dataset(prepare_folder(folder, tmp_path / "store", resolution=8, workers=1))
    assert store.count == 5
    np.testing.assert_array_equal(store.images(8)[:4], expected.transpose(0, 3, 1, 2))


def test_cmyk_jpeg_decodes_to_the_expected_colours(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta + yellow: red
    rgb = load_rgb(_save(cmyk, tmp_path / "c.jpg", quality=100), "c.jpg")
    assert rgb.shape == (16, 16, 3)
    np.testing.assert_allclose(rgb.reshape(-1, 3).mean(axis=0), [255, 0, 0], atol=4)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    rgb = load_rgb(_save(image, tmp_path / "rotated.png", exif=exif), "rotated.png")
    np.testing.assert_array_equal(rgb, np.rot90(pixels, k=-1))


def test_bytes_and_paths_decode_identically(tmp_path: Path) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = _save(Image.fromarray(pixels), tmp_path / "x.png")
    np.testing.assert_array_equal(load_rgb(path.read_bytes(), "x.png"), pixels)
    np.testing.assert_array_equal(load_rgb(str(path), "x.png"), pixels)


def test_truncated_jpeg_fails_naming_the_file(tmp_path: Path) -> None:
    noise = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError, match="cut.jpg"):
        load_rgb(truncated, "cut.jpg")


def test_empty_and_non_image_files_are_image_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.jpg: empty file \(0 bytes\)"):
        load_rgb(empty, "empty.jpg")
    with pytest.raises(ImageError, match="member.png: empty file"):
        load_rgb(b"", "member.png")
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture\n")
    with pytest.raises(ImageError, match="notes.png: not a readable image"):
        load_rgb(text, "notes.png")
    with pytest.raises(ImageError, match="missing.png: cannot read file"):
        load_rgb(tmp_path / "missing.png", "missing.png")
    assert issubclass(ImageError, ValueError)
    Image.fromarray(np.full((4, 4), 0.5, np.float32), mode="F").save(tmp_path / "hdr.tif")  # was made black
    with pytest.raises(ImageError, match="hdr.tif: not a readable image .*32-bit floating-point pixels"):
        load_rgb(tmp_path / "hdr.tif", "hdr.tif")


# --- centre crop + resize -------------------------------------------------------------------------------


def test_center_crop_takes_the_middle_square() -> None:
    tall = np.arange(10 * 6 * 3, dtype=np.uint8).reshape(10, 6, 3)
    np.testing.assert_array_equal(center_crop_resize(tall, 6), tall[2:8])
    wide = np.arange(4 * 9, dtype=np.uint8).reshape(4, 9)
    np.testing.assert_array_equal(center_crop_resize(wide, 4), wide[:, 2:6])
    # an odd margin: torchvision's center_crop rounds half to even, int(round(7 / 2)) = 4, round(5 / 2) = 2
    taller = np.arange(13 * 6, dtype=np.uint8).reshape(13, 6)
    np.testing.assert_array_equal(center_crop_resize(taller, 6), taller[4:10])
    np.testing.assert_array_equal(center_crop_resize(taller[:11], 6), taller[2:8])


def test_center_crop_resize_uses_lanczos_and_upsamples_tiny_images() -> None:
    pixels = np.random.default_rng(4).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    expected = Image.fromarray(pixels[:, 5:35]).resize((16, 16), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(center_crop_resize(pixels, 16), np.asarray(expected))

    tiny = np.full((3, 3, 1), 77, dtype=np.uint8)
    upsampled = center_crop_resize(tiny, 8)
    assert upsampled.shape == (8, 8, 1)
    assert np.all(upsampled == 77)
    with pytest.raises(ValueError, match="uint8"):
        center_crop_resize(np.zeros((4, 4, 2), dtype=np.uint8), 4)
