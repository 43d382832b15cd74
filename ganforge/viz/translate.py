"""StarGAN v2 synthesis from a trained run: reference- and latent-guided grids, and the reference video.

Image folders: `--src DIR` holds source images, either directly or in domain sub-folders (their domain is not
needed for translation). `--ref DIR` must hold one sub-folder per target domain, named like the run's domains
(e.g. `ref/female/`, `ref/male/`): a reference's domain is its folder name. Images are centre-cropped and
resized to the run's image size with PIL's bilinear filter (the official test loader's `Resize`, as the stores).
All networks used are the EMA copies (G_ema, F_ema, E_ema); a w_hpf > 0 model gets the face masks of the sources
(the official FAN), as the official sample mode does.

The video is written frame by frame: frames are produced lazily by a generator, and each one is encoded (our
streaming GIF writer, or raw RGB piped to `ffmpeg` for .mp4) before the next is made, so memory stays at one
frame whatever the length (the official code kept every frame in RAM and got killed, issue #24).
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ganforge.data.domains import STORED_RESAMPLE
from ganforge.data.images import IMAGE_EXTENSIONS, ImageError, center_crop_resize, load_rgb
from ganforge.viz.grid import (
    CAPTION_MARGIN,
    check_output_folder,
    label_grid,
    make_grid,
    refuse_existing,
    sample_caption,
    save_image,
    text_width,
    to_uint8,
)

Masks = tuple[torch.Tensor, torch.Tensor] | None  # (coarse, fine) face masks of the sources, for w_hpf > 0

PSIS = (0.5, 0.7, 1.0)
NUM_Z = 10
NUM_AVERAGE = 10000  # latents per domain for the average style, as officially
VIDEO_SUFFIXES = (".gif", ".mp4")


class TranslateError(ValueError):
    """Inputs that cannot be translated; the message names the folder, file or value."""


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def load_image_folder(folder: Path, img_size: int, domains: list[str], *,
                      need_domains: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images of `folder` in [-1, 1] (NCHW) and their domain indices from sub-folder names (None when flat)."""
    images, labels, _ = _load_folder(folder, img_size, domains, need_domains=need_domains)
    return images, labels


def _load_folder(folder: Path, img_size: int, domains: list[str], *,
                 need_domains: bool) -> tuple[torch.Tensor, torch.Tensor | None, list[Path]]:
    """`load_image_folder`, and the files in the order of the images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TranslateError(f"{folder} is not a directory of images")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subfolders:
        unknown = [p.name for p in subfolders if p.name not in domains]
        if unknown:
            raise TranslateError(f"{folder}: sub-folders {unknown} are not domains of the run ({', '.join(domains)})")
        entries = [(file, domains.index(sub.name)) for sub in subfolders for file in _images_in(sub)]
    elif need_domains:
        raise TranslateError(f"{folder}: references need one sub-folder per domain, named like the run's domains "
                             f"({', '.join(domains)}), e.g. {folder / domains[0]}/")
    else:
        entries = [(file, -1) for file in _images_in(folder)]
    if not entries:
        raise TranslateError(f"{folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    arrays = []
    for file, _ in entries:
        try:
            arrays.append(center_crop_resize(load_rgb(file, str(file)), img_size, STORED_RESAMPLE).transpose(2, 0, 1))
        except ImageError as err:
            raise TranslateError(str(err)) from err
    images = torch.from_numpy(np.stack(arrays)).float() / 127.5 - 1.0
    labels = torch.tensor([domain for _, domain in entries])
    return images, (labels if subfolders else None), [file for file, _ in entries]


@torch.no_grad()
def average_styles(mapping: torch.nn.Module, num_domains: int, latent_dim: int, generator: torch.Generator,
                   count: int = NUM_AVERAGE) -> torch.Tensor:
    """[num_domains, style_dim]: each domain's mean style over `count` latents (the truncation centre)."""
    device = next(mapping.parameters()).device
    z = torch.randn(count, latent_dim, generator=generator).to(device)
    return torch.stack([mapping(z, torch.full((count,), k, device=device)).mean(0) for k in range(num_domains)])


