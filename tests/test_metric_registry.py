"""The metric registry: every output `best_metric` accepts has its direction, checkpoints are ranked by it, and a
bad `best_metric` is refused when the config loads."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from ganforge.config import ConfigError
from ganforge.families import resolve_run_config
from ganforge.metrics.registry import METRICS, flat_outputs, format_table, higher_is_better, rankable_outputs
from ganforge.training import checkpoint as ckpt
from ganforge.training.engine import Trainer

# written out by hand, not read from the registry: the direction of every name `best_metric` accepts
EXPECTED_HIGHER_IS_BETTER = {
    "fid": False, "fid64": False, "fid192": False, "fid768": False, "kid_mean": False, "is_mean": True,
    "pr_precision": True, "pr_recall": True, "dc_density": True, "dc_coverage": True, "swd_avg": False,
    "swd_{res}": False,
    "msssim_mean": False,  # the project's MS-SSIM: similarity of pairs of fakes, lower = more diverse
    "fd_dinov2": False,
}


def test_every_name_best_metric_accepts_has_its_direction():
    assert sorted(rankable_outputs()) == sorted(EXPECTED_HIGHER_IS_BETTER)
    for key, higher in EXPECTED_HIGHER_IS_BETTER.items():
        name = key.replace("{res}", "16")
        assert higher_is_better(name) is higher, name
        metric = "fd_dinov2" if name == "fd_dinov2" else name.split("_")[0]  # fid768: its metric's name too
        config = resolve_run_config("dcgan", {"metrics": [metric], "metrics_every": 1, "best_metric": name})
        assert config.best_metric == name


@pytest.mark.parametrize("best, metrics, message", [
    ("pr_precison", ["pr"], r"'pr_precison' is not a metric output that ranks checkpoints; expected one of "
                            r"swd_\{res\}, swd_avg, msssim_mean, fid, fid64, fid192, fid768, kid_mean, is_mean, "
                            r"pr_precision, pr_recall, dc_density, dc_coverage, fd_dinov2$"),
    ("is_std", ["is"], r"'is_std' is not a metric output that ranks"),  # a spread, not a quality score
    ("kid", ["kid"], r"'kid' is not a metric output that ranks"),
    ("fid", ["swd"], r"'fid' is an output of 'fid', which is not among metrics \['swd'\]"),
])
def test_a_bad_best_metric_is_refused_when_the_config_loads(best, metrics, message):
    with pytest.raises(ConfigError, match="^best_metric: " + message):
        resolve_run_config("dcgan", {"metrics": metrics, "metrics_every": 1, "best_metric": best})


def test_flat_outputs_are_the_declared_outputs_and_the_table_uses_their_formats():
    results = {"swd": {"resolutions": [32, 16], "swd": [1.5, 2.5], "avg": 2.0}, "msssim": {"mean": 0.25, "pairs": 8},
               "fid": 12.5, "kid": (0.01, 0.002), "is": (3.5, 0.25), "pr": {"precision": 0.75, "recall": 0.5}}
    flat = flat_outputs(results)
    assert flat == {"swd_32": 1.5, "swd_16": 2.5, "swd_avg": 2.0, "msssim_mean": 0.25, "msssim_pairs": 8.0,
                    "fid": 12.5, "kid_mean": 0.01, "kid_std": 0.002, "is_mean": 3.5, "is_std": 0.25,
                    "pr_precision": 0.75, "pr_recall": 0.5}
    assert all(METRICS[key.split("_")[0]].output(key) for key in flat)  # each one declared by its metric
    table = format_table(results).splitlines()
    assert table[2:] == ["MS-SSIM      0.2500  (8 pairs)", "FID         12.5000", "KID        0.010000 ± 0.002000",
                         "IS           3.5000 ± 0.2500", "Precision    0.7500   Recall 0.5000"]
    assert flat_outputs({"is": (3.5, float("nan"))}) == {"is_mean": 3.5}  # logs are JSON: no NaN


def test_best_checkpoints_of_a_higher_is_better_metric_are_the_highest(tmp_path):
    """`pr_precision` used to rank ascending (its prefix "pr" was not in the higher-is-better list)."""
    trainer = SimpleNamespace(run_dir=tmp_path, config=SimpleNamespace(best_metric="pr_precision", keep_best=2),
                              family=SimpleNamespace(translates=False), resolution_after=lambda step: 32)
    for step, score in [(1, 0.5), (2, 0.9), (3, 0.1), (4, 0.7), (5, 0.3)]:
        trainer.step = step
        best = Trainer.update_best(trainer, score)
        ckpt.write_json_atomic(tmp_path / "best.json", {"metric": "pr_precision", "best": best})
    assert json.loads((tmp_path / "best.json").read_text())["best"] == [{"step": 2, "value": 0.9},
                                                                         {"step": 4, "value": 0.7}]
    trainer.config.best_metric = "fid"
    trainer.step = 6
    assert Trainer.update_best(trainer, 0.05)[0] == {"step": 6, "value": 0.05}  # lower first for FID


def test_a_translating_familys_protocol_ranks_lpips_highest_first_and_fid_lowest(tmp_path):
    from ganforge.families.stargan2 import StarGAN2Family

    trainer = SimpleNamespace(run_dir=tmp_path, step=1, family=StarGAN2Family,
                              config=SimpleNamespace(best_metric="LPIPS_reference/mean", keep_best=2),
                              resolution_after=lambda step: 256)
    best = []
    for step, score in [(1, 0.2), (2, 0.5), (3, 0.3)]:
        trainer.step = step
        best = Trainer.update_best(trainer, score)
        ckpt.write_json_atomic(tmp_path / "best.json", {"metric": trainer.config.best_metric, "best": best})
    assert best == [{"step": 2, "value": 0.5}, {"step": 3, "value": 0.3}]
    (tmp_path / "best.json").unlink()
    trainer.config.best_metric = "FID_latent/mean"
    assert Trainer.update_best(trainer, 30.0) == [{"step": 3, "value": 30.0}]
    ckpt.write_json_atomic(tmp_path / "best.json", {"metric": "FID_latent/mean", "best": [{"step": 3, "value": 30.0}]})
    trainer.step = 4
    assert Trainer.update_best(trainer, 20.0)[0] == {"step": 4, "value": 20.0}


def test_kid_and_pr_settings_reach_their_metrics_and_are_checked():
    import torch

    from ganforge.metrics.kid import kid
    from ganforge.metrics.prdc import precision_recall
    from ganforge.metrics.registry import TORCH_FIDELITY_SEED, MetricInputs, MetricSettings

    torch.manual_seed(0)
    fake, real = torch.randn(40, 8), torch.randn(50, 8) + 0.3
    default = MetricInputs(fake_pool=fake, real_pool=real, fake_vgg16=fake + 1, real_vgg16=real)
    chosen = MetricInputs(fake_pool=fake, real_pool=real, fake_vgg16=fake + 1, real_vgg16=real,
                          settings=MetricSettings(kid_subsets=7, kid_subset_size=12, pr_k=5))
    # the defaults: 100 subsets of all 40 (fewer than 1,000), k = 3
    assert METRICS["kid"].compute(default) == kid(fake, real, subsets=100, subset_size=40, seed=TORCH_FIDELITY_SEED)
    assert METRICS["kid"].compute(chosen) == kid(fake, real, subsets=7, subset_size=12, seed=TORCH_FIDELITY_SEED)
    assert METRICS["kid"].compute(chosen) != METRICS["kid"].compute(default)
    # precision/recall in VGG-16's feature space (torch-fidelity's), not Inception's
    assert METRICS["pr"].compute(default) == precision_recall(real, fake + 1, k=3)
    assert METRICS["pr"].compute(chosen) == precision_recall(real, fake + 1, k=5) != precision_recall(real, fake + 1,
                                                                                                      k=3)
    assert METRICS["pr"].compute(default) != precision_recall(real, fake, k=3)

    assert MetricSettings().given() == {} and MetricSettings(pr_k=3).given() == {"pr_k": 3}  # given, if default
    MetricSettings(kid_subsets=7).check_used(["kid", "swd"])
    with pytest.raises(ValueError, match=r"^--pr-k: set for pr, which is not among the metrics \(fid, kid\)$"):
        MetricSettings(pr_k=3).check_used(["fid", "kid"])  # the default value given does nothing there either
    with pytest.raises(ValueError, match=r"^--kid-subsets, --pr-k: set for kid and pr, which is not among"):
        MetricSettings(kid_subsets=5, pr_k=2).check_used(["swd"])
    with pytest.raises(ValueError, match=r"--kid-subset-size: expected an integer >= 2, got 1"):
        MetricSettings(kid_subset_size=1)
    with pytest.raises(ValueError, match=r"--kid-subsets: expected an integer >= 1, got 0"):
        MetricSettings(kid_subsets=0)
    # metrics left out for want of the Inception weights take their settings with them
    assert MetricSettings(kid_subsets=5, pr_k=2).for_metrics(["swd", "pr"]) == MetricSettings(pr_k=2)


def test_the_cli_refuses_kid_and_pr_settings_for_metrics_it_does_not_compute(tmp_path, capsys, no_feature_weights):
    import numpy as np

    from ganforge.cli import main

    images = tmp_path / "images.npz"
    np.savez(images, images=np.zeros((4, 3, 16, 16), np.uint8))
    assert main(["evaluate", "--fake", str(images), "--real", str(images), "--metrics", "swd", "--pr-k", "5"]) == 2
    assert "--pr-k: set for pr, which is not among the metrics (swd)" in capsys.readouterr().err
    # the Inception metrics left out with a warning (no weights): their settings do not make it an error
    assert main(["evaluate", "--fake", str(images), "--real", str(images), "--metrics", "msssim,swd,kid",
                 "--kid-subsets", "5"]) == 0
    captured = capsys.readouterr()
    assert "SWD x1e3" in captured.out and "kid not computed" in captured.out + captured.err


def test_training_time_kid_and_pr_take_the_configs_settings_and_record_them(tmp_path, monkeypatch, standin_vgg16):
    """Config keys kid_subsets, kid_subset_size and pr_k reach training-time KID and PR (seen by spies on the
    registry's functions), are written with every metrics row (as settings, not values: no curve of their own), and
    are refused, named as config keys, where they would do nothing (StarGAN v2's protocol has neither metric)."""
    import copy
    import sys

    import torch
    from pgan_tiny import TINY_PGAN
    from reliability_runs import TINY_RUNS

    import ganforge
    from ganforge.metrics import registry
    from ganforge.metrics.inception import InceptionV3FID
    from ganforge.viz.run_data import metric_keys

    evaluate_module = sys.modules["ganforge.metrics.evaluate"]
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"stand-in")  # found by path; the network itself is a random-weight Inception below
    monkeypatch.setattr(evaluate_module, "load_inception",
                        lambda path, device=None, fid_mode="legacy-tf": InceptionV3FID(fid_mode).eval())
    calls = []
    monkeypatch.setattr(registry, "kid", lambda *args, **kwargs: calls.append(("kid", kwargs)) or (0.5, 0.1))
    monkeypatch.setattr(registry, "precision_recall",
                        lambda *args, **kwargs: calls.append(("pr", kwargs)) or {"precision": 0.5, "recall": 0.5})
    config = copy.deepcopy(TINY_PGAN)
    config.update(metrics=["kid", "pr"], metrics_every=20, metrics_n=8, inception_weights=str(weights),
                  kid_subsets=3, kid_subset_size=4, pr_k=2)
    ganforge.train(config, tmp_path / "run")
    assert calls == [("kid", {"subsets": 3, "subset_size": 4, "seed": registry.TORCH_FIDELITY_SEED}),
                     ("pr", {"k": 2, "device": torch.device("cpu")})]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(row["step"], row["kid_subsets"], row["kid_subset_size"], row["pr_k"]) for row in rows] == [(20, 3, 4, 2)]
    assert rows[0]["pr_features"] == "vgg16-fc2"  # earlier runs measured it on Inception features
    assert metric_keys(rows) == ["kid_mean", "kid_std", "pr_precision", "pr_recall"]

    config.update(metrics=["kid"])
    with pytest.raises(ConfigError, match=r"^pr_k: set for pr, which is not among the metrics \(kid\)$"):
        ganforge.train(config, tmp_path / "other")
    config.update(pr_k=None, kid_subsets=0)
    with pytest.raises(ConfigError, match=r"^kid_subsets: expected an integer >= 1, got 0$"):
        ganforge.train(config, tmp_path / "other")
    translating = {**copy.deepcopy(TINY_RUNS["stargan2"]), "metrics": ["fid"], "metrics_every": 10, "pr_k": 2}
    with pytest.raises(ConfigError, match=r"^pr_k: a stargan2 run is evaluated by its paper's protocol"):
        ganforge.train(translating, tmp_path / "translating")


