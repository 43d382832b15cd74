"""Sampling tools for class-conditional (BigGAN) runs: per-class sheets, interpolations in z and in the class
embedding, truncation sweeps scored by IS/FID, and NPZ exports, as BigGAN-PyTorch's `sample.py` offers them.

Truncation is either a true truncated normal (`resample`: what redrawing every |z_i| > ψ gives, drawn by its
inverse CDF from the untruncated draws, so sample i is one image whatever n and ψ) or BigGAN-PyTorch's variance
scaling (`scale`: z·ψ, unbounded), so results can be compared with both the paper and the official sampler.
Images come from the EMA generator when the run keeps one, through the family's `generate`, so eval-mode or
batch-statistics sampling and standing statistics follow the run's config.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ganforge.metrics.fid import FeatureStats, fid
from ganforge.metrics.inception_score import inception_score
from ganforge.models.biggan import sample_classes, truncate_latents
from ganforge.nn.latents import normal_draws
from ganforge.run_loader import LoadedModel
from ganforge.viz.grid import label_grid, make_grid, sample_caption, save_image, to_uint8
from ganforge.viz.interpolate import slerp

INTERPOLATION_SPACES = ("z", "class", "both")
TRUNCATION_METHODS = ("resample", "scale")
# uint8 N×3×H×W images → (pool features [N, D], classifier logits [N, K]), e.g. the FID Inception network
FeatureFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def require_class_conditional(model: LoadedModel, option: str) -> None:
    """Refuse class-sampling options on runs whose family does not sample by class, naming the option and the
    run's family; a label-conditioned run (model.conditions) takes --per-class, every family --npz."""
    if option == "--npz" or (option == "--per-class" and model.family.conditioning()):
        return
    if not model.family.samples_by_class:
        also = " and runs with model.conditions (PGAN, DCGAN, WGAN, WGAN-GP)" if option == "--per-class" else ""
        raise ValueError(f"{option} applies to class-conditional BigGAN runs{also}; this run's family is "
                         f"{model.config.family!r}")


def label_sheet(model: LoadedModel, column: int, columns: int, *, seed: int = 0, batch_size: int = 64
                ) -> torch.Tensor:
    """A label-conditioned run's (model.conditions) sheet of one conditioning column: a row per class of that column,
    `columns` samples each; sample j has the same z and the same classes of the other columns in every row, so
    rows differ only in this column's class."""
    classes = len(model.family.conditioning()[column][1])
    inputs = model.latents(columns, seed)
    labels = inputs["labels"].repeat(classes, 1)
    labels[:, column] = torch.arange(classes).repeat_interleave(columns)
    return generate(model, {"z": inputs["z"].repeat(classes, 1), "labels": labels}, batch_size)


def write_label_sheets(model: LoadedModel, out: Path, columns: int, *, seed: int = 0) -> list[Path]:
    """`per_class.png` for one conditioning column, `per_class-<column>.png` for each of several."""
    conditioning = model.family.conditioning()
    paths = []
    for index, (name, classes) in enumerate(conditioning):
        others = ", other columns' classes" if len(conditioning) > 1 else ""
        title = f"{model_caption(model)}\nrows: {name} classes; columns: one z{others} each"
        images = label_sheet(model, index, columns, seed=seed)
        path = out / ("per_class.png" if len(conditioning) == 1 else f"per_class-{name}.png")
        save_image(label_grid(make_grid(to_uint8(images), columns=columns), title, classes), path)
        paths.append(path)
    return paths


