"""StarGAN v2 synthesis on a tiny trained run: reference grid and latent grids cell by cell, the reference video
streamed frame by frame (GIF decoded back; mp4 through a stand-in ffmpeg), folder conventions, and the CLI."""

from __future__ import annotations

import os
import stat
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from stargan2_tiny_run import DOMAINS, train_tiny_run

import ganforge
from ganforge.cli import main
from ganforge.viz.grid import CAPTION_MARGIN, caption_size, text_width, to_uint8
from ganforge.viz.translate import (
    TranslateError,
    average_styles,
    interpolation_alphas,
    latent_grids,
    load_image_folder,
    reference_captions,
    reference_grid,
    reference_video_frames,
    video_title,
    write_gif,
    write_video,
)

CELL, PAD = 32, 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("translate")
    run, _ = train_tiny_run(work)
    folders = work / "folders"
    model = ganforge.load(run, device="cpu")
    x_src, _ = load_image_folder(folders / "val" / "dark", 32, DOMAINS, need_domains=False)
    x_ref, y_ref = load_image_folder(folders / "val", 32, DOMAINS, need_domains=True)
    return {"run": run, "folders": folders, "model": model, "x_src": x_src, "x_ref": x_ref, "y_ref": y_ref}


def cell(grid: np.ndarray, row: int, column: int) -> np.ndarray:
    top, left = PAD + row * (CELL + PAD), PAD + column * (CELL + PAD)
    return grid[top:top + CELL, left:left + CELL]


@pytest.mark.slow
def test_folders_give_images_and_domains_from_sub_folder_names(tiny) -> None:
    assert tiny["x_src"].shape == (3, 3, 32, 32) and tiny["x_src"].min() >= -1 and tiny["x_src"].max() <= 1
    assert tiny["y_ref"].tolist() == [0, 0, 0, 1, 1, 1]
    first = sorted((tiny["folders"] / "val" / "dark").iterdir())[0]
    expected = np.asarray(Image.open(first).convert("RGB")).transpose(2, 0, 1) / 127.5 - 1
    np.testing.assert_allclose(tiny["x_src"][0].numpy(), expected, atol=1e-6)


@pytest.mark.slow
def test_folder_errors_name_the_folder_and_the_domains(tiny, tmp_path: Path) -> None:
    with pytest.raises(TranslateError, match=r"references need one sub-folder per domain.*\(dark, light\)"):
        load_image_folder(tiny["folders"] / "val" / "dark", 32, DOMAINS, need_domains=True)
    (tmp_path / "cats").mkdir()
    with pytest.raises(TranslateError, match=r"sub-folders \['cats'\] are not domains of the run \(dark, light\)"):
        load_image_folder(tmp_path, 32, DOMAINS, need_domains=True)


@pytest.mark.slow
def test_reference_grid_rows_are_references_and_columns_sources(tiny) -> None:
    nets, x_src, x_ref, y_ref = tiny["model"].nets, tiny["x_src"], tiny["x_ref"], tiny["y_ref"]
    grid = reference_grid(nets["G_ema"], nets["E_ema"], x_src, x_ref, y_ref)
    assert grid.shape == (7 * (CELL + PAD) + PAD, 4 * (CELL + PAD) + PAD, 3)
    assert (cell(grid, 0, 0) == 255).all()
    np.testing.assert_array_equal(cell(grid, 0, 2), to_uint8(x_src[1:2])[0])
    np.testing.assert_array_equal(cell(grid, 5, 0), to_uint8(x_ref[4:5])[0])
    with torch.no_grad():
        style = nets["E_ema"](x_ref[4:5], y_ref[4:5])
        expected = nets["G_ema"](x_src[2:3], style).clamp(-1, 1)
    np.testing.assert_array_equal(cell(grid, 5, 3), to_uint8(expected)[0])


@pytest.mark.slow
def test_latent_grids_use_shared_latents_and_the_average_style(tiny) -> None:
    nets, x_src = tiny["model"].nets, tiny["x_src"]
    grids = latent_grids(nets["G_ema"], nets["F_ema"], x_src, 2, 8, torch.Generator().manual_seed(3))
    assert sorted(grids) == [0.5, 0.7, 1.0]
    assert grids[0.5].shape == (21 * (CELL + PAD) + PAD, 3 * (CELL + PAD) + PAD, 3)  # sources + 2 domains × 10 z
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(10, 8, generator=generator)
    s_avg = average_styles(nets["F_ema"], 2, 8, generator)
    with torch.no_grad():
        style = torch.lerp(s_avg[1], nets["F_ema"](z[4:5], torch.tensor([1]))[0], 0.7)
        expected = nets["G_ema"](x_src[0:1], style[None]).clamp(-1, 1)
    np.testing.assert_array_equal(cell(grids[0.7], 1 + 10 + 4, 0), to_uint8(expected)[0])
    np.testing.assert_array_equal(cell(grids[1.0], 0, 1), to_uint8(x_src[1:2])[0])