@torch.no_grad()
def reference_grid(G: torch.nn.Module, E: torch.nn.Module, x_src: torch.Tensor, x_ref: torch.Tensor,
                   y_ref: torch.Tensor, masks: Masks = None) -> np.ndarray:
    """HWC uint8: top row a blank cell then the sources; each following row a reference then the sources
    translated with its style."""
    styles = E(x_ref, y_ref)
    rows = [torch.cat([torch.ones_like(x_src[:1]), x_src])]
    for reference, style in zip(x_ref, styles, strict=True):
        out = G(x_src, style.expand(len(x_src), -1), masks).clamp(-1, 1)
        rows.append(torch.cat([reference[None], out]))
    return make_grid(to_uint8(torch.cat(rows)), columns=len(x_src) + 1)


def reference_captions(caption: str, domains: list[str], y_ref: torch.Tensor) -> tuple[str, list[str]]:
    """Title and row labels of `reference_grid`: the sources' row, then each reference's row by its domain."""
    title = f"reference-guided, {caption}\ntop: sources; each row: a reference, then the sources in its style"
    return title, ["source", *(f"ref: {domains[int(k)]}" for k in y_ref)]


def latent_captions(caption: str, domains: list[str], psi: float, num_z: int) -> tuple[str, list[str]]:
    """Title and row labels of a `latent_grids` grid: the sources' row, then `num_z` rows per target domain."""
    title = f"latent-guided, psi {psi:g}, {caption}\ntop: sources; then {num_z} random styles per target domain"
    return title, ["source", *(f"to {domain}" for domain in domains for _ in range(num_z))]


@torch.no_grad()
def latent_grids(G: torch.nn.Module, mapping: torch.nn.Module, x_src: torch.Tensor, num_domains: int,
                 latent_dim: int, generator: torch.Generator, psis: Iterable[float] = PSIS,
                 num_z: int = NUM_Z, masks: Masks = None) -> dict[float, np.ndarray]:
    """ψ → HWC uint8 grid: the sources on top, then for each target domain one row per shared latent, with the
    style lerp(s_avg, F(z, y), ψ) (the official sample grids; ψ = 1 is no truncation)."""
    device = x_src.device
    z = torch.randn(num_z, latent_dim, generator=generator).to(device)
    s_avg = average_styles(mapping, num_domains, latent_dim, generator)
    mapped = [mapping(z, torch.full((num_z,), domain, device=device)) for domain in range(num_domains)]
    grids = {}
    for psi in psis:
        rows = [x_src]
        for domain in range(num_domains):
            styles = torch.lerp(s_avg[domain].expand(num_z, -1), mapped[domain], psi)
            rows.append(translate_with_styles(G, x_src, styles, masks))
        grids[psi] = make_grid(to_uint8(torch.cat(rows)), columns=len(x_src))
    return grids


