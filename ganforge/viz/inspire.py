"""`ganforge inspire`: pytorch_GAN_zoo's inspirational generation, the latent vectors whose images look most like
given pictures (`eval.py inspirational_generation` there, for PGAN and DCGAN).

The zoo's search, per picture and run: Adam (β 0, 0.99) on z minimising (mean(z²) − 1)² (z stays where the prior puts
it) + Σ_f w_f·mean((f(x) − f(G(z)))²) over the features of each extractor f (its `-f`, with `--weights` w_f; by
default the pixels themselves) − λ·D(G(z)) (realism, λ 0.03), for 6,000 steps, the best z of every run kept; every
third of the steps it meant to restart from the best z at a tenth of the learning rate. Fixed here (docs/fidelity.md):
the zoo's restarts assign the new vector and optimiser to local variables and change nothing, so its whole search runs
at its first learning rate (ganforge restarts at `lr`/10 and `lr`/100, what the zoo meant with its default of 1); it
keeps the vector after the step with the loss measured before it (ganforge keeps the one the loss was measured at); it
searches with the raw G and shows the result of the averaged one (ganforge searches and shows with the same generator,
the EMA one where the run keeps it). Pictures are centre-cropped and resized to the model's resolution as `ganforge
prepare` does (the zoo squeezes them to a square). Extractors: `pixels` (the zoo's `id`), and `vgg19` and `vgg16`,
the texture statistics its `save_feature_extractor.py` saves (`ganforge.metrics.vgg_texture`), from torchvision's
ImageNet weights.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganforge.data.images import ImageError, center_crop_resize, load_rgb
from ganforge.errors import ConfigError
from ganforge.families.base import BATCH_DEPENDENT_NOTE, MIN_BATCH_STATISTICS
from ganforge.metrics.vgg_texture import DEFAULT_SIZE, MIN_SIZE, load_vgg_texture
from ganforge.run_loader import LoadedModel
from ganforge.viz.grid import check_output_folder, refuse_existing, save_grid

PHASES = 3  # the zoo's restarts: at every third of the steps
DECAY = 0.1  # the learning rate's factor at each restart
EXTRACTORS = ("pixels", "vgg19", "vgg16")
PIXELS_ONLY = (("pixels", 1.0),)


def feature_extractors(features: Sequence[tuple[str, float]], device: torch.device, *,
                       vgg_weights: str | Path | None = None, feature_size: int | None = None
                       ) -> list[tuple[Callable[[torch.Tensor], torch.Tensor], float]]:
    """(images → [N, F] features, weight) for each (name, weight) of the search's distance."""
    names = [name for name, _ in features]
    unknown = sorted(set(names) - set(EXTRACTORS))
    if not features or unknown or len(set(names)) != len(names):
        raise ConfigError(f"latent search: features {names} must name each of {', '.join(EXTRACTORS)} at most once "
                          f"(at least one)")
    if any(not weight > 0 for _, weight in features):
        raise ConfigError(f"latent search: feature weights must be > 0, got {list(features)}")
    vggs = [name for name in names if name != "pixels"]
    if not vggs and (vgg_weights is not None or feature_size is not None):
        raise ConfigError("latent search: VGG weights and the feature size serve the vgg19/vgg16 features only; "
                          "add one to the features")
    if feature_size is not None and feature_size < MIN_SIZE:  # before a 500 MB file is looked for
        raise ConfigError(f"latent search: feature size {feature_size} is too small for the VGG features (at least "
                          f"{MIN_SIZE})")
    if len(vggs) > 1 and vgg_weights is not None:
        raise ConfigError("latent search: one VGG weights file for two VGG networks; leave it out (each is then "
                          "found in its environment variable or the cache)")
    textures = {name: load_vgg_texture(name, vgg_weights, size=feature_size or DEFAULT_SIZE, device=device)
                for name in vggs}
    return [(textures.get(name, lambda images: images.flatten(1)), weight) for name, weight in features]


@dataclass
class Inspiration:
    """The best of each run for each picture, runs ordered by loss (best first)."""

    images: torch.Tensor  # [pictures, runs, C, H, W] in [-1, 1], on the CPU
    latents: torch.Tensor  # [pictures, runs, latent_dim]
    losses: torch.Tensor  # [pictures, runs], the search's loss at those latents
    phases: list[dict[str, float]]  # per restart: its learning rate and the mean best loss at its end
    feature_size: int | None = None  # the size images were resized to for VGG features (None: none used)


