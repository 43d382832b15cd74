"""The real-vs-real SWD floor printed beside a run's SWD: two disjoint real sets of the same data and size."""

import json

import numpy as np
import pytest

from ganforge.data.builtin import make_shapes
from ganforge.data.images import build_pyramid
from ganforge.data.store import DatasetError, ImageDataset, open_dataset
from ganforge.evaluation import run_metrics
from ganforge.metrics.evaluate import evaluate
from ganforge.training import engine
from ganforge.viz import report

SPEC = "builtin:shapes?count=32&resolution=16"


def test_line_puts_the_swd_beside_the_floor_and_their_ratio():
    swd = {"resolutions": [32, 16], "swd": [21.3, 25.1], "avg": 23.2}
    floor = {"resolutions": [32, 16], "swd": [8.4, 10.7], "avg": 9.55}
    assert run_metrics.swd_versus_floor(swd, floor) == (
        "SWD x1e3 32px 21.3 16px 25.1 avg 23.2 (real-vs-real floor 8.4 / 10.7, avg 9.6: 2.4x)")


def test_builtin_floor_set_is_the_next_seed_of_the_procedural_data():
    dataset = open_dataset(SPEC)
    others, source = run_metrics.second_real_set(dataset, 16, 8, seed=0)
    assert source == "builtin:shapes?count=32&resolution=16&seed=1"
    chosen = np.sort(np.random.default_rng(0).choice(32, size=8, replace=False))
    assert np.array_equal(others, make_shapes(32, 16, seed=1)[0][chosen])
    assert not np.array_equal(others, run_metrics.real_images(dataset, 16, 8, seed=0))


def _store_like(count: int) -> ImageDataset:
    images = make_shapes(count, 8, seed=3)[0]
    manifest = {"resolution": 8, "count": count, "channels": 3, "labels": []}
    return ImageDataset(build_pyramid(images, 4), labels=None, manifest=manifest, fingerprint="f", source="store")


def test_store_floor_set_is_disjoint_from_the_scored_real_set():
    dataset = _store_like(10)
    scored = run_metrics.real_images(dataset, 8, 5, seed=0)
    others, source = run_metrics.second_real_set(dataset, 8, 5, seed=0)
    assert source == "5 other images of store"
    pixels = {image.tobytes() for image in dataset.images(8)}
    assert len(pixels) == 10  # distinct images, so disjoint sets share no image
    assert not {image.tobytes() for image in scored} & {image.tobytes() for image in others}
    with pytest.raises(DatasetError, match=r"^store: a real-vs-real floor of 6 images needs two disjoint sets, 12 "
                                           r"images; the dataset holds 10$"):
        run_metrics.second_real_set(dataset, 8, 6, seed=0)


def test_floor_is_the_swd_of_the_two_sets_computed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    dataset = open_dataset(SPEC)
    floor = run_metrics.real_swd_floor(dataset, 16, 16, seed=0, cache_dir=tmp_path)
    others, _ = run_metrics.second_real_set(dataset, 16, 16, seed=0)
    direct = evaluate(others, run_metrics.real_images(dataset, 16, 16, seed=0), ["swd"], n=16, seed=0)["swd"]
    assert floor["swd"] == pytest.approx(direct["swd"], rel=1e-6) and floor["avg"] == pytest.approx(direct["avg"])
    assert floor["resolutions"] == [16] and floor["second_set"].endswith("seed=1")
    assert floor["cache"] is not None and floor["cache"].startswith(str(tmp_path))

    def recompute(*args, **kwargs):
        raise AssertionError("the cached floor was computed again")

    monkeypatch.setattr(run_metrics, "_run_evaluate", recompute)
    assert run_metrics.real_swd_floor(dataset, 16, 16, seed=0, cache_dir=tmp_path) == floor
    with pytest.raises(AssertionError, match="computed again"):  # another image count is another floor
        run_metrics.real_swd_floor(dataset, 16, 8, seed=0, cache_dir=tmp_path)


