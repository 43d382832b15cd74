"""StarGAN v2 evaluation as in the paper (official `metrics/eval.py`): per task FID and LPIPS diversity.

For each mode (latent, reference), each target domain trg and each source domain src ≠ trg (task "src2trg"):
every validation image of src is translated `num_outs` = 10 times (latent: a fresh z ~ N(0, I) per output, no
truncation; reference: per output a random validation image of trg through E). LPIPS diversity is the mean over
the 45 pairs of the 10 outputs of a source batch (each pair averaged over the batch), averaged over batches; FID
compares all outputs of the task with the *training* images of trg. Both are then averaged over tasks. As
officially, LPIPS sees the raw generator outputs and FID the images as saved (clamped, quantised to uint8).

With w_hpf > 0 the generator gets the face masks of each source batch (the official FAN), as officially.

FID feature network (`fid_network`):
- "torchvision-inception" (default: the paper's numbers): torchvision's ImageNet `inception_v3` as the official
  StarGAN v2 code uses it (average pools counting padding, images resized to 299 with PIL bilinear, ImageNet
  mean/std, no `transform_input`), from torchvision's `inception_v3_google-0cc3c7bd.pth` (argument,
  $GANFORGE_TORCHVISION_INCEPTION_WEIGHTS, cache, checked download);
- "tf-inception": the TF FID Inception of `ganforge.metrics.inception` (the FID numbers of most other papers).
The report says which network produced the FID. Outputs go to `RUN/eval/stargan2-<step>.json`. Everything runs
on the CPU too.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ganforge.config import ConfigError
from ganforge.data.store import DatasetError, ImageDataset, open_dataset
from ganforge.download import WeightsFile, locate_weights
from ganforge.metrics._images import derived_seed, to_uint8_images
from ganforge.metrics.fid import FeatureStats, fid
from ganforge.metrics.float32 import reference_float32
from ganforge.metrics.inception import InceptionV3FID, InceptionWeightsError, default_cache_dir, load_inception
from ganforge.metrics.lpips import ALEXNET_ENV, LPIPS, LPIPSWeightsError, load_lpips, pairwise_diversity
from ganforge.run_loader import load_run
from ganforge.safe_load import check_layout, load_weights_only

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]  # uint8 N x 3 x H x W → features [N, D]
FID_NETWORKS = {  # name → what it is, for the report
    "torchvision-inception": "torchvision ImageNet Inception-v3 (the official StarGAN v2 evaluation)",
    "tf-inception": "TF FID Inception (pytorch-fid / torch-fidelity weights)",
}
DEFAULT_FID_NETWORK = "torchvision-inception"
MODES = ("latent", "reference")
TORCHVISION_INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
TORCHVISION_INCEPTION_ENV = "GANFORGE_TORCHVISION_INCEPTION_WEIGHTS"
TORCHVISION_INCEPTION = WeightsFile(
    "inception_v3_google-0cc3c7bd.pth", TORCHVISION_INCEPTION_URL, TORCHVISION_INCEPTION_ENV,
    "--inception-weights (Python: inception_weights=)",
    "The torchvision ImageNet Inception-v3 weights (StarGAN v2's FID network)", "0cc3c7bd")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --- torchvision's ImageNet Inception (the official StarGAN v2 FID network) ---------------------------------

def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1)  # torchvision counts the zero padding (TF-FID does not)


class TorchvisionInception(InceptionV3FID):
    """torchvision `inception_v3` up to its 2048-d average pool: the FID Inception's modules and names (so the
    torchvision file loads, its `fc` and `AuxLogits` ignored), with torchvision's pooling in the A, C, E blocks."""

    def __init__(self) -> None:
        super().__init__()
        del self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # ImageNet-normalised float N x 3 x 299 x 299
        x = F.max_pool2d(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))), 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        for a in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d):
            x = torch.cat([a.branch1x1(x), a.branch5x5_2(a.branch5x5_1(x)),
                           a.branch3x3dbl_3(a.branch3x3dbl_2(a.branch3x3dbl_1(x))), a.branch_pool(_pool(x))], 1)
        x = self.Mixed_6a(x)
        for c in (self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e):
            dbl = c.branch7x7dbl_3(c.branch7x7dbl_2(c.branch7x7dbl_1(x)))
            x = torch.cat([c.branch1x1(x), c.branch7x7_3(c.branch7x7_2(c.branch7x7_1(x))),
                           c.branch7x7dbl_5(c.branch7x7dbl_4(dbl)), c.branch_pool(_pool(x))], 1)
        x = self.Mixed_7a(x)
        for e in (self.Mixed_7b, self.Mixed_7c):
            b3 = e.branch3x3_1(x)
            dbl = e.branch3x3dbl_2(e.branch3x3dbl_1(x))
            x = torch.cat([e.branch1x1(x), e.branch3x3_2a(b3), e.branch3x3_2b(b3), e.branch3x3dbl_3a(dbl),
                           e.branch3x3dbl_3b(dbl), e.branch_pool(_pool(x))], 1)
        return x.mean(dim=(2, 3))