@pytest.mark.slow
def test_video_frames_are_made_and_encoded_one_at_a_time(tiny, tmp_path: Path) -> None:
    nets = tiny["model"].nets
    frames = reference_video_frames(nets["G_ema"], nets["E_ema"], tiny["x_src"], tiny["x_ref"], tiny["y_ref"],
                                    caption="EMA, step 7", domains=DOMAINS, alphas=[0.0, 0.5, 1.0])
    refs: list[weakref.ref] = []
    produced = []

    def tracked():
        for frame in frames:
            assert sum(ref() is not None for ref in refs) <= 1, "earlier frames are still held by the writer"
            refs.append(weakref.ref(frame))
            produced.append(frame.shape)
            yield frame

    path = tmp_path / "v.gif"
    assert write_video(tracked(), path, fps=10) == 12  # 2 same-domain pairs per domain × 2 domains × 3 alphas
    # every frame one size: the title strip above the 2-row frame, as wide as the widest title (domains differ)
    titles = [video_title("EMA, step 7", domain, k, alpha) for k, domain in [(1, "dark"), (2, "dark"),
                                                                              (4, "light"), (5, "light")]
              for alpha in (0.0, 0.5, 1.0)]
    top = caption_size(titles[0])[0]
    width = max(4 * CELL, max(map(text_width, titles)) + 2 * CAPTION_MARGIN)
    assert set(produced) == {(top + 2 * CELL, width, 3)}
    with Image.open(path) as gif:
        assert gif.n_frames == 12 and gif.size == (width, top + 2 * CELL)
        assert gif.info["loop"] == 0 and gif.info["duration"] == 100


