"""The metric registry: one record per metric that `evaluate`, training-time metrics, best-checkpoint ranking and
config validation all read, so a metric's name, inputs, outputs and their directions are declared exactly once.

A metric's `compute` turns what one pass over the image sets produced (`MetricInputs`) into its value (the structure
`evaluate` returns, e.g. KID's (mean, std)); `flatten` turns that value into flat outputs ("kid_mean", "kid_std"),
the names logs, `metrics.jsonl` and `best_metric` use. Every output says whether higher is better, or that it is
no quality score (a spread, a count) and cannot rank checkpoints.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from ganforge.config import ConfigError
from ganforge.metrics.fid import Gaussian, fid
from ganforge.metrics.inception_score import inception_score
from ganforge.metrics.kid import kid
from ganforge.metrics.msssim import MSSSIMPairs
from ganforge.metrics.prdc import DC_K, density_coverage, precision_recall
from ganforge.metrics.swd import SWDStats, swd_from_stats

TORCH_FIDELITY_SEED = 2020  # KID subsets and IS splits are drawn as torch-fidelity draws them
PER_LEVEL = "{res}"  # an output key holding this placeholder exists once per SWD pyramid level


class UnknownMetricError(ValueError):
    """A metric name that the registry does not have."""


@dataclass(frozen=True)
class MetricSettings:
    """The choices behind KID and precision/recall; a setting left at None takes what papers report: KID over 100
    subsets of 1,000 features (torch-fidelity, stylegan2-ada, clean-fid), precision/recall with k = 3 (Kynkäänniemi
    et al.). A setting given is recorded with the values it produced, and refused when its metric is not computed.
    Errors name a setting as the user gave it: a command-line option (`--pr-k`), or a config key (`pr_k`)."""

    kid_subsets: int | None = None
    kid_subset_size: int | None = None
    pr_k: int | None = None
    given_as: Literal["option", "config"] = field(default="option", compare=False, repr=False)

    DEFAULTS: ClassVar[dict[str, int]] = {"kid_subsets": 100, "kid_subset_size": 1000, "pr_k": 3}
    LEAST: ClassVar[dict[str, int]] = {"kid_subsets": 1, "kid_subset_size": 2, "pr_k": 1}
    USED_BY: ClassVar[dict[str, str]] = {"kid_subsets": "kid", "kid_subset_size": "kid", "pr_k": "pr"}

    def __post_init__(self) -> None:
        for key, value in self.given().items():
            if isinstance(value, bool) or not isinstance(value, int) or value < self.LEAST[key]:
                raise ValueError(f"{self._name(key)}: expected an integer >= {self.LEAST[key]}, got {value!r}")

    def value(self, key: str) -> int:
        """The setting in force: the one given, else the papers' default."""
        given = getattr(self, key)
        return self.DEFAULTS[key] if given is None else given

    def given(self, images: int | None = None) -> dict[str, int]:
        """The settings given (not left to the defaults): recorded beside the values computed with them. With
        `images` (what a record compared) KID's subset size as used: one above them shrinks to them."""
        given = {key: getattr(self, key) for key in self.DEFAULTS if getattr(self, key) is not None}
        if images is not None and "kid_subset_size" in given:
            given["kid_subset_size"] = min(given["kid_subset_size"], images)
        return given

    def check_used(self, names: list[str]) -> None:
        """A setting of a metric that is not computed would do nothing: refused, named as the option."""
        idle = [key for key in self.given() if self.USED_BY[key] not in names]
        if idle:
            raise ValueError(f"{', '.join(map(self._name, idle))}: set for "
                             f"{' and '.join(sorted({self.USED_BY[k] for k in idle}))}, which is not among the "
                             f"metrics ({', '.join(names) or 'none'})")

    def for_metrics(self, names: list[str]) -> MetricSettings:
        """These settings without those of metrics left out (e.g. the Inception metrics when its weights are
        missing, which evaluate then skips with a warning)."""
        return MetricSettings(**{key: value for key, value in self.given().items() if self.USED_BY[key] in names},
                              given_as=self.given_as)

    def _name(self, key: str) -> str:
        """A setting as the user typed it: its command-line option (`pr_k` → `--pr-k`) or its config key."""
        return "--" + key.replace("_", "-") if self.given_as == "option" else key