@torch.no_grad()
def translate_with_styles(G: torch.nn.Module, x_src: torch.Tensor, styles: torch.Tensor, masks: Masks = None,
                          batch_size: int = 64) -> torch.Tensor:
    """Every source translated with every style, style-major ([len(styles) · N] images in [-1, 1]): the sources
    are encoded once (the encoder does not see the style) and decoded in batches of `batch_size` images, instead of
    a whole generator call per style (the latent grids' cost on a CPU). The generator treats each image on its own
    in eval mode, so the images are those of the per-style calls up to float rounding."""
    count = len(styles)

    def repeat(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.repeat(count, *([1] * (tensor.dim() - 1)))

    features, cache = G.encode_sources(x_src, masks)
    features, cache = repeat(features), {size: repeat(value) for size, value in cache.items()}
    s = styles.repeat_interleave(len(x_src), dim=0)
    m = None if masks is None else [repeat(mask) for mask in masks]
    return torch.cat([G.decode_features(features[i:i + batch_size],
                                        {size: value[i:i + batch_size] for size, value in cache.items()},
                                        s[i:i + batch_size],
                                        None if m is None else tuple(mask[i:i + batch_size] for mask in m)).clamp(-1, 1)
                      for i in range(0, len(features), batch_size)])


def interpolation_alphas(ramp: int = 20, hold: int = 10) -> list[float]:
    """0, a sigmoid ramp over [-5, 5), then a hold at 1 (the official schedule: 1 + 20 + 10 frames)."""
    return [0.0] + [float(torch.sigmoid(torch.tensor(-5.0 + 10.0 * k / ramp))) for k in range(ramp)] + [1.0] * hold


def _slide(previous: torch.Tensor, following: torch.Tensor, alpha: float) -> torch.Tensor:
    """A 2-cell-high reference panel in which `previous` slides up and out as `following` comes in."""
    height = previous.shape[-2]
    blank = torch.ones_like(previous)
    strip = torch.cat([blank, previous, following, blank], dim=-2)
    top = round((0.5 + alpha) * height)
    return strip[..., top:top + 2 * height, :]


def video_title(caption: str, domain: str, first: int, alpha: float) -> str:
    """What a reference-video frame shows: the two references (1-based, in their folder's order) and the blend."""
    return (f"reference video, {caption}\nleft: {domain} references {first} -> {first + 1}, blend {alpha:.2f}\n"
            "top: sources; below: them in the blended style")


def _video_pairs(y_ref: torch.Tensor) -> list[int]:
    """Indices k of the references whose predecessor is of the same domain: the video blends k−1 into k."""
    return [k for k in range(1, len(y_ref)) if y_ref[k] == y_ref[k - 1]]


@torch.no_grad()
def reference_video_frames(G: torch.nn.Module, E: torch.nn.Module, x_src: torch.Tensor, x_ref: torch.Tensor,
                           y_ref: torch.Tensor, *, caption: str, domains: Sequence[str],
                           alphas: list[float] | None = None, masks: Masks = None) -> Iterator[np.ndarray]:
    """HWC uint8 frames, made one at a time: for each pair of consecutive references of one domain, the style
    moves from the first to the second; the reference panel is on the left, sources on top, outputs below, under
    a title saying which references and how far the blend is (`video_title`; every frame is one size)."""
    alphas = alphas if alphas is not None else interpolation_alphas()
    styles = E(x_ref, y_ref)
    pairs = _video_pairs(y_ref)
    if not pairs:
        raise TranslateError("the video needs two reference images of one domain (consecutive in their folder)")
    titles = {(k, alpha): video_title(caption, domains[int(y_ref[k])], k, alpha) for k in pairs for alpha in alphas}
    width = max(map(text_width, titles.values())) + 2 * CAPTION_MARGIN
    for k in pairs:
        for alpha in alphas:
            style = torch.lerp(styles[k - 1], styles[k], alpha).expand(len(x_src), -1)
            out = G(x_src, style, masks).clamp(-1, 1)
            panel = _slide(x_ref[k - 1], x_ref[k], alpha)
            body = torch.cat([torch.cat(list(x_src), dim=-1), torch.cat(list(out), dim=-1)], dim=-2)
            frame = to_uint8(torch.cat([panel, body], dim=-1)[None])[0]
            yield label_grid(frame, titles[k, alpha], padding=0, min_width=width)


# --- streaming video writers -----------------------------------------------------------------------------------

def _gif_frame_blocks(frame: np.ndarray, delay_cs: int) -> bytes:
    """One frame as GIF blocks (graphic control, image descriptor with a local palette, LZW data), taken from
    PIL's single-frame encoding so the LZW coding is PIL's."""
    buffer = io.BytesIO()
    Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, format="GIF")
    data = buffer.getvalue()
    packed, pos = data[10], 13
    table = b""
    if packed & 0x80:
        table = data[pos:pos + (3 << ((packed & 7) + 1))]
        pos += len(table)
    while data[pos] == 0x21:  # skip PIL's extensions
        pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    if data[pos] != 0x2C or data[-1] != 0x3B:
        raise RuntimeError("unexpected GIF layout from PIL's encoder")
    descriptor = bytearray(data[pos:pos + 10])
    if table:
        descriptor[9] = (descriptor[9] & 0x78) | 0x80 | (packed & 7)  # the global palette becomes the local one
    control = b"\x21\xf9\x04\x00" + delay_cs.to_bytes(2, "little") + b"\x00\x00"
    return control + bytes(descriptor) + table + data[pos + 10:-1]


