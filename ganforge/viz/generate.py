"""What `ganforge generate` writes from a loaded run: single images, one grid or an interpolation sheet for every
family; per-class sheets, class interpolations, an NPZ export and a truncation sweep for class-conditional runs."""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ganforge.families.base import BATCH_DEPENDENT_NOTE, MIN_BATCH_STATISTICS
from ganforge.metrics.registry import inception_score_splits
from ganforge.run_loader import LoadedModel
from ganforge.viz import class_sampling as cs
from ganforge.viz.grid import (
    check_output_folder,
    label_grid,
    make_grid,
    refuse_existing,
    save_grid,
    save_image,
    to_uint8,
)
from ganforge.viz.interpolate import interpolation_path
from ganforge.viz.nearest import nearest_images

_UNSAFE_IN_NAMES = re.compile(r'[\x00-\x1f\\/:*?"<>|\s]')


@dataclass
class GenerateRequest:
    """The outputs asked of `ganforge generate` (its options, by the same names)."""

    out: Path | None = None  # not needed when the only output is --npz (a file of its own)
    n: int = 16
    seed: int = 0
    grid: bool = False
    interpolate: int = 0  # frames between latents (0: no interpolation sheet)
    truncation: float | None = None
    truncation_method: str | None = None  # None: resample
    per_class: int | None = None
    interpolate_class: int | None = None
    interp_spaces: str | None = None  # None: z,class,both
    npz: Path | None = None
    truncation_sweep: str | None = None
    sweep_n: int | None = None
    real: str | None = None
    nearest: int | None = None
    inception_weights: Path | None = None
    classes: str | None = None  # --class: the classes the samples cycle through (names or indices)
    overwrite: bool = False  # replace files of these names already there (else they are kept and this refused)

    @property
    def method(self) -> str:
        return self.truncation_method or "resample"

    @property
    def spaces(self) -> list[str]:
        return [space.strip() for space in (self.interp_spaces or "z,class,both").split(",")]

    def check(self) -> None:
        """Options that would do nothing where they are given are refused (each needs the output it shapes)."""
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"--seed {self.seed}: expected a non-negative seed below 2^63 (it starts the image file "
                             "names)")
        counts = (("--interpolate", self.interpolate or None, "at least 2 frames", 2),  # 0: no sheet
                  ("--interpolate-class", self.interpolate_class, "at least 2 frames", 2),
                  ("--per-class", self.per_class, "a positive count", 1), ("--sweep-n", self.sweep_n,
                                                                          "a positive count", 1))
        for option, value, expected, least in counts:
            if value is not None and value < least:
                raise ValueError(f"{option} {value}: expected {expected}")
        if self.truncation is not None and not (self.truncation > 0 and math.isfinite(self.truncation)):
            raise ValueError(f"--truncation {self.truncation}: expected a finite ψ > 0 (1 keeps z as drawn)")
        if self.interpolate and self.n < 2:
            raise ValueError(f"--interpolate with --n {self.n}: a path runs between two latents; expected --n 2 or "
                             "more (n − 1 paths)")
        if self.interp_spaces is not None and (unknown := [s for s in self.spaces if s not in
                                                           cs.INTERPOLATION_SPACES]):
            raise ValueError(f"--interp-spaces {self.interp_spaces}: {', '.join(map(repr, unknown))} is not one of "
                             f"{', '.join(cs.INTERPOLATION_SPACES)}")
        if self.truncation_sweep is not None:
            try:
                cs.parse_truncations(self.truncation_sweep)
            except ValueError as err:
                raise ValueError(f"--truncation-sweep {self.truncation_sweep}: {err}") from None
        if self.inception_weights is not None and not Path(self.inception_weights).is_file():
            raise ValueError(f"--inception-weights {self.inception_weights}: no such file")
        check_output_folder(self.out)
        if self.npz is not None and self.npz.is_dir():
            raise ValueError(f"--npz {self.npz}: a folder; expected the .npz file to write")
        needs = [("--truncation-method", self.truncation_method, ("--truncation", "--truncation-sweep"),
                  self.truncation is not None or self.truncation_sweep is not None),
                 ("--interp-spaces", self.interp_spaces, ("--interpolate-class",), self.interpolate_class is not None),
                 ("--sweep-n", self.sweep_n, ("--truncation-sweep",), self.truncation_sweep is not None),
                 ("--inception-weights", self.inception_weights, ("--truncation-sweep",),
                  self.truncation_sweep is not None),
                 ("--real", self.real, ("--nearest", "--truncation-sweep"),
                  self.nearest is not None or self.truncation_sweep is not None)]
        for option, value, wanted, served in needs:
            if value is not None and not served:
                raise ValueError(f"{option}: for {' or '.join(wanted)}, which was not given (it would do nothing)")
        sheets = list(self.class_outputs())
        for option, given in (("--grid", self.grid), ("--interpolate", self.interpolate)):
            if given and sheets:
                raise ValueError(f"{option}: for the plain samples; {', '.join(sheets)} write outputs of their own "
                                 "(it would do nothing with them)")
        if self.grid and self.interpolate:
            raise ValueError("--grid and --interpolate: the interpolation is a sheet of its own; give one of them")
        if self.out is not None and self.npz is not None and not self.writes_to_out():
            raise ValueError(f"-o {self.out}: --npz {self.npz} is the only output and names its own file (-o would "
                             "do nothing); leave -o out, or ask for images too")

    def class_outputs(self) -> dict[str, object]:
        """The class-conditional outputs asked for, by option name."""
        asked = {"--per-class": self.per_class, "--interpolate-class": self.interpolate_class, "--npz": self.npz,
                 "--truncation-sweep": self.truncation_sweep}
        return {flag: value for flag, value in asked.items() if value is not None}

    def writes_to_out(self) -> bool:
        """Whether an asked output goes into `out` (everything but --npz, which names its own file)."""
        return set(self.class_outputs()) != {"--npz"}


