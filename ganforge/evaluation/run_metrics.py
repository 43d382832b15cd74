"""Metrics of runs: during training (engine ticks), of saved checkpoints (`ganforge evaluate RUN`), of any two
image sets or a run's generator against an image set or a statistics file (`ganforge evaluate --fake --real |
--real-stats`), and the statistics files themselves (`ganforge stats`). The numbers come from
`ganforge.metrics.evaluate`; this module only decides which images are compared and where the results go. Every
record and table of Inception metrics says the FID mode they were computed in."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganforge.config import ConfigError, read_config_file
from ganforge.data.images import IMAGE_EXTENSIONS, ImageError, center_crop_resize, load_rgb
from ganforge.data.store import DatasetError, ImageDataset, open_dataset, parse_builtin_spec, resolved_data_spec
from ganforge.distributed import DistInfo, pick_device
from ganforge.families import get_family
from ganforge.families.base import (
    BATCH_DEPENDENT_NOTE,
    MIN_BATCH_STATISTICS,
    Family,
    SamplingBN,
    StepPlan,
    sample_batches,
)
from ganforge.metrics._images import ImageSetError, ImageSizeError, derived_seed
from ganforge.metrics.dinov2 import DINOV2_WEIGHTS, DINOv2WeightsError
from ganforge.metrics.evaluate import evaluate, metrics_device, resolve_network_weights
from ganforge.metrics.fid_stats import (
    FEATURE_DIMS,
    ReferenceStats,
    check_stats_output,
    image_set_stats,
    read_stats,
    write_stats,
)
from ganforge.metrics.inception import (
    DEFAULT_FID_MODE,
    WEIGHTS_ENV,
    InceptionWeightsError,
    check_fid_mode,
    default_cache_dir,
    resolve_weights_path,
)
from ganforge.metrics.prdc import DC_K
from ganforge.metrics.ranks import RankShare
from ganforge.metrics.registry import (
    INCEPTION_BLOCKS,
    INCEPTION_METRICS,
    IS_SPLITS,
    METRICS,
    MetricSettings,
    check_metrics,
    check_real_stats_metrics,
    flat_outputs,
    format_table,
    inception_score_splits,
    model_of,
    protocol_fields,
    ranks,
)
from ganforge.metrics.vgg_texture import VGGWeightsError
from ganforge.run_loader import load_run
from ganforge.training import checkpoint as ckpt
from ganforge.training.log import PER_CLASS_METRICS_NAME, SWD_FLOOR_NAME, append_record

# images per batch of a run's metric pass: generated, read and run through the feature networks (the shares of a
# torchrun job are these batches, so rank 0's values are one process's)
METRIC_BATCH = 64


def generated_batches(family: Family, plan: StepPlan, n: int, seed: int, batch_size: int = 64,
                      net: str | None = None, share: RankShare | None = None,
                      labels: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """`n` images in [-1, 1] from generator `net` (default the EMA generator, G when there is none), drawn from
    their own seed; callers hold the family's weights (`Family.weights_held`) around the pass that reads them.
    With `share`, this rank's batches of the same `n` (every batch's latents are drawn, so each batch is the one a
    single process draws). With `labels` (rows of the store's labels, one per image) a conditional generator is
    given those images' classes (`Family.with_store_labels`) instead of drawn ones."""
    generator = torch.Generator().manual_seed(seed + 2**20)
    net = net or family.sample_net
    for index, part in enumerate(sample_batches(n, family.metric_batch(batch_size),
                                                equal=family.batch_dependent_samples)):
        latents = family.sample_latents(part.stop - part.start, generator)
        if labels is not None:
            latents = family.with_store_labels(latents, labels[part])
        if share is not None and not share.owns(index):
            continue
        inputs = {k: v.to(family.device) for k, v in latents.items()}
        with torch.no_grad():  # not held across the yield: the caller's mode between batches
            images = family.generate(inputs, net, plan).float().cpu()
        yield images


def real_images(dataset: ImageDataset, resolution: int, n: int, seed: int) -> np.ndarray:
    """`n` real images at `resolution` (a seeded random subset, in index order for fast memory-mapped reads)."""
    return np.asarray(dataset.images(resolution)[_real_indices(dataset, n, seed)])


def real_batches(dataset: ImageDataset, resolution: int, n: int, seed: int, share: RankShare,
                 batch_size: int = 64) -> Iterator[np.ndarray]:
    """This rank's batches of `real_images(dataset, resolution, n, seed)`, read batch by batch."""
    images = dataset.images(resolution)
    indices = _real_indices(dataset, n, seed)
    for start in share.own(range(0, n, batch_size)):
        yield np.asarray(images[indices[start : start + batch_size]])


def _real_indices(dataset: ImageDataset, n: int, seed: int) -> np.ndarray:
    if n > dataset.count:
        raise DatasetError(f"{dataset.source}: {n} real images asked for, the dataset holds {dataset.count}")
    return random_subset(dataset.count, n, seed)


def random_subset(total: int, n: int, seed: int) -> np.ndarray:
    """Indices of a seeded random choice of `n` of `total` images, sorted (memory-mapped and file reads stay in
    order). Never the first n: stores and folders are often sorted by class, so those would be a few classes."""
    return np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))


def second_real_set(dataset: ImageDataset, resolution: int, n: int, seed: int) -> tuple[np.ndarray, str]:
    """`n` real images apart from `real_images(dataset, resolution, n, seed)`, and where they come from:
    for builtin:shapes a second draw of the procedural data (the same spec with the next seed), for a store
    `n` of the images that set did not pick (the store must hold 2n)."""
    if dataset.source.startswith("builtin:"):
        _, params = parse_builtin_spec(dataset.source)
        spec = f"builtin:shapes?count={params['count']}&resolution={params['resolution']}&seed={params['seed'] + 1}"
        return real_images(open_dataset(spec), resolution, n, seed), spec
    if 2 * n > dataset.count:
        raise DatasetError(f"{dataset.source}: a real-vs-real floor of {n} images needs two disjoint sets, "
                           f"{2 * n} images; the dataset holds {dataset.count}")
    rest = np.setdiff1d(np.arange(dataset.count), _real_indices(dataset, n, seed))
    picked = np.sort(np.random.default_rng(seed + 1).choice(rest, size=n, replace=False))
    return np.asarray(dataset.images(resolution)[picked]), f"{n} other images of {dataset.source}"


def real_swd_floor(dataset: ImageDataset, resolution: int, n: int, seed: int = 0,
                   cache_dir: Path | None = None) -> dict[str, Any]:
    """SWD of the real set that runs are scored against versus a second real set of the same data and size: the
    value a perfect generator would get. Computed once per (dataset, resolution, n, seed) and cached as JSON in
    the cache's stats/ folder; returns {"resolutions", "swd", "avg", "second_set", "cache"}."""
    folder = Path(cache_dir) if cache_dir else default_cache_dir() / "stats"
    key = f"{dataset.fingerprint}-{resolution}-{n}-{seed}"
    path = folder / f"swd-floor-{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
    if dataset.fingerprint and path.is_file():
        return {**json.loads(path.read_text(encoding="utf-8"))["floor"], "cache": str(path)}
    others, second_set = second_real_set(dataset, resolution, n, seed)
    swd = _run_evaluate(others, real_images(dataset, resolution, n, seed), ["swd"], n=n, seed=seed)["swd"]
    floor = {**swd, "second_set": second_set}
    if not dataset.fingerprint:
        return {**floor, "cache": None}
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_json_atomic(path, {"key": key, "n": n, "floor": floor})
    return {**floor, "cache": str(path)}