def load_torchvision_inception(weights: str | Path | None = None,
                               cache_dir: str | Path | None = None) -> TorchvisionInception:
    """torchvision's ImageNet Inception-v3 from its weights file (argument, $GANFORGE_TORCHVISION_INCEPTION_WEIGHTS,
    else the cache, downloaded there once and checked against torchvision's published digest prefix)."""
    path = locate_weights(TORCHVISION_INCEPTION, weights, Path(cache_dir or default_cache_dir() / "weights"),
                          InceptionWeightsError)
    state = load_weights_only(path, what="torchvision Inception weights", error=InceptionWeightsError)
    model = TorchvisionInception()
    expected = model.state_dict()
    kept = {k: v for k, v in state.items() if not k.startswith(("AuxLogits.", "fc."))}
    check_layout(kept, expected, source=path, layout="torchvision's inception_v3 layout", error=InceptionWeightsError)
    model.load_state_dict({**expected, **kept})
    return model.eval().requires_grad_(False)


def torchvision_preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW → the official eval loader's input: PIL bilinear resize to 299, [0, 1], ImageNet mean/std."""
    resized = [np.asarray(Image.fromarray(image.permute(1, 2, 0).numpy()).resize((299, 299), Image.BILINEAR))
               for image in images]
    x = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def fid_extractor(network: str = DEFAULT_FID_NETWORK, weights: str | Path | None = None,
                  device: torch.device | str = "cpu") -> FeatureExtractor:
    """The 2048-d pool-feature function of the chosen FID network."""
    if network == "tf-inception":
        inception = load_inception(weights, device)
        return lambda images: inception(images.to(device))[0].cpu()
    if network == "torchvision-inception":
        net = load_torchvision_inception(weights).to(device)
        return lambda images: net(torchvision_preprocess(images).to(device)).cpu()
    raise ValueError(f"fid_network: {network!r} is not one of {', '.join(FID_NETWORKS)}")


# --- the evaluation -------------------------------------------------------------------------------------------

def _domain_labels(store: ImageDataset, column: str, domains: list[str], role: str) -> np.ndarray:
    names = [name for name, _ in store.label_columns]
    if column not in names:
        raise DatasetError(f"{role} store {store.source} has no label column {column!r} (it has {names})")
    classes = store.label_columns[names.index(column)][1]
    if classes != domains:
        raise DatasetError(f"{role} store {store.source}: column {column!r} has domains {classes}, the run has "
                           f"{domains}")
    return np.asarray(store.labels[:, names.index(column)])


def default_val_store(train: str | Path) -> Path:
    """`X/val` beside a training store `X/train` (the layout `ganforge prepare celeba-domains|domains` writes)."""
    train = Path(train)
    candidate = train.parent / "val"
    if train.name != "train" or not (candidate / "manifest.json").is_file():
        raise DatasetError(f"no validation store found beside {train} (expected {candidate}); pass val=STORE "
                           "(--val), e.g. the OUT/val written by `ganforge prepare celeba-domains`")
    return candidate


def _float_images(store: ImageDataset, size: int, indices: np.ndarray, device: torch.device) -> torch.Tensor:
    images = torch.from_numpy(np.ascontiguousarray(store.images(size)[indices]))
    return (images.float() / 127.5 - 1.0).to(device)