@dataclass
class MetricInputs:
    """What one pass over the fake and real sets produced; each metric reads the parts it needs."""

    fake_pool: torch.Tensor | None = None  # Inception pool3 features [N, 2048]
    fake_logits: torch.Tensor | None = None  # Inception logits [N, 1008]
    real_pool: torch.Tensor | None = None
    # Inception's earlier blocks, average-pooled, by width (64, 192, 768: pytorch-fid's --dims)
    fake_blocks: dict[int, torch.Tensor] = field(default_factory=dict)
    real_blocks: dict[int, torch.Tensor] = field(default_factory=dict)
    fake_dinov2: torch.Tensor | None = None  # DINOv2 ViT-L/14 class-token features [N, 1024]
    real_dinov2: torch.Tensor | None = None
    fake_vgg16: torch.Tensor | None = None  # VGG-16 fc2 features after ReLU [N, 4096]
    real_vgg16: torch.Tensor | None = None
    # the real set's feature mean and covariance by network ("inception", "dinov2"), e.g. from a statistics file
    real_stats: dict[str, Gaussian] = field(default_factory=dict)
    fake_swd: SWDStats | None = None
    real_swd: SWDStats | None = None
    pairs: MSSSIMPairs | None = None
    seed: int = 0
    device: torch.device | str | None = None
    settings: MetricSettings = field(default_factory=MetricSettings)


@dataclass(frozen=True)
class MetricOutput:
    """One flat output: its key (with `{res}` for per-level SWD values), direction and display format."""

    key: str
    higher_is_better: bool | None  # None: describes the score (a spread, a count); cannot rank checkpoints
    fmt: str  # format spec for tables, e.g. "9.4f"


@dataclass(frozen=True)
class Metric:
    name: str
    description: str
    needs_real: bool
    network: str | None  # the pretrained feature network it reads ("inception", "dinov2", "vgg16"), None: pixels
    outputs: tuple[MetricOutput, ...]
    compute: Callable[[MetricInputs], Any]
    flatten: Callable[[Any], dict[str, float]]
    row: Callable[[Any], str]  # the metric's lines in `format_table`
    real_stats_suffice: bool = False  # the real set's feature mean and covariance are enough (no real images)
    equal_counts: bool = False  # compares as many real images as generated ones (SWD's sorted projections)

    @property
    def needs_inception(self) -> bool:
        """Its values depend on the Inception weights and the FID mode's resize."""
        return self.network is not None and self.network.startswith("inception")

    def output(self, key: str) -> MetricOutput:
        return next(out for out in self.outputs if _matches(out.key, key))


def _matches(pattern: str, key: str) -> bool:
    if PER_LEVEL not in pattern:
        return key == pattern
    return re.fullmatch(pattern.replace(PER_LEVEL, r"\d+"), key) is not None


def _pair(prefix: str) -> Callable[[tuple[float, float]], dict[str, float]]:
    return lambda value: {f"{prefix}_mean": float(value[0]), f"{prefix}_std": float(value[1])}


IS_SPLITS = 10  # torch-fidelity's and the paper's


