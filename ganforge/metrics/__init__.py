"""Metrics with the reference implementations' numbers: SWD, MS-SSIM, FID, KID, IS, precision/recall, FD_DINOv2.

`evaluate(fake, real, ["swd", "fid", ...])` computes any of them in one pass per set; the functions below are
the same computations on arrays/tensors (see each module for the exact protocol it reproduces).
"""

from ganforge.metrics.dinov2 import DINOv2, DINOv2WeightsError, load_dinov2
from ganforge.metrics.evaluate import evaluate
from ganforge.metrics.fid import FeatureStats, fid, frechet_distance
from ganforge.metrics.fid_stats import ReferenceStats, read_stats, write_stats
from ganforge.metrics.inception import InceptionV3FID, InceptionWeightsError, extract_features, load_inception
from ganforge.metrics.inception_score import inception_score
from ganforge.metrics.kid import kid
from ganforge.metrics.msssim import MSSSIMPairs, msssim
from ganforge.metrics.prdc import precision_recall
from ganforge.metrics.registry import METRICS, Metric, MetricOutput, UnknownMetricError, format_table, higher_is_better
from ganforge.metrics.swd import SWDStats, swd, swd_from_stats

__all__ = [
    "DINOv2", "DINOv2WeightsError", "METRICS", "FeatureStats", "InceptionV3FID", "InceptionWeightsError",
    "MSSSIMPairs", "Metric", "MetricOutput",
    "ReferenceStats", "SWDStats", "UnknownMetricError", "evaluate", "extract_features", "fid", "format_table",
    "frechet_distance", "higher_is_better",
    "inception_score", "kid", "load_dinov2", "load_inception", "msssim", "precision_recall", "read_stats", "swd",
    "swd_from_stats", "write_stats",
]