@dataclass
class Generated:
    """The files written, and a table to show (the truncation sweep's), empty when there is none."""

    files: list[Path]
    table: str = ""


def write_generated(model: LoadedModel, request: GenerateRequest) -> Generated:
    """Every file `request` asks for, written under `request.out`; an option the run's family cannot serve is
    refused before anything is written."""
    with model.family.weights_held():
        return _write_generated(model, request)


def _write_generated(model: LoadedModel, request: GenerateRequest) -> Generated:
    request.check()
    class_outputs = request.class_outputs()
    asked = {**class_outputs, **({"--truncation": request.truncation} if request.truncation is not None else {})}
    for flag in asked:
        cs.require_class_conditional(model, flag)
    # families that cannot sample from latents alone refuse here; --truncation maps the same z (class-conditional)
    inputs = cs.seeded_inputs(model, request.n, request.seed, truncation=request.truncation, method=request.method)
    chosen = None
    if request.classes is not None:
        others = [flag for flag, given in (("--per-class", request.per_class), ("--interpolate-class",
                                                                              request.interpolate_class),
                                           ("--truncation-sweep", request.truncation_sweep),
                                           ("--interpolate", request.interpolate), ("--nearest", request.nearest))
                  if given]
        if others:
            raise ValueError(f"--class: for single images, --grid and --npz; not with {', '.join(others)}")
        chosen = cs.class_choice(model, request.classes)
        inputs = chosen(inputs)
    drawn = (request.n - 1) * request.interpolate if request.interpolate else request.n  # images per call
    if model.family.batch_dependent_samples and drawn < MIN_BATCH_STATISTICS:
        what = f"--n {request.n}" + (f" with --interpolate {request.interpolate}" if request.interpolate else "")
        warnings.warn(f"{what}: {BATCH_DEPENDENT_NOTE}", stacklevel=2)
    if request.nearest is not None and (class_outputs or request.grid or request.interpolate
                                        or request.truncation is not None):
        raise ValueError("--nearest writes its own sheet of --n samples; give it without --grid, --interpolate and "
                         "the class-conditional options")
    if request.writes_to_out() and request.out is None:
        raise ValueError("-o/--out: required (the folder for the images; only --npz FILE alone needs none)")
    if not request.overwrite:
        _refuse_existing(request)
    if request.real is not None:  # read before anything is written (a wrong path left an empty folder)
        from ganforge.data.store import open_dataset

        open_dataset(request.real)
    if request.writes_to_out():
        request.out.mkdir(parents=True, exist_ok=True)
    if request.nearest is not None:
        return _write_nearest(model, request, inputs)
    if class_outputs:
        return _write_class_outputs(model, request, chosen)
    caption = f"{cs.model_caption(model, truncation=request.truncation, method=request.method)}, " \
              f"seed {request.seed}"
    if request.interpolate:
        path = {"z": interpolation_path(inputs["z"], request.interpolate)}
        for key in set(inputs) - {"z"}:  # classes (BigGAN's y, a conditional PGAN's labels): each row keeps those
            path[key] = inputs[key][:-1].repeat_interleave(request.interpolate, dim=0)  # of its first latent
        frames = torch.cat([model.generate({k: v[part] for k, v in path.items()})
                            for part in model.sample_parts(len(path["z"]))])
        rows = ", each row in the classes of its first frame" if len(inputs) > 1 else ""
        save_grid(frames, request.out / "interpolation.png", columns=request.interpolate, min_cell=0,
                  title=f"{caption}\ninterpolation: a row per path, {request.interpolate} frames{rows}")
        return Generated([request.out / "interpolation.png"])
    batches = (to_uint8(model.generate({k: v[part] for k, v in inputs.items()}))
               for part in model.sample_parts(request.n))
    if request.grid:  # a conditional generator's cells name their classes, enlarged as training grids to fit them
        labels = model.family.sample_cell_labels(inputs)
        grid = make_grid(np.concatenate(list(batches)), min_cell=64 if labels else 0, cell_labels=labels)
        save_image(label_grid(grid, caption), request.out / "grid.png")
        return Generated([request.out / "grid.png"])
    # a conditional generator's files name the classes asked for (SEED-INDEX-CLASS.png; a class per label column)
    classes = [_file_name_part(cell) for cell in model.family.sample_cell_labels(inputs) or []]
    written = []  # written batch by batch: 50,000 images for an FID set never sit in memory together
    for batch in batches:
        for image in batch:
            suffix = f"-{classes[len(written)]}" if classes else ""
            written.append(request.out / f"{request.seed:04d}-{len(written):05d}{suffix}.png")
            save_image(image, written[-1])
    return Generated(written)


