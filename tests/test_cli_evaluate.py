"""Metrics of runs and image sets from the CLI and during training (best-checkpoint retention)."""

import copy
import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from pgan_tiny import TINY_PGAN
from PIL import Image

import ganforge
from ganforge.cli import main
from ganforge.data.store import open_dataset
from ganforge.families import resolve_run_config
from ganforge.training import checkpoint as ckpt
from ganforge.training.engine import Trainer
from ganforge.viz.run_data import read_run


def refused_against_statistics(fakes, side: int, tmp_path, capsys):
    """`evaluate --fake FAKES --real-stats` of `side` px squares, refused before the (stand-in) weights are read;
    returns the statistics file (the refusal is on stderr)."""
    from ganforge.metrics.fid_stats import ReferenceStats, write_stats

    stats = write_stats(tmp_path / f"s{side}.npz", ReferenceStats(np.zeros(2048), np.eye(2048), 10, "legacy-tf", side))
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"never loaded: refused before")
    capsys.readouterr()
    assert main(["evaluate", "--fake", str(fakes), "--real-stats", str(stats), "--inception-weights",
                 str(weights)]) == 2
    return stats


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("evaluate") / "run"
    ganforge.train(TINY_PGAN, run)
    return run


@pytest.mark.slow
def test_evaluate_run_writes_metrics_and_swd_json(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--metrics", "swd", "--n", "48"]) == 0
    table = capsys.readouterr().out
    assert "SWD" in table and "step 20" in table
    line = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert line["step"] == 20 and line["n"] == 48 and line["source"] == "evaluate"
    assert line["real"] == json.loads((tiny_run / "config.json").read_text())["data"]  # the run's own data
    assert line["swd_16"] == line["swd_avg"] > 0
    swd = json.loads((tiny_run / "swd.json").read_text())
    assert swd["20"]["resolutions"] == [16] and swd["20"]["swd"] == [line["swd_16"]]
    # against other real images: a row of metrics.jsonl with its real set, not the run's own SWD curve (swd.json)
    assert main(["evaluate", str(tiny_run), "--metrics", "swd", "--n", "48", "--real",
                 "builtin:shapes?count=64&resolution=16&seed=3"]) == 0
    other = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert other["real"] == "builtin:shapes?count=64&resolution=16&seed=3" and other["swd_16"] != line["swd_16"]
    assert json.loads((tiny_run / "swd.json").read_text()) == swd
    # every checkpoint: the 8x8 one is below SWD's 16x16 minimum and is reported as skipped
    assert main(["evaluate", str(tiny_run), "--metrics", "swd", "--n", "48", "--all"]) == 0
    out = capsys.readouterr().out
    assert "step 8: skipped" in out and "step 16" in out and "step 20" in out


def test_stargan2_options_on_another_family_are_refused(tmp_path, capsys):
    run = tmp_path / "run"  # the refusal comes from the run's config alone, before any checkpoint is read
    run.mkdir()
    (run / "config.json").write_text(json.dumps(TINY_PGAN))
    assert main(["evaluate", str(run), "--val", "builtin:shapes", "--fid-network", "tf-inception"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"ganforge evaluate: error: --val, --fid-network: only for stargan2 runs, and {run} is not one")
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]  # refused before evaluating


@pytest.mark.slow
def test_evaluate_any_two_image_sets(tiny_run, tmp_path, capsys):
    fakes = tmp_path / "fakes"
    assert main(["generate", str(tiny_run), "--n", "40", "-o", str(fakes)]) == 0
    reals = tmp_path / "reals"
    reals.mkdir()
    images = open_dataset("builtin:shapes?count=64&resolution=32").images(32)[:40]
    for index, image in enumerate(images):  # 32 px: brought to the fakes' 16 px
        Image.fromarray(image.transpose(1, 2, 0)).save(reals / f"{index}.png")
    capsys.readouterr()
    assert main(["evaluate", "--fake", str(fakes), "--real", str(reals), "--metrics", "swd"]) == 0
    folder_table = capsys.readouterr().out
    npz = tmp_path / "fakes.npz"
    stacked = np.stack([np.asarray(Image.open(p)) for p in sorted(fakes.glob("*.png"))])  # NHWC
    np.savez(npz, images=stacked)
    assert main(["evaluate", "--fake", str(npz), "--real", str(reals), "--metrics", "swd"]) == 0
    assert capsys.readouterr().out == folder_table  # same images, same numbers
    assert main(["evaluate", "--fake", str(tmp_path / "missing"), "--real", str(reals)]) == 2
    assert "missing" in capsys.readouterr().err


@pytest.mark.slow
def test_training_time_metrics_keep_the_best_checkpoints(tmp_path):
    config = copy.deepcopy(TINY_PGAN)
    config.update(metrics=["swd"], metrics_every=16, metrics_n=32, best_metric="swd_avg", keep_best=1,
                  keep_checkpoints=1, checkpoint_every=4)
    run = tmp_path / "run"
    ganforge.train(config, run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    scores = {r["step"]: r["swd_avg"] for r in rows}
    assert sorted(scores) == [16, 20] and {r["n"] for r in rows} == {32}  # each row says its image count
    best_step = min(scores, key=scores.get)
    assert json.loads((run / "best.json").read_text()) == {
        "metric": "swd_avg", "best": [{"step": best_step, "value": scores[best_step]}]}
    # latest 1 + best 1 + the scales' ends (4, 12, 20), the rest pruned
    assert ckpt.checkpoint_steps(run) == sorted({best_step, 4, 12, 20})


@pytest.mark.slow
def test_a_tick_whose_best_metric_is_not_finite_is_not_ranked_and_training_goes_on(tmp_path, monkeypatch, capsys):
    """A collapsed generator (one flat colour channel) gives SWD NaN, which the logs leave out; the run stopped with
    a ConfigError blaming best_metric. Now that tick is said and left unranked, and the next tick ranks."""
    from ganforge.evaluation import run_metrics

    real_evaluate, ticks = run_metrics._run_evaluate, []

    def first_tick_nan(*args, **kwargs):
        results = real_evaluate(*args, **kwargs)
        ticks.append(results)
        return {"swd": {**results["swd"], "swd": [float("nan")] * len(results["swd"]["swd"]), "avg": float("nan")}} \
            if len(ticks) == 1 else results

    monkeypatch.setattr(run_metrics, "_run_evaluate", first_tick_nan)
    config = copy.deepcopy(TINY_PGAN)
    config.update(metrics=["swd"], metrics_every=16, metrics_n=32, best_metric="swd_avg", keep_best=2)
    run = tmp_path / "run"
    assert ganforge.train(config, run).step == 20
    assert "step 16: swd_avg is not finite at this metric tick" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [20]  # no finite value at step 16: no row
    assert json.loads((run / "best.json").read_text())["best"] == [{"step": 20, "value": rows[0]["swd_avg"]}]


@pytest.mark.slow
def test_a_run_against_a_class_sorted_store_reads_the_same_random_reals_either_way(tiny_run, tmp_path, capsys):
    """`evaluate RUN --real STORE` and `evaluate --fake RUN --real STORE` compare the same generated images with the
    same seeded random choice of reals. Before, the second took the store's first N images: in a class-sorted store
    (every `prepare folder` of class sub-folders) a few classes, and a different SWD."""
    from ganforge.data.store import write_store

    images = open_dataset("builtin:shapes?count=96&resolution=16").images(16)
    order = np.argsort(images.reshape(len(images), -1).mean(axis=1), kind="stable")  # sorted dark to light
    store = write_store(tmp_path / "sorted", np.ascontiguousarray(images[order]), resolution=16, source="test")
    assert main(["evaluate", str(tiny_run), "--real", str(store), "--metrics", "swd", "--n", "40"]) == 0
    from_run = capsys.readouterr().out.splitlines()[1:]
    assert main(["evaluate", "--fake", str(tiny_run), "--real", str(store), "--metrics", "swd", "--n", "40"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == from_run


def test_image_sets_without_reals_give_is_and_msssim_and_too_large_n_is_said(tmp_path, capsys):
    """IS and MS-SSIM read the generated images alone (torch-fidelity's `--isc --input1 DIR`); the metrics that
    compare with reals say so by name. An `--n` above what the sets hold is said, not silently shrunk."""
    rng = np.random.default_rng(12)
    fakes, reals = tmp_path / "fakes", tmp_path / "reals"
    for folder, count in ((fakes, 6), (reals, 4)):
        folder.mkdir()
        for index in range(count):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{index}.png")
    assert main(["evaluate", "--fake", str(fakes), "--metrics", "msssim"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "6 generated images" and "MS-SSIM" in out
    assert main(["evaluate", "--fake", str(fakes), "--metrics", "msssim,swd"]) == 2
    assert capsys.readouterr().err.strip() == (
        "ganforge evaluate: error: evaluate --fake: swd compare with real images: give them (--real DIR_OR_STORE) "
        "or their statistics (--real-stats FILE.npz); is and msssim need none")
    assert main(["evaluate", "--fake", str(fakes), "--real", str(reals), "--metrics", "msssim", "--n", "10"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "6 generated images against 4 real"
    assert ("note: --n 10: the generated set holds 6 images and the real set holds 4 images; all of them were "
            "evaluated") in out
    Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(fakes / "9-larger.png")
    assert main(["evaluate", "--fake", str(fakes), "--metrics", "msssim"]) == 2  # as `stats` refuses a mixed folder
    assert "images of different sizes" in capsys.readouterr().err
    odd = tmp_path / "odd"  # 66 px: 66 → 33 cannot be halved on to SWD's 16 px level; the option that fixes it is named
    odd.mkdir()
    for index in range(4):
        Image.fromarray(rng.integers(0, 256, (66, 66, 3), dtype=np.uint8)).save(odd / f"{index}.png")
    assert main(["evaluate", "--fake", str(odd), "--real", str(reals), "--metrics", "swd"]) == 2
    assert capsys.readouterr().err.strip().endswith("--resolution R brings both sets to R×R (centre crop, then resize)")
    argv = ["evaluate", "--fake", str(odd), "--real", str(reals), "--metrics", "swd", "--resolution", "66"]
    assert main(argv) == 2  # given already: the hint would send the user round in a circle
    assert "--resolution R" not in capsys.readouterr().err
    lone = tmp_path / "lone"  # not a size problem: no size advice
    lone.mkdir()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(lone / "0.png")
    assert main(["evaluate", "--fake", str(lone), "--metrics", "msssim"]) == 2
    assert capsys.readouterr().err.strip() == (
        "ganforge evaluate: error: --fake: 1 image; the metrics compare distributions of images (a covariance needs at "
        "least 2, a FID that means something thousands)")  # said before any feature network runs


def test_evaluate_fake_refuses_what_it_would_ignore_and_reads_folders_as_pytorch_fid(tmp_path, capsys):
    """A RUN, --ppl or a StarGAN v2 option beside --fake were dropped without a word; a folder of 178×218 images was
    centre-cropped, which changes their Inception statistics (pytorch-fid and torch-fidelity resize them whole);
    statistics of another image size gave a FID that compares nothing."""
    from ganforge.evaluation.run_metrics import iter_image_set

    rng = np.random.default_rng(3)
    faces = tmp_path / "faces"
    faces.mkdir()
    pixels = rng.integers(0, 256, (3, 218, 178, 3), dtype=np.uint8)
    for index, image in enumerate(pixels):
        Image.fromarray(image).save(faces / f"{index}.png")
    [batch] = list(iter_image_set(faces))
    assert np.array_equal(batch, pixels.transpose(0, 3, 1, 2))  # whole, for Inception's own resize
    assert next(iter_image_set(faces, 64)).shape == (3, 3, 64, 64)  # --resolution: cropped and resized
    for extra, named in ((["run"], "RUN run"), (["--ppl", "full"], "--ppl"), (["--all"], "--all"),
                         (["--per-class"], "--per-class"), (["--val", "v"], "--val"),
                         (["--fid-network", "tf-inception"], "--fid-network")):
        assert main(["evaluate", "--fake", str(faces), "--real", str(faces), *extra]) == 2
        assert capsys.readouterr().err.strip() == (
            f"ganforge evaluate: error: {named}: for `evaluate RUN`, not with --fake (which compares --fake's images "
            "with --real or --real-stats); give one of the two")
    assert main(["evaluate", "--fake", str(faces), "--real", str(faces), "--metrics", ","]) == 2
    assert "--metrics ',': no metric named" in capsys.readouterr().err
    from ganforge.evaluation import run_metrics

    read = []
    real_reader = run_metrics.iter_image_set

    def reader(source, resolution=None, **kwargs):
        read.append((Path(source).name, resolution))
        return real_reader(source, resolution, **kwargs)

    with pytest.MonkeyPatch.context() as patch:  # beside non-square fakes the reals are read whole too
        patch.setattr(run_metrics, "iter_image_set", reader)
        run_metrics.evaluate_folders(faces, faces, ["msssim"])
        assert main(["evaluate", "--fake", str(faces), "--real", str(faces), "--metrics", "swd"]) in (0, 2)
    assert set(read) == {("faces", None)}
    capsys.readouterr()
    squares = tmp_path / "squares.npz"
    np.savez(squares, images=rng.integers(0, 256, (4, 3, 16, 16), dtype=np.uint8))
    stats = refused_against_statistics(squares, 32, tmp_path, capsys)
    assert capsys.readouterr().err.strip() == (
        f"ganforge evaluate: error: --real-stats {stats}: statistics of 32 px images, and the generated ones are "
        "16 px; FIDs of other image sizes do not compare (`ganforge stats --resolution 16` makes statistics at that "
        "size)")


def test_grey_against_colour_images_is_noted(tmp_path, capsys):
    """An MNIST store against a colour folder compares grey images as RGB: the numbers are of sets that differ in
    colour by construction, and the output says so."""
    from ganforge.data.store import write_store

    rng = np.random.default_rng(13)
    grey = write_store(tmp_path / "grey", rng.integers(0, 256, (4, 1, 16, 16), dtype=np.uint8), resolution=16,
                       channels=1, source="test")
    colour = tmp_path / "colour"
    colour.mkdir()
    for index in range(4):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(colour / f"{index}.png")
    assert main(["evaluate", "--fake", str(grey), "--real", str(colour), "--metrics", "msssim"]) == 0
    assert ("note: the generated images have 1 channel(s), the real ones 3: grey images are compared as RGB"
            in capsys.readouterr().out)


def test_metrics_run_on_the_generators_gpu_and_on_the_cpu_otherwise(monkeypatch):
    """Training-time metrics and `evaluate` of a run ran their feature networks on the CPU next to a generator on a
    GPU (304M-parameter DINOv2 at about 1 image/s there); MPS keeps the CPU (float64 sums)."""
    import contextlib
    from types import SimpleNamespace

    import torch

    from ganforge.evaluation import run_metrics
    from ganforge.metrics.evaluate import metrics_device

    assert metrics_device("cuda:1") == torch.device("cuda", 1)
    assert metrics_device(torch.device("mps")) == metrics_device(None) == torch.device("cpu")
    devices = []
    monkeypatch.setattr(run_metrics, "evaluate", lambda *args, **kwargs: devices.append(kwargs["device"]) or {})
    dataset = open_dataset("builtin:shapes?count=8&resolution=16")
    for device in (torch.device("cuda", 0), torch.device("mps")):
        family = SimpleNamespace(translates=False, device=device,  # its images are never drawn here
                                 weights_held=contextlib.nullcontext)
        run_metrics.evaluate_family(family, dataset, SimpleNamespace(resolution=16), ["swd"], n=4, seed=0)
    assert devices == [torch.device("cuda", 0), torch.device("cpu")]


def test_a_metric_tick_out_of_gpu_memory_goes_on_on_the_cpu(tmp_path, monkeypatch):
    """Metrics now share the training GPU: a tick that does not fit beside training is computed again on the CPU,
    said once, and later ticks stay there; a CPU run's own out-of-memory error is not hidden."""
    from types import SimpleNamespace

    import torch

    from ganforge.evaluation import run_metrics

    config = copy.deepcopy(TINY_PGAN)
    config.update(metrics=["swd"], metrics_every=10)
    trainer = Trainer(resolve_run_config(None, config), tmp_path / "run")
    calls, said = [], []

    def evaluate_family(*args, metrics_on=None, **kwargs):
        calls.append(metrics_on)
        if metrics_on is None:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"swd_avg": 1.5}

    monkeypatch.setattr(run_metrics, "evaluate_family", evaluate_family)
    logger = SimpleNamespace(message=said.append, metrics=lambda record, settings=None: None)
    plan = trainer.family.plan(0)
    try:
        with pytest.raises(torch.OutOfMemoryError):  # on the CPU already: nothing to fall back to
            trainer.run_metrics(plan, logger)
        trainer.device = torch.device("cuda", 0)  # as a GPU run's (the fake evaluate touches no device)
        for _ in range(2):
            trainer.run_metrics(plan, logger)
    finally:
        trainer.loader.close()
    assert calls == [None, None, torch.device("cpu"), torch.device("cpu")]
    assert len(said) == 1 and "ran out of GPU memory beside training; they are computed on the CPU" in said[0]


def test_a_runs_raw_generator_can_be_evaluated_beside_its_ema_one(tiny_run, tmp_path, capsys):
    """`evaluate --fake RUN --net G` (BigGAN-PyTorch's sample.py toggles --use_ema; its users compare both, issue
    #23): the raw generator's images, not written to the run; refused where it would do nothing or is unknown."""
    import torch

    from ganforge.evaluation import run_metrics
    from ganforge.metrics.evaluate import evaluate

    reals = tmp_path / "reals.npz"
    np.savez(reals, images=np.asarray(open_dataset(TINY_PGAN["data"]).images(16)[:16]))
    records = (tiny_run / "metrics.jsonl").read_text() if (tiny_run / "metrics.jsonl").exists() else ""
    ema = run_metrics.evaluate_folders(tiny_run, reals, ["swd"], n=16)["results"]["swd"]
    raw = run_metrics.evaluate_folders(tiny_run, reals, ["swd"], n=16, net="G")["results"]["swd"]
    model = ganforge.load(tiny_run)
    fakes = torch.cat(list(run_metrics.generated_batches(model.family, model.plan, 16, 0, net="G")))
    assert raw == evaluate(fakes, next(run_metrics.iter_image_set(reals)), ["swd"])["swd"] and raw != ema
    assert ((tiny_run / "metrics.jsonl").read_text() if (tiny_run / "metrics.jsonl").exists() else "") == records
    assert main(["evaluate", str(tiny_run), "--net", "G"]) == 2
    assert "--net G: with --fake RUN" in capsys.readouterr().err
    assert main(["evaluate", "--fake", str(tiny_run), "--real", str(reals), "--net", "D"]) == 2
    assert f"--net D: {tiny_run} samples with G_ema, G" in capsys.readouterr().err
    assert main(["evaluate", "--fake", str(reals), "--real", str(reals), "--net", "G"]) == 2
    assert "is an image set, not a run" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_refuses_a_run_it_cannot_record_into_before_computing(tiny_run, monkeypatch, capsys):
    """`evaluate RUN` appends to the run's metrics.jsonl: a read-only run fails at once (root may write anywhere, so
    the permission is simulated), naming `evaluate --fake RUN`, which gives the same values unrecorded."""
    import os

    evaluate_module = __import__("ganforge.evaluation.run_metrics", fromlist=["os"])
    before = (tiny_run / "metrics.jsonl").read_text() if (tiny_run / "metrics.jsonl").exists() else ""
    read_only, access = {tiny_run / "metrics.jsonl", tiny_run}, os.access
    monkeypatch.setattr(evaluate_module.os, "access", lambda path, mode: Path(path) not in read_only)
    assert main(["evaluate", str(tiny_run), "--metrics", "swd", "--n", "48"]) == 2
    said = capsys.readouterr().err
    data = json.loads((tiny_run / "config.json").read_text())["data"]
    # the file it appends to, or the folder where it would create it (the other tests of the module may have)
    assert f"{tiny_run / 'metrics.jsonl'} is not writable" in said or f"{tiny_run} is not writable" in said
    # the command to copy, quoted for a shell (the spec has & and ?)
    assert f"ganforge evaluate --fake {tiny_run} --real '{data}'`" in said
    monkeypatch.setattr(evaluate_module.os, "access", access)
    assert main(["evaluate", "--fake", str(tiny_run), "--real", data, "--metrics", "swd", "--n", "48"]) == 0
    unrecorded = capsys.readouterr().out
    assert ((tiny_run / "metrics.jsonl").read_text() if (tiny_run / "metrics.jsonl").exists() else "") == before
    assert main(["evaluate", str(tiny_run), "--metrics", "swd", "--n", "48"]) == 0
    recorded = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])
    printed = [float(cell) for cell in re.findall(r"\d+\.\d+", unrecorded)]  # as many digits as the table shows
    for key in ("swd_avg", "swd_16"):
        assert any(value == pytest.approx(recorded[key], abs=0.0051) for value in printed), (key, unrecorded)


@pytest.mark.slow
def test_patience_stops_training_at_the_first_ticks_without_a_new_best(tmp_path, capsys):
    """Early stopping (BigGAN's collapse): with patience 1 the run ends, after its checkpoint, at the first metric
    tick that is no new best; run again it trains nothing and says why, and a larger patience trains on."""
    config = copy.deepcopy(TINY_PGAN)  # seed 3's SWD at steps 14, 16: 246.7, 250.7 (no new best)
    config.update(seed=3, metrics=["swd"], metrics_every=2, metrics_n=32, best_metric="swd_avg", keep_best=1,
                  patience=1)
    run = tmp_path / "run"
    result = ganforge.train(config, run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert (result.stop, result.step) == ("early", 16)
    assert [row["step"] for row in rows] == [14, 16] and rows[1]["swd_avg"] > rows[0]["swd_avg"]
    assert 16 in ckpt.checkpoint_steps(run) and json.loads((run / "best.json").read_text())["best"][0]["step"] == 14
    assert result.summary().startswith(f"stopped early at step 16 of 20: swd_avg has not improved on its best "
                                       f"{rows[0]['swd_avg']:.6g} (step 14) in the 1 metric tick since (patience)")
    assert "stopping early" in capsys.readouterr().out  # said in the log as it happens
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"event"' in line]
    assert events == [{"step": 16, "event": "stopped early", "reason": result.early_reason}]
    assert f"stopped early at step 16: {html.escape(result.early_reason)} (patience)" in (
        run / "report.html").read_text()
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 17, "sw')  # a row cut by a kill: skipped, and the next row starts a line of its own
    assert main(["train", "pgan", "-c", str(path), "--run", str(run)]) == 0  # nothing to train
    assert "stopped early at step 16 of 20" in capsys.readouterr().out
    assert main(["train", "pgan", "-c", str(path), "--run", str(run), "--set", "patience=3"]) == 0
    assert "finished at step 20" in capsys.readouterr().out
    assert read_run(run).early_stop is None and "stopped early at step" not in (run / "report.html").read_text()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert lines[2] == '{"step": 17, "sw' and [json.loads(line)["step"] for line in lines[3:]] == [18, 20]
    # --until at the very tick: stopped early, which a run without --until would be too
    assert ganforge.train(config, tmp_path / "until", until=16).stop == "early"
    for bad, said in ((0, "metric ticks without a new best best_metric: expected a positive integer"),
                      (2, "metric ticks without a new best best_metric: set best_metric too"),
                      (3, "metric ticks, and metrics_every is 0 (metrics at the last step only); set metrics_every")):
        overrides = ["--set", f"patience={bad}"] + {2: ["--set", "best_metric=null"],
                                                    3: ["--set", "metrics_every=0"]}.get(bad, [])
        assert main(["train", "pgan", "-c", str(path), "--run", str(tmp_path / "other"), *overrides]) == 2
        assert f"patience: {bad} counts {said}" in capsys.readouterr().err


def test_patience_counts_the_ticks_of_the_current_resolution(tmp_path):
    """A growing PGAN's metric at another size does not compare (a fade worsens it for a while): each scale's
    ticks are counted against that scale's best, not the run's."""
    config = copy.deepcopy(TINY_PGAN)  # 4 px to step 4, 8 px to 12, 16 px from step 12
    config.update(metrics=["swd"], metrics_every=2, best_metric="swd_avg", patience=2)
    run = tmp_path / "run"
    run.mkdir()
    rows = [(4, 50.0), (8, 60.0), (14, 220.0), (16, 210.0), (18, 215.0)]  # steps 14-18 at 16 px
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": step, "swd_avg": value}) + "\n"
                                               for step, value in rows))
    trainer = Trainer(resolve_run_config(None, config), run)
    trainer.step = 18
    assert trainer._patience_reason() is None  # the best at 16 px is step 16, one tick ago; step 4's 50 is 4 px
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 20, "swd_avg": 212.0}) + "\n")
        handle.write(json.dumps({"step": 20, "n": 64, "source": "evaluate", "swd_avg": 1.0}) + "\n")  # not training's
    trainer.step = 20
    assert trainer._patience_reason() == ("swd_avg has not improved on its best 210 (step 16) in the 2 metric "
                                          "ticks since")
    trainer.loader.close()


def test_non_square_fakes_against_square_statistics_are_refused_naming_both_sizes(tmp_path, capsys):
    """Read whole, 178×218 fakes against statistics of 64 px squares went straight to a FID that compares nothing."""
    faces = tmp_path / "faces"
    faces.mkdir()
    for index in range(2):
        Image.fromarray(np.full((218, 178, 3), 40 * index, np.uint8)).save(faces / f"{index}.png")
    stats = refused_against_statistics(faces, 64, tmp_path, capsys)
    assert capsys.readouterr().err.strip() == (
        f"ganforge evaluate: error: --real-stats {stats}: statistics of 64×64 px images, and the generated ones are "
        "178×218; FIDs of other image sizes do not compare (--resolution 64 brings the generated ones to that size)")
    assert main(["evaluate", "--fake", str(faces), "--real", str(faces), "--metrics", "swd"]) == 2
    assert capsys.readouterr().err.strip().endswith("--resolution R brings both sets to R×R (centre crop, then resize)")
