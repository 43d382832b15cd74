"""One entry point for every metric: `evaluate(fake, real, ["swd", "fid", ...])` and `format_table`.

Each set is read once, batch by batch: the same batches feed SWD's streaming state, MS-SSIM's pairs and one
Inception pass whose pool features and logits serve FID, KID, IS and precision/recall together. Memory stays
bounded: uint8 batches, SWD spills its images to a temporary file, and only Inception features (N x 2048 float32
and N x 1008 logits) are kept. Real-set Inception features can be cached on disk (safetensors + JSON, no pickle)
under a caller-given key, e.g. "<dataset fingerprint>-<resolution>-<count>".

Conventions: float images are generator outputs in [-1, 1], quantised like the official PGGAN code
(see `ganforge.metrics._images`); KID uses 100 subsets of min(1000, N) like stylegan2-ada, with
torch-fidelity's subset seed 2020; IS uses 10 splits (fewer if fewer images) and seed 2020.
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
from ganforge.metrics.fid import fid
from ganforge.metrics.inception import InceptionV3FID, default_cache_dir, load_inception, resolve_weights_path
from ganforge.metrics.kid import inception_score, kid
from ganforge.metrics.msssim import MSSSIMPairs
from ganforge.metrics.prdc import precision_recall
from ganforge.metrics.swd import SWDStats, swd_from_stats

METRICS: dict[str, str] = {
    "swd": "sliced Wasserstein distance x1e3 per Laplacian level + average (official PGGAN)",
    "msssim": "MS-SSIM of consecutive pairs of fake images (official PGGAN; lower = more diverse)",
    "fid": "Fréchet Inception distance (torch-fidelity / TF-FID protocol)",
    "kid": "kernel Inception distance, mean and std over subsets",
    "is": "Inception score of the fake images, mean and std over splits",
    "pr": "improved precision and recall (k=3) on Inception pool features",
}
_INCEPTION = {"fid", "kid", "is", "pr"}
_NEEDS_REAL = {"swd", "fid", "kid", "pr"}
_TORCH_FIDELITY_SEED = 2020


class UnknownMetricError(ValueError):
    """A metric name that the registry does not have."""


def check_metrics(metrics: list[str]) -> list[str]:
    """Lower-cased, de-duplicated metric names; unknown ones raise with the list of known names."""
    names = list(dict.fromkeys(m.strip().lower() for m in metrics if m.strip()))
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise UnknownMetricError(f"unknown metric(s) {unknown or metrics!r}; choose from {', '.join(METRICS)}")
    return names


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
             batch_size: int = 64) -> dict[str, Any]:
    """Compute `metrics` of `fake` against `real` (arrays, iterables of uint8 batches, or callables).

    Returns {"swd": {"resolutions", "swd", "avg"}, "msssim": {"mean", "pairs"}, "fid": float,
    "kid": (mean, std), "is": (mean, std), "pr": {"precision", "recall"}} for the requested names.
    `n` caps the images read from each set; `real` may be None when only msssim/is are asked for.
    """
    names = check_metrics(metrics)
    wanted = set(names)
    if real is None and _NEEDS_REAL & wanted:
        raise ValueError(f"evaluate: metrics {sorted(_NEEDS_REAL & wanted)} need a real image set")
    model, weights_path = None, None
    if _INCEPTION & wanted:
        weights_path = resolve_weights_path(inception_weights)
        model = load_inception(weights_path, device=device)
    want_swd = "swd" in wanted
    results: dict[str, Any] = {}

    fake_reader = _SetReader(derived_seed(seed, 0) if want_swd else None, model, device, batch_size)
    pairs = MSSSIMPairs(device) if "msssim" in wanted else None
    for batch in limit_images(iter_image_batches(fake, batch_size=batch_size, name="fake images"), n):
        fake_reader.feed(batch)
        if pairs is not None:
            pairs.update(batch)
    if fake_reader.count == 0:
        raise ValueError("evaluate: the fake image set is empty")
    if pairs is not None:
        results["msssim"] = {k: v for k, v in pairs.result().items() if k != "per_pair"}

    real_pool = None
    real_needs_inception = bool(wanted & {"fid", "kid", "pr"})
    if real_needs_inception or want_swd:
        cache_file = None
        if real_cache_key and real_needs_inception:
            ident = hashlib.sha256(f"{real_cache_key}|{file_digest(weights_path)}|{n}".encode()).hexdigest()
            folder = Path(cache_dir) if cache_dir else default_cache_dir() / "stats"
            cache_file = folder / f"inception-pool-{ident[:24]}.safetensors"
        if cache_file is not None and cache_file.is_file():
            real_pool = load_file(cache_file)["pool"]
        real_reader = _SetReader(derived_seed(seed, 1) if want_swd else None,
                                 model if real_needs_inception and real_pool is None else None, device, batch_size)
        if want_swd or real_pool is None:
            for batch in limit_images(iter_image_batches(real, batch_size=batch_size, name="real images"), n):
                real_reader.feed(batch)
            if real_reader.count == 0:
                raise ValueError("evaluate: the real image set is empty")
        if real_reader.pools:
            real_pool = torch.cat(real_reader.pools)
            if cache_file is not None:
                _write_cache(cache_file, real_pool, real_cache_key)
        if want_swd:
            try:
                results["swd"] = swd_from_stats(real_reader.swd, fake_reader.swd, seed=seed)
            finally:
                real_reader.swd.close()
    if fake_reader.swd is not None:
        fake_reader.swd.close()

    if model is not None:
        fake_pool, fake_logits = torch.cat(fake_reader.pools), torch.cat(fake_reader.logits)
        if "fid" in wanted:
            results["fid"] = fid(fake_pool, real_pool)
        if "kid" in wanted:
            size = min(1000, len(fake_pool), len(real_pool))
            results["kid"] = kid(fake_pool, real_pool, subsets=100, subset_size=size, seed=_TORCH_FIDELITY_SEED)
        if "is" in wanted:
            results["is"] = inception_score(fake_logits, splits=min(10, len(fake_logits)), seed=_TORCH_FIDELITY_SEED)
        if "pr" in wanted:
            results["pr"] = precision_recall(real_pool, fake_pool, device=device)
    return {name: results[name] for name in names}


def _write_cache(path: Path, pool: torch.Tensor, key: str) -> None:
    """Atomic safetensors + JSON sidecar (the key and count, for humans and for checks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"pool": pool.contiguous()}, str(tmp), metadata={"key": key, "count": str(len(pool))})
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps({"key": key, "count": len(pool), "features": "inception pool3"}))


def format_table(results: dict[str, Any]) -> str:
    """Terminal table; SWD in the PGGAN layout (one column per resolution, x1e3, then the average)."""
    lines = []
    if "swd" in results:
        swd = results["swd"]
        lines.append("SWD x1e3  " + "".join(f"{res:>9d}" for res in swd["resolutions"]) + f"{'avg':>9s}")
        lines.append(" " * 10 + "".join(f"{v:9.3f}" for v in swd["swd"]) + f"{swd['avg']:9.3f}")
    if "msssim" in results:
        lines.append(f"MS-SSIM   {results['msssim']['mean']:9.4f}  ({results['msssim']['pairs']} pairs)")
    if "fid" in results:
        lines.append(f"FID       {results['fid']:9.4f}")
    if "kid" in results:
        lines.append(f"KID       {results['kid'][0]:9.6f} ± {results['kid'][1]:.6f}")
    if "is" in results:
        lines.append(f"IS        {results['is'][0]:9.4f} ± {results['is'][1]:.4f}")
    if "pr" in results:
        lines.append(f"Precision {results['pr']['precision']:9.4f}   Recall {results['pr']['recall']:.4f}")
    return "\n".join(lines)