@torch.no_grad()
@reference_float32()
def evaluate_stargan2(run: str | Path, *, step: int | None = None, val: str | Path | None = None,
                      train: str | Path | None = None, modes: tuple[str, ...] = MODES, num_outs: int = 10,
                      batch_size: int = 32, max_val: int | None = None, max_train: int | None = None,
                      seed: int = 777, fid_network: str = DEFAULT_FID_NETWORK,
                      inception_weights: str | Path | None = None, alexnet_weights: str | Path | None = None,
                      wing_weights: str | Path | None = None, device: str = "auto",
                      feature_extractor: FeatureExtractor | None = None, lpips: LPIPS | None = None,
                      write: bool = True) -> dict[str, Any]:
    """LPIPS_<mode>/<task>, FID_<mode>/<task> and their /mean over tasks for a stargan2 run (EMA networks).

    `train` defaults to the run's data store, `val` to the `val` store beside it. `max_val` / `max_train` cap the
    sources per domain and the real images per domain (None: all, as the paper). `feature_extractor` and `lpips`
    replace the networks built from the weights (tests, other protocols). `wing_weights`: the FAN weights of a
    w_hpf > 0 model (default: the run's model.wing_weights, $GANFORGE_WING_WEIGHTS, the cache).
    """
    if num_outs < 2:
        raise ValueError(f"num_outs: LPIPS diversity needs at least 2 outputs per source, got {num_outs}")
    if fid_network not in FID_NETWORKS:
        raise ValueError(f"fid_network: {fid_network!r} is not one of {', '.join(FID_NETWORKS)}")
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"modes: {list(modes)} must be a non-empty subset of {list(MODES)}")
    model = load_run(run, step=step, device=device)
    if model.config.family != "stargan2":
        raise ValueError(f"{run}: evaluate_stargan2 needs a stargan2 run, this one is {model.config.family!r}")
    model.family.load_fan(wing_weights)  # w_hpf > 0: masks as officially, or a one-line refusal before any work
    train_store = open_dataset(train or model.config.data)
    val_store = open_dataset(val or default_val_store(train_store.source))  # the store opened (OUT/train for OUT)
    extract = feature_extractor or fid_extractor(fid_network, inception_weights, model.device)
    lpips = lpips if lpips is not None else load_lpips(alexnet_weights, model.device)
    results, tasks, real_counts = translation_scores(
        model.family, model.nets, train_store, val_store, modes=modes, num_outs=num_outs, batch_size=batch_size,
        max_val=max_val, max_train=max_train, seed=seed, extract=extract, lpips=lpips)
    report = {"step": model.step, "metrics": results,
              "protocol": {"fid_network": "custom" if feature_extractor else fid_network,
                           "fid_network_description": "a caller's feature extractor" if feature_extractor
                           else FID_NETWORKS[fid_network], "face_masks": model.family.arch.w_hpf > 0,
                           "num_outs": num_outs, "seed": seed, "sources_per_task": tasks,
                           "real_images_per_domain": real_counts,
                           "train": str(train_store.source), "val": str(val_store.source)}}
    if write:
        run_dir = Path(run) if Path(run).is_dir() else Path(run).parent.parent  # RUN/checkpoints/<step>.json
        path = run_dir / "eval" / f"stargan2-{model.step:08d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(partial, path)
        report["path"] = str(path)
    return report


def check_protocol_ready(train_source: str | Path, metrics: list[str], inception_weights: str | Path | None = None,
                         device: torch.device | str = "cpu", *, load_networks: bool = True) -> None:
    """Before training with the protocol at metric ticks: the validation store beside the training store, and
    (`load_networks`: on the rank that evaluates) the metric networks of `metrics`, loaded now (and kept for the
    ticks), so a missing or wrong file fails before the first step, not hours into the run. `inception_weights` is
    torchvision's Inception file here."""
    try:
        default_val_store(train_source)
    except DatasetError:
        raise ConfigError(f"metrics: the StarGAN v2 protocol translates the validation images, and there is no "
                          f"validation store beside the training store {train_source} (expected "
                          f"{Path(train_source).parent / 'val'}: `ganforge prepare domains|celeba-domains` writes "
                          "OUT/train and OUT/val)") from None
    if not load_networks:
        return
    try:
        if "fid" in metrics:
            _cached_extractor(None if inception_weights is None else str(inception_weights), str(device))
        if "lpips" in metrics:
            _cached_lpips(str(device))
    except (InceptionWeightsError, LPIPSWeightsError) as err:
        raise ConfigError(f"metrics: {err} (a training run takes torchvision's Inception file as inception_weights "
                          f"and the AlexNet file through ${ALEXNET_ENV} or the cache)") from err