def inception_score_splits(images: int) -> int:
    """IS_SPLITS, fewer below 2 * IS_SPLITS images so that each split holds at least 2 (a split of one image
    scores exactly 1, whatever the image: its marginal is its own prediction)."""
    return max(1, min(IS_SPLITS, images // 2))


def _kid(inputs: MetricInputs) -> tuple[float, float]:
    settings = inputs.settings
    size = min(settings.value("kid_subset_size"), len(inputs.fake_pool), len(inputs.real_pool))
    return kid(inputs.fake_pool, inputs.real_pool, subsets=settings.value("kid_subsets"), subset_size=size,
               seed=TORCH_FIDELITY_SEED)


def _swd_row(value: dict[str, Any]) -> str:
    """The PGGAN layout: one column per resolution (x1e3), then the average."""
    fmt = SWD.output("swd_avg").fmt
    return ("SWD x1e3  " + "".join(f"{res:>9d}" for res in value["resolutions"]) + f"{'avg':>9s}\n" + " " * 10
            + "".join(f"{v:{fmt}}" for v in value["swd"]) + f"{value['avg']:{fmt}}")


SWD = Metric(
    "swd", "sliced Wasserstein distance x1e3 per Laplacian level + average (official PGGAN)",
    needs_real=True, network=None, equal_counts=True,
    outputs=(MetricOutput("swd_{res}", False, "9.3f"), MetricOutput("swd_avg", False, "9.3f")),
    compute=lambda inputs: swd_from_stats(inputs.real_swd, inputs.fake_swd, seed=inputs.seed,
                                          names=("real", "generated")),
    flatten=lambda value: {**{f"swd_{res}": float(v)
                              for res, v in zip(value["resolutions"], value["swd"], strict=True)},
                           "swd_avg": float(value["avg"])},
    row=_swd_row)

MSSSIM = Metric(
    "msssim", "MS-SSIM of consecutive pairs of fake images (official PGGAN; lower = more diverse)",
    needs_real=False, network=None,
    outputs=(MetricOutput("msssim_mean", False, "9.4f"), MetricOutput("msssim_pairs", None, "d")),
    compute=lambda inputs: {k: v for k, v in inputs.pairs.result().items() if k != "per_pair"},
    flatten=lambda value: {"msssim_mean": float(value["mean"]), "msssim_pairs": float(value["pairs"])},
    row=lambda value: f"MS-SSIM   {value['mean']:{MSSSIM.outputs[0].fmt}}  ({value['pairs']} pairs)")

FID = Metric(
    "fid", "Fréchet Inception distance (torch-fidelity / TF-FID protocol)",
    needs_real=True, network="inception",
    outputs=(MetricOutput("fid", False, "9.4f"),),
    compute=lambda inputs: fid(inputs.fake_pool, inputs.real_stats.get("inception", inputs.real_pool)),
    flatten=lambda value: {"fid": float(value)},
    row=lambda value: f"FID       {value:{FID.outputs[0].fmt}}",
    real_stats_suffice=True)

KID = Metric(
    "kid", "kernel Inception distance, mean and std over subsets",
    needs_real=True, network="inception",
    outputs=(MetricOutput("kid_mean", False, "9.6f"), MetricOutput("kid_std", None, ".6f")),
    compute=_kid, flatten=_pair("kid"),
    row=lambda value: f"KID       {value[0]:{KID.outputs[0].fmt}} ± {value[1]:{KID.outputs[1].fmt}}")

IS = Metric(
    "is", "Inception score of the fake images, mean and std over splits",
    needs_real=False, network="inception",
    outputs=(MetricOutput("is_mean", True, "9.4f"), MetricOutput("is_std", None, ".4f")),
    compute=lambda inputs: inception_score(inputs.fake_logits, splits=inception_score_splits(len(inputs.fake_logits)),
                                           seed=TORCH_FIDELITY_SEED),
    flatten=_pair("is"),
    row=lambda value: f"IS        {value[0]:{IS.outputs[0].fmt}} ± {value[1]:{IS.outputs[1].fmt}}")

PR = Metric(
    "pr", "improved precision and recall (k nearest neighbours, default 3) on VGG-16 fc2 features (torch-fidelity)",
    needs_real=True, network="vgg16",
    outputs=(MetricOutput("pr_precision", True, "9.4f"), MetricOutput("pr_recall", True, ".4f")),
    compute=lambda inputs: precision_recall(inputs.real_vgg16, inputs.fake_vgg16, k=inputs.settings.value("pr_k"),
                                            device=inputs.device),
    flatten=lambda value: {"pr_precision": float(value["precision"]), "pr_recall": float(value["recall"])},
    row=lambda value: (f"Precision {value['precision']:{PR.outputs[0].fmt}}   "
                       f"Recall {value['recall']:{PR.outputs[1].fmt}}"))

DC = Metric(
    "dc", f"density and coverage (Naeem et al. 2020, k = {DC_K}) on VGG-16 fc2 features (clovaai's prdc, StudioGAN)",
    needs_real=True, network="vgg16",
    outputs=(MetricOutput("dc_density", True, "9.4f"), MetricOutput("dc_coverage", True, ".4f")),
    compute=lambda inputs: density_coverage(inputs.real_vgg16, inputs.fake_vgg16, device=inputs.device),
    flatten=lambda value: {"dc_density": float(value["density"]), "dc_coverage": float(value["coverage"])},
    row=lambda value: (f"Density   {value['density']:{DC.outputs[0].fmt}}   "
                       f"Coverage {value['coverage']:{DC.outputs[1].fmt}}"))

FD_DINOV2 = Metric(
    "fd_dinov2", "Fréchet distance of DINOv2 ViT-L/14 features (dgm-eval protocol; EDM2's FD_DINOv2)",
    needs_real=True, network="dinov2",
    outputs=(MetricOutput("fd_dinov2", False, "9.4f"),),
    compute=lambda inputs: fid(inputs.fake_dinov2, inputs.real_stats.get("dinov2", inputs.real_dinov2)),
    flatten=lambda value: {"fd_dinov2": float(value)},
    row=lambda value: f"FD_DINOv2 {value:{FD_DINOV2.outputs[0].fmt}}",
    real_stats_suffice=True)

INCEPTION_BLOCKS = (64, 192, 768)  # pytorch-fid's --dims below pool3's 2048: its first two max pools and Mixed_6e


def _block_fid(width: int) -> Metric:
    """FID on Inception's `width`-wide block features (pytorch-fid `--dims width`): a covariance that sets of fewer
    than 2,048 images can make full rank, where pool3's cannot."""
    name = f"fid{width}"

    def compute(inputs: MetricInputs) -> float:
        return fid(inputs.fake_blocks[width], inputs.real_stats.get(f"inception{width}", inputs.real_blocks.get(width)))

    return Metric(name, f"FID on Inception's {width}-d block features (pytorch-fid --dims {width}; for small sets)",
                  needs_real=True, network=f"inception{width}", outputs=(MetricOutput(name, False, "9.4f"),),
                  compute=compute, flatten=lambda value: {name: float(value)},
                  row=lambda value: f"{'FID-' + str(width):<10}{value:9.4f}", real_stats_suffice=True)


METRICS: dict[str, Metric] = {metric.name: metric for metric in (
    SWD, MSSSIM, FID, *map(_block_fid, INCEPTION_BLOCKS), KID, IS, PR, DC, FD_DINOV2)}

INCEPTION_METRICS = [name for name, metric in METRICS.items() if metric.needs_inception]  # for messages


def model_of(network: str) -> str:
    """The network whose model and weights file serve `network`'s features: Inception for its blocks
    ("inception768"), else the network itself."""
    return "inception" if network.startswith("inception") else network

# the networks whose feature statistics a statistics file may hold, and the metrics each serves (its Fréchet distance)
STATS_NETWORKS = ("inception", *(f"inception{width}" for width in INCEPTION_BLOCKS), "dinov2")
METRICS_SERVED: dict[str, list[str]] = {network: [m.name for m in METRICS.values() if m.real_stats_suffice
                                                  and m.network == network] for network in STATS_NETWORKS}


def check_metrics(metrics: list[str] | str) -> list[str]:
    """Lower-cased, de-duplicated metric names (one string may name several, comma-separated, as the command line
    takes them); unknown ones raise with the list of known names."""
    if isinstance(metrics, str):
        metrics = metrics.split(",")
    names = list(dict.fromkeys(m.strip().lower() for m in metrics if m.strip()))
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise UnknownMetricError(f"unknown metric(s) {unknown!r}; choose from {', '.join(METRICS)}")
    if not names:
        raise UnknownMetricError(f"no metric named (got {metrics!r}); choose from {', '.join(METRICS)}")
    return names


def check_real_stats_metrics(names: list[str], network: str = "inception", *, real_images: bool = False) -> None:
    """Refuse statistics of `network`'s features (their mean and covariance, which serve that network's Fréchet
    distance alone: fid, or fd_dinov2) that no metric asked for reads, and, without `real_images` beside them,
    metrics that need more of the real set."""
    served = [name for name in names if METRICS[name].real_stats_suffice and METRICS[name].network == network]
    need_images = [name for name in names if METRICS[name].needs_real and name not in served]
    if need_images and not real_images:
        raise ValueError(f"{', '.join(need_images)}: need(s) the real images (KID their Inception features, "
                         "precision/recall their VGG-16 features, SWD the pixels, FID and FD_DINOv2 their own "
                         f"network's statistics), and real statistics of {network} features serve "
                         f"{' and '.join(METRICS_SERVED[network])} alone; give real images instead")
    if not served:
        raise ValueError(f"real statistics of {network} features serve {' and '.join(METRICS_SERVED[network])}, "
                         f"which is not among the metrics ({', '.join(names)})")


def rankable_outputs() -> list[str]:
    """Every output key `best_metric` accepts (per-level SWD keys written `swd_{res}`)."""
    return [out.key for metric in METRICS.values() for out in metric.outputs if out.higher_is_better is not None]


def metric_of_output(key: str) -> str | None:
    """The metric an output key belongs to ("swd_16" → "swd", "fd_dinov2" → "fd_dinov2"); None for keys the
    registry does not make (StarGAN v2's protocol scores)."""
    return next((m.name for m in METRICS.values() if any(_matches(out.key, key) for out in m.outputs)), None)


def _ranking_metric(key: str) -> Metric | None:
    return next((m for m in METRICS.values()
                 if any(_matches(out.key, key) and out.higher_is_better is not None for out in m.outputs)), None)


def ranks(key: str) -> bool:
    """Whether an output is a score (it has a direction: FID, precision, ...), not a count or a spread."""
    return _ranking_metric(key) is not None


def higher_is_better(key: str) -> bool:
    """The direction of a rankable output, e.g. False for "fid", True for "pr_precision"."""
    metric = _ranking_metric(key)
    if metric is None:
        raise ConfigError(f"best_metric: {key!r} is not a metric output that ranks checkpoints; expected one of "
                          f"{', '.join(rankable_outputs())}")
    return bool(metric.output(key).higher_is_better)


def check_best_metric(key: str, metrics: list[str]) -> None:
    """`best_metric` must be a rankable output of one of the run's `metrics`; one-line ConfigError otherwise."""
    higher_is_better(key)
    owner = _ranking_metric(key).name
    if owner not in [m.strip().lower() for m in metrics]:
        raise ConfigError(f"best_metric: {key!r} is an output of {owner!r}, which is not among metrics {metrics}")


def flat_outputs(results: dict[str, Any]) -> dict[str, float]:
    """Finite scalar outputs of `evaluate` results for logs: {"swd_32": .., "swd_avg": .., "fid": .., ...}."""
    return {key: value for name, result in results.items() for key, value in METRICS[name].flatten(result).items()
            if math.isfinite(value)}


PR_FEATURES = "vgg16-fc2"  # precision/recall's feature space, recorded with its values (Inception pool before 2026-12)


def protocol_fields(results: dict[str, Any], fid_mode: str) -> dict[str, str]:
    """What goes into every record beside values that depend on how they were made: {"fid_mode": fid_mode} with a
    metric of Inception features (their values depend on the mode's resize), {"pr_features": "vgg16-fc2"} with
    precision/recall (earlier runs measured it on Inception features: rows without it do not compare)."""
    fields = {"fid_mode": fid_mode} if any(METRICS[name].needs_inception for name in results) else {}
    return {**fields, **({"pr_features": PR_FEATURES} if "pr" in results else {})}


def format_table(results: dict[str, Any], fid_mode: str | None = None) -> str:
    """Terminal table of `evaluate` results, in the registry's order and formats; with `fid_mode`, the lines of
    the Inception metrics end with it, e.g. "FID  12.3456  (legacy-tf)"."""
    return "\n".join(metric.row(results[name]) + (f"  ({fid_mode})" if fid_mode and metric.needs_inception else "")
                     for name, metric in METRICS.items() if name in results)
