"""A run's lifecycle as `ganforge train` shows it: the status line at start (resuming, or already finished and how to
lengthen the schedule), refused resumes that name only the keys that differ, settings a resume may change,
`--restart` clearing what the earlier run wrote (and nothing else), Ctrl-C against an `--until` stop, a dataset path
that works from any directory, and PGAN training-time metrics at scales too small for them."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml
from pgan_tiny import TINY_PGAN
from PIL import Image
from reliability_runs import TINY_RUNS

from ganforge.cli import main
from ganforge.config import ConfigError, apply_overrides, parse_overrides, to_dict
from ganforge.families import get_family, resolve_run_config
from ganforge.run_loader import new_family
from ganforge.training import checkpoint as ckpt
from ganforge.training.engine import Trainer, _check_same_config

SHAPES = "builtin:shapes?count=64&resolution=32"
TINY = ["--set", "model.features_g=2", "--set", "model.features_d=2", "--set", "model.latent_dim=8",
        "--set", "model.batch_size=4", "--set", "progress=false", "--set", "tensorboard=false",
        "--set", "checkpoint_every=1", "--set", "sample_count=4"]


def train(run: Path, *args: str) -> int:
    return main(["train", "wgan-gp", "--run", str(run), *args])


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def stopped_run(tmp_path, capsys) -> Path:
    """A 3-step wgan-gp run stopped by --until after step 1."""
    run = tmp_path / "run"
    assert train(run, "--data", SHAPES, *TINY, "--set", "model.steps=3", "--until", "1") == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [f"stopped at step 1 (--until); run the same command without --until to continue "
                                f"(checkpoint in {run})", f"report: {run / 'report.html'} (open it in a browser)"]
    return run


# --- status lines ------------------------------------------------------------------------------------------------

def test_resume_says_where_it_resumes_and_a_finished_run_how_to_lengthen_it(stopped_run, capsys) -> None:
    assert train(stopped_run) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"resuming from step 1 (of 3) in {stopped_run}"
    assert out[-2].startswith("finished at step 3: ") and "interrupted" not in "".join(out)
    before = snapshot(stopped_run)
    assert train(stopped_run) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"already finished at step 3 in {stopped_run} (lengthen the schedule with --set model.steps=6 to train "
        "further)"]
    assert snapshot(stopped_run) == before  # nothing written, not even config.json or log.jsonl
    assert train(stopped_run, "--set", "model.steps=6", "--until", "4") == 0  # the suggested override is accepted
    assert capsys.readouterr().out.splitlines()[0] == f"resuming from step 3 (of 6) in {stopped_run}"


def test_each_family_suggests_the_key_that_lengthens_its_schedule() -> None:
    zoo = resolve_run_config(None, TINY_PGAN)  # max_iter_at_scale [4, 8, 8]
    official = resolve_run_config(None, {**TINY_PGAN, "model": {**TINY_PGAN["model"], "schedule": {
        "unit": "kimg", "stable_kimg": 0.016, "transition_kimg": 0.008, "total_kimg": 0.064, "batch_size": 4}}})
    unbounded = resolve_run_config(None, {**TINY_PGAN, "model": {**TINY_PGAN["model"], "schedule": {
        "unit": "kimg", "stable_kimg": 0.016, "transition_kimg": 0.008, "batch_size": 4}}})  # ends at 0.064 too
    stargan2 = resolve_run_config(None, TINY_RUNS["stargan2"])  # steps 6
    biggan = resolve_run_config(None, TINY_RUNS["biggan"])  # steps 8
    # official: the run ends at 64 images; its last scale (16 px) runs from 48 images on: 4 steps of 4, so twice
    # as long ends at 0.080 kimg
    expected = [("model.schedule.max_iter_at_scale=[4,8,16]", zoo), ("model.schedule.total_kimg=0.08", official),
                ("model.schedule.total_kimg=0.08", unbounded), ("model.steps=12", stargan2),
                ("model.steps=16", biggan)]
    for override, config in expected:
        family = new_family(config)
        assert family.lengthening_override() == override
        model = to_dict(config.model)
        longer = to_dict(resolve_run_config(None, apply_overrides(
            {**to_dict(config), "model": model}, parse_overrides([override]))).model)
        assert get_family(config.family).extends_schedule(model, longer)
        assert new_family(resolve_run_config(None, {**to_dict(config), "model": longer})).total_steps() > \
            family.total_steps()


# --- resuming with a changed config ------------------------------------------------------------------------------

def test_a_refused_resume_lists_only_the_keys_that_differ(stopped_run, capsys) -> None:
    assert train(stopped_run, "--set", "model.lr=0.0003", "--set", "seed=5", "--set", "metrics_n=64") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was trained with a different config" in err
    assert "(saved → now: metrics_n: 2048 → 64; model.lr: 0.0001 → 0.0003; seed: 0 → 5)" in err
    assert "features_g" not in err and "sample_every" not in err


def test_settings_that_do_not_change_the_training_may_change_on_resume(stopped_run, capsys) -> None:
    assert train(stopped_run, "--set", "sample_every=1", "--set", "log_every=1", "--set", "keep_checkpoints=1",
                 "--set", "device=cpu", "--set", "progress=true", "--until", "2") == 0
    assert capsys.readouterr().out.startswith("resuming from step 1 (of 3)")
    saved = json.loads((stopped_run / "config.json").read_text())
    assert (saved["sample_every"], saved["log_every"], saved["keep_checkpoints"], saved["device"],
            saved["progress"]) == (1, 1, 1, "cpu", True)
    # in effect: a grid at step 2 (not the last step, the old sample_every 500), one checkpoint kept
    assert [p.name for p in (stopped_run / "samples").glob("*.png")] == ["00000002-G.png"]
    assert ckpt.checkpoint_steps(stopped_run) == [2]
    assert ckpt.load_checkpoint(ckpt.checkpoint_dir(stopped_run) / "00000002.json").meta["config"]["log_every"] == 1


def test_a_device_change_is_refused_where_the_precision_follows_the_device(tmp_path) -> None:
    saved = to_dict(resolve_run_config(None, {"family": "wgan-gp", "data": SHAPES}))
    for amp, refused in (("off", False), ("auto", True)):
        on_gpu = {**saved, "amp": amp, "device": "cuda"}
        if refused:
            with pytest.raises(ConfigError, match=r'\(saved → now: device: "auto" → "cuda"\)'):
                _check_same_config(tmp_path, {**saved, "amp": amp}, on_gpu)
        else:
            _check_same_config(tmp_path, {**saved, "amp": amp}, on_gpu)


# --- --restart ---------------------------------------------------------------------------------------------------

def test_restart_removes_what_the_run_wrote_and_only_that(stopped_run, capsys) -> None:
    assert train(stopped_run, "--set", "sample_every=1") == 0  # grids at steps 2 and 3 (G: no EMA here)
    tb = stopped_run / "tb" / "events.out.tfevents.1700000000.host.1.0"
    tb.parent.mkdir()
    tb.write_bytes(b"events")  # as TensorBoard would have written with tensorboard: true
    (stopped_run / "metrics_per_class.jsonl").write_text('{"step": 3}\n')  # as `evaluate --per-class` writes it
    mine = [stopped_run / "notes.txt", stopped_run / "samples" / "favourite.png", stopped_run / "checkpoints" / "x.txt"]
    for path in mine:
        path.write_text("not ganforge's")
    capsys.readouterr()
    before = snapshot(stopped_run)
    assert train(stopped_run, "--restart", "--data", str(stopped_run / "no-such-store")) == 2  # validation first
    assert snapshot(stopped_run) == before
    capsys.readouterr()
    assert train(stopped_run, "--restart", "--until", "1", "--set", "log_every=1") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (f"--restart: removed 6 checkpoint files, 2 sample grids, 1 TensorBoard event file, "
                      f"log.jsonl, metrics_per_class.jsonl, progress.gif, report.html of the earlier run in "
                      f"{stopped_run}")
    assert all(path.read_text() == "not ganforge's" for path in mine)
    assert not tb.exists() and not tb.parent.exists()
    assert [json.loads(line)["step"] for line in (stopped_run / "log.jsonl").read_text().splitlines()] == [1]
    assert ckpt.checkpoint_steps(stopped_run) == [1]
    assert [p.name for p in (stopped_run / "samples").glob("0*.png")] == ["00000001-G.png"]  # the new run's only



def test_restart_keeps_a_report_html_of_the_users_own(stopped_run, capsys) -> None:
    """The run left the user's page as it was (and said so); a restart leaves it too, and no line points at it."""
    page = stopped_run / "report.html"
    page.write_text("<html>my notes</html>")
    assert train(stopped_run, "--restart", "--until", "1") == 0
    out = capsys.readouterr().out
    assert "report.html" not in out.splitlines()[0] and "report: " not in out
    assert page.read_text() == "<html>my notes</html>"