def inspire(model: LoadedModel, pictures: torch.Tensor, *, runs: int = 1, steps: int = 6000, lr: float = 1.0,
            realism: float = 0.03, seed: int = 0, features: Sequence[tuple[str, float]] = PIXELS_ONLY,
            vgg_weights: str | Path | None = None, feature_size: int | None = None) -> Inspiration:
    """Latents whose images match `pictures` ([N, C, H, W] in [-1, 1] at the model's resolution), `runs` searches
    each from latents drawn from `seed` (picture k's from the seed's k-th stream), in the weighted `features`
    ((name, weight): pixels, vgg19, vgg16). Each picture is searched alone, as the zoo's eval.py searches one per
    call: its runs share a batch (D's minibatch stddev, a batch-norm G), other pictures never do."""
    if seed < 0:
        raise ConfigError(f"latent search: --seed {seed}: expected a non-negative seed")
    if runs < 1 or steps < PHASES or not lr > 0 or not realism >= 0 or not math.isfinite(realism):
        raise ConfigError(f"latent search: expected runs ≥ 1, steps ≥ {PHASES}, lr > 0 and a finite realism ≥ 0, got "
                          f"runs {runs}, steps {steps}, lr {lr}, realism {realism}")
    if model.family.batch_dependent_samples and runs < MIN_BATCH_STATISTICS:
        warnings.warn(f"--runs {runs}: {BATCH_DEPENDENT_NOTE}; each picture's runs are one batch", stacklevel=2)
    size = image_shape(model)
    if pictures.ndim != 4 or tuple(pictures.shape[1:]) != size or not len(pictures):
        raise ConfigError(f"latent search: pictures must be [N, {size[0]}, {size[1]}, {size[2]}] (the model's "
                          f"images), got {tuple(pictures.shape)}")
    extractors = feature_extractors(features, model.device, vgg_weights=vgg_weights, feature_size=feature_size)
    frozen = {p: p.requires_grad for net_ in model.nets.values() for p in net_.parameters()}
    for param in frozen:
        param.requires_grad_(False)  # only z is searched: no weight gradients
    try:
        searches = [_search(model, picture, extractors, runs=runs, steps=steps, lr=lr, realism=realism,
                            seed=int(np.random.SeedSequence([seed, index]).generate_state(1)[0]))
                    for index, picture in enumerate(pictures)]
    finally:
        for param, wanted_grad in frozen.items():
            param.requires_grad_(wanted_grad)
    phases = [{"lr": lr * DECAY**phase, "mean_best_loss": float(np.mean([found[3][phase] for found in searches]))}
              for phase in range(PHASES)]
    vgg_used = any(name != "pixels" for name, _ in features)
    return Inspiration(*(torch.stack([found[part] for found in searches]) for part in range(3)), phases,
                       (feature_size or DEFAULT_SIZE) if vgg_used else None)