def _refuse_existing(request: GenerateRequest) -> None:
    """Files of the names this request writes that are there already (an earlier generate's): kept, and the request
    refused, unless it says `overwrite`."""
    patterns: list[str] = []
    if request.nearest is not None:
        patterns += ["nearest.png", "nearest.json"]
    elif request.class_outputs():
        if request.per_class is not None:
            patterns += ["per_class.png", "per_class-*.png"]
        if request.interpolate_class is not None:
            patterns += [f"interp_{space}.png" for space in request.spaces]
        if request.truncation_sweep is not None:
            patterns.append("truncation_sweep.json")
    elif request.interpolate:
        patterns.append("interpolation.png")
    elif request.grid:
        patterns.append("grid.png")
    else:
        patterns.append(f"{request.seed:04d}-[0-9][0-9][0-9][0-9][0-9]*.png")
    found = sorted(path for pattern in patterns for path in request.out.glob(pattern)) \
        if request.out is not None and request.writes_to_out() else []
    if request.npz is not None and request.npz.exists():
        found.insert(0, request.npz)
    refuse_existing(found, "generate", "-o / --npz")


def _file_name_part(cell_label: str) -> str:
    """A grid cell's class names (a line per label column) as one file-name part: columns joined by '-', characters
    that paths or shells treat specially (separators, wildcards, quotes, spaces, control characters) made '_', cut
    to 100 bytes so that the whole name stays under file systems' 255."""
    part = "-".join(_UNSAFE_IN_NAMES.sub("_", line) for line in cell_label.split("\n"))
    return part.encode()[:100].decode(errors="ignore")