def swd_versus_floor(swd: dict[str, Any], floor: dict[str, Any]) -> str:
    """One line: the SWD levels and average beside the real-vs-real floor and their ratio."""
    levels = " ".join(f"{res}px {value:.1f}" for res, value in zip(swd["resolutions"], swd["swd"], strict=True))
    floor_levels = " / ".join(f"{value:.1f}" for value in floor["swd"])
    return (f"SWD x1e3 {levels} avg {swd['avg']:.1f} (real-vs-real floor {floor_levels}, avg {floor['avg']:.1f}: "
            f"{swd['avg'] / floor['avg']:.1f}x)")


def run_swd_floor(run_dir: Path, resolution: int, n: int, seed: int = 0) -> dict[str, Any]:
    """`real_swd_floor` of a run's training data at the image count `evaluate_run` uses for `n`, also kept in
    RUN/swd_floor.json (with that count) for the report, which draws it under the SWD curve."""
    dataset = open_dataset(read_config_file(Path(run_dir) / "config.json")["data"])
    count = min(n, dataset.count)
    floor = real_swd_floor(dataset, resolution, count, seed)
    ckpt.write_json_atomic(Path(run_dir) / SWD_FLOOR_NAME, {"n": count, **{k: v for k, v in floor.items()
                                                                             if k != "cache"}})
    return floor


def _run_evaluate(fake: Any, real: Any, metrics: list[str], *, n: int | None, seed: int,
                  device: torch.device | None = None, inception_weights: Path | None = None,
                  real_cache_key: str | None = None, fid_mode: str = DEFAULT_FID_MODE,
                  real_stats: ReferenceStats | None = None, settings: MetricSettings | None = None,
                  dinov2_weights: Path | None = None, share: RankShare | None = None,
                  batch_size: int = METRIC_BATCH) -> dict[str, Any]:
    """`evaluate` on the GPU where the generator is on one (metrics_device), on the CPU otherwise."""
    return evaluate(fake, real, metrics, n=n, inception_weights=inception_weights, seed=seed,
                    real_cache_key=real_cache_key, fid_mode=fid_mode, real_stats=real_stats, settings=settings,
                    dinov2_weights=dinov2_weights, device=metrics_device(device), share=share, batch_size=batch_size)


def _kid_subset_note(metrics: list[str], count: int, settings: MetricSettings) -> str:
    """KID's subsets shrink to the image count: its mean stays unbiased, its spread is not comparable."""
    if "kid" not in metrics or count >= settings.value("kid_subset_size"):
        return ""
    return (f"note: KID from subsets of {count} images (all there are) instead of {settings.value('kid_subset_size')}: "
            "its mean is unbiased either way, its std is not comparable with values from other subset sizes")


def evaluate_family(family: Family, dataset: ImageDataset, plan: StepPlan, metrics: list[str], *, n: int,
                    seed: int, inception_weights: Path | None = None, fid_mode: str = DEFAULT_FID_MODE,
                    dinov2_weights: Path | None = None, settings: MetricSettings | None = None,
                    metrics_on: torch.device | None = None, real_stats: ReferenceStats | None = None,
                    share: RankShare | None = None) -> dict[str, float | str]:
    """The configured metrics of the current generator against the training data, at the current resolution
    (flat outputs, plus "fid_mode" when an Inception metric is among them), KID and PR computed with `settings`
    (those of metrics not asked for now are dropped), FID against `real_stats` when given (the config's
    fid_real_stats), on `metrics_on` (default: the family's CUDA GPU, else the CPU). A translating family's are
    its protocol's (StarGAN v2: FID and LPIPS per domain task, `n` capping the validation sources per domain).
    With `share` (not for a translating family) the ranks of a torchrun job generate and extract features together;
    rank 0 gets the values, the others {}."""
    if family.translates:
        from ganforge.evaluation.stargan2 import protocol_scores

        return protocol_scores(family, dataset, metrics, max_val=n, inception_weights=inception_weights)
    if real_stats is not None and "fid" in check_metrics(metrics) and real_stats.resolution not in (
            None, plan.resolution):
        raise ImageSetError(f"fid_real_stats holds statistics of {real_stats.resolution} px images")
    n = min(n, dataset.count)
    key = f"{dataset.fingerprint}-{plan.resolution}-{n}-{seed}" if dataset.fingerprint else None
    settings = (settings or MetricSettings()).for_metrics(check_metrics(metrics))  # of the metrics asked for now

    def reals() -> Any:  # read only if needed (no SWD, and features cached: never)
        if share is None:  # an array: read in METRIC_BATCH slices, as the shares are
            return real_images(dataset, plan.resolution, n, seed)
        return real_batches(dataset, plan.resolution, n, seed, share, METRIC_BATCH)

    with family.weights_held():
        results = _run_evaluate(generated_batches(family, plan, n, seed, METRIC_BATCH, share=share), reals,
                                metrics, n=n, seed=seed, device=metrics_on or family.device,
                                inception_weights=inception_weights, real_cache_key=key, fid_mode=fid_mode,
                                dinov2_weights=dinov2_weights, settings=settings,
                                real_stats=real_stats if "fid" in check_metrics(metrics) else None, share=share,
                                batch_size=METRIC_BATCH)
    return {**flat_outputs(results), **protocol_fields(results, fid_mode)} if results else {}


def chosen_fid_mode(metrics: list[str], fid_mode: str | None) -> str:
    """The FID mode of an evaluation: `fid_mode` (checked), or the default when none is given. A mode given for
    metrics that use no Inception features would do nothing, and is refused."""
    if fid_mode is None:
        return DEFAULT_FID_MODE
    check_fid_mode(fid_mode)
    names = check_metrics(metrics)
    if not any(METRICS[name].needs_inception for name in names):
        inception = ", ".join(name for name, metric in METRICS.items() if metric.needs_inception)
        raise ConfigError(f"--fid-mode {fid_mode}: only the Inception metrics ({inception}) use it, and the "
                          f"metrics asked for are {', '.join(names)}")
    return fid_mode


def check_weights_used(metrics: list[str], *, inception_weights: str | Path | None = None,
                       dinov2_weights: str | Path | None = None) -> None:
    """Inception or DINOv2 weights given for an evaluation without a metric that reads them would do nothing:
    refused."""
    names = check_metrics(metrics)
    if inception_weights is not None and not any(METRICS[name].needs_inception for name in names):
        raise ConfigError(f"--inception-weights (inception_weights=): for {', '.join(INCEPTION_METRICS)}, none of "
                          f"which is among the metrics ({', '.join(metrics)})")
    if dinov2_weights is not None and "fd_dinov2" not in names:
        raise ConfigError(f"--dinov2-weights (dinov2_weights=): for fd_dinov2, which is not among the metrics "
                          f"({', '.join(metrics)})")