def _search(model: LoadedModel, picture: torch.Tensor, extractors: list[tuple[Callable, float]], *, runs: int,
            steps: int, lr: float, realism: float,
            seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float]]:
    """One picture's `runs` searches in one batch: (images, latents, losses) of the runs best first, on the CPU,
    and the mean best loss at the end of each phase."""
    family, plan, net, device = model.family, model.plan, model.family.sample_net, model.device
    inputs = {k: v.to(device) for k, v in family.sample_latents(runs, torch.Generator().manual_seed(seed)).items()}
    wanted = picture[None].to(device).expand(runs, -1, -1, -1)
    with torch.no_grad():
        wanted_features = [extract(wanted) for extract, _ in extractors]

    def losses(z: torch.Tensor) -> torch.Tensor:
        images = family.generate({**inputs, "z": z}, net, plan)
        loss = ((z.square().mean(dim=1) - 1) ** 2)  # the prior's term
        for (extract, weight), target in zip(extractors, wanted_features, strict=True):
            loss = loss + weight * (target - extract(images)).square().mean(dim=1)
        return loss - realism * family.critic_score(images, plan) if realism else loss

    best_z = inputs["z"].detach().clone()
    with torch.no_grad():
        best_loss = losses(best_z)
        family.critic_score(family.generate(inputs, net, plan), plan)  # conditional families refuse, realism or not
    phases = []
    for phase in range(PHASES):
        z = best_z.clone().requires_grad_(True)  # each restart from the best latents so far
        optimizer = torch.optim.Adam([z], lr=lr * DECAY**phase, betas=(0.0, 0.99))
        for _ in range(steps // PHASES + (phase < steps % PHASES)):
            loss = losses(z)
            better = loss.detach() < best_loss
            best_z = torch.where(better[:, None], z.detach(), best_z)
            best_loss = torch.where(better, loss.detach(), best_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
        phases.append(float(best_loss.mean()))
    with torch.no_grad():  # the losses of the latents returned, scored together as the images are made
        final = losses(best_z)
        images = family.generate({**inputs, "z": best_z}, net, plan).clamp(-1, 1)
    order = final.argsort().cpu()
    return images.float().cpu()[order], best_z.cpu()[order], final.cpu()[order], phases


def image_shape(model: LoadedModel) -> tuple[int, int, int]:
    """(C, H, W) of the images the model's generator makes."""
    return tuple(model.generate(n=1).shape[1:])


def load_pictures(paths: list[Path], shape: tuple[int, int, int]) -> torch.Tensor:
    """Image files → [N, C, H, W] in [-1, 1] for a model making `shape` images: centre-cropped and resized as
    `ganforge prepare` does, and for one-channel models in grey (ITU-R 601 luma, PIL's "L")."""
    channels, resolution = shape[0], shape[1]
    pictures = []
    for path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"latent search: {path} is not a file")
        try:
            image = center_crop_resize(load_rgb(path, str(path)), resolution).astype(np.float32)
        except ImageError as err:
            raise ConfigError(f"latent search: {err}") from None
        if channels == 1:
            image = image @ np.array([[0.299], [0.587], [0.114]], dtype=np.float32)
        pictures.append(image.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(pictures)) / 127.5 - 1


def spread(latents: torch.Tensor) -> dict[str, float]:
    """The zoo's statistics of one picture's runs: latents scaled to unit RMS, their barycenter (likewise scaled),
    the mean RMS distance to it and the mean and spread of their mean products with it (1: all runs agree)."""
    vectors = latents * torch.rsqrt(latents.square().mean(dim=1, keepdim=True))
    barycenter = vectors.mean(dim=0)
    barycenter = barycenter * torch.rsqrt(barycenter.square().mean())
    agreement = (vectors * barycenter).mean(dim=1)
    return {"mean_distance": float((barycenter - vectors).square().mean(dim=1).sqrt().mean()),
            "mean_agreement": float(agreement.mean()), "agreement_std": float(agreement.std())}


def write_inspirations(model: LoadedModel, paths: list[Path], out: Path, overwrite: bool = False,
                       **search: Any) -> list[Path]:
    """Search for every picture; per picture (numbered in the order given) a grid (the picture, then its runs best
    first, captioned with their losses) and an .npz of the latents and losses, and one inspire.json of the settings
    and results. Files of those names already there (an earlier search's) are kept, and this refused before any
    search, unless `overwrite`."""
    twice = sorted({str(path) for path in paths if paths.count(path) > 1})
    if twice:
        raise ConfigError(f"latent search: {', '.join(twice)} given more than once")
    stems = [f"{index:02d}_{Path(path).stem}" for index, path in enumerate(paths)]  # numbered: one name, two folders
    targets = [out / "inspire.json", *(out / f"{stem}_{part}" for stem in stems
                                       for part in ("inspired.png", "latents.npz"))]
    check_output_folder(out)
    if not overwrite:
        refuse_existing(targets, "search")
    pictures = load_pictures(paths, image_shape(model))
    found = inspire(model, pictures, **search)
    out.mkdir(parents=True, exist_ok=True)
    written, record = [], {"step": model.step, "net": model.family.sample_net,
                           "search": {**search, "feature_size": found.feature_size},
                           "phases": found.phases, "pictures": {}}
    for index, (path, stem) in enumerate(zip(paths, stems, strict=True)):
        labels = ["picture", *(f"loss {loss:.4f}" for loss in found.losses[index].tolist())]
        grid = out / f"{stem}_inspired.png"
        save_grid(torch.cat([pictures[index:index + 1], found.images[index]]), grid, columns=min(len(labels), 9),
                  cell_labels=labels,
                  title=f"latent search: {stem}, {len(labels) - 1} runs, step {model.step}")
        latents = out / f"{stem}_latents.npz"
        np.savez(latents, z=found.latents[index].numpy(), loss=found.losses[index].numpy())
        record["pictures"][str(path)] = {"losses": found.losses[index].tolist(), "grid": grid.name,
                                         "latents": latents.name,
                                         **({"spread": spread(found.latents[index])} if found.latents.shape[1] > 1
                                            else {})}
        written += [grid, latents]
    summary = out / "inspire.json"
    summary.write_text(json.dumps(record, indent=1) + "\n")
    return [*written, summary]