def test_precision_recall_with_its_default_k_needs_more_images_than_k_at_each_tick():
    from ganforge.config import RunConfig
    from ganforge.training.engine import check_training_metrics

    config = RunConfig(family="pgan", metrics=["pr"], metrics_every=8)
    with pytest.raises(ConfigError, match=r"^pr_k: precision/recall with k = 3 \(the default\) needs more than 3 "
                                          r"images at each metric tick, which compares 3 "):
        check_training_metrics(config, images=3, evaluates=False)
    check_training_metrics(config, images=4, evaluates=False)
    with pytest.raises(ConfigError, match=r"^pr_k: precision/recall with k = 4 needs more than 4 images"):
        check_training_metrics(RunConfig(family="pgan", metrics=["pr"], metrics_every=8, pr_k=4), images=4,
                               evaluates=False)


def test_only_the_process_that_evaluates_finds_or_downloads_the_metric_weights(monkeypatch, tmp_path):
    """torchrun's other ranks never compute a metric: they must not each download Inception (or DINOv2)."""
    import urllib.error
    import urllib.request

    from ganforge.config import RunConfig
    from ganforge.metrics.inception import InceptionWeightsError
    from ganforge.training.engine import check_training_metrics

    tries = []

    def offline(*args, **kwargs):
        tries.append(args)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GANFORGE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("GANFORGE_DINOV2_WEIGHTS", raising=False)
    config = RunConfig(family="pgan", metrics=["fid", "fd_dinov2"], metrics_every=8)
    check_training_metrics(config, images=16, evaluates=False)
    assert tries == []
    with pytest.raises(InceptionWeightsError, match="pt_inception-2015-12-05-6726825d.pth"):
        check_training_metrics(config, images=16)
    assert tries