@functools.lru_cache(maxsize=2)
def _cached_extractor(weights: str | None, device: str) -> FeatureExtractor:
    return fid_extractor(DEFAULT_FID_NETWORK, weights, device)


@functools.lru_cache(maxsize=2)
def _cached_lpips(device: str) -> LPIPS:
    return load_lpips(None, device)


# The training images' statistics of the run being trained: they do not change between its metric ticks, and a
# dataset of StarGAN v2's size (AFHQ: 14,630 images) would otherwise go through Inception again at each one.
_training_real_stats: tuple[tuple, FeatureExtractor, dict[int, FeatureStats]] | None = None


def protocol_scores(family: Any, train_store: ImageDataset, metrics: list[str], *, max_val: int | None,
                    inception_weights: str | Path | None = None) -> dict[str, float | str]:
    """The protocol at a training run's metric tick (official eval_every): the EMA networks as they are now, the
    validation store beside the training store, the paper's FID network; the metric networks are kept between
    ticks. Flat values (FID_latent/mean, ...) plus "fid_network" when FID is among them."""
    global _training_real_stats
    val_store = open_dataset(default_val_store(train_store.source))
    device = str(family.device)
    extract = _cached_extractor(None if inception_weights is None else str(inception_weights), device) \
        if "fid" in metrics else None
    lpips = _cached_lpips(device) if "lpips" in metrics else None
    real_stats = None
    if extract is not None:
        key = (train_store.fingerprint, family.domain_column, tuple(family.domain_names), family.img_size)
        if _training_real_stats is None or _training_real_stats[0] != key or _training_real_stats[1] is not extract:
            _training_real_stats = (key, extract, domain_feature_stats(train_store, family, extract))
        real_stats = _training_real_stats[2]
    results, _, _ = translation_scores(family, family.nets, train_store, val_store, max_val=max_val,
                                       extract=extract, lpips=lpips, real_stats=real_stats)
    return {**results, **({"fid_network": DEFAULT_FID_NETWORK} if extract is not None else {})}


@torch.no_grad()
@reference_float32()
def domain_feature_stats(train_store: ImageDataset, family: Any, extract: FeatureExtractor, *,
                         max_train: int | None = None, batch_size: int = 32) -> dict[int, FeatureStats]:
    """Feature statistics of the training images of each target domain: the real side of the protocol's FID."""
    labels = _domain_labels(train_store, family.domain_column, family.domain_names, "training")
    real_stats: dict[int, FeatureStats] = {}
    for trg in range(len(family.domain_names)):
        members = np.flatnonzero(labels == trg)[:max_train]
        for start in range(0, len(members), batch_size):
            images = torch.from_numpy(np.ascontiguousarray(
                train_store.images(family.img_size)[members[start:start + batch_size]]))
            features = extract(to_uint8_images(images)).double()
            real_stats.setdefault(trg, FeatureStats(features.shape[1])).update(features)
    return real_stats


def _reference_batches(refs: np.ndarray, batch_size: int, generator: torch.Generator) -> Iterator[np.ndarray]:
    """The official reference loader of one task: shuffled epochs of the target domain's references served in whole
    batches (drop_last), so the outputs of one source take distinct references until an epoch runs out. A domain
    with fewer references than a batch (the official loader then has no batch and stops) serves all of them."""
    size = min(batch_size, len(refs))
    while True:
        order = refs[torch.randperm(len(refs), generator=generator).numpy()]
        for start in range(0, len(order) - size + 1, size):
            yield order[start:start + size]


