"""FID on Inception's earlier blocks (fid64, fid192, fid768: pytorch-fid's `--dims`), for image sets smaller than
pool3's 2,048 dimensions: values by hand from the network's block features, statistics files of a block (written,
and pytorch-fid's own without a 'network' key), and the warning a too-small set gets. Stand-in Inception weights
(../shared/fixtures/inception/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import write_inception_standin
from test_fid_stats import _write_pngs

from ganforge.cli import main
from ganforge.metrics.evaluate import evaluate
from ganforge.metrics.fid import fid
from ganforge.metrics.fid_stats import StatsFileError, read_stats, stats_of_features, write_stats
from ganforge.metrics.inception import InceptionV3FID, load_inception, resize_bilinear_tf1
from ganforge.metrics.registry import (
    INCEPTION_BLOCKS,
    METRICS,
    check_real_stats_metrics,
    higher_is_better,
    protocol_fields,
)


@pytest.fixture(scope="module")
def standin_weights(tmp_path_factory):
    return write_inception_standin(tmp_path_factory.mktemp("inception") / "standin.pth")


def test_the_block_metrics_are_declared_like_fid():
    assert [f"fid{width}" for width in INCEPTION_BLOCKS] == ["fid64", "fid192", "fid768"]
    for width in INCEPTION_BLOCKS:
        metric = METRICS[f"fid{width}"]
        assert (metric.network, metric.needs_real, metric.real_stats_suffice) == (f"inception{width}", True, True)
        assert metric.needs_inception and higher_is_better(f"fid{width}") is False
    assert protocol_fields({"fid768": 3.0}, "clean") == {"fid_mode": "clean"}  # a resize-dependent value
    with pytest.raises(ValueError, match="real statistics of inception768 features serve fid768, which is not "
                                         r"among the metrics \(fid\)"):
        check_real_stats_metrics(["fid"], "inception768", real_images=True)


@pytest.mark.slow
def test_block_fids_are_frechet_distances_of_the_blocks_average_pooled_features(standin_weights, monkeypatch):
    """pytorch-fid's InceptionV3 blocks (its `output_blocks`): 0 ends at the first max pool (64 channels), 1 at the
    second (192), 2 after Mixed_6e (768), 3 after Mixed_7c (pool3, 2048); each block's output averaged over its
    positions is the feature vector. Recomputed here layer by layer from the network's modules. One Inception pass
    per batch serves every block."""
    rng = np.random.default_rng(3)
    fakes, reals = rng.integers(0, 256, (2, 6, 3, 24, 24), dtype=np.uint8)
    passes = []
    features = InceptionV3FID.features
    monkeypatch.setattr(InceptionV3FID, "features", lambda self, images: passes.append(len(images)) or features(
        self, images))
    values = evaluate(fakes, reals, ["fid64", "fid192", "fid768", "fid"], inception_weights=standin_weights,
                      batch_size=4)
    assert passes == [4, 2, 4, 2]  # the fakes' two batches, then the reals'
    monkeypatch.setattr(InceptionV3FID, "features", features)
    model = load_inception(standin_weights)

    def blocks(images: np.ndarray) -> dict[str, torch.Tensor]:
        x = (resize_bilinear_tf1(torch.from_numpy(images).float()) - 128) / 128
        first = F.max_pool2d(model.Conv2d_2b_3x3(model.Conv2d_2a_3x3(model.Conv2d_1a_3x3(x))), 3, stride=2)
        second = F.max_pool2d(model.Conv2d_4a_3x3(model.Conv2d_3b_1x1(first)), 3, stride=2)
        third = second
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e"):
            third = getattr(model, f"Mixed_{name}")(third)
        fourth = model.Mixed_7c(model.Mixed_7b(model.Mixed_7a(third)))
        return {str(out.shape[1]): out.mean(dim=(2, 3)) for out in (first, second, third, fourth)}

    with torch.no_grad():
        fake_blocks, real_blocks = blocks(fakes), blocks(reals)
    assert sorted(fake_blocks, key=int) == ["64", "192", "768", "2048"]
    for key, block in fake_blocks.items():
        name = "fid" if key == "2048" else f"fid{key}"
        assert values[name] == pytest.approx(fid(block, real_blocks[key]), rel=1e-6)
    assert len({round(value, 6) for value in values.values()}) == 4


@pytest.mark.slow
def test_block_statistics_files_round_trip_and_pytorch_fids_own_are_recognised(standin_weights, tmp_path, capsys):
    rng = np.random.default_rng(4)
    reals = _write_pngs(tmp_path / "reals", rng.integers(0, 256, (5, 3, 16, 16), dtype=np.uint8))
    fakes = _write_pngs(tmp_path / "fakes", rng.integers(0, 256, (5, 3, 16, 16), dtype=np.uint8))
    weights = ["--inception-weights", str(standin_weights)]
    out = tmp_path / "reals768.npz"
    assert main(["stats", str(reals), "-o", str(out), "--network", "inception768", *weights]) == 0
    assert capsys.readouterr().out.strip() == (f"wrote {out}: Inception's 768-d block mean and covariance of 5 "
                                               f"images of {reals} (for fid768, fid_mode legacy-tf)")
    stats = read_stats(out)
    assert (stats.network, stats.mean.shape, stats.count) == ("inception768", (768,), 5)
    with np.load(out) as archive:
        assert str(archive["network"]) == "inception768"

    # the file's own metric is the default, and equals the value from the images
    assert main(["evaluate", "--fake", str(fakes), "--real-stats", str(out), *weights]) == 0
    header, from_stats, warning = capsys.readouterr().out.strip().splitlines()
    assert from_stats.startswith("FID-768") and from_stats.endswith("(legacy-tf)")
    assert warning == ("(warning: fid768 of 768-d features from a set of 5 images, no more than their dimensions: "
                       "its covariance is singular and the distance far above what more images give; use more "
                       "images, or a narrower Inception block (fid64, fid192: pytorch-fid's --dims))")
    assert main(["evaluate", "--fake", str(fakes), "--real", str(reals), "--metrics", "fid768", *weights]) == 0
    from_images = capsys.readouterr().out.strip().splitlines()[1]
    assert float(from_stats.split()[1]) == pytest.approx(float(from_images.split()[1]), rel=1e-6)

    # pytorch-fid's `--save-stats --dims 768` writes mu and sigma alone: read as the 768-d block's
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, mu=stats.mean, sigma=stats.cov)
    assert read_stats(foreign).network == "inception768"
    assert main(["evaluate", "--fake", str(fakes), "--real-stats", str(foreign), *weights]) == 0
    assert capsys.readouterr().out.strip().splitlines()[1] == from_stats
    assert main(["evaluate", "--fake", str(fakes), "--real-stats", str(out), "--metrics", "fid", *weights]) == 2
    assert "real statistics of inception768 features serve fid768 alone" in capsys.readouterr().err


def test_a_block_file_of_the_wrong_size_is_refused_by_name(tmp_path):
    features = np.random.default_rng(0).normal(size=(10, 192)).astype(np.float32)
    path = write_stats(tmp_path / "s.npz", stats_of_features(features, "clean", network="inception192"))
    assert read_stats(path).network == "inception192"
    with np.load(path) as archive:
        arrays = dict(archive)
    np.savez(path, **{**arrays, "network": np.array("inception768")})
    with pytest.raises(StatsFileError, match=r"expected 'mu' of shape \(768,\) and 'sigma' of shape \(768, 768\) "
                                             r"\(Inception's 768-d block\), got \(192,\)"):
        read_stats(path)


def test_missing_inception_weights_leave_out_every_inception_metric_with_one_warning(no_feature_weights):
    from ganforge.evaluation.run_metrics import computable_metrics

    left, warning = computable_metrics(["swd", "fid", "fid768", "kid"])
    assert left == ["swd"] and len(warning.splitlines()) == 1
    assert warning.startswith("warning: fid, fid768, kid not computed: ")
