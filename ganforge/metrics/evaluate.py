"""One entry point for every metric: `evaluate(fake, real, ["swd", "fid", ...])`; what each metric computes from
the pass is its record in `ganforge.metrics.registry`.

Each set is read once, batch by batch: the same batches feed SWD's streaming state, MS-SSIM's pairs and one
Inception pass whose pool features and logits serve FID, KID, IS and precision/recall together. Memory stays
bounded: uint8 batches, SWD spills its images to a temporary file, and only Inception features (N x 2048 float32
and N x 1008 logits) are kept. Real-set Inception features can be cached on disk (safetensors + JSON, no pickle)
under a caller-given key, e.g. "<dataset fingerprint>-<resolution>-<count>", and the FID mode (the resize
protocol of the Inception metrics, see `ganforge.metrics.inception`): a cache of one mode never serves another.
FID can also be computed against the real set's feature mean and covariance alone (`real_stats`, e.g. read from a
statistics file by `ganforge.metrics.fid_stats`).

Conventions: float images are generator outputs in [-1, 1], quantised like the official PGGAN code
(see `ganforge.metrics._images`); KID uses 100 subsets of min(1000, N) like stylegan2-ada, with
torch-fidelity's subset seed 2020 (`MetricSettings` chooses other subsets, and precision/recall's k); IS uses 10
splits (fewer if fewer images) and seed 2020.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ganforge.download import file_digest
from ganforge.metrics._images import ImageSource, derived_seed, iter_image_batches, limit_images
from ganforge.metrics.fid import Gaussian
from ganforge.metrics.inception import (
    DEFAULT_FID_MODE,
    InceptionV3FID,
    check_fid_mode,
    default_cache_dir,
    load_inception,
    resolve_weights_path,
)
from ganforge.metrics.msssim import MSSSIMPairs
from ganforge.metrics.registry import (  # noqa: F401 (format_table and the error: re-exported for callers)
    METRICS,
    MetricInputs,
    MetricSettings,
    UnknownMetricError,
    check_metrics,
    check_real_stats_metrics,
    format_table,
)
from ganforge.metrics.swd import SWDStats


class _SetReader:
    """Everything one pass over a set computes: SWD state, MS-SSIM images, Inception features."""

    def __init__(self, swd_seed: int | None, model: InceptionV3FID | None, device: torch.device | str | None,
                 batch_size: int) -> None:
        self.swd = SWDStats(seed=swd_seed, device=device, batch_size=batch_size) if swd_seed is not None else None
        self.model, self.count = model, 0
        self.pools: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []

    @torch.no_grad()
    def feed(self, batch: torch.Tensor) -> None:
        if self.swd is not None:
            self.swd.update(batch)
        if self.model is not None:
            pool, logits = self.model(batch.to(next(self.model.parameters()).device))
            self.pools.append(pool.cpu())
            self.logits.append(logits.cpu())
        self.count += batch.shape[0]


def evaluate(fake: ImageSource, real: ImageSource | None, metrics: list[str], *, n: int | None = None,
             inception_weights: str | Path | None = None, device: torch.device | str | None = None,
             real_cache_key: str | None = None, cache_dir: str | Path | None = None, seed: int = 0,
             batch_size: int = 64, fid_mode: str = DEFAULT_FID_MODE,
             real_stats: Gaussian | None = None, settings: MetricSettings | None = None) -> dict[str, Any]:
    """Compute `metrics` of `fake` against `real` (arrays, iterables of uint8 batches, or callables).

    Returns {"swd": {"resolutions", "swd", "avg"}, "msssim": {"mean", "pairs"}, "fid": float,
    "kid": (mean, std), "is": (mean, std), "pr": {"precision", "recall"}} for the requested names.
    `n` caps the images read from each set; `real` may be None when only msssim/is are asked for, or when
    `real_stats` (the real pool features' mean and covariance, in place of `real`) serve FID.
    `fid_mode` ("legacy-tf" or "clean") is how images are resized for the Inception metrics; `settings` are KID's
    subsets and precision/recall's k (the papers' defaults when None).
    """
    names = check_metrics(metrics)
    settings = settings or MetricSettings()
    settings.check_used(names)
    check_fid_mode(fid_mode)
    wanted = [METRICS[name] for name in names]
    if real_stats is not None:
        if real is not None:
            raise ValueError("evaluate: give the real images or their statistics (real_stats), not both")
        check_real_stats_metrics(names)
    needs_real = [metric.name for metric in wanted if metric.needs_real]
    if real is None and real_stats is None and needs_real:
        raise ValueError(f"evaluate: metrics {sorted(needs_real)} need a real image set")
    model, weights_path = None, None
    if any(metric.needs_inception for metric in wanted):
        weights_path = resolve_weights_path(inception_weights)
        model = load_inception(weights_path, device=device, fid_mode=fid_mode)
    want_swd = "swd" in names
    inputs = MetricInputs(seed=seed, device=device, pairs=MSSSIMPairs(device) if "msssim" in names else None,
                          real_stats=real_stats, settings=settings)

    fake_reader = _SetReader(derived_seed(seed, 0) if want_swd else None, model, device, batch_size)
    inputs.fake_swd = fake_reader.swd
    real_reader = None
    try:
        for batch in limit_images(iter_image_batches(fake, batch_size=batch_size, name="fake images"), n):
            fake_reader.feed(batch)
            if inputs.pairs is not None:
                inputs.pairs.update(batch)
        if fake_reader.count == 0:
            raise ValueError("evaluate: the fake image set is empty")

        real_needs_inception = real_stats is None and any(m.needs_real and m.needs_inception for m in wanted)
        if real_needs_inception or want_swd:
            cache_file = None
            if real_cache_key and real_needs_inception:
                ident = hashlib.sha256(
                    f"{real_cache_key}|{file_digest(weights_path)}|{n}|{fid_mode}".encode()).hexdigest()
                folder = Path(cache_dir) if cache_dir else default_cache_dir() / "stats"
                cache_file = folder / f"inception-pool-{ident[:24]}.safetensors"
            if cache_file is not None and cache_file.is_file():
                inputs.real_pool = load_file(cache_file)["pool"]
            real_reader = _SetReader(derived_seed(seed, 1) if want_swd else None,
                                     model if real_needs_inception and inputs.real_pool is None else None, device,
                                     batch_size)
            inputs.real_swd = real_reader.swd
            if want_swd or inputs.real_pool is None:
                for batch in limit_images(iter_image_batches(real, batch_size=batch_size, name="real images"), n):
                    real_reader.feed(batch)
                if real_reader.count == 0:
                    raise ValueError("evaluate: the real image set is empty")
            if real_reader.pools:
                inputs.real_pool = torch.cat(real_reader.pools)
                if cache_file is not None:
                    _write_cache(cache_file, inputs.real_pool, real_cache_key, fid_mode)
        if model is not None:
            inputs.fake_pool, inputs.fake_logits = torch.cat(fake_reader.pools), torch.cat(fake_reader.logits)
        return {metric.name: metric.compute(inputs) for metric in wanted}
    finally:
        for reader in (fake_reader, real_reader):
            if reader is not None and reader.swd is not None:
                reader.swd.close()


def _write_cache(path: Path, pool: torch.Tensor, key: str, fid_mode: str) -> None:
    """Atomic safetensors + JSON sidecar (the key, count and FID mode, for humans and for checks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"pool": pool.contiguous()}, str(tmp),
              metadata={"key": key, "count": str(len(pool)), "fid_mode": fid_mode})
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({"key": key, "count": len(pool), "features": "inception pool3",
                                                     "fid_mode": fid_mode}))