@torch.no_grad()
@reference_float32()
def translation_scores(family: Any, nets: dict[str, torch.nn.Module], train_store: ImageDataset,
                       val_store: ImageDataset, *, modes: tuple[str, ...] = MODES, num_outs: int = 10,
                       batch_size: int = 32, max_val: int | None = None, max_train: int | None = None,
                       seed: int = 777, extract: FeatureExtractor | None, lpips: LPIPS | None,
                       real_stats: dict[int, FeatureStats] | None = None
                       ) -> tuple[dict[str, float], dict[str, int], dict[str, int]]:
    """The protocol's values for the networks as they are (a saved run's, or a training run's at a metric tick):
    (FID_<mode>/<task> and LPIPS_<mode>/<task> with their /mean, sources per task, real images per domain).
    `extract` None leaves FID out, `lpips` None LPIPS; the translations are the same either way. `real_stats`
    (domain_feature_stats of `train_store` by `extract`) saves computing them again."""
    if extract is None and lpips is None:
        raise ValueError("translation_scores: nothing to compute (neither a FID feature extractor nor LPIPS)")
    dev = family.device
    domains, column, size = family.domain_names, family.domain_column, family.img_size
    val_labels = _domain_labels(val_store, column, domains, "validation")
    if real_stats is None:
        real_stats = {} if extract is None else domain_feature_stats(train_store, family, extract,
                                                                     max_train=max_train, batch_size=batch_size)

    results: dict[str, Any] = {}
    tasks: dict[str, int] = {}
    for mode_index, mode in enumerate(modes):
        lpips_values, fid_values = [], []
        for trg, trg_name in enumerate(domains):
            refs = np.flatnonzero(val_labels == trg)
            for src, src_name in enumerate(domains):
                if src == trg:
                    continue
                task = f"{src_name}2{trg_name}"
                sources = np.flatnonzero(val_labels == src)[:max_val]
                if len(sources) == 0 or (mode == "reference" and len(refs) == 0):
                    raise DatasetError(f"validation store {val_store.source} has no images of domain "
                                       f"{src_name if len(sources) == 0 else trg_name!r} for task {task}")
                tasks[task] = len(sources)
                generator = torch.Generator().manual_seed(derived_seed(seed, mode_index, src, trg))
                references = _reference_batches(refs, batch_size, generator) if mode == "reference" else None
                fake_stats: FeatureStats | None = None
                batch_scores = []
                for start in range(0, len(sources), batch_size):
                    x = _float_images(val_store, size, sources[start:start + batch_size], dev)
                    masks = family.face_masks(x)
                    y_trg = torch.full((len(x),), trg, device=dev)
                    outputs = []
                    for _ in range(num_outs):
                        if mode == "latent":
                            z = torch.randn(len(x), family.config.latent_dim, generator=generator).to(dev)
                            style = nets["F_ema"](z, y_trg)
                        else:
                            drawn = next(references)
                            chosen = drawn[np.arange(len(x)) % len(drawn)]
                            style = nets["E_ema"](_float_images(val_store, size, chosen, dev), y_trg)
                        out = nets["G_ema"](x, style, masks)
                        outputs.append(out)
                        if extract is None:
                            continue
                        features = extract(to_uint8_images(out)).double()
                        if fake_stats is None:
                            fake_stats = FeatureStats(features.shape[1])
                        fake_stats.update(features)
                    if lpips is not None:
                        batch_scores.append(pairwise_diversity(lpips, outputs))
                if lpips is not None:
                    results[f"LPIPS_{mode}/{task}"] = float(np.mean(batch_scores))
                    lpips_values.append(results[f"LPIPS_{mode}/{task}"])
                if extract is not None:
                    results[f"FID_{mode}/{task}"] = fid(fake_stats, real_stats[trg])
                    fid_values.append(results[f"FID_{mode}/{task}"])
        if lpips is not None:
            results[f"LPIPS_{mode}/mean"] = float(np.mean(lpips_values))
        if extract is not None:
            results[f"FID_{mode}/mean"] = float(np.mean(fid_values))
    return results, tasks, {d: real_stats[k].count for k, d in enumerate(domains) if k in real_stats}