def test_train_final_swd_prints_the_swd_beside_the_cached_floor(tmp_path, monkeypatch, capsys):
    from ganforge.cli import main

    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", "wgan-gp", "--run", str(run), "--data", SPEC, "--set", "model.features_g=2",
                 "--set", "model.features_d=2", "--set", "model.latent_dim=8", "--set", "model.batch_size=4",
                 "--set", "model.steps=1", "--set", "progress=false", "--set", "tensorboard=false",
                 "--set", "sample_count=4", "--final-swd", "16"]) == 0
    lines = capsys.readouterr().out.splitlines()
    swd = json.loads((run / "swd.json").read_text())["1"]
    cached = list((tmp_path / "cache" / "stats").glob("swd-floor-*.json"))
    assert len(cached) == 1
    floor = json.loads(cached[0].read_text())["floor"]
    assert lines[-3] == run_metrics.swd_versus_floor(swd, floor)
    assert lines[-3].startswith(f"SWD x1e3 16px {swd['swd'][0]:.1f} avg {swd['avg']:.1f} (real-vs-real floor ")
    assert lines[-2] == (f"  floor: the same real images against {SPEC}&seed=1 (cached in {cached[0]})")
    # the main job ends on the report's path, and the report holds the final SWD just printed
    assert lines[-1] == f"report: {run / 'report.html'} (open it in a browser)"
    page = (run / "report.html").read_text()
    assert f"<td>{swd['avg']:.4g}</td>" in page
    # ... and the floor beside it (swd_floor.json; --restart removes it with the run's other records)
    assert json.loads((run / "swd_floor.json").read_text()) == {"n": 16, **floor}
    assert (f"avg {report._number(floor['avg'])}: what a generator indistinguishable from the data would score "
            f"(dotted). The newest SWD avg of as many images (step 1) is {report._number(swd['avg'])}, "
            f"{swd['avg'] / floor['avg']:.1f}× the floor.") in page
    assert engine.run_outputs(run)["swd_floor.json"] == [run / "swd_floor.json"]
    # asked again of the finished run (as after a first command without --final-swd): computed, not skipped
    (run / "swd_floor.json").unlink()
    assert main(["train", "wgan-gp", "--run", str(run), "--final-swd", "16"]) == 0
    again = capsys.readouterr().out.splitlines()
    assert "already finished" in again[0] and again[-3] == lines[-3] and (run / "swd_floor.json").is_file()
    # a run that --until (or patience) stopped short is scored at its stop too (the option did nothing there)
    assert main(["train", "wgan-gp", "--run", str(tmp_path / "short"), "--data", SPEC, "--set", "model.features_g=2",
                 "--set", "model.features_d=2", "--set", "model.latent_dim=8", "--set", "model.batch_size=4",
                 "--set", "model.steps=3", "--set", "progress=false", "--set", "tensorboard=false",
                 "--set", "sample_count=4", "--until", "1", "--final-swd", "16"]) == 0
    short = capsys.readouterr().out.splitlines()
    assert short[-3].startswith("SWD x1e3 16px ") and short[-1].startswith("report: ")


def test_final_swd_of_a_pgan_stopped_below_16_px_is_said_not_an_error(tmp_path, monkeypatch, capsys):
    """--until at the 8 px scale: the stop and its checkpoint stand (exit 0); SWD's smallest level is 16 px."""
    from pgan_tiny import TINY_PGAN

    from ganforge.cli import main

    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    config = tmp_path / "pgan.json"
    config.write_text(json.dumps(TINY_PGAN))
    assert main(["train", "pgan", "-c", str(config), "--run-dir", str(tmp_path / "run"), "--until", "8",
                 "--final-swd", "16"]) == 0
    out = capsys.readouterr().out
    assert "--final-swd: not computed at step 8: SWD: images of size 8 are smaller than min_resolution=16" in out
    assert out.rstrip().splitlines()[-1].startswith("report: ")
    # a run whose images never reach 16 px: refused before training, not trained to an SWD it cannot compute
    small = {**TINY_PGAN, "model": {**TINY_PGAN["model"], "resolution": 8, "widths": [8, 8],
                                    "schedule": {**TINY_PGAN["model"]["schedule"], "max_iter_at_scale": [4, 8]}}}
    config.write_text(json.dumps(small))
    assert main(["train", "pgan", "-c", str(config), "--run-dir", str(tmp_path / "small"), "--final-swd", "16"]) == 2
    assert "--final-swd: SWD: images of size 8 are smaller than min_resolution=16 (this run's images are 8 px)" in \
        capsys.readouterr().err
    assert not (tmp_path / "small").exists()


def test_the_report_draws_the_floor_under_the_swd_curve_and_names_a_broken_record(tmp_path):
    from ganforge.viz import plots
    from ganforge.viz.run_data import read_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"family": "pgan"}))
    (run / "log.jsonl").write_text(json.dumps({"step": 10, "kimg": 0.1, "loss_D": 1.0}) + "\n")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "kimg": 0.1, "n": 64, "swd_32": 30.0,
                                                   "swd_16": 20.0, "swd_avg": 25.0}) + "\n")
    floor = {"n": 64, "resolutions": [32, 16], "swd": [8.0, 12.0], "avg": 10.0, "second_set": "x"}
    (run / "swd_floor.json").write_text(json.dumps(floor))
    parsed = read_run(run)
    assert [parsed.floor_of(k) for k in ("swd_32", "swd_16", "swd_avg", "swd_8", "fid")] == [8.0, 12.0, 10.0,
                                                                                             None, None]
    if plots.available():
        assert "real-vs-real floor (n=64)" in plots.metrics_figure([("run", parsed)])
    assert "The newest SWD avg of as many images (step 10) is 25, 2.5× the floor." in report.write_report(
        [run]).read_text()
    # a floor written at a PGAN's --until stop at 16 px, the run grown to 32 px since: its avg is no floor there
    with open(run / "metrics.jsonl", "a") as rows:
        rows.write(json.dumps({"step": 20, "kimg": 0.2, "n": 64, "swd_64": 50.0, "swd_32": 30.0, "swd_16": 20.0,
                               "swd_avg": 33.3}) + "\n")
    grown = read_run(run)
    assert [grown.floor_of(k) for k in ("swd_32", "swd_16", "swd_avg", "swd_64")] == [8.0, 12.0, None, None]
    page = report.write_report([run]).read_text()
    assert "The newest SWD averages other pyramid levels (the run has grown since)" in page
    assert "× the floor" not in page
    (run / "swd_floor.json").write_text(json.dumps({**floor, "swd": [8.0]}))
    assert "swd_floor.json is not a floor record (n, resolutions, swd, avg); the SWD floor not shown" in \
        report.write_report([run]).read_text()