def write_gif(frames: Iterable[np.ndarray], path: Path, fps: float = 15.0) -> int:
    """Stream HWC uint8 frames into an endlessly looping GIF, one frame in memory at a time; returns the count."""
    delay = max(2, round(100 / fps))
    count = 0
    with open(path, "wb") as out:
        for frame in frames:
            if count == 0:
                height, width = frame.shape[:2]
                out.write(b"GIF89a" + width.to_bytes(2, "little") + height.to_bytes(2, "little") + b"\x70\x00\x00")
                out.write(b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00")
            elif frame.shape[:2] != (height, width):
                raise TranslateError(f"{path}: frame {count} is {frame.shape[1]}x{frame.shape[0]}, the video is "
                                     f"{width}x{height}")
            out.write(_gif_frame_blocks(frame, delay))
            count += 1
        out.write(b"\x3b")
    return count


def write_mp4(frames: Iterable[np.ndarray], path: Path, fps: float = 15.0, ffmpeg: str | None = None) -> int:
    """Pipe raw RGB frames to ffmpeg (H.264, yuv420p, padded to even sizes); returns the frame count."""
    ffmpeg = ffmpeg or shutil.which("ffmpeg")
    if ffmpeg is None:
        raise TranslateError(f"writing {path} needs ffmpeg on PATH; install it or write a .gif instead")
    process: subprocess.Popen | None = None
    count = 0
    try:
        for frame in frames:
            if process is None:
                height, width = frame.shape[:2]
                process = subprocess.Popen(
                    [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s",
                     f"{width}x{height}", "-r", str(fps), "-i", "-", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
                     "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], stdin=subprocess.PIPE)
            process.stdin.write(np.ascontiguousarray(frame).tobytes())
            count += 1
    finally:
        if process is not None:
            process.stdin.close()
            code = process.wait()
    if process is not None and code != 0:
        raise TranslateError(f"ffmpeg failed writing {path} (exit status {code})")
    return count


def write_video(frames: Iterable[np.ndarray], path: Path, fps: float = 15.0) -> int:
    """Frames → `path` by its suffix (.gif: our streaming writer; .mp4: ffmpeg), atomically; returns the count."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise TranslateError(f"video {path}: unsupported suffix {path.suffix!r}; use one of {VIDEO_SUFFIXES}")
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = write_gif if path.suffix.lower() == ".gif" else write_mp4
    try:
        count = writer(frames, partial, fps)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, path)
    return count


def default_video_name() -> str:
    """video_ref.mp4 when ffmpeg is available, else video_ref.gif."""
    return "video_ref.mp4" if shutil.which("ffmpeg") else "video_ref.gif"


def _translating_model(run: str | Path, step: int | None, device: str, wing_weights: str | Path | None) -> Any:
    """A loaded StarGAN v2 run with its face-mask network (w_hpf > 0); another family is refused."""
    from ganforge.api import load

    model = load(run, step=step, device=device)
    if model.config.family != "stargan2":
        raise TranslateError(f"{run}: translate needs a stargan2 run, this one is {model.config.family!r}")
    model.family.load_fan(wing_weights)  # w_hpf > 0 only
    return model


def translate(run: str | Path, src: Path, ref: Path, out: Path, *, step: int | None = None, seed: int = 0,
              psis: Iterable[float] = PSIS, num_z: int = NUM_Z, video: str | Path | None = None,
              device: str = "auto", wing_weights: str | Path | None = None,
              progress: Callable[[str], None] | None = None, overwrite: bool = False) -> list[Path]:
    """Write reference.png, latent_psi_<ψ>.png and optionally the reference video (a name or path; a bare name
    goes into `out`) for a StarGAN v2 run; returns the written files. `wing_weights`: the FAN weights of a
    w_hpf > 0 model (default: the run's model.wing_weights, $GANFORGE_WING_WEIGHTS, the cache). `progress` gets
    a line as each file is written (a 256 px model's grids and video take minutes on a CPU); on a terminal the
    video's frames also show a progress bar. Files of those names already there are kept (and this refused, before
    any work) unless `overwrite`."""
    say = progress or (lambda line: None)
    out, psis = Path(out), tuple(psis)
    if seed < 0:
        raise TranslateError(f"--seed {seed}: expected a non-negative seed")
    check_output_folder(out, error=TranslateError)
    target = None if video is None else Path(video) if Path(video).parent != Path(".") else out / video
    if target is not None and target.suffix.lower() not in VIDEO_SUFFIXES:
        raise TranslateError(f"video {target}: unsupported suffix {target.suffix!r}; use one of {VIDEO_SUFFIXES}")
    if not overwrite:
        refuse_existing([out / "reference.png", *(out / f"latent_psi_{psi:g}.png" for psi in psis),
                         *([target] if target is not None else [])], "translate")
    model = _translating_model(run, step, device, wing_weights)
    family, nets = model.family, model.nets
    domains, img_size = family.domain_names, family.img_size
    x_src, _ = load_image_folder(src, img_size, domains, need_domains=False)
    x_ref, y_ref = load_image_folder(ref, img_size, domains, need_domains=True)
    x_src, x_ref, y_ref = x_src.to(model.device), x_ref.to(model.device), y_ref.to(model.device)
    masks = family.face_masks(x_src)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "reference.png"]
    caption = sample_caption("G_ema", True, model.step)
    save_image(label_grid(reference_grid(nets["G_ema"], nets["E_ema"], x_src, x_ref, y_ref, masks),
                          *reference_captions(caption, domains, y_ref)), written[0])
    say(f"wrote {written[0]}")
    generator = torch.Generator().manual_seed(seed)
    grids = latent_grids(nets["G_ema"], nets["F_ema"], x_src, len(domains), model.config.model.latent_dim,
                         generator, psis, num_z, masks)
    for psi, grid in grids.items():
        written.append(out / f"latent_psi_{psi:g}.png")
        save_image(label_grid(grid, *latent_captions(caption, domains, psi, num_z)), written[-1])
        say(f"wrote {written[-1]}")
    if target is not None:
        frames = reference_video_frames(nets["G_ema"], nets["E_ema"], x_src, x_ref, y_ref, caption=caption,
                                        domains=domains, masks=masks)
        count = len(_video_pairs(y_ref)) * len(interpolation_alphas())
        if count:  # none: the frames' generator says why on its first draw
            say(f"writing {target}: {count} frames, each translating the {len(x_src)} sources")
        write_video(tqdm(frames, total=count, unit="frame", leave=False, disable=not sys.stderr.isatty()), target)
        written.append(target)
        say(f"wrote {target}")
    return written



def _output_name(file: Path, folder: Path) -> str:
    """A source's or reference's name in output file names: its path under its folder, '/' made '-', no suffix
    (sources in domain sub-folders may share file names)."""
    return "-".join(file.relative_to(folder).with_suffix("").parts)


def _output_names(files: list[Path], folder: Path) -> list[str]:
    """`_output_name` of each file; two files of one name (a.png and a.jpg) would write one output over the other:
    refused, naming them."""
    names = [_output_name(file, folder) for file in files]
    seen: dict[str, Path] = {}
    for file, name in zip(files, names, strict=True):
        if name in seen:
            raise TranslateError(f"{seen[name]} and {file} would both be written as {name}.png; rename one")
        seen[name] = file
    return names


@torch.no_grad()
def translate_each(run: str | Path, src: Path, out: Path, *, to: Sequence[str] | None = None, ref: Path | None = None,
                   psi: float = 1.0, seed: int = 0, step: int | None = None, device: str = "auto",
                   wing_weights: str | Path | None = None, batch_size: int = 32,
                   progress: Callable[[str], None] | None = None, overwrite: bool = False) -> list[Path]:
    """Every source image translated into each target domain of `to` (default: all), one file per output (what
    users of the official code ask for in place of its grids, issues #10, #37, #88): latent-guided, each source
    with its own style lerp(s_avg, F(z, y), ψ) from latents drawn from `seed`, into OUT/<domain>/<source>.png; or,
    with `ref` (sub-folders per domain), with each reference's style E(x_ref, y) into
    OUT/<domain>/<source>--<reference>.png. The EMA networks, as the grids. A source's style is the same whatever
    `to` and `psi` are (its latent drawn per source and domain from `seed`). Files already there are kept (and this
    refused, before any work) unless `overwrite`."""
    say = progress or (lambda line: None)
    if seed < 0:
        raise TranslateError(f"--seed {seed}: expected a non-negative seed")
    if not math.isfinite(psi):
        raise TranslateError(f"--psi {psi}: expected a finite ψ (1 keeps the styles as drawn)")
    check_output_folder(Path(out), error=TranslateError)
    if ref is not None and psi != 1.0:
        raise TranslateError(f"--psi {psi:g}: truncation is for latent-guided styles, and --ref gives references")
    model = _translating_model(run, step, device, wing_weights)
    family, nets = model.family, model.nets
    domains, img_size = family.domain_names, family.img_size
    targets = list(domains) if to is None else list(to)
    unknown = [name for name in targets if name not in domains]
    if unknown or not targets:
        raise TranslateError(f"--to {','.join(targets)}: expected domains of the run ({', '.join(domains)})")
    x_src, _, files = _load_folder(src, img_size, domains, need_domains=False)
    names = _output_names(files, Path(src))
    x_src = x_src.to(model.device)
    masks = family.face_masks(x_src)
    jobs: list[tuple[str, torch.Tensor, list[str]]] = []  # (domain, a style per source, file names)
    if ref is None:
        latent_dim = model.config.model.latent_dim
        s_avg = (average_styles(nets["F_ema"], len(domains), latent_dim, torch.Generator().manual_seed(seed))
                 if psi != 1.0 else None)
        for domain in targets:
            k = domains.index(domain)  # each domain's latents a stream of their own: --to changes none of them
            generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, k]).generate_state(1)[0]))
            z = torch.randn(len(x_src), latent_dim, generator=generator).to(model.device)
            styles = nets["F_ema"](z, torch.full((len(z),), k, device=model.device))
            if s_avg is not None:
                styles = torch.lerp(s_avg[k].expand_as(styles), styles, psi)
            jobs.append((domain, styles, [f"{name}.png" for name in names]))
    else:
        x_ref, y_ref, ref_files = _load_folder(ref, img_size, domains, need_domains=True)
        for domain in domains:
            _output_names([f for f, label in zip(ref_files, y_ref.tolist(), strict=True) if domains[label] == domain],
                          Path(ref) / domain)
        ref_styles = nets["E_ema"](x_ref.to(model.device), y_ref.to(model.device))
        for style, label, file in zip(ref_styles, y_ref.tolist(), ref_files, strict=True):
            if domains[label] in targets:
                reference = _output_name(file, Path(ref) / domains[label])
                jobs.append((domains[label], style.expand(len(x_src), -1), [f"{name}--{reference}.png"
                                                                            for name in names]))
        if not jobs:
            raise TranslateError(f"{ref} holds no references of the target domains ({', '.join(targets)})")
    if not overwrite:
        refuse_existing([Path(out) / domain / name for domain, _, file_names in jobs for name in file_names],
                        "translate")
    written = []
    for domain, styles, file_names in jobs:
        for start in range(0, len(x_src), batch_size):
            part = slice(start, start + batch_size)
            images = nets["G_ema"](x_src[part], styles[part],
                                   None if masks is None else tuple(mask[part] for mask in masks)).clamp(-1, 1)
            for image, name in zip(to_uint8(images), file_names[part], strict=True):
                written.append(Path(out) / domain / name)
                save_image(image, written[-1])
        say(f"wrote {len(file_names)} images into {Path(out) / domain}")
    return written