def test_a_video_frame_is_the_unlabelled_frame_under_its_title(tiny) -> None:
    nets = tiny["model"].nets
    first = next(reference_video_frames(nets["G_ema"], nets["E_ema"], tiny["x_src"], tiny["x_ref"], tiny["y_ref"],
                                        caption="EMA, step 7", domains=DOMAINS, alphas=[0.0]))
    assert video_title("EMA, step 7", "dark", 1, 0.0) == ("reference video, EMA, step 7\nleft: dark references "
                                                          "1 -> 2, blend 0.00\ntop: sources; below: them in the "
                                                          "blended style")
    top = caption_size(video_title("EMA, step 7", "dark", 1, 0.0))[0]
    with torch.no_grad():  # blend 0: the first reference's style; the panel shows it in the middle
        style = nets["E_ema"](tiny["x_ref"], tiny["y_ref"])[0].expand(len(tiny["x_src"]), -1)
        outputs = nets["G_ema"](tiny["x_src"], style).clamp(-1, 1)
    body = first[top:]
    np.testing.assert_array_equal(body[CELL // 2:CELL // 2 + CELL, :CELL], to_uint8(tiny["x_ref"][:1])[0])
    np.testing.assert_array_equal(body[:CELL, CELL:2 * CELL], to_uint8(tiny["x_src"][:1])[0])
    np.testing.assert_array_equal(body[CELL:2 * CELL, CELL:2 * CELL], to_uint8(outputs[:1])[0])
    assert (first[:top] == 255).mean() > 0.5 and (first[:top] == 0).any()  # white strip with black text


def test_gif_frames_decode_to_what_was_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    frames = [palette[rng.integers(0, 6, (5, 7))] for _ in range(4)]
    assert write_gif(iter(frames), tmp_path / "a.gif") == 4
    with Image.open(tmp_path / "a.gif") as gif:
        for index, frame in enumerate(frames):
            gif.seek(index)
            np.testing.assert_array_equal(np.asarray(gif.convert("RGB")), frame)


def test_mp4_streams_raw_frames_to_ffmpeg(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "bin" / "ffmpeg"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\nfor last; do :; done\ncat > "$last"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    frames = [np.full((4, 6, 3), k, dtype=np.uint8) for k in range(3)]
    assert write_video(iter(frames), tmp_path / "v.mp4", fps=15) == 3
    assert (tmp_path / "v.mp4").read_bytes() == b"".join(f.tobytes() for f in frames)
    args = (fake.parent / "args").read_text().split()
    assert args[args.index("-s") + 1] == "6x4" and "libx264" in args and "yuv420p" in args
    with pytest.raises(TranslateError, match="unsupported suffix '.avi'"):
        write_video(iter(frames), tmp_path / "v.avi")


def test_alphas_follow_the_official_schedule() -> None:
    alphas = interpolation_alphas()
    assert len(alphas) == 31 and alphas[0] == 0.0 and alphas[-10:] == [1.0] * 10
    assert alphas[1] == pytest.approx(float(torch.sigmoid(torch.tensor(-5.0))))
    assert all(a < b for a, b in zip(alphas[:21], alphas[1:22], strict=True))


@pytest.mark.slow
def test_cli_translate_writes_both_grids_and_the_video(tiny, tmp_path: Path, capsys) -> None:
    src = tiny["folders"] / "val"  # sources in domain sub-folders are fine too
    out = tmp_path / "out"
    assert main(["translate", str(tiny["run"]), "--src", str(src), "--ref", str(tiny["folders"] / "val"), "-o",
                 str(out), "--video", "video.gif", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()  # a line per file as it is written: minutes apart at 256 px
    written = [out / "reference.png", *(out / f"latent_psi_{psi}.png" for psi in ("0.5", "0.7", "1"))]
    assert lines == [*(f"wrote {path}" for path in written),
                     f"writing {out / 'video.gif'}: 124 frames, each translating the 6 sources",
                     f"wrote {out / 'video.gif'}"]
    title, _ = reference_captions(f"EMA, step {ganforge.load(tiny['run']).step}", DOMAINS, torch.tensor([]))
    with Image.open(out / "reference.png") as grid:  # under its caption, the rows labelled on the left
        assert grid.height == caption_size(title)[0] + 7 * (CELL + PAD) + PAD
        assert grid.width > 7 * (CELL + PAD) + PAD
    for psi in ("0.5", "0.7", "1"):
        assert (out / f"latent_psi_{psi}.png").is_file()
    with Image.open(out / "video.gif") as gif:
        assert gif.n_frames == 4 * 31
    assert main(["translate", str(tiny["run"]), "--src", str(src), "--ref", str(src / "dark"), "-o",
                 str(tmp_path / "other")]) == 2
    assert "references need one sub-folder per domain" in capsys.readouterr().err
    assert main(["translate", str(tiny["run"]), "--src", str(src), "--ref", str(src), "-o", str(out)]) == 2
    assert f"{out / 'reference.png'} and 3 more: already there" in capsys.readouterr().err  # refused before any work
    assert main(["translate", str(tiny["run"]), "--src", str(src), "--ref", str(src), "-o", str(tmp_path / "v"),
                 "--video", "v.avi"]) == 2
    assert "unsupported suffix '.avi'" in capsys.readouterr().err and not (tmp_path / "v").exists()


def test_translate_refuses_a_file_as_its_folder_a_non_finite_psi_and_a_negative_seed(tiny, tmp_path: Path,
                                                                                     capsys) -> None:
    """They failed as an errno after the networks ran, wrote all-black images (--psi nan), or were accepted by the
    grids (--seed -3) though --each refused them."""
    (tmp_path / "a-file").write_text("mine")
    src = str(tiny["folders"] / "val")
    for extra, message in [(["-o", str(tmp_path / "a-file"), "--each"], "a-file: a file; expected a folder"),
                           (["-o", str(tmp_path / "a-file")], "a-file: a file; expected a folder"),
                           (["-o", str(tmp_path / "t"), "--each", "--psi", "nan"], "--psi nan: expected a finite"),
                           (["-o", str(tmp_path / "t"), "--seed", "-3"], "--seed -3: expected a non-negative")]:
        ref = [] if "--each" in extra else ["--ref", src]
        assert main(["translate", str(tiny["run"]), "--src", src, *ref, *extra, "--device", "cpu"]) == 2, extra
        assert message in capsys.readouterr().err
    assert (tmp_path / "a-file").read_text() == "mine" and not (tmp_path / "t").exists()


def test_each_source_is_translated_into_one_file_per_domain_or_reference(tiny, tmp_path: Path, capsys) -> None:
    """`translate --each` (the official code only writes grids; its users ask for single images, issues #10, #37,
    #88): latent-guided, a style F(z, y) per source from the seed's latents; with --ref, each reference's E(x, y)."""
    from ganforge.viz.translate import _load_folder

    model, src = tiny["model"], tiny["folders"] / "val"
    out = tmp_path / "each"
    assert main(["translate", str(tiny["run"]), "--src", str(src), "-o", str(out), "--each", "--to", "light",
                 "--seed", "4", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote 6 images into {out / 'light'}"]
    x_src, _, files = _load_folder(src, 32, DOMAINS, need_domains=False)
    names = [f"{file.parent.name}-{file.stem}.png" for file in files]  # sources in domain sub-folders
    assert sorted(p.name for p in (out / "light").iterdir()) == sorted(names) and not (out / "dark").exists()
    nets, k = model.nets, DOMAINS.index("light")
    stream = int(np.random.SeedSequence([4, k]).generate_state(1)[0])  # the seed's latents of this domain
    z = torch.randn(len(x_src), model.config.model.latent_dim, generator=torch.Generator().manual_seed(stream))
    with torch.no_grad():
        expected = to_uint8(nets["G_ema"](x_src, nets["F_ema"](z, torch.full((len(z),), k)), None).clamp(-1, 1))
    for image, name in zip(expected, names, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(out / "light" / name)), image)

    refs = tmp_path / "each_ref"
    assert main(["translate", str(tiny["run"]), "--src", str(src / "dark"), "--ref", str(src), "-o", str(refs),
                 "--each", "--device", "cpu"]) == 0
    first_ref = sorted((src / "light").iterdir())[0]
    x_ref, _, _ = _load_folder(src / "light", 32, DOMAINS, need_domains=False)
    with torch.no_grad():
        style = nets["E_ema"](x_ref[:1], torch.tensor([k]))
        sources = tiny["x_src"]
        expected = to_uint8(nets["G_ema"](sources, style.expand(len(sources), -1), None).clamp(-1, 1))
    first_src = sorted((src / "dark").iterdir())[0]
    written = np.asarray(Image.open(refs / "light" / f"{first_src.stem}--{first_ref.stem}.png"))
    np.testing.assert_array_equal(written, expected[0])
    assert len(list((refs / "dark").iterdir())) == 3 * 3 and len(list((refs / "light").iterdir())) == 3 * 3

    for argv, message in ((["--each", "--to", "blue"], "--to blue: expected domains of the run (dark, light)"),
                          (["--each", "--video"], "--video: the reference video is written with the grids"),
                          (["--to", "dark", "--ref", str(src)], "--to: for --each"),
                          ([], "--ref: the grids need reference images"),
                          (["--each", "--ref", str(src), "--psi", "0.7"], "--psi 0.7: truncation is for latent")):
        assert main(["translate", str(tiny["run"]), "--src", str(src), "-o", str(tmp_path / "x"), *argv]) == 2
        assert message in capsys.readouterr().err

    # a source's style is its own whatever --to and --psi are (it moved with both); earlier files are kept
    again = tmp_path / "again"
    assert main(["translate", str(tiny["run"]), "--src", str(src), "-o", str(again), "--each", "--seed", "4",
                 "--psi", "0.9999", "--device", "cpu"]) == 0
    for name in names:
        difference = np.abs(np.asarray(Image.open(again / "light" / name), dtype=int)
                            - np.asarray(Image.open(out / "light" / name), dtype=int))
        assert difference.max() <= 2  # a near-identity truncation: rounding, not another style
    before = (again / "light" / names[0]).read_bytes()
    assert main(["translate", str(tiny["run"]), "--src", str(src), "-o", str(again), "--each", "--seed", "5"]) == 2
    assert "already there (an earlier translate's?); kept as they are" in capsys.readouterr().err
    assert (again / "light" / names[0]).read_bytes() == before
    assert main(["translate", str(tiny["run"]), "--src", str(src), "-o", str(again), "--each", "--seed", "5",
                 "--overwrite"]) == 0
    clash = tmp_path / "clash"
    clash.mkdir()
    for suffix in (".png", ".jpg"):
        Image.open(files[0]).save(clash / f"a{suffix}")
    assert main(["translate", str(tiny["run"]), "--src", str(clash), "-o", str(tmp_path / "c"), "--each"]) == 2
    assert f"{clash / 'a.jpg'} and {clash / 'a.png'} would both be written as a.png; rename one" in \
        capsys.readouterr().err