def computable_metrics(metrics: list[str], inception_weights: str | Path | None = None,
                       dinov2_weights: str | Path | None = None) -> tuple[list[str], str]:
    """The metrics that can be computed here, and a warning line per weights file missing ("" when none is).
    Without a feature network's weights (not given, not cached, offline) its metrics are left out (the FID
    Inception's: fid and its blocks, kid, is; VGG-16's: pr, dc; DINOv2's: fd_dinov2) and the others still computed;
    when no asked metric is left, one error names every missing file. A file the user named (argument or environment
    variable) that is not there is an error: a typo must not turn into a table without the metric."""
    names = check_metrics(metrics)
    named = {"inception": inception_weights or os.environ.get(WEIGHTS_ENV),
             "dinov2": dinov2_weights or os.environ.get(DINOV2_WEIGHTS.env),
             "vgg16": os.environ.get("GANFORGE_VGG16_WEIGHTS")}

    def weights_of(name: str) -> str | None:  # Inception's blocks read the one Inception file
        network = METRICS[name].network
        return network and model_of(network)

    missing: dict[str, Exception] = {}
    for network in dict.fromkeys(weights_of(name) for name in names if METRICS[name].network):
        try:
            resolve_network_weights(network, inception_weights=inception_weights, dinov2_weights=dinov2_weights)
        except (InceptionWeightsError, DINOv2WeightsError, VGGWeightsError) as err:
            if named.get(network):
                raise
            missing[network] = err
    left = [name for name in names if weights_of(name) not in missing]
    if not left:
        first = next(iter(missing.values()))
        raise type(first)(" Also: ".join(map(str, missing.values())))
    warnings = [f"warning: {', '.join(n for n in names if weights_of(n) == network)} not computed: {err}"
                for network, err in missing.items()]
    return left, "\n".join(warnings)


def evaluate_run(run_dir: Path, metrics: list[str], *, n: int | None = None, step: int | None = None,
                 all_steps: bool = False, real: Path | None = None, inception_weights: Path | None = None,
                 seed: int = 0, fid_mode: str | None = None, settings: MetricSettings | None = None,
                 dinov2_weights: Path | None = None, device: str = "auto", bn: str | None = None) -> dict[str, Any]:
    """Metrics of one checkpoint (newest, or `step`) or of all of them; appended to the run's metrics.jsonl (with
    the image count and the real set), SWD also to swd.json ({step: {resolutions, swd ×1e3, avg}}: one file
    of the SWD curve, as the zoo's eval.py keeps one). Settings other than the defaults (`settings`), and batch-norm
    statistics `bn` other than the run's own ("running", "batch", "standing:N"), are recorded with each row."""
    run_dir = Path(run_dir)
    settings = settings or MetricSettings()
    settings.check_used(check_metrics(metrics))
    check_weights_used(metrics, inception_weights=inception_weights, dinov2_weights=dinov2_weights)
    fid_mode = chosen_fid_mode(metrics, fid_mode)
    if bn is not None:  # before any weights are looked up: a generator without batch norm has no choice
        check_bn_mode(run_dir, bn)
    steps = ckpt.checkpoint_steps(run_dir) if all_steps else [step]
    if all_steps and not steps:
        raise ckpt.CheckpointError(f"{run_dir}: no checkpoints to evaluate")
    metrics, warning = computable_metrics(metrics, inception_weights, dinov2_weights)
    settings = settings.for_metrics(metrics)  # those of metrics left out (no Inception weights) go with them
    rows, skipped = [], []
    for chosen in steps:
        model = load_run(run_dir, step=chosen, device=device, bn=bn)
        resolution = model.plan.resolution
        # recorded with each row: values against other real sets are not one curve
        real_set = resolved_data_spec(str(real) if real is not None else model.config.data)
        if real is None or is_store(Path(real)):
            try:
                dataset = open_dataset(real if real is not None else model.config.data)
            except DatasetError as err:
                if real is not None:
                    raise
                raise DatasetError(f"{err} (the run's training data; moved? name it with --real PATH)") from None
            count = min(n or model.config.metrics_n, dataset.count)
            reals: Any = real_images(dataset, resolution, count, seed)
        else:  # a folder or an .npz, read batch by batch as `evaluate --fake DIR --real DIR` reads it
            count = min(n or model.config.metrics_n, image_set_size(Path(real)))
            reals = iter_image_set(Path(real), resolution, sample=count, seed=seed)
        if n is not None and count < n and not rows and not skipped:
            warning = "\n".join(filter(None, [warning, f"note: --n {n}: the real set holds {count} images; "
                                                       f"{count} generated images were evaluated against them"]))
        if not rows and not skipped:
            warning = "\n".join(filter(None, [warning, _kid_subset_note(metrics, count, settings)]))
        try:
            with model.family.weights_held():
                results = _run_evaluate(generated_batches(model.family, model.plan, count, seed), reals, metrics,
                                        n=count, seed=seed, device=model.device, inception_weights=inception_weights,
                                        fid_mode=fid_mode, settings=settings, dinov2_weights=dinov2_weights)
        except ImageSetError as err:
            if not all_steps:
                raise
            skipped.append(f"step {model.step}: skipped ({err})")
            continue
        flat = flat_outputs(results)
        rows.append((model.step, results, count))
        append_record(run_dir / "metrics.jsonl", {
            "step": model.step, "n": count, "real": real_set, "source": "evaluate", **flat,
            **protocol_fields(results, fid_mode), **settings.given(images=count),
            **({"bn": str(SamplingBN.parse(bn))} if bn is not None else {})})
        own_data = real_set == resolved_data_spec(model.config.data)
        if "swd" in results and bn is None and own_data:  # the zoo's file of the run's own SWD, not against other
            # real images or of other batch-norm statistics (metrics.jsonl records those with their protocol)
            swd_path = run_dir / "swd.json"
            table = json.loads(swd_path.read_text()) if swd_path.is_file() else {}
            table[str(model.step)] = results["swd"]
            ckpt.write_json_atomic(swd_path, table)
    table = "\n\n".join([_format(step_, res, fid_mode, count, f"{count} real", count) for step_, res, count in rows]
                        + skipped)
    return {"results": [(step_, res) for step_, res, _ in rows], "warning": warning,
            "table": table + (f"\n{warning}" if warning else "")}