# --- how a run stops ---------------------------------------------------------------------------------------------

def test_ctrl_c_writes_a_checkpoint_and_exits_130(tmp_path, monkeypatch, capsys) -> None:
    original = Trainer.train_step

    def step_with_ctrl_c(self: Trainer, plan):
        if self.step == 1:  # Ctrl-C in the middle of step 2
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, plan)

    monkeypatch.setattr(Trainer, "train_step", step_with_ctrl_c)
    run = tmp_path / "run"
    handler_before = signal.getsignal(signal.SIGINT)  # Python's default_int_handler; SIG_IGN in a background job
    assert train(run, "--data", SHAPES, *TINY, "--set", "model.steps=4", "--set", "checkpoint_every=100") == 130
    checkpoint = ckpt.checkpoint_dir(run) / "00000002.json"
    assert capsys.readouterr().out.splitlines() == [
        f"interrupted at step 2 of 4 (SIGINT): checkpoint {checkpoint}; run the same command to resume"]
    assert ckpt.checkpoint_steps(run) == [2]
    assert signal.getsignal(signal.SIGINT) is handler_before  # the engine put the previous handler back


# --- the dataset path ----------------------------------------------------------------------------------------------

def make_store(folder: Path, name: str, seed: int) -> Path:
    from ganforge.data.prepare import prepare_folder

    images = folder / f"{name}-images"
    images.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"{i}.png")
    return prepare_folder(images, folder / name, resolution=32, workers=1)


