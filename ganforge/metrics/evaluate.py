"""One entry point for every metric: `evaluate(fake, real, ["swd", "fid", ...])`; what each metric computes from
the pass is its record in `ganforge.metrics.registry`.

Each set is read once, batch by batch: the same batches feed SWD's streaming state, MS-SSIM's pairs and one
Inception pass whose pool features and logits serve FID, KID and IS together (VGG-16's fc2 serves
precision/recall, DINOv2's class token fd_dinov2). Memory stays bounded: uint8 batches, SWD spills its images to a
temporary file, and only features are kept (Inception's N x 2048 float32 and N x 1008 logits, VGG-16's N x 4096,
DINOv2's N x 1024). Real-set features can be cached on disk
(safetensors + JSON, no pickle) under a caller-given key, e.g. "<dataset fingerprint>-<resolution>-<count>", the
weights file and the resize protocol (for Inception the FID mode, see `ganforge.metrics.inception`): a cache of one
mode never serves another.
FID (and FD_DINOv2) can also be computed against the real set's feature mean and covariance alone (`real_stats`,
e.g. read from a statistics file by `ganforge.metrics.fid_stats`).

Conventions: float images are generator outputs in [-1, 1], quantised like the official PGGAN code
(see `ganforge.metrics._images`); KID uses 100 subsets of min(1000, N) like stylegan2-ada, with
torch-fidelity's subset seed 2020 (`MetricSettings` chooses other subsets, and precision/recall's k); IS uses 10
splits (fewer if fewer images) and seed 2020.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ganforge.download import file_digest
from ganforge.metrics._images import ImageSource, derived_seed, iter_image_batches, limit_images
from ganforge.metrics.dinov2 import DINOV2_PROTOCOL, load_dinov2, resolve_dinov2_weights
from ganforge.metrics.fid import Gaussian
from ganforge.metrics.float32 import reference_float32
from ganforge.metrics.inception import (
    DEFAULT_FID_MODE,
    check_fid_mode,
    default_cache_dir,
    load_inception,
    resolve_weights_path,
)
from ganforge.metrics.msssim import MSSSIMPairs
from ganforge.metrics.ranks import RankShare
from ganforge.metrics.registry import (  # noqa: F401 (format_table and the error: re-exported for callers)
    METRICS,
    MetricInputs,
    MetricSettings,
    UnknownMetricError,
    check_metrics,
    check_real_stats_metrics,
    format_table,
    model_of,
)
from ganforge.metrics.swd import SWDStats
from ganforge.metrics.vgg16_fc2 import VGG16_PROTOCOL, load_vgg16_fc2
from ganforge.metrics.vgg_texture import resolve_vgg_weights


class _SetReader:
    """Everything one pass over a set computes: SWD state and each feature network's outputs."""

    def __init__(self, swd_seed: int | None, networks: dict[str, _FeatureNetwork], device: torch.device | str | None,
                 batch_size: int, *, only_real_keys: bool = False) -> None:
        self.swd = SWDStats(seed=swd_seed, device=device, batch_size=batch_size) if swd_seed is not None else None
        self.networks, self.count = networks, 0
        self.outputs: dict[str, list[torch.Tensor]] = {}
        self.only_real_keys = only_real_keys  # the real set: its features, not Inception's logits (IS reads fakes)

    @property
    def output_keys(self) -> list[str]:
        return [key for network in self.networks.values() for key in network.output_keys
                if not self.only_real_keys or key == network.real_key]

    @torch.no_grad()
    def outputs_of(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """The feature networks' outputs of one batch, on the CPU (what each rank computes of its own batches);
        one Inception pass serves pool3, the logits and every block asked for."""
        passes: dict[int, dict[str, torch.Tensor]] = {}
        return {key: value.cpu() for network in self.networks.values() for key, value in network(batch, passes).items()
                if not self.only_real_keys or key == network.real_key}

    def add(self, count: int, batch: torch.Tensor | None, outputs: dict[str, torch.Tensor]) -> None:
        """One batch of the set, in the set's order: its `count` images (`batch`, which SWD reads) and features."""
        if self.swd is not None:
            self.swd.update(batch)
        for key, value in outputs.items():
            self.outputs.setdefault(key, []).append(value)
        self.count += count

    def joined(self, key: str) -> torch.Tensor:
        return torch.cat(self.outputs[key])


def _read_set(batches: Iterable[torch.Tensor], reader: _SetReader, share: RankShare | None, *, with_images: bool,
              pairs: MSSSIMPairs | None = None) -> int:
    """Feed a set's batches to `reader` (and to MS-SSIM's `pairs`); returns the set's image count. Spread over
    ranks (`share`: each rank's `batches` are its own global batches), every rank computes its batches' features and
    rank 0 adds all of them in the global order; the images travel too where SWD or MS-SSIM read them
    (`with_images`, the same on every rank)."""
    if share is None:
        for batch in batches:
            reader.add(batch.shape[0], batch, reader.outputs_of(batch))
            if pairs is not None:
                pairs.update(batch)
        return reader.count
    keys, batches = reader.output_keys, iter(batches)
    total, error = 0, None
    while True:
        batch, outputs = None, {}
        if error is None:
            try:
                batch = next(batches, None)
                outputs = reader.outputs_of(batch) if batch is not None else {}
                if any(value.dtype != torch.float32 for value in outputs.values()):  # gathers read float32 bytes
                    raise TypeError(f"metrics over ranks: expected float32 features, got "
                                    f"{ {key: str(value.dtype) for key, value in outputs.items()} }")
            except Exception as err:  # noqa: BLE001 (every rank hears of it at the exchange: RankShare.agree)
                error, batch = err, None
        held = batch is not None
        table = share.agree(error, [held, batch.shape[0] if held else 0, *(batch.shape[1:] if held else (0, 0, 0)),
                                    *(outputs[key].shape[1] if held else 0 for key in keys)])
        if not int(table[:, 0].sum()):  # no rank had a batch left
            return total
        counts, widest = table[:, 1].tolist(), table.max(dim=0).values.tolist()  # shapes: from a rank with a batch
        total += sum(counts)
        rows = max(counts)
        images = share.gather(_padded(batch, rows, widest[2:5], torch.uint8)) if with_images else []
        features = {key: share.gather(_padded(outputs.get(key), rows, widest[5 + i : 6 + i], torch.float32))
                    for i, key in enumerate(keys)}
        if not share.is_main:
            continue
        try:  # rank 0 alone; an error here is told to the others at the next exchange
            for rank, n in enumerate(counts):
                if n:
                    part = images[rank][:n] if with_images else None
                    reader.add(n, part, {key: features[key][rank][:n] for key in keys})
                    if pairs is not None:
                        pairs.update(part)
        except Exception as err:  # noqa: BLE001
            error = err


def _padded(tensor: torch.Tensor | None, rows: int, shape: list[int], dtype: torch.dtype) -> torch.Tensor:
    """`tensor` (None: no batch this round) with zero rows added up to `rows`: gathers take equal shapes."""
    padding = torch.zeros(rows - (0 if tensor is None else tensor.shape[0]), *shape, dtype=dtype)
    return padding if tensor is None else torch.cat([tensor, padding])


class _FeatureNetwork:
    """A pretrained network the metrics read, by the names of its outputs: Inception's "pool" and "logits",
    DINOv2's "dinov2", VGG-16's "vgg16", and Inception's earlier blocks as networks of their own ("inception768":
    its Mixed_6e features, pytorch-fid's --dims 768); its weights file and resize protocol identify its real-set
    features."""

    def __init__(self, name: str, model: torch.nn.Module, weights_path: Path, protocol: str) -> None:
        self.name, self.model, self.weights_path, self.protocol = name, model, weights_path, protocol

    def __call__(self, batch: torch.Tensor, passes: dict[int, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """This network's outputs of `batch` (uint8 on the CPU: a PIL resize reads it there, the network moves the
        rest); `passes` holds the batch's Inception outputs by model, computed once for pool3 and its blocks."""
        if not self.name.startswith("inception"):
            return {self.name: self.model(batch)}
        if id(self.model) not in passes:
            passes[id(self.model)] = self.model.features(batch)
        out = passes[id(self.model)]
        if self.name == "inception":
            return {"pool": out["2048"], "logits": out["logits_unbiased"]}
        return {self.name: out[self.name.removeprefix("inception")]}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def output_keys(self) -> tuple[str, ...]:
        return ("pool", "logits") if self.name == "inception" else (self.name,)

    @property
    def real_key(self) -> str:
        """The output the real set's features are kept (and cached) under."""
        return "pool" if self.name == "inception" else self.name


def resolve_network_weights(network: str, *, inception_weights: str | Path | None = None,
                            dinov2_weights: str | Path | None = None) -> Path:
    """A feature network's weights file: the one given, else its environment variable, else the cache (downloaded
    there once); a network's own error (InceptionWeightsError, ...) names the file and where to put it."""
    if model_of(network) == "inception":  # its blocks ("inception768") too
        return resolve_weights_path(inception_weights)
    if network == "dinov2":
        return resolve_dinov2_weights(dinov2_weights)
    if network == "vgg16":  # precision/recall's network: its path by $GANFORGE_VGG16_WEIGHTS
        return resolve_vgg_weights("vgg16", option="")
    raise ValueError(f"no feature network {network!r} (inception, dinov2, vgg16)")


def _feature_networks(wanted: list[Any], *, inception_weights: str | Path | None,
                      dinov2_weights: str | Path | None, device: torch.device | str | None,
                      fid_mode: str) -> dict[str, _FeatureNetwork]:
    device = torch.device(device or "cpu")
    if device.type == "cuda" and device.index is None:  # one cache entry per GPU, however it was named
        device = torch.device("cuda", torch.cuda.current_device())
    networks: dict[str, _FeatureNetwork] = {}
    for name in dict.fromkeys(metric.network for metric in wanted if metric.network):
        path = resolve_network_weights(name, inception_weights=inception_weights, dinov2_weights=dinov2_weights)
        loaded = model_of(name)  # one Inception serves its blocks too
        protocol = {"inception": fid_mode, "dinov2": DINOV2_PROTOCOL, "vgg16": VGG16_PROTOCOL}[loaded]
        model = _loaded_network(loaded, str(path), _stamp(path), str(device), fid_mode if loaded == "inception" else "")
        networks[name] = _FeatureNetwork(name, model, path, protocol)
    return networks


def _stamp(path: Path) -> tuple[int, ...]:
    """A weights file's identity on disk: a file replaced at the same path (even by one of the same size and
    modification time, `cp -p`) is read again."""
    info = Path(path).stat()
    return info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns


def load_feature_networks(metrics: list[str], *, device: torch.device | str | None, fid_mode: str = DEFAULT_FID_MODE,
                          inception_weights: str | Path | None = None,
                          dinov2_weights: str | Path | None = None) -> None:
    """Load the feature networks `metrics` read onto `device` now and keep them for later `evaluate` calls: a
    training run's wrong weights file fails before its first step, not at its first metric tick."""
    _feature_networks([METRICS[name] for name in check_metrics(metrics)], inception_weights=inception_weights,
                      dinov2_weights=dinov2_weights, device=device, fid_mode=fid_mode)


def release_feature_networks() -> None:
    """Forget the loaded feature networks (a training run ends: DINOv2 holds 1.2 GB of GPU memory)."""
    _loaded_network.cache_clear()


@functools.lru_cache(maxsize=4)
def _loaded_network(name: str, path: str, stamp: tuple[int, ...], device: str, fid_mode: str) -> torch.nn.Module:
    """A feature network loaded once per process and device: training-time metrics call `evaluate` at every
    tick, and DINOv2 alone is a 1.2 GB file and 304M parameters to build."""
    if name == "inception":
        return load_inception(path, device=device, fid_mode=fid_mode)
    if name == "dinov2":
        return load_dinov2(path, device=device)
    return load_vgg16_fc2(path, device=device)


@functools.lru_cache(maxsize=8)
def _weights_digest(path: str, stamp: tuple[int, ...]) -> str:
    """The weights file's sha256 for the real-feature cache key, hashed once per process and file."""
    return file_digest(path)


@reference_float32()
def evaluate(fake: ImageSource, real: ImageSource | None, metrics: list[str] | str, *, n: int | None = None,
             inception_weights: str | Path | None = None, device: torch.device | str | None = None,
             real_cache_key: str | None = None, cache_dir: str | Path | None = None, seed: int = 0,
             batch_size: int = 64, fid_mode: str = DEFAULT_FID_MODE,
             real_stats: Gaussian | None = None, settings: MetricSettings | None = None,
             dinov2_weights: str | Path | None = None, share: RankShare | None = None) -> dict[str, Any]:
    """Compute `metrics` of `fake` against `real` (arrays, iterables of uint8 batches, or callables).

    Returns {"swd": {"resolutions", "swd", "avg"}, "msssim": {"mean", "pairs"}, "fid": float,
    "kid": (mean, std), "is": (mean, std), "pr": {"precision", "recall"}, "dc": {"density", "coverage"},
    "fd_dinov2": float} for the requested names. `n` caps the images read from each set; `real` may be None when
    only msssim/is are asked for, or when
    `real_stats` (the real set's Inception pool mean and covariance, or those of the network a `ReferenceStats`
    names: DINOv2's) serve FID (FD_DINOv2); given with `real`, the statistics serve that metric and the images the
    other metrics.
    `fid_mode` ("legacy-tf", "clean" or "pytorch-fid") is how images are resized for the Inception metrics;
    `settings` are KID's subsets and precision/recall's k (the papers' defaults when None). Networks (the generator
    of `fake` included) run with full float32 matmuls, as the reference tools do (`reference_float32`).
    Spread over the ranks of a torchrun job (`share`), each rank's `fake` and `real` are its own global batches
    (`RankShare.own`: batches r, r + W, ... of the batches one process would read, `batch_size`-image slices of an
    array, a generator's batches as drawn) and `n` caps each rank's stream; rank 0 returns the values a single
    process would, the others {}.
    """
    names = check_metrics(metrics)
    settings = settings or MetricSettings()
    settings.check_used(names)
    check_fid_mode(fid_mode)
    wanted = [METRICS[name] for name in names]
    stats_network = getattr(real_stats, "network", "inception")  # a plain Gaussian: Inception pool statistics
    if real_stats is not None:
        check_real_stats_metrics(names, stats_network, real_images=real is not None)
    needs_real = [metric.name for metric in wanted if metric.needs_real]
    if real is None and real_stats is None and needs_real:
        raise ValueError(f"evaluate: metrics {sorted(needs_real)} need a real image set")
    networks = _feature_networks(wanted, inception_weights=inception_weights, dinov2_weights=dinov2_weights,
                                 device=device, fid_mode=fid_mode)
    want_swd = "swd" in names
    main = share is None or share.is_main  # the process that adds up the sets and computes the values
    inputs = MetricInputs(seed=seed, device=device, pairs=MSSSIMPairs(device) if "msssim" in names and main else None,
                          real_stats={} if real_stats is None else {stats_network: real_stats}, settings=settings)
    with_images = want_swd or "msssim" in names

    fake_reader = _SetReader(derived_seed(seed, 0) if want_swd and main else None, networks, device, batch_size)
    inputs.fake_swd = fake_reader.swd
    real_reader = None
    try:
        fakes = limit_images(iter_image_batches(fake, batch_size=batch_size, name="fake images"), n)
        if not _read_set(fakes, fake_reader, share, with_images=with_images, pairs=inputs.pairs):
            raise ValueError("evaluate: the fake image set is empty")

        # the networks whose real-set features a metric reads (not where statistics stand in for them)
        real_networks = {name: network for name, network in networks.items()
                         if any(m.needs_real and m.network == name and not (name in inputs.real_stats
                                                                            and m.real_stats_suffice) for m in wanted)}
        real_features: dict[str, torch.Tensor] = {}
        cache_files: dict[str, Path] = {}
        error = None
        if real_cache_key and main:  # rank 0's cache: the others are told which features it holds
            folder = Path(cache_dir) if cache_dir else default_cache_dir() / "stats"
            try:
                for name, network in real_networks.items():
                    cache_files[name] = folder / _cache_name(network, real_cache_key, n)
                    if cache_files[name].is_file():
                        real_features[name] = load_file(cache_files[name])[network.real_key]
            except Exception as err:  # noqa: BLE001 (told to the other ranks first)
                error = err
        if share is None and error is not None:
            raise error
        cached = set(real_features)
        if share is not None:
            held = share.agree(error, [sum(1 << i for i, name in enumerate(real_networks) if name in cached)])
            cached = {name for i, name in enumerate(real_networks) if int(held[0, 0]) >> i & 1}
        to_extract = {name: network for name, network in real_networks.items() if name not in cached}
        if real_networks or want_swd:
            real_reader = _SetReader(derived_seed(seed, 1) if want_swd and main else None, to_extract, device,
                                     batch_size, only_real_keys=True)
            inputs.real_swd = real_reader.swd
            if want_swd or to_extract:
                reals = limit_images(iter_image_batches(real, batch_size=batch_size, name="real images"), n)
                if not _read_set(reals, real_reader, share, with_images=want_swd):
                    raise ValueError("evaluate: the real image set is empty")
        error, results = None, {}
        if main:
            try:
                for name, network in to_extract.items():
                    real_features[name] = real_reader.joined(network.real_key)
                    if name in cache_files:
                        _write_cache(cache_files[name], network, real_features[name], real_cache_key)
                if "inception" in networks:
                    inputs.fake_pool, inputs.fake_logits = fake_reader.joined("pool"), fake_reader.joined("logits")
                    inputs.real_pool = real_features.get("inception")
                for name in networks.keys() - {"inception"}:
                    if name.startswith("inception"):
                        width = int(name.removeprefix("inception"))
                        inputs.fake_blocks[width] = fake_reader.joined(name)
                        if name in real_features:
                            inputs.real_blocks[width] = real_features[name]
                if "dinov2" in networks:
                    inputs.fake_dinov2, inputs.real_dinov2 = fake_reader.joined("dinov2"), real_features.get("dinov2")
                if "vgg16" in networks:
                    inputs.fake_vgg16, inputs.real_vgg16 = fake_reader.joined("vgg16"), real_features["vgg16"]
                results = {metric.name: metric.compute(inputs) for metric in wanted}
            except Exception as err:  # noqa: BLE001 (told to the other ranks first)
                error = err
        if share is not None:
            share.agree(error)
        elif error is not None:
            raise error
        return results
    finally:
        for reader in (fake_reader, real_reader):
            if reader is not None and reader.swd is not None:
                reader.swd.close()


def metrics_device(device: torch.device | str | None) -> torch.device:
    """Where the metrics of work on `device` run: its CUDA GPU (feature networks, SWD and MS-SSIM there), else the
    CPU (MPS has no float64, in which SWD and MS-SSIM sum)."""
    device = torch.device(device or "cpu")
    return device if device.type == "cuda" else torch.device("cpu")


def _cache_name(network: _FeatureNetwork, real_cache_key: str, n: int | None) -> str:
    """A real set's features are found again only for the same set, weights file, image count and protocol:
    Inception's FID mode (one mode's cache never serves another), DINOv2's resize; and the same kind of device:
    a GPU's TF32 convolutions give other features than the CPU's (CPU caches keep the name they always had)."""
    digest = _weights_digest(str(network.weights_path), _stamp(network.weights_path))
    on_gpu = "|cuda" if network.device.type == "cuda" else ""
    ident = hashlib.sha256(f"{real_cache_key}|{digest}|{n}|{network.protocol}{on_gpu}".encode())
    prefix = "inception-pool" if network.name == "inception" else network.name
    return f"{prefix}-{ident.hexdigest()[:24]}.safetensors"


def _write_cache(path: Path, network: _FeatureNetwork, features: torch.Tensor, key: str) -> None:
    """Atomic safetensors + JSON sidecar (the key, count, network and protocol, for humans and for checks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    inception = network.name.startswith("inception")
    mode = {"fid_mode": network.protocol} if inception else {"protocol": network.protocol}
    save_file({network.real_key: features.contiguous()}, str(tmp),
              metadata={"key": key, "count": str(len(features)), **mode})
    os.replace(tmp, path)
    what = {"inception": "inception pool3", "dinov2": "dinov2 vitl14 class token", "vgg16": "vgg16 fc2 relu"}.get(
        network.name, f"inception {network.name.removeprefix('inception')}-d block")
    path.with_suffix(".json").write_text(json.dumps({"key": key, "count": len(features), "features": what, **mode}))