def _write_nearest(model: LoadedModel, request: GenerateRequest, inputs: dict[str, torch.Tensor]) -> Generated:
    """Each sample beside its nearest training images (viz/nearest.py): nearest.png, a row per sample, and
    nearest.json with the indices, distances and mirror flags, and the mean distance to the nearest."""
    from ganforge.data.store import open_dataset

    source = request.real or model.config.data
    dataset = open_dataset(source)
    resolution = model.plan.resolution
    samples = np.concatenate([to_uint8(model.generate({k: v[part] for k, v in inputs.items()}))
                              for part in model.sample_parts(request.n)]).transpose(0, 3, 1, 2)
    training = dataset.images(resolution)
    index, distance, mirrored = nearest_images(samples, training, request.nearest, device=model.device)
    cells, labels = [], []
    for row in range(len(samples)):
        cells.append(samples[row])
        labels.append("sample")
        for column in range(request.nearest):
            cells.append(np.asarray(training[index[row, column]]))
            labels.append(f"{distance[row, column]:.3f}{' m' if mirrored[row, column] else ''}")
    grid = make_grid(np.stack(cells).transpose(0, 2, 3, 1), columns=request.nearest + 1, min_cell=64,
                     cell_labels=labels)
    caption = (f"{cs.model_caption(model)}, seed {request.seed}\nnearest images of {source} (RMS pixel distance, "
               "m: to the mirrored sample; indices in nearest.json)")
    save_image(label_grid(grid, caption), request.out / "nearest.png")
    record = {"step": model.step, "data": str(source), "resolution": resolution, "seed": request.seed,
              "distance": "RMS pixel difference in [0, 1]", "mean_nearest": float(distance[:, 0].mean()),
              "samples": [[{"index": int(i), "distance": float(d), "mirrored": bool(m)}
                           for i, d, m in zip(index[row], distance[row], mirrored[row], strict=True)]
                          for row in range(len(samples))]}
    (request.out / "nearest.json").write_text(json.dumps(record, indent=1) + "\n")
    return Generated([request.out / "nearest.png", request.out / "nearest.json"],
                     f"mean distance of a sample to its nearest training image: {record['mean_nearest']:.4f} "
                     f"(RMS pixel difference in [0, 1], {len(samples)} samples, {len(training)} training images)")


def _write_class_outputs(model: LoadedModel, request: GenerateRequest,
                         chosen: cs.ClassChoice | None = None) -> Generated:
    """Per-class sheets, interpolation sheets, NPZ export (of the `chosen` classes, when given) and truncation
    sweep of a class-conditional run."""
    from ganforge.data.store import open_dataset
    from ganforge.evaluation.run_metrics import real_images

    out, seed = request.out, request.seed
    truncation = {"truncation": request.truncation, "method": request.method}
    written, table = [], ""
    if request.per_class is not None and not model.family.samples_by_class:  # a label-conditioned run
        written += cs.write_label_sheets(model, out, request.per_class, seed=seed)
    elif request.per_class is not None:
        written += cs.write_class_sheets(model, out, request.per_class, seed=seed, **truncation)
    if request.interpolate_class is not None:
        written += cs.write_interpolation_sheets(model, out, request.spaces, request.n, request.interpolate_class,
                                                 seed=seed, **truncation)
    if request.npz is not None:
        written.append(cs.export_npz(model, request.npz, request.n, seed=seed, classes=chosen, **truncation))
    if request.truncation_sweep is not None:
        dataset = open_dataset(request.real or model.config.data)
        n = min(request.sweep_n or model.config.metrics_n, dataset.count)
        rows = cs.truncation_sweep(model, cs.parse_truncations(request.truncation_sweep), n=n,
                                   reals=real_images(dataset, model.plan.resolution, n, seed),
                                   features=cs.inception_features(request.inception_weights),
                                   method=request.method, seed=seed, splits=inception_score_splits(n))
        table = cs.format_sweep(rows)
        path = out / "truncation_sweep.json"
        path.write_text(json.dumps({"step": model.step, "rows": rows}, indent=1) + "\n")
        written.append(path)
    return Generated(written, table)