def test_the_dataset_path_is_saved_resolved_and_a_moved_store_is_named(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    store = make_store(tmp_path, "store", seed=0)
    run = tmp_path / "run"
    assert train(run, "--data", "store", *TINY, "--set", "model.steps=4", "--until", "1") == 0
    assert json.loads((run / "config.json").read_text())["data"] == str(store)
    assert train(run, "--data", "store", "--until", "2") == 0  # the same relative path from here: the same run
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert train(run, "--until", "3") == 0  # the run's saved config finds the data from another directory
    assert "resuming from step 2 (of 4)" in capsys.readouterr().out
    moved = store.rename(tmp_path / "moved")
    assert train(run) == 2
    assert capsys.readouterr().err == (f"ganforge train: error: {run} was trained on the dataset {store}, which is no "
                                       "longer there (moved or deleted?); resume with --data NEW_PATH naming where "
                                       "that same store is now\n")
    other = make_store(tmp_path, "other", seed=1)
    assert train(run, "--data", str(other)) == 2  # another dataset is a different config
    assert f"data: {json.dumps(str(store))} → {json.dumps(str(other))}" in capsys.readouterr().err
    assert train(run, "--data", "../moved") == 0  # the same store, moved: accepted, and recorded where it is now
    assert json.loads((run / "config.json").read_text())["data"] == str(moved)
    assert "finished at step 4" in capsys.readouterr().out


def test_a_store_replaced_at_its_path_is_refused_on_resume(tmp_path, capsys) -> None:
    """`prepare --overwrite` at the run's data path makes other data there: the resume refuses it by name instead
    of training on it silently (or, with other channels, failing inside a network's state dict)."""
    from ganforge.data.store import write_store

    store = make_store(tmp_path, "store", seed=0)
    run = tmp_path / "run"
    assert train(run, "--data", str(store), *TINY, "--set", "model.steps=4", "--until", "1") == 0
    grey = np.random.default_rng(1).integers(0, 256, (5, 1, 32, 32), dtype=np.uint8)
    write_store(store, grey, resolution=32, channels=1, source="mnist", overwrite=True)
    capsys.readouterr()
    assert train(run) == 2
    source = json.dumps(str(tmp_path / "store-images"))
    assert capsys.readouterr().err == (
        f"ganforge train: error: {store} is not the data {run} was trained on (source: {source} → \"mnist\"; count: "
        f"8 → 5; channels: 3 → 1). Resume with the run's own data, or train its weights on this data in a new run: "
        f"--init-from {run} --run NEW_DIR\n")
    assert ckpt.checkpoint_steps(run) == [1]


def test_a_store_re_prepared_with_another_resize_is_other_data(tmp_path, capsys) -> None:
    """The same images resized with another filter are other pixels: refused by name on resume; a store written
    before the manifest recorded its preprocessing is not other data for lacking the record."""
    from ganforge.data.prepare import prepare_folder

    store = make_store(tmp_path, "store", seed=0)
    run = tmp_path / "run"
    assert train(run, "--data", str(store), *TINY, "--set", "model.steps=4", "--until", "1") == 0
    prepare_folder(tmp_path / "store-images", store, resolution=32, workers=1, resize="bilinear", overwrite=True)
    capsys.readouterr()
    assert train(run) == 2
    assert ('(preprocessing: {"crop": "centre", "resize": "lanczos"} → {"crop": "centre", "resize": "bilinear"})'
            in capsys.readouterr().err)
    assert ckpt.checkpoint_steps(run) == [1]
    manifest_path = store / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["preprocessing"]  # as ganforge wrote stores before 2026-12-07: nothing to compare
    manifest_path.write_text(json.dumps(manifest))
    assert train(run, "--until", "2") == 0


# --- training-time metrics on a growing PGAN -----------------------------------------------------------------------

def test_pgan_metrics_wait_for_a_scale_large_enough(tmp_path, capsys) -> None:
    config = {**TINY_PGAN, "metrics": ["swd"], "metrics_every": 4, "metrics_n": 64}  # scales: 4 px to step 4, 8
    path = tmp_path / "pgan.yaml"  # px to step 12, then 16 px, the smallest size SWD takes
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["train", "pgan", "-c", str(path), "--run", str(run)]) == 0
    skipped = [line for line in capsys.readouterr().out.splitlines() if "skipped" in line]
    assert skipped == [
        "step 4: swd skipped at resolution 4 (SWD: images of size 4 are smaller than min_resolution=16); computed "
        "again once the images are large enough",
        "step 8: swd skipped at resolution 8 (SWD: images of size 8 are smaller than min_resolution=16); computed "
        "again once the images are large enough"]  # once per scale, not at step 12 again
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [16, 20] and all(r["swd_avg"] > 0 for r in records)