def test_training_time_fid_against_a_statistics_file(tmp_path, monkeypatch, capsys):
    """fid_real_stats: FID at each tick against the file's mean and covariance (BigGAN-PyTorch's moments of the whole
    training set) while the other metrics read metrics_n training images; a file of another image size is skipped at
    a growing run's smaller scales and refused when the run never reaches it; each row names the file and digest."""
    import copy
    import shutil
    import sys
    import warnings

    import numpy as np
    from pgan_tiny import TINY_PGAN

    import ganforge
    from ganforge.metrics import registry
    from ganforge.metrics.fid_stats import ReferenceStats, write_stats
    from ganforge.metrics.inception import InceptionV3FID

    evaluate_module = sys.modules["ganforge.metrics.evaluate"]
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"stand-in")
    monkeypatch.setattr(evaluate_module, "load_inception",
                        lambda path, device=None, fid_mode="legacy-tf": InceptionV3FID(fid_mode).eval())
    rng = np.random.default_rng(3)
    mixing = rng.normal(size=(2048, 2048)) * 0.01
    stats = ReferenceStats(rng.normal(size=2048), mixing @ mixing.T, count=500, fid_mode="legacy-tf", resolution=16)
    path = write_stats(tmp_path / "moments.npz", stats)
    against = []
    fid = registry.fid
    monkeypatch.setattr(registry, "fid", lambda fake, real: against.append(real) or fid(fake, real))
    config = copy.deepcopy(TINY_PGAN)
    config.update(metrics=["fid", "kid"], metrics_every=10, metrics_n=8, inception_weights=str(weights),
                  fid_real_stats=str(path))
    ganforge.train(config, tmp_path / "run")
    assert len(against) == 1 and np.array_equal(against[0].mean, stats.mean)  # at 16 px only
    assert np.array_equal(against[0].cov, stats.cov)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(row["step"], "fid" in row, "kid_mean" in row) for row in rows] == [(10, False, True), (20, True, True)]
    assert rows[1]["fid_real_stats"].startswith("moments.npz sha256 ") and "fid_real_stats" not in rows[0]
    assert "fid skipped at resolution 8 (fid_real_stats holds statistics of 16 px images)" in (
        (tmp_path / "run" / "log.jsonl").read_text() + capsys.readouterr().out)
    moved = tmp_path / "elsewhere.npz"  # a resume may name the file where it is now
    shutil.move(path, moved)
    ganforge.train({**config, "fid_real_stats": str(moved), "model": {**config["model"], "schedule": {
        **config["model"]["schedule"], "max_iter_at_scale": [4, 8, 18]}}}, tmp_path / "run")
    assert len(against) == 2

    config.update(metrics=["kid"], fid_real_stats=str(moved))
    with pytest.raises(ConfigError, match=r"^fid_real_stats: set for fid, which is not among metrics \['kid'\]$"):
        ganforge.train(config, tmp_path / "other")
    config.update(metrics=["fid"], fid_real_stats=str(tmp_path / "missing.npz"))
    with pytest.raises(ConfigError, match=r"^fid_real_stats: .*missing.npz: no such statistics file"):
        ganforge.train(config, tmp_path / "other")
    for other, message in ((ReferenceStats(stats.mean, stats.cov, 500, "clean"),
                            r"statistics made with fid_mode clean, and this run's fid_mode is legacy-tf"),
                           (ReferenceStats(stats.mean, stats.cov, 500, "legacy-tf", 32),
                            r"holds statistics of 32 px images, and this run's generator makes 16 px ones")):
        config.update(fid_real_stats=str(write_stats(tmp_path / "other.npz", other, overwrite=True)))
        with pytest.raises(ConfigError, match=message):
            ganforge.train(config, tmp_path / "other")
    config.update(fid_real_stats=str(write_stats(tmp_path / "foreign.npz", ReferenceStats(stats.mean, stats.cov))),
                  metrics_every=20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ganforge.train(config, tmp_path / "foreign")
    assert any("does not say how it was made" in str(w.message) for w in caught)