ClassChoice = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def class_choice(model: LoadedModel, spec: str) -> ClassChoice:
    """`generate --class SPEC`: comma-separated classes, by name or index, that the samples cycle through
    (BigGAN-PyTorch's users asked to sample a chosen class, its issue #28). A label-conditioned PGAN takes
    COLUMN=CLASS entries (a bare class where it names one class of one column); its other columns stay random.
    Returns what sets those classes in drawn inputs (sample i takes the cycle's i-th class)."""
    entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
    family = model.family
    if not entries:
        raise ValueError("--class: expected class names or indices, e.g. --class 3 or --class circle,square")
    if family.samples_by_class:
        names = family.class_names()
        chosen = [_class_index(entry, names, "--class") for entry in entries]
        return lambda inputs: {**inputs, "y": _cycled(chosen, len(inputs["z"]))}
    columns = family.conditioning()
    if not columns:
        raise ValueError(f"--class: this run's generator takes no classes (a {model.config.family} run"
                         f"{' without model.conditions' if hasattr(model.config.model, 'conditions') else ''})")
    per_column: dict[int, list[int]] = {}
    for entry in entries:
        column_name, _, name = entry.rpartition("=")
        if column_name:
            column = next((k for k, (column, _) in enumerate(columns) if column == column_name), None)
            if column is None:
                raise ValueError(f"--class {entry}: no label column {column_name!r} (columns: "
                                 f"{', '.join(column for column, _ in columns)})")
        else:
            holding = [k for k, (_, classes) in enumerate(columns) if name in classes]
            if len(holding) != 1:
                raise ValueError(f"--class {entry}: {'in several label columns' if holding else 'no such class'}; "
                                 "write COLUMN=CLASS (columns: "
                                 + "; ".join(f"{column}: {', '.join(classes)}" for column, classes in columns) + ")")
            column = holding[0]
        per_column.setdefault(column, []).append(_class_index(name, columns[column][1], f"--class {entry}"))

    def apply(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = inputs["labels"].clone()
        for column, chosen in per_column.items():
            labels[:, column] = _cycled(chosen, len(labels))
        return {**inputs, "labels": labels}

    return apply


def _class_index(entry: str, names: Sequence[str], option: str) -> int:
    if entry in names:
        return list(names).index(entry)
    if entry.isdigit() and int(entry) < len(names):
        return int(entry)
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    raise ValueError(f"{option}: {entry!r} is not a class of this run (a name, or an index below {len(names)}: "
                     f"{shown})")


def _cycled(chosen: Sequence[int], n: int) -> torch.Tensor:
    return torch.tensor(chosen, dtype=torch.long)[torch.arange(n) % len(chosen)]


def model_caption(model: LoadedModel, *, truncation: float | None = None, method: str = "resample") -> str:
    """What images sampled from a loaded run show: its sampling generator (EMA or G), the step, and a truncation."""
    net = model.family.sample_net
    caption = sample_caption(net, net in model.family.ema_pairs, model.step)
    return caption if truncation is None else f"{caption}, truncation {truncation:g} ({method})"


def parse_truncations(text: str) -> list[float | None]:
    """"0.5,0.75,none" → [0.5, 0.75, None] (None: no truncation); every ψ must be finite and > 0."""
    values: list[float | None] = []
    for item in (part.strip() for part in text.split(",")):
        if item.lower() == "none":
            values.append(None)
            continue
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"truncation sweep: {item!r} is not a number or 'none' (in {text!r})") from None
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"truncation sweep: ψ must be finite and > 0, got {item!r} (in {text!r})")
        values.append(value)
    return values


def draw_latents(model: LoadedModel, n: int, generator: torch.Generator, *, truncation: float | None = None,
                 method: str = "resample") -> torch.Tensor:
    """z [n, dim_z] of the run's generator, optionally truncated at ψ by `method`; drawn in whole blocks of torch's
    sampler (`normal_draws`), as `LoadedModel.latents` draws them."""
    return truncate_latents(normal_draws(n, model.family.arch.g_dim_z, generator), truncation, method)


def generate(model: LoadedModel, inputs: dict[str, torch.Tensor], batch_size: int = 64) -> torch.Tensor:
    """Images in [-1, 1] on the CPU for row-aligned inputs ({"z", "y"} or {"z", "condition"}), batch by batch."""
    parts = model.sample_parts(inputs["z"].shape[0], batch_size)
    return torch.cat([model.generate({key: value[part] for key, value in inputs.items()},
                                     net=model.family.sample_net).cpu() for part in parts])


def class_sheet(model: LoadedModel, columns: int, classes: Sequence[int], *, seed: int = 0,
                truncation: float | None = None, method: str = "resample", batch_size: int = 64) -> torch.Tensor:
    """One row per class, `columns` samples each; column j uses the same z in every row, so rows differ only in
    the class."""
    require_class_conditional(model, "--per-class")
    z = draw_latents(model, columns, torch.Generator().manual_seed(seed), truncation=truncation, method=method)
    y = torch.as_tensor(list(classes), dtype=torch.long).repeat_interleave(columns)
    return generate(model, {"z": z.repeat(len(classes), 1), "y": y}, batch_size)


def write_class_sheets(model: LoadedModel, out: Path, columns: int, *, rows_per_sheet: int = 20, seed: int = 0,
                       truncation: float | None = None, method: str = "resample") -> list[Path]:
    """`per_class.png`, or `per_class-000.png`, … with `rows_per_sheet` classes each when there are more."""
    require_class_conditional(model, "--per-class")
    n_classes, names = model.family.n_classes, model.family.class_names()
    title = f"{model_caption(model, truncation=truncation, method=method)}\nrows: classes; columns: one z each"
    sheets = math.ceil(n_classes / rows_per_sheet)
    paths = []
    for index in range(sheets):
        classes = range(index * rows_per_sheet, min(n_classes, (index + 1) * rows_per_sheet))
        images = class_sheet(model, columns, classes, seed=seed, truncation=truncation, method=method)
        path = out / ("per_class.png" if sheets == 1 else f"per_class-{index:03d}.png")
        save_image(label_grid(make_grid(to_uint8(images), columns=columns), title, [names[k] for k in classes]), path)
        paths.append(path)
    return paths