def test_a_checkpoint_at_a_growth_boundary_generates_the_scale_it_trained(tmp_path) -> None:
    """Training draws its samples and metrics at step N with the plan of the step just done; a checkpoint loaded at
    N does the same, so at the end of a scale it generates that scale's images (as the zoo's checkpoint of a
    scale does), not the next scale's upsampled start, and `evaluate` agrees with training's metric ticks."""
    import ganforge
    from ganforge.run_loader import load_run

    run = tmp_path / "run"
    ganforge.train(TINY_RUNS["pgan"], run, until=3)  # 4 px for steps 0-2, then 8 px from step 3
    model = load_run(run)
    assert model.step == 3 and model.plan.progress == {"scale": 0, "res": 4, "alpha": 0.0}
    assert model.generate(model.family.sample_latents(2, None)["z"]).shape[-1] == 4


def test_tf32_chooses_cudas_float32_precision_and_may_change_on_resume(tmp_path, capsys) -> None:
    """all: matmuls and convolutions on TF32 tensor cores; convolutions: PyTorch's default, the references' runs;
    off: full float32. A run whose losses went non-finite may go on in full float32."""
    from ganforge.training.engine import cuda_tf32_flags

    assert [cuda_tf32_flags(mode) for mode in ("all", "convolutions", "off")] == [
        (True, True), (False, True), (False, False)]
    run = tmp_path / "run"
    assert train(run, "--data", "builtin:shapes?count=8&resolution=32", *TINY, "--set", "model.steps=2",
                 "--until", "1") == 0
    assert train(run, "--set", "tf32=off") == 0
    assert json.loads((run / "config.json").read_text())["tf32"] == "off"
    assert train(run, "--set", "tf32=half") == 2
    assert "tf32: 'half' is not one of 'all', 'convolutions', 'off'" in capsys.readouterr().err