def evaluate_run_ppl(run_dir: Path, sampling: str = "full", *, n: int | None = None, step: int | None = None,
                     crop: bool = True, seed: int = 0, device: str = "auto", bn: str | None = None) -> dict[str, Any]:
    """The perceptual path length of one checkpoint's sampling generator in z (`evaluate RUN --ppl full|end`,
    stylegan2-ada's ppl_zfull / ppl_zend: `metrics.ppl`) from `n` paths (default the run's metrics_n), recorded in
    the run's metrics.jsonl as ppl_zfull or ppl_zend."""
    from ganforge.metrics.float32 import no_tf32_convolutions, reference_float32
    from ganforge.metrics.lpips import LPIPS_VGG_SMALLEST, load_lpips_vgg
    from ganforge.metrics.ppl import lpips_view, path_distances, path_length

    run_dir = Path(run_dir)
    if bn is not None:
        check_bn_mode(run_dir, bn)
    model = load_run(run_dir, step=step, device=device, bn=bn)
    count = n or model.config.metrics_n
    seen = lpips_view(torch.zeros(1, 1, model.plan.resolution, model.plan.resolution), crop).shape[-1]
    if seen < LPIPS_VGG_SMALLEST:
        raise ConfigError(f"--ppl: LPIPS VGG-16 reads images of {LPIPS_VGG_SMALLEST} px or more (its fifth block "
                          f"follows four 2x2 poolings), and this run's {model.plan.resolution} px images give "
                          f"{seen} px{' after the centre crop (--ppl-crop off keeps them whole)' if crop else ''}")
    lpips = load_lpips_vgg(device=metrics_device(model.device))
    family, net = model.family, model.family.sample_net

    def generate(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        images = family.generate({k: v.to(family.device) for k, v in inputs.items()}, net, model.plan)
        return images.to(metrics_device(model.device))

    labels = getattr(family.dataset, "labels", None) if family.generator_label_columns() else None

    def draw(k: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Latents whose classes are those of random training images (the reference's c), where the data is
        at hand; uniform classes otherwise."""
        latents = family.sample_latents(k, generator)
        if labels is None:
            return latents
        rows = torch.randint(len(labels), (k,), generator=generator).numpy()
        return family.with_store_labels(latents, torch.as_tensor(np.asarray(labels[rows]), dtype=torch.long))

    with family.weights_held(), reference_float32(), no_tf32_convolutions():
        distances = path_distances(generate, draw, lpips, count, sampling=sampling, crop=crop,
                                   batch_size=METRIC_BATCH // 2, seed=seed)
    key = f"ppl_z{sampling}"
    value = path_length(distances)
    append_record(run_dir / "metrics.jsonl", {
        "step": model.step, "n": count, "source": "evaluate", key: value, "ppl_crop": "centre" if crop else "none",
        **({"bn": str(SamplingBN.parse(bn))} if bn is not None else {})})
    table = (f"step {model.step}: perceptual path length in z ({sampling} paths, {count} of them, "
             f"{'centre-cropped' if crop else 'uncropped'} images, LPIPS VGG-16, ε 1e-4)\n"
             f"{'PPL_z' + sampling:9s} {value:12.4f}")
    return {"step": model.step, key: value, "table": table}


def _per_class_columns(family: Family, dataset: ImageDataset, column: str | None
                       ) -> tuple[str, list[str], dict[int, int]]:
    """What `evaluate --per-class` splits by, checked against the store it reads: the column's name and classes,
    and for each store column the generator takes (by its index in the run's own store) that column's index in
    `dataset`, matched by name and class list (a store re-prepared with other columns or classes is refused)."""
    run_columns = family.dataset.label_columns or []
    taken = {run_columns[index][0]: index for index in family.generator_label_columns()}
    if not taken:
        raise ConfigError(f"--per-class: this run's generator takes no classes (a {family.name} run"
                          f"{' without model.conditions' if family.name != 'biggan' else ' without labelled data'})")
    if column is None and len(taken) > 1:
        raise ConfigError(f"--per-class: the generator takes the classes of {', '.join(taken)}; name one with "
                          "--class-column")
    if column is not None and column not in taken:
        raise ConfigError(f"--class-column {column}: not a label column the generator takes (it takes "
                          f"{', '.join(taken)})")
    here = {name: (index, [str(c) for c in classes]) for index, (name, classes) in
            enumerate(dataset.label_columns or [])}
    positions = {}
    for name, index in taken.items():
        classes = [str(c) for c in run_columns[index][1]]
        if name not in here or here[name][1] != classes:
            found = f"classes {', '.join(here[name][1])}" if name in here else "no such column"
            raise ConfigError(f"--per-class: {dataset.source} has {found} where the run's generator takes the "
                              f"label column {name!r} with classes {', '.join(classes)}")
        positions[index] = here[name][0]
    name = column if column is not None else next(iter(taken))
    return name, [str(c) for c in run_columns[taken[name]][1]], positions


def _fewest_images(metrics: list[str], settings: MetricSettings) -> int:
    """The smallest set each metric of a class can be computed from: 2 for a covariance or a pair, more than k
    for the k-nearest-neighbour metrics (pr: `pr_k`, dc: its k of 5)."""
    return max([2] + [settings.value("pr_k") + 1 for name in metrics if name == "pr"]
               + [DC_K + 1 for name in metrics if name == "dc"])


def evaluate_run_per_class(run_dir: Path, metrics: list[str], column: str | None = None, *, n: int | None = None,
                           step: int | None = None, real: Path | None = None, inception_weights: Path | None = None,
                           seed: int = 0, fid_mode: str | None = None, settings: MetricSettings | None = None,
                           dinov2_weights: Path | None = None, device: str = "auto",
                           bn: str | None = None) -> dict[str, Any]:
    """The metrics of one checkpoint class by class (`evaluate RUN --per-class`): for each class of a label column
    the generator is conditioned on, that class's training images (at most `n`, a seeded subset; default the run's
    metrics_n) against as many generated images conditioned like them (the class, and the other columns' classes
    of those same images); then the mean over classes of each score. With FID that mean is the intra-class FID of
    conditional GANs (StudioGAN's iFID): a generator that draws every class alike, or collapses within one, scores
    well on FID over all classes and badly here. `real` is another store of the same label columns (the run's data
    moved). Recorded in the run's metrics_per_class.jsonl (a curve of its own: not the run's FID)."""
    run_dir = Path(run_dir)
    settings = settings or MetricSettings()
    settings.check_used(check_metrics(metrics))
    check_weights_used(metrics, inception_weights=inception_weights, dinov2_weights=dinov2_weights)
    fid_mode = chosen_fid_mode(metrics, fid_mode)
    if bn is not None:
        check_bn_mode(run_dir, bn)
    model = load_run(run_dir, step=step, device=device, bn=bn)
    try:
        dataset = open_dataset(real if real is not None else model.config.data)
    except DatasetError as err:
        if real is not None:
            raise
        raise DatasetError(f"{err} (the run's training data, whose classes --per-class reads; moved? name the store "
                           "with --real PATH)") from None
    name, classes, positions = _per_class_columns(model.family, dataset, column)
    split_by = positions[next(index for index in positions
                              if model.family.dataset.label_columns[index][0] == name)]
    metrics, warning = computable_metrics(metrics, inception_weights, dinov2_weights)
    settings = settings.for_metrics(metrics)
    cap = n or model.config.metrics_n
    fewest = _fewest_images(metrics, settings)
    if cap < fewest:
        raise ConfigError(f"--n {cap}: {', '.join(metrics)} of a class need at least {fewest} images of it")
    images = dataset.images(model.plan.resolution)
    rows: dict[str, dict[str, float]] = {}
    left_out = []
    for index, class_name in enumerate(classes):
        members = np.flatnonzero(dataset.labels[:, split_by] == index)
        if len(members) < fewest:
            left_out.append(f"{class_name} ({len(members)} training image{'s' if len(members) != 1 else ''})")
            continue
        if len(members) > cap:
            members = members[random_subset(len(members), cap, seed)]
        labels = torch.zeros(len(members), len(model.family.dataset.label_columns), dtype=torch.long)
        for run_index, store_index in positions.items():  # the run's column layout, which the family reads
            labels[:, run_index] = torch.as_tensor(np.asarray(dataset.labels[members, store_index]))

        def reals(members: np.ndarray = members) -> Iterator[np.ndarray]:  # read batch by batch
            for start in range(0, len(members), METRIC_BATCH):
                yield np.asarray(images[members[start:start + METRIC_BATCH]])

        with model.family.weights_held():
            results = _run_evaluate(
                generated_batches(model.family, model.plan, len(members), derived_seed(seed, index), METRIC_BATCH,
                                  labels=labels),
                reals, metrics, n=len(members), seed=seed, device=model.device, inception_weights=inception_weights,
                fid_mode=fid_mode, settings=settings, dinov2_weights=dinov2_weights)
        rows[class_name] = {"images": len(members), **flat_outputs(results)}
    if not rows:
        raise ConfigError(f"--per-class {name}: no class has the {fewest} training images {', '.join(metrics)} need")
    keys = list(dict.fromkeys(key for row in rows.values() for key in row if key != "images"))
    means = {key: float(np.mean([row[key] for row in rows.values() if key in row])) for key in keys if ranks(key)}
    if model.family.batch_dependent_samples and min(row["images"] for row in rows.values()) < MIN_BATCH_STATISTICS:
        warning = "\n".join(filter(None, [warning, f"note: {BATCH_DEPENDENT_NOTE}; each class's images are made in "
                                                   f"batches of that class alone, here some of fewer than "
                                                   f"{MIN_BATCH_STATISTICS}"]))
    append_record(run_dir / PER_CLASS_METRICS_NAME, {
        "step": model.step, "column": name, "n": cap, "real": resolved_data_spec(str(real) if real is not None
                                                                                else model.config.data),
        "source": "evaluate", "classes": rows, "mean": means, "left_out": left_out,
        **protocol_fields(dict.fromkeys(metrics), fid_mode), **settings.given(),
        **({"bn": str(SamplingBN.parse(bn))} if bn is not None else {})})
    return {"step": model.step, "column": name, "classes": rows, "mean": means, "warning": warning,
            "table": _per_class_table(model.step, name, cap, rows, keys, means, metrics, fid_mode, left_out,
                                      warning)}


def _per_class_table(step: int, column: str, cap: int, rows: dict[str, dict[str, float]], keys: list[str],
                     means: dict[str, float], metrics: list[str], fid_mode: str, left_out: list[str],
                     warning: str) -> str:
    width = max(len("class"), *(len(name) for name in rows))
    widths = {key: max(10, len(key)) for key in keys}

    def cells(values: dict[str, float]) -> str:
        return " ".join(f"{values[key]:{widths[key]}.4f}" if key in values else f"{'-':>{widths[key]}s}"
                        for key in keys)

    lines = [f"step {step}: per class of {column!r}, each class's training images (at most {cap}) against as many "
             "generated images conditioned like them"
             + (f" (Inception metrics: {fid_mode})" if any(METRICS[m].needs_inception for m in metrics) else ""),
             f"{'class':{width}s} {'images':>7s} " + " ".join(f"{key:>{widths[key]}s}" for key in keys)]
    lines += [f"{name:{width}s} {int(row['images']):7d} {cells(row)}" for name, row in rows.items()]
    lines.append(f"{'mean':{width}s} {'':7s} {cells(means)}")
    for key in means:
        having = sum(key in row for row in rows.values())
        if having < len(rows):
            lines.append(f"(mean of {key} over the {having} of {len(rows)} classes that gave a finite value)")
    if "fid" in means:
        lines.append(f"(the mean FID over the {len(rows)} classes is the intra-class FID, StudioGAN's iFID)")
    if left_out:
        lines.append(f"(left out, too few images to compare: {', '.join(left_out)})")
    lines.append(_small_set_notes(metrics, min(int(row["images"]) for row in rows.values())).strip())
    return "\n".join(line for line in lines + [warning] if line)


def is_store(source: Path) -> bool:
    """A ganforge store or a `builtin:` dataset (read through open_dataset), not a folder of images or an .npz."""
    return str(source).startswith("builtin:") or (source / "manifest.json").is_file()


def iter_image_set(source: Path, resolution: int | None = None, sample: int | None = None, seed: int = 0,
                   batch_size: int = 256) -> Iterator[np.ndarray]:
    """A folder of images, an .npz (uint8 NCHW or NHWC) or a store → uint8 NCHW batches (resized to `resolution`;
    with `sample` smaller than the set, a seeded random choice of that many images, `random_subset`, the same one
    a run's evaluation takes from a store). A folder is decoded batch by batch: the statistics of a 50,000-image
    folder need one batch in memory, not the whole set (as pytorch-fid streams)."""
    source = Path(source)
    if source.suffix == ".npz":
        with np.load(source, allow_pickle=False) as archive:
            key = "images" if "images" in archive.files else archive.files[0]
            images = archive[key]
        if images.ndim != 4 or images.dtype != np.uint8:
            raise DatasetError(f"{source}: '{key}' must be uint8 images (N, C, H, W) or (N, H, W, C), got "
                               f"{images.dtype} {images.shape}")
        images = (images if images.shape[1] in (1, 3) else images.transpose(0, 3, 1, 2))
        chosen = _chosen(len(images), sample, seed)
        images = images if chosen is None else images[chosen]  # all: a view, not a second copy of the set
        if resolution is not None and images.shape[-2:] != (resolution, resolution):
            images = np.stack([center_crop_resize(image.transpose(1, 2, 0), resolution).reshape(
                resolution, resolution, -1).transpose(2, 0, 1) for image in images])
        yield images
        return
    if is_store(source):
        dataset = open_dataset(source)
        stored = dataset.images(resolution or dataset.resolution)
        chosen = _chosen(dataset.count, sample, seed)
        picks = range(dataset.count) if chosen is None else chosen
        for start in range(0, len(picks), batch_size):
            part = picks[start:start + batch_size]
            yield np.asarray(stored[part.start:part.stop] if chosen is None else stored[part])
        return
    files = _image_files(source)
    chosen = _chosen(len(files), sample, seed)
    files = files if chosen is None else [files[i] for i in chosen]
    first: tuple[int, ...] | None = None
    for start in range(0, len(files), batch_size):
        images = [_decoded(path, resolution) for path in files[start:start + batch_size]]
        first = first or images[0].shape
        shapes = {first, *(image.shape for image in images)}
        if len(shapes) > 1:
            raise DatasetError(f"{source}: images of different sizes {sorted(shapes)[:3]}; give --resolution R to "
                               "bring every image to R×R (centre crop, then resize)")
        yield np.stack(images)


def _chosen(total: int, sample: int | None, seed: int) -> np.ndarray | None:
    """A random subset of `sample` indices (`random_subset`), or None for all of them."""
    if sample is None or sample >= total:
        return None
    return random_subset(total, sample, seed)


def image_set_channels(source: Path) -> int:
    """The channel count of an image set, read without decoding it: a store's manifest, an .npz array's header; a
    folder's images are read as RGB."""
    source = Path(source)
    if source.suffix == ".npz":
        with zipfile.ZipFile(source) as archive:
            members = [name for name in archive.namelist() if name.endswith(".npy")]
            with archive.open("images.npy" if "images.npy" in members else members[0]) as member:
                version = np.lib.format.read_magic(member)
                shape = (np.lib.format.read_array_header_1_0(member) if version == (1, 0)
                         else np.lib.format.read_array_header_2_0(member))[0]
        return shape[1] if shape[1] in (1, 3) else shape[-1]
    if is_store(source):
        return open_dataset(source).channels
    return 3


def image_set_size(source: Path) -> int:
    """How many images `iter_image_set(source)` yields, without decoding them."""
    source = Path(source)
    if source.suffix == ".npz":
        return sum(len(batch) for batch in iter_image_set(source))
    if is_store(source):
        return open_dataset(source).count
    return len(_image_files(source))


def _image_files(source: Path) -> list[Path]:
    if not source.is_dir():
        raise DatasetError(f"{source}: expected a folder of images, an .npz or a ganforge store")
    if (source / "config.json").is_file() and (source / "checkpoints").is_dir():  # its sample grids are no set
        raise DatasetError(f"{source}: a ganforge run, not a set of images (for real images give its data: a store "
                           "or folder; generated images of a run: --fake RUN)")
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DatasetError(f"{source}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    return files


def _decoded(path: Path, resolution: int | None) -> np.ndarray:
    """One file as uint8 CHW: a square crop resized to `resolution`, or without one the image as it is (pytorch-fid
    and torch-fidelity hand a 178×218 CelebA image whole to Inception's resize; a crop changes its statistics)."""
    try:
        image = load_rgb(path, str(path))
    except ImageError as err:
        raise DatasetError(str(err)) from None
    if resolution is not None and image.shape[:2] != (resolution, resolution):
        image = center_crop_resize(image, resolution)
    return image.transpose(2, 0, 1)


def evaluate_folders(fake: Path, real: Path | None, metrics: list[str], *, n: int | None = None,
                     inception_weights: Path | None = None, seed: int = 0, fid_mode: str | None = None,
                     real_stats: Path | None = None, step: int | None = None,
                     resolution: int | None = None, settings: MetricSettings | None = None,
                     dinov2_weights: Path | None = None, device: str = "auto",
                     net: str | None = None, bn: str | None = None) -> dict[str, Any]:
    """An image set (folder, .npz file or store; brought to `resolution` if given, for folders of mixed sizes), or
    the images a run's EMA generator (or generator `net`, its batch norm on statistics `bn`) makes (newest
    checkpoint, or `step`; `n` of them, default the run's metrics_n), against real images (brought to the fake
    set's image size; each set whole, or `n` of each, SWD on equal counts) or a statistics file. Nothing
    is written to the run: a FID against other statistics, or of another generator, is not its curve. A statistics
    file serves its own network's distance only (FID Inception's, fd_dinov2 DINOv2's)."""
    fid_mode = chosen_fid_mode(metrics, fid_mode)
    settings = settings or MetricSettings()
    settings.check_used(check_metrics(metrics))
    check_weights_used(metrics, inception_weights=inception_weights, dinov2_weights=dinov2_weights)
    if bn is not None and (Path(fake) / "config.json").is_file():
        check_bn_mode(Path(fake), bn)
    if real is not None and real_stats is not None:
        raise ConfigError("evaluate --fake: give the real images (--real) or their statistics (--real-stats), one")
    need_real = [name for name in check_metrics(metrics) if METRICS[name].needs_real]
    if real is None and real_stats is None and need_real:
        raise ConfigError(f"evaluate --fake: {', '.join(need_real)} compare with real images: give them (--real "
                          "DIR_OR_STORE) or their statistics (--real-stats FILE.npz); is and msssim need none")
    stats = None
    if real_stats is not None:  # checked before any work
        stats = read_stats(real_stats, fid_mode)
        check_real_stats_metrics(check_metrics(metrics), stats.network)
    metrics, warning = computable_metrics(metrics, inception_weights, dinov2_weights)
    settings = settings.for_metrics(metrics)  # those of metrics left out (no Inception weights) go with them
    if stats is not None and stats.fid_mode is None and stats.network.startswith("inception"):
        warning = "\n".join(filter(None, [warning, f"note: {real_stats} does not say its FID mode (a file from "
                                                   f"elsewhere); it is compared as {fid_mode} (TTUR's files are "
                                                   "legacy-tf, pytorch-fid's --save-stats files pytorch-fid)"]))
    fake = Path(fake)
    model = load_run(fake, step=step, device=device, bn=bn) if (fake / "config.json").is_file() else None
    if model is not None:
        if model.family.translates:
            raise ConfigError(f"{fake}: a {model.config.family} run translates images; evaluate it with "
                              f"`ganforge evaluate {fake}`")
        if resolution is not None:
            raise ConfigError(f"--resolution {resolution}: {fake} is a run, whose generator makes "
                              f"{model.plan.resolution} px images (the option is for image sets of mixed sizes)")
        real_resolution, available = model.plan.resolution, n or model.config.metrics_n
        if net is not None and net not in model.family.sample_nets():
            raise ConfigError(f"--net {net}: {fake} samples with {', '.join(model.family.sample_nets())}")
    elif given := [f"--{name} {value}" for name, value in (("step", step), ("net", net), ("bn", bn))
                   if value is not None]:
        raise ConfigError(f"{given[0]}: {fake} is an image set, not a run")
    else:  # image sets are read batch by batch: two 50,000-image folders never sit in memory whole
        available = min(n or image_set_size(fake), image_set_size(fake))
        # a fake folder of mixed sizes is refused unless --resolution is given, as `stats` refuses it; reals are
        # brought to the fakes' square size, or read whole beside non-square fakes (as pytorch-fid reads both)
        height, width = next(iter_image_set(fake, batch_size=1)).shape[-2:]
        real_resolution = resolution or (width if height == width else None)
        if real_resolution is None and stats is not None and stats.resolution is not None:
            raise ConfigError(f"--real-stats {real_stats}: statistics of {stats.resolution}×{stats.resolution} px "
                              f"images, and the generated ones are {width}×{height}; FIDs of other image sizes do not "
                              f"compare (--resolution {stats.resolution} brings the generated ones to that size)")
    if stats is not None and real_resolution is not None and stats.resolution not in (None, real_resolution):
        raise ConfigError(f"--real-stats {real_stats}: statistics of {stats.resolution} px images, and the generated "
                          f"ones are {real_resolution} px; FIDs of other image sizes do not compare (`ganforge stats "
                          f"--resolution {real_resolution}` makes statistics at that size)")
    # each set whole (or --n of it), as pytorch-fid and torch-fidelity compare two folders; SWD compares equal
    # counts, a seeded random choice of the smaller set's size from each, in a pass of its own when they differ
    # a run's generated set is n (or metrics_n) images, and so is its real set, as `evaluate RUN --real` compares
    real_count = (min(available if model is not None else n or image_set_size(Path(real)),
                      image_set_size(Path(real))) if real is not None else None)
    for name, count in (("--fake", available), ("--real", real_count)):
        if count is not None and count < 2:
            raise ConfigError(f"{name}: {count} image; the metrics compare distributions of images (a covariance "
                              "needs at least 2, a FID that means something thousands)")
    equal = min(available, real_count) if real_count is not None else available
    passes = [(metrics, available, real_count)]
    if real_count is not None and real_count != available and any(METRICS[m].equal_counts for m in metrics):
        passes = [([m for m in metrics if not METRICS[m].equal_counts], available, real_count),
                  ([m for m in metrics if METRICS[m].equal_counts], equal, equal)]
    fake_channels = model.family.dataset.channels if model is not None else image_set_channels(fake)
    if real is not None and (real_channels := image_set_channels(Path(real))) != fake_channels:
        warning = "\n".join(filter(None, [warning, f"note: the generated images have {fake_channels} channel(s), "
                                                   f"the real ones {real_channels}: grey images are compared as "
                                                   "RGB (repeated), so the sets differ in colour by construction"]))
    warning = "\n".join(filter(None, [warning, _kid_subset_note(metrics, equal, settings)]))
    held = [f"the {name} set holds {count} images" for name, count in (("generated", available),
                                                                          ("real", real_count))
            if n is not None and count is not None and count < n and not (name == "generated" and model)]
    if held:
        warning = "\n".join(filter(None, [warning, f"note: --n {n}: {' and '.join(held)}; all of them were "
                                                   "evaluated"]))
    results: dict[str, Any] = {}
    with model.family.weights_held() if model is not None else contextlib.nullcontext():
        for names, fake_count, reals_count in passes:
            if not names:
                continue
            fake_images = (generated_batches(model.family, model.plan, fake_count, seed, net=net) if model is not None
                           else iter_image_set(fake, resolution, sample=fake_count, seed=seed))
            reals = (iter_image_set(Path(real), real_resolution, sample=reals_count, seed=seed) if real is not None
                     else None)
            try:
                results.update(_run_evaluate(
                    fake_images, reals, names, n=None, seed=seed,
                    device=model.device if model is not None else pick_device(device, DistInfo()),
                    inception_weights=inception_weights, fid_mode=fid_mode,
                    real_stats=stats if stats is not None and _served_by(stats, names) else None,
                    settings=settings.for_metrics(names),
                    dinov2_weights=dinov2_weights))
            except ImageSetError as err:  # sizes that differ, or SWD's square images
                if model is not None or resolution is not None or not (
                        isinstance(err, ImageSizeError) or "must be square" in str(err)):
                    raise
                raise type(err)(f"{err}; --resolution R brings both sets to R×R (centre crop, then resize)") from None
    results = {name: results[name] for name in metrics}
    if stats is not None:
        against = f"the statistics in {real_stats}" + (f" ({stats.count} images)" if stats.count else "")
    else:
        against = f"{real_count} real" if real_count is not None else ""
    if len(passes) > 1:
        against += f" (SWD: a random {equal} of each set, as it compares equal counts)"
    return {"results": results, "warning": warning, "fid_mode": fid_mode,
            "table": _format(None, results, fid_mode, available, against,
                             stats.count if stats is not None else real_count) + (f"\n{warning}" if warning else "")}


def check_bn_mode(run_dir: Path, bn: str) -> None:
    """`--bn` for a run whose generator has batch norm (BigGAN, DCGAN/WGAN), and a mode its family offers."""
    family = read_config_file(Path(run_dir) / "config.json").get("family")
    get_family(family).sampling_bn_settings(SamplingBN.parse(bn))


def _served_by(stats: ReferenceStats, names: list[str]) -> bool:
    """Whether one of the metrics `names` reads statistics of `stats`' network (FID Inception's, FD_DINOv2 DINOv2's)."""
    return any(METRICS[name].real_stats_suffice and METRICS[name].network == stats.network for name in names)


def write_image_set_stats(source: Path, out: Path, *, fid_mode: str | None = None, n: int | None = None,
                          inception_weights: Path | None = None, resolution: int | None = None,
                          device: str = "auto", network: str = "inception",
                          dinov2_weights: Path | None = None, overwrite: bool = False) -> ReferenceStats:
    """`ganforge stats`: the Inception pool3 statistics (or, `network` "dinov2", DINOv2's class-token statistics for
    FD_DINOv2) of an image set (folder, .npz or store; with `n`, a seeded random choice of `n` images,
    `random_subset`; each brought to `resolution` if given, for folders of mixed sizes) written to `out` (.npz,
    pytorch-fid / TTUR layout; an existing file only with `overwrite`). `out`, the weights and the image count are
    checked before the images are read."""
    check_stats_output(out, source, overwrite=overwrite)
    given = {"--fid-mode": fid_mode, "--inception-weights": inception_weights} if network == "dinov2" else {
        "--dinov2-weights": dinov2_weights}
    if unused := [option for option, value in given.items() if value is not None]:
        raise ConfigError(f"{unused[0]}: not for {network} statistics (--network {network})")
    if network == "dinov2":
        weights, fid_mode = resolve_network_weights("dinov2", dinov2_weights=dinov2_weights), None
    else:
        weights, fid_mode = resolve_weights_path(inception_weights), fid_mode or DEFAULT_FID_MODE
    available = image_set_size(Path(source))
    if n is not None and n > available:
        raise ConfigError(f"--n {n}: {source} holds {available} images")
    if min(n or available, available) < 2:
        raise ConfigError(f"{source}: statistics of {min(n or available, available)} image; a covariance needs at "
                          "least 2 (thousands for a FID that means something)")
    stats = image_set_stats(iter_image_set(Path(source), resolution, sample=n), fid_mode=fid_mode,
                            inception_weights=weights if network != "dinov2" else None,
                            dinov2_weights=weights if network == "dinov2" else None, n=n, network=network,
                            device=metrics_device(pick_device(device, DistInfo())))
    write_stats(out, stats, overwrite=overwrite)
    return stats


PAPER_FID_IMAGES = 50_000  # what FID/KID figures in papers are computed from


def _format(step: int | None, results: dict[str, Any], fid_mode: str | None, fakes: int, against: str,
            reals: int | None = None) -> str:
    """The table under a line saying which images it compares: FID's bias grows as the image count falls, so a
    value from fewer images than papers use is not comparable with theirs, and the table says so; a Fréchet
    distance from a set (`fakes`, or the `reals` behind the real features or statistics) no larger than its
    features' width is far off (a covariance of N samples has rank N − 1: pytorch-fid's issues #42, #78)."""
    header = f"{'' if step is None else f'step {step}: '}{fakes} generated images" + (f" against {against}" if against
                                                                                  else "")
    note = ("\n(FID from fewer than the 50,000 generated images papers use is biased upwards: compare it only with "
            "values from as many)" if "fid" in results and fakes < PAPER_FID_IMAGES else "")
    return (f"{header}\n{format_table(results, fid_mode)}{note}"
            f"{_small_set_notes(results, min(fakes, reals or fakes), fakes)}")


def _small_set_notes(metrics: Iterable[str], smallest: int, fakes: int | None = None) -> str:
    """A warning line per Fréchet distance (FID, a block's, FD_DINOv2) measured on a set of `smallest` images, no
    more than its features' width: a covariance of N samples has rank N − 1 (pytorch-fid's issues #42, #78); and
    one for IS on fewer generated images (`fakes`, default `smallest`) than its splits need."""
    note = ""
    for name in metrics:
        width = FEATURE_DIMS.get(METRICS[name].network or "")
        if not METRICS[name].real_stats_suffice or width is None or smallest > width:
            continue
        narrower = [f"fid{w}" for w in INCEPTION_BLOCKS if w < width] if METRICS[name].needs_inception else []
        note += (f"\n(warning: {name} of {width}-d features from a set of {smallest} images, no more than their "
                 "dimensions: its covariance is singular and the distance far above what more images give; use "
                 "more images" + (f", or a narrower Inception block ({', '.join(narrower)}: pytorch-fid's --dims)"
                                  if narrower else "") + ")")
    generated = smallest if fakes is None else fakes  # IS reads the generated images alone
    if "is" in metrics and (splits := inception_score_splits(generated)) < IS_SPLITS:
        note += (f"\n(IS over {splits} split{'s' if splits > 1 else ''} of a set of {generated} images instead of "
                 f"{IS_SPLITS}, so that each split holds at least 2: not comparable with IS over {IS_SPLITS} splits, "
                 "and far below what more images give)")
    return note


def _check_recordable(run: Path, config: dict[str, Any], metrics: list[str] | None, *, per_class: bool = False,
                      ppl: bool = False) -> None:
    """`evaluate RUN` records its values in the run: a run it cannot write to (another user's, a read-only mount)
    fails before the work, not after an hour of it. Appending to metrics.jsonl (metrics_per_class.jsonl) needs the
    file (or, to create it, the folder) writable; swd.json and StarGAN v2's eval/ records are written by replacing
    files in their folder."""
    if not config:  # not a run: loading it says so
        return
    family = config.get("family")
    if family == "stargan2":
        needed = [run / "eval" if (run / "eval").is_dir() else run]
    elif per_class or ppl:
        rows = run / (PER_CLASS_METRICS_NAME if per_class else "metrics.jsonl")
        needed = [rows if rows.exists() else run]
    else:
        rows = run / "metrics.jsonl"
        needed = [rows if rows.exists() else run] + ([run] if "swd" in check_metrics(metrics or ["swd"]) else [])
    blocked = [path for path in needed if not os.access(path, os.W_OK)]
    if blocked:
        elsewhere = ("" if family == "stargan2" else f", or `ganforge evaluate --fake {shlex.quote(str(run))} --real "
                     f"{shlex.quote(str(config.get('data')))}` (with the same --metrics, --n and --step), which "
                     "computes the same values without recording them")
        raise ConfigError(f"{blocked[0]} is not writable, and `ganforge evaluate RUN` records its values in the run; "
                          f"copy the run somewhere writable{'' if per_class or ppl else elsewhere}")


def evaluate_saved_run(run: str | Path, metrics: list[str] | None = None, *, n: int | None = None,
                       step: int | None = None, all_steps: bool = False, real: str | Path | None = None,
                       inception_weights: str | Path | None = None, val: str | Path | None = None,
                       fid_network: str | None = None, alexnet_weights: str | Path | None = None,
                       wing_weights: str | Path | None = None, fid_mode: str | None = None,
                       settings: MetricSettings | None = None, dinov2_weights: str | Path | None = None,
                       device: str = "auto", bn: str | None = None, per_class: bool = False,
                       class_column: str | None = None, ppl: str | None = None, ppl_crop: bool = True) -> str:
    """A saved run judged as its family is (`ganforge evaluate RUN`), as a printable table: image-to-image
    (stargan2) runs by the StarGAN v2 paper's protocol (LPIPS diversity and FID per domain task, `n` capping the
    validation sources per domain), every other family by `metrics` (default SWD) against real images, or with
    `per_class` class by class (`evaluate_run_per_class`, by `class_column` where the generator takes several), or
    with `ppl` ("full", "end") by its perceptual path length alone (`evaluate_run_ppl`). Options that would do
    nothing for the run's family are refused."""
    saved = Path(run) / "config.json"
    config = read_config_file(saved) if saved.is_file() else {}
    family = config.get("family")
    if class_column is not None and not per_class:
        raise ConfigError(f"--class-column {class_column}: for --per-class (which column's classes to split by)")
    if not ppl_crop and ppl is None:
        raise ConfigError("--ppl-crop off: for --ppl (the path length's image crop)")
    _check_recordable(Path(run), config, metrics, per_class=per_class, ppl=ppl is not None)
    image_to_image_only = {"--val": val, "--fid-network": fid_network, "--alexnet-weights": alexnet_weights,
                           "--wing-weights": wing_weights}
    if family == "stargan2":
        given = [flag for flag, value in {"--metrics": metrics, "--all": all_steps or None, "--fid-mode": fid_mode,
                                          "--dinov2-weights": dinov2_weights, "--bn": bn,
                                          "--kid-subsets/--kid-subset-size/--pr-k": settings and settings.given(),
                                          "--per-class": per_class, "--ppl": ppl}.items() if value]
        if given:
            raise ConfigError(f"{' and '.join(given)}: a stargan2 run is evaluated by the StarGAN v2 protocol "
                              "(LPIPS and FID per domain task); leave them out")
        from ganforge.evaluation.stargan2 import DEFAULT_FID_NETWORK, evaluate_stargan2

        report = evaluate_stargan2(run, step=step, val=val, train=real,
                                   fid_network=fid_network or DEFAULT_FID_NETWORK, inception_weights=inception_weights,
                                   alexnet_weights=alexnet_weights, max_val=n, wing_weights=wing_weights,
                                   device=device)
        protocol = report["protocol"]
        return "\n".join([f"step {report['step']}; FID by {protocol['fid_network']}: "
                          f"{protocol['fid_network_description']}"]
                         + [f"  {key:32s} {value:10.4f}" for key, value in report["metrics"].items()])
    given = [flag for flag, value in image_to_image_only.items() if value is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: only for stargan2 runs, and {run} is not one")
    if ppl is not None:
        given = [flag for flag, value in {"--metrics": metrics, "--per-class": per_class, "--all": all_steps,
                                          "--real": real, "--fid-mode": fid_mode, "--inception-weights":
                                          inception_weights, "--dinov2-weights": dinov2_weights,
                                          "--kid-subsets/--kid-subset-size/--pr-k": settings and settings.given()
                                          }.items() if value]
        if given:
            raise ConfigError(f"--ppl with {' and '.join(given)}: the path length is measured on its own, from "
                              "the generator alone (evaluate the other metrics in a second command)")
        return evaluate_run_ppl(Path(run), ppl, n=n, step=step, crop=ppl_crop, device=device, bn=bn)["table"]
    if per_class:
        if all_steps:
            raise ConfigError("--per-class with --all: it evaluates one checkpoint (--step, default the newest)")
        if real is not None and not is_store(Path(real)):
            raise ConfigError(f"--real {real} with --per-class: a store holding the run's label columns (a folder "
                              "has no classes)")
        return evaluate_run_per_class(Path(run), metrics or ["swd"], class_column, n=n, step=step,
                                      real=Path(real) if real is not None else None,
                                      inception_weights=inception_weights, fid_mode=fid_mode, settings=settings,
                                      dinov2_weights=dinov2_weights, device=device, bn=bn)["table"]
    return evaluate_run(Path(run), metrics or ["swd"], n=n, step=step, all_steps=all_steps, real=real,
                        inception_weights=inception_weights, fid_mode=fid_mode, settings=settings,
                        dinov2_weights=dinov2_weights, device=device, bn=bn)["table"]