def interpolation_ends(model: LoadedModel, rows: int, *, seed: int = 0, truncation: float | None = None,
                       method: str = "resample") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(z_from, z_to, class_from, class_to) of each row's path; the same seed gives the same paths. A row's two
    classes differ (where there are two): a class blend from a class to itself would be a row of one class."""
    draws = torch.Generator().manual_seed(seed)
    z_from, z_to = (draw_latents(model, rows, draws, truncation=truncation, method=method) for _ in range(2))
    n_classes = model.family.n_classes
    y_from = sample_classes(rows, n_classes, generator=draws)
    if n_classes < 2:
        return z_from, z_to, y_from, y_from.clone()
    y_to = (y_from + 1 + sample_classes(rows, n_classes - 1, generator=draws)) % n_classes
    return z_from, z_to, y_from, y_to


def interpolation_row_labels(model: LoadedModel, space: str, rows: int, *, seed: int = 0,
                             truncation: float | None = None, method: str = "resample") -> list[str]:
    """What each row shows: its class when only z moves, `from -> to` when the class blends."""
    names = model.family.class_names()
    _, _, y_from, y_to = interpolation_ends(model, rows, seed=seed, truncation=truncation, method=method)
    if space == "z":
        return [names[int(k)] for k in y_from]
    return [f"{names[int(a)]} -> {names[int(b)]}" for a, b in zip(y_from, y_to, strict=True)]


def interpolation_sheet(model: LoadedModel, space: str, rows: int, frames: int, *, seed: int = 0,
                        truncation: float | None = None, method: str = "resample",
                        batch_size: int = 64) -> torch.Tensor:
    """`rows` paths of `frames` images (ends included) between two random (z, class) draws per row.

    `space` "z" moves z (slerp) at a fixed class, "class" blends the shared class embeddings linearly at a fixed z
    (BigGAN-PyTorch's interpY), "both" does both at once (interpZY).
    """
    require_class_conditional(model, "--interpolate-class")
    if space not in INTERPOLATION_SPACES:
        raise ValueError(f"interpolation space must be one of {list(INTERPOLATION_SPACES)}, got {space!r}")
    if rows < 1 or frames < 2:
        raise ValueError(f"an interpolation sheet needs rows >= 1 and frames >= 2, got {rows} and {frames}")
    if space != "z" and not model.family.arch.g_shared:
        raise ValueError(f"interpolation in {space!r} blends the shared class embedding, but this run has none "
                         "(model.g_shared: false, per-layer class tables); interpolate in 'z' only")
    z_from, z_to, y_from, y_to = interpolation_ends(model, rows, seed=seed, truncation=truncation, method=method)
    t = torch.linspace(0, 1, frames)[:, None]
    moves_z = space in ("z", "both")
    z = torch.cat([slerp(z_from[r:r + 1], z_to[r:r + 1], t) if moves_z else z_from[r:r + 1].expand(frames, -1)
                   for r in range(rows)])
    if space == "z":
        return generate(model, {"z": z, "y": y_from.repeat_interleave(frames)}, batch_size)
    embed = model.nets[model.family.sample_net].embed
    start, end = embed(y_from.to(model.device)).cpu(), embed(y_to.to(model.device)).cpu()
    condition = torch.cat([torch.lerp(start[r:r + 1], end[r:r + 1], t) for r in range(rows)])
    return generate(model, {"z": z, "condition": condition}, batch_size)


def write_interpolation_sheets(model: LoadedModel, out: Path, spaces: Iterable[str], rows: int, frames: int, *,
                               seed: int = 0, truncation: float | None = None,
                               method: str = "resample") -> list[Path]:
    """`interp_z.png`, `interp_class.png`, `interp_both.png`: a row per path, a column per frame."""
    paths = []
    caption = model_caption(model, truncation=truncation, method=method)
    for space in spaces:
        images = interpolation_sheet(model, space, rows, frames, seed=seed, truncation=truncation, method=method)
        path = out / f"interp_{space}.png"
        title = f"{caption}\ninterpolation in {space}: a row per path, {frames} frames"
        labels = interpolation_row_labels(model, space, rows, seed=seed, truncation=truncation, method=method)
        save_image(label_grid(make_grid(to_uint8(images), columns=frames), title, labels), path)
        paths.append(path)
    return paths


def uint8_nchw(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] float images → uint8 N×C×H×W, rounded like every other image ganforge writes."""
    return np.ascontiguousarray(to_uint8(images).transpose(0, 3, 1, 2))


def iter_samples(model: LoadedModel, n: int, *, seed: int = 0, truncation: float | None = None,
                 method: str = "resample", batch_size: int = 64,
                 classes: ClassChoice | None = None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """`n` samples in batches of uint8 N×C×H×W images and their int64 classes (a class-conditional BigGAN's [N],
    a label-conditioned PGAN's [N, columns], None for an unconditional run): `seeded_inputs`, so the images
    `generate --n N --seed S` writes as files; `classes` sets chosen ones (`class_choice`)."""
    inputs = seeded_inputs(model, n, seed, truncation=truncation, method=method)
    if classes is not None:
        inputs = classes(inputs)
    for part in model.sample_parts(n, batch_size):
        batch = {key: value[part] for key, value in inputs.items()}
        drawn = batch.get("y", batch.get("labels"))
        yield (uint8_nchw(generate(model, batch, batch_size)),
               None if drawn is None else drawn.numpy().astype(np.int64))


def seeded_inputs(model: LoadedModel, n: int, seed: int, *, truncation: float | None = None,
                  method: str = "resample") -> dict[str, torch.Tensor]:
    """The generator inputs of samples 0…n−1 of `seed` (`LoadedModel.latents`), z truncated at ψ where asked (the
    same normal draws mapped: sample i is the same image whatever `n` and the batches, and a sweep's ψ compare
    the same samples)."""
    inputs = model.latents(n, seed)
    inputs["z"] = truncate_latents(inputs["z"], truncation, method)
    return inputs


def export_npz(model: LoadedModel, path: Path, n: int, *, seed: int = 0, truncation: float | None = None,
               method: str = "resample", batch_size: int = 64, classes: ClassChoice | None = None) -> Path:
    """`n` samples to an .npz with `x` (uint8 N×C×H×W) and, for a conditional run, `y` (int64 classes),
    BigGAN-PyTorch's sample_npz keys, written atomically; loadable with allow_pickle=False."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"--npz {path}: the file name must end in .npz")
    batches = list(iter_samples(model, n, seed=seed, truncation=truncation, method=method, batch_size=batch_size,
                                classes=classes))
    arrays = {"x": np.concatenate([images for images, _ in batches])}
    if batches[0][1] is not None:
        arrays["y"] = np.concatenate([classes for _, classes in batches])
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    with open(partial, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(partial, path)
    return path


def inception_features(weights: Path | None = None, batch_size: int = 64) -> FeatureFn:
    """The FID Inception network (pool features, logits_unbiased) as a FeatureFn; `weights` as `load_inception`."""
    from ganforge.metrics.inception import extract_features, load_inception

    network = load_inception(weights)
    return lambda images: extract_features(network, images, batch_size=batch_size)


def truncation_sweep(model: LoadedModel, truncations: Sequence[float | None], *, n: int, reals: np.ndarray,
                     features: FeatureFn, method: str = "resample", seed: int = 0, splits: int = 10,
                     batch_size: int = 64) -> list[dict[str, float | str | None]]:
    """IS (mean, std over `splits`) and FID against `reals` of `n` samples per ψ.

    Every ψ uses the same seed, so the latents and classes differ only by the truncation (common random numbers
    make the curve smoother than independent draws would).
    """
    require_class_conditional(model, "--truncation-sweep")
    real_stats = None
    for start in range(0, len(reals), batch_size):
        pool, _ = features(torch.from_numpy(np.ascontiguousarray(reals[start:start + batch_size])))
        if real_stats is None:
            real_stats = FeatureStats(pool.shape[1])
        real_stats.update(pool)
    if real_stats is None:
        raise ValueError("truncation sweep: no real images to compare with")
    rows: list[dict[str, float | str | None]] = []
    for psi in truncations:
        fake_stats, logits = FeatureStats(real_stats.dim), []
        for images, _ in iter_samples(model, n, seed=seed, truncation=psi, method=method, batch_size=batch_size):
            pool, batch_logits = features(torch.from_numpy(images))
            fake_stats.update(pool)
            logits.append(batch_logits)
        is_mean, is_std = inception_score(torch.cat(logits), splits=splits)
        rows.append({"truncation": psi, "method": method, "n": n, "is_mean": is_mean, "is_std": is_std,
                     "fid": fid(fake_stats, real_stats)})
    return rows


def format_sweep(rows: list[dict[str, float | str | None]]) -> str:
    """A plain-text table of `truncation_sweep` rows."""
    lines = [f"{'psi':>8}  {'IS':>16}  {'FID':>10}"]
    for row in rows:
        psi = "none" if row["truncation"] is None else f"{row['truncation']:g}"
        lines.append(f"{psi:>8}  {row['is_mean']:>8.3f} ± {row['is_std']:<5.3f}  {row['fid']:>10.3f}")
    return "\n".join(lines)
