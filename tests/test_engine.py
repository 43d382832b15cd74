"""The engine end to end on tiny PGAN runs: outputs, exact resume, checkpoint integrity, config guards, NaN stop."""

import copy
import json
import os

import pytest
import safetensors.torch
import torch
from pgan_tiny import TINY_PGAN

import ganforge
from ganforge.config import ConfigError
from ganforge.data.loader import Batch
from ganforge.families import resolve_run_config
from ganforge.families.base import Phase, StepPlan
from ganforge.training import checkpoint as ckpt
from ganforge.training.engine import NonFiniteError, Trainer, deterministic_algorithms


def tensors_of(run, step):
    return safetensors.torch.load_file(str(run / "checkpoints" / f"{step:08d}.safetensors"))


@pytest.mark.slow
def test_tiny_run_grows_with_fade_and_writes_everything(tmp_path):
    run = tmp_path / "run"
    result = ganforge.train(TINY_PGAN, run)
    assert result.step == 20 and not result.interrupted
    assert ckpt.checkpoint_steps(run) == [4, 8, 12, 16, 20]  # every 8 steps, and each scale's end (4, 12, 20)
    for name in ("00000008.png", "00000008-G.png", "00000020.png", "progress.gif"):
        assert (run / "samples" / name).is_file()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [4, 8, 12, 16, 20]
    assert [(r["res"], r["alpha"]) for r in log] == [(4, 0.0), (8, 0.5), (8, 0.0), (16, 0.5), (16, 0.0)]
    assert all(r["img_per_s"] > 0 and "loss_D" in r and "loss_G" in r for r in log)
    saved = json.loads((run / "config.json").read_text())
    assert saved["model"]["widths"] == [16, 16, 8] and saved["model"]["lr"] == 0.001  # defaults filled in
    meta = json.loads((run / "checkpoints" / "00000020.json").read_text())
    assert meta["progress"] == {"scale": 2, "res": 16, "alpha": 0.0}
    assert set(meta["optimizers"]) == {"G", "D"} and meta["images_seen"] == 20 * 4
    assert any(k.startswith("opt/D/") and k.endswith("exp_avg_sq") for k in tensors_of(run, 20))


def test_each_scale_s_last_checkpoint_is_kept_whatever_keep_checkpoints_says(tmp_path):
    """The zoo keeps every checkpoint and evaluates each scale's final model (`eval.py -s S`): a PGAN run checkpoints
    each scale's end and never prunes it; the periodic ones go as `keep_checkpoints` says."""
    run = tmp_path / "run"
    ganforge.train({**TINY_PGAN, "keep_checkpoints": 1}, run)
    assert ckpt.checkpoint_steps(run) == [4, 12, 20]
    assert ganforge.load(run, step=12).plan.resolution == 8  # the 8 px scale's finished model


@pytest.mark.slow
def test_stopped_and_resumed_run_equals_uninterrupted_run(tmp_path):
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    ganforge.train(TINY_PGAN, straight)
    for until in (3, 9, 14):  # inside scale 0, inside the 8x8 fade, inside the 16x16 fade
        assert ganforge.train(TINY_PGAN, pieces, until=until).step == until
    ganforge.train(TINY_PGAN, pieces)
    a, b = tensors_of(straight, 20), tensors_of(pieces, 20)
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert differing == []


def test_a_run_another_process_trains_is_refused_and_a_refused_new_run_leaves_no_folder(tmp_path):
    """A command launched twice on one folder, or a --restart beside a running job, would interleave or delete
    checkpoints: the second is refused while the first holds the folder (flock: a second open of it conflicts even
    in one process), and trains once it is let go."""
    run = tmp_path / "run"
    assert ganforge.train(TINY_PGAN, run, until=1).step == 1
    with ckpt.training_lock(run):
        for restart in (False, True):
            with pytest.raises(ckpt.CheckpointError, match=rf"{run}: another process is training this run; let it "
                                                           "finish"):
                ganforge.train(TINY_PGAN, run, until=2, restart=restart)
    assert ckpt.checkpoint_steps(run) == [1]  # the --restart deleted nothing
    assert ganforge.train(TINY_PGAN, run, until=2).step == 2
    nested = tmp_path / "new" / "runs" / "run"
    with pytest.raises(ValueError, match="missing does not exist"):  # in the trainer, the folders made
        ganforge.train({**TINY_PGAN, "data": str(tmp_path / "missing")}, nested)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]
    with ckpt.training_lock(nested):  # a new run another process has just begun: refused, its folder left alone
        with pytest.raises(ckpt.CheckpointError, match="another process is training this run"):
            ganforge.train(TINY_PGAN, nested, until=1)
        assert nested.is_dir()
    assert not (tmp_path / "new").exists()  # its holder wrote nothing, so it went


def test_a_lock_file_this_user_may_only_read_still_locks_and_a_read_only_folder_is_not_locked(tmp_path, monkeypatch):
    """A shared runs folder: another user's lock file opens read-only and still refuses a second trainer. A
    colleague's finished run or an archive: no lock file can be made, and `train` may still say the run is finished
    (anything it would write fails on its own, naming the file)."""
    real_open = os.open

    def read_only(path, flags, *args):
        if str(path).endswith(ckpt.LOCK_NAME) and flags & (os.O_RDWR | os.O_CREAT):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    shared, archive = tmp_path / "shared", tmp_path / "archive"
    archive.mkdir()
    with ckpt.training_lock(shared):
        (shared / "log.jsonl").write_text("")
        monkeypatch.setattr(os, "open", read_only)
        with pytest.raises(ckpt.CheckpointError, match="another process is training this run"), \
                ckpt.training_lock(shared):
            pass
        with ckpt.training_lock(archive):
            pass
    assert list(archive.iterdir()) == []


@pytest.mark.slow
def test_corrupt_newest_checkpoint_is_reported_and_skipped(tmp_path):
    run = tmp_path / "run"
    ganforge.train(TINY_PGAN, run, until=16)
    newest = run / "checkpoints" / "00000016.safetensors"
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated
    with pytest.warns(UserWarning, match=r"00000016.safetensors: content does not match the hash"):
        found = ckpt.latest_valid_checkpoint(run)
    assert found.step == 12
    with pytest.warns(UserWarning, match="00000016"):
        result = ganforge.train(TINY_PGAN, run)
    assert result.step == 20


@pytest.mark.slow
def test_resume_refuses_a_different_config(tmp_path):
    run = tmp_path / "run"
    ganforge.train(TINY_PGAN, run, until=4)
    changed = copy.deepcopy(TINY_PGAN)
    changed["model"]["lambda_gp"] = 5.0
    with pytest.raises(ConfigError, match=r"different config .*model"):
        ganforge.train(changed, run)
    assert ganforge.train(changed, run, restart=True).step == 20  # --restart starts over


def test_nan_loss_stops_with_phase_and_step_and_writes_no_checkpoint(tmp_path):
    broken = copy.deepcopy(TINY_PGAN)
    broken["model"]["lambda_gp"] = 1e308  # the penalty overflows: the D loss is inf
    with pytest.raises(NonFiniteError, match=r"step 1, phase D: loss is inf"):
        ganforge.train(broken, tmp_path / "run")
    assert ckpt.checkpoint_steps(tmp_path / "run") == []
    # the log (and the report's Events table) says why the run ended, as a rollback or an early stop does
    [event] = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert event == {"step": 4, "event": "stopped", "reason": event["reason"]}  # read at the log point
    assert event["reason"].startswith("step 1, phase D: loss is inf")


@pytest.mark.slow
def test_load_gives_eval_mode_nets_and_generates_like_the_ema_generator(tmp_path):
    run = tmp_path / "run"
    ganforge.train(TINY_PGAN, run)
    model = ganforge.load(run)
    assert set(model.nets) == {"G", "D", "G_ema"} and model.step == 20
    assert all(not net.training for net in model.nets.values())
    z = torch.randn(3, 16)
    images = model.generate(z, raw=True)
    assert images.shape == (3, 3, 16, 16)
    torch.testing.assert_close(images, model.nets["G_ema"](z, 2, 0.0))
    assert not torch.allclose(images, model.generate(z, net="G"))
    earlier = ganforge.load(run, step=8)
    assert earlier.plan.resolution == 8 and earlier.generate(n=2).shape == (2, 3, 8, 8)


@pytest.mark.slow
def test_nan_rollback_restores_the_last_checkpoint_and_finishes(tmp_path, monkeypatch):
    from ganforge.families.pgan import PGANFamily

    original = PGANFamily.phases
    poisoned = {"done": False}

    def phases_with_one_nan(self, step, plan):
        phases = original(self, step, plan)
        if step == 10 and not poisoned["done"]:
            poisoned["done"] = True
            d_phase = phases[0]
            loss_fn = d_phase.loss
            d_phase.loss = lambda batch: (loss_fn(batch)[0] * float("nan"), {})
        return phases

    monkeypatch.setattr(PGANFamily, "phases", phases_with_one_nan)
    config = copy.deepcopy(TINY_PGAN)
    config["on_nan"] = "rollback"
    run = tmp_path / "run"
    result = ganforge.train(config, run)
    assert result.step == 20 and poisoned["done"]
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"event"' in line]
    assert events == [{"step": 8, "event": "rollback", "attempt": 1,
                       "reason": "step 11, phase D: loss is nan; stopping before it reaches a checkpoint or a "
                                 "sample"}]


@pytest.mark.slow
def test_disk_full_while_checkpointing_is_a_clear_error_and_keeps_earlier_checkpoints(tmp_path, monkeypatch):
    import errno

    run = tmp_path / "run"
    real_write = ckpt._write_atomic

    def failing_write(path, data):
        if path.name.startswith("00000016"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(ckpt, "_write_atomic", failing_write)
    with pytest.raises(ckpt.CheckpointError, match=r"could not write checkpoint 16 .*No space left on device.*intact"):
        ganforge.train(TINY_PGAN, run)
    assert ckpt.latest_valid_checkpoint(run).step == 12
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_training_metrics_are_checked_before_training_starts(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    from ganforge.metrics.evaluate import UnknownMetricError
    from ganforge.metrics.inception import InceptionWeightsError

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GANFORGE_INCEPTION_WEIGHTS", raising=False)
    config = copy.deepcopy(TINY_PGAN)
    config.update(metrics=["fid"], metrics_every=8)
    with pytest.raises(InceptionWeightsError, match=r"(?s)pt_inception-2015-12-05-6726825d.pth.*--inception-weights"):
        ganforge.train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained, nothing written
    config["metrics"] = ["fjd"]
    with pytest.raises(UnknownMetricError, match="fjd"):
        ganforge.train(config, tmp_path / "run")


@pytest.mark.slow
def test_a_finished_run_trains_on_when_only_its_schedule_is_lengthened(tmp_path):
    longer = copy.deepcopy(TINY_PGAN)
    longer["model"]["schedule"]["max_iter_at_scale"] = [4, 8, 12]
    ganforge.train(TINY_PGAN, tmp_path / "extended")
    assert ganforge.train(longer, tmp_path / "extended").step == 24  # resumed at 20, four more steps
    ganforge.train(longer, tmp_path / "straight")
    a, b = tensors_of(tmp_path / "straight", 24), tensors_of(tmp_path / "extended", 24)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    for schedule in ([4, 8, 10], [4, 9, 16]):  # shorter than done, or an earlier scale changed
        changed = copy.deepcopy(TINY_PGAN)
        changed["model"]["schedule"]["max_iter_at_scale"] = schedule
        with pytest.raises(ConfigError, match="different config"):
            ganforge.train(changed, tmp_path / "extended")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["wgan-gp", "stargan2", "biggan"])
def test_families_with_a_step_count_train_on_when_steps_grow(tmp_path, family):
    from reliability_runs import tiny_run

    short = tiny_run(family)
    longer = copy.deepcopy(short)
    longer["model"]["steps"] = short["model"]["steps"] + 1
    ganforge.train(short, tmp_path / "run")
    assert ganforge.train(longer, tmp_path / "run").step == longer["model"]["steps"]
    with pytest.raises(ConfigError, match="different config"):
        ganforge.train(short, tmp_path / "run")  # shorter than what is already trained


def test_a_record_whose_dataset_is_not_a_mapping_is_refused_by_name(tmp_path):
    run = tmp_path / "run"
    ganforge.train(TINY_PGAN, run, until=1)
    record = run / "checkpoints" / "00000001.json"
    meta = json.loads(record.read_text())
    record.write_text(json.dumps({**meta, "dataset": ["not", "a", "manifest"]}))
    with pytest.raises(ckpt.CheckpointError, match=r"00000001.json: checkpoint record lacks valid dataset"):
        ckpt.resolve_checkpoint(record, None)
    # an edited or cut record without it, or without the counts the networks are rebuilt from: not a valid
    # checkpoint, so loading falls back to an older one (it raised KeyError in the loader)
    record.write_text(json.dumps(meta))
    ganforge.train(TINY_PGAN, run, until=2)
    newest = run / "checkpoints" / "00000002.json"
    second = json.loads(newest.read_text())
    for broken in ({key: value for key, value in second.items() if key != "dataset"},
                   {**second, "dataset": {key: value for key, value in second["dataset"].items() if key != "count"}}):
        newest.write_text(json.dumps(broken))
        with pytest.raises(ckpt.CheckpointError, match="lacks valid dataset \\(count, resolution, channels"):
            ckpt.load_checkpoint(newest)
        with pytest.warns(UserWarning, match="00000002.json"):
            assert ganforge.load(run).step == 1


def test_a_record_edited_by_hand_is_a_one_line_refusal_naming_it(tmp_path):
    """Keys a resume reads (loader, optimisers), a loader position outside the epoch, a step other than the file's
    and a network shape other than the config builds: CheckpointErrors naming the record (KeyError tracebacks, a
    silently shorter batch, a resume at the wrong step and torch's own size-mismatch traceback before)."""
    run = tmp_path / "run"
    ganforge.train(TINY_PGAN, run, until=1)
    record = run / "checkpoints" / "00000001.json"
    meta = json.loads(record.read_text())
    for broken, message in [
            ({key: value for key, value in meta.items() if key != "loader"}, "lacks 'loader'"),
            ({**meta, "loader": {**meta["loader"], "position": meta["dataset"]["count"] + 3}},
             r"loader: expected an epoch >= 0 and a position in 0\.\.63"),
            ({**meta, "optimizers": {**meta["optimizers"], "G": {"param_groups": []}}},
             "optimizers.G.param_groups: the checkpoint has 0 parameter groups")]:
        record.write_text(json.dumps(broken))
        damaged = "" if message.startswith("optimizers") else "damaged checkpoint record \\(.*"
        with pytest.raises(ckpt.CheckpointError, match=f"00000001.json: {damaged}{message}"):
            ganforge.train(TINY_PGAN, run, until=2)
    record.write_text(json.dumps({**meta, "step": 7}))
    with pytest.raises(ckpt.CheckpointError, match="00000001.json: records step 7, its name says step 1"):
        ckpt.load_checkpoint(record)
    model = meta["config"]["model"]
    record.write_text(json.dumps({**meta, "config": {**meta["config"], "model": {**model, "latent_dim": 9}}}))
    with pytest.raises(ckpt.CheckpointError,
                       match=r"00000001.json: G\.\S+ has shape \(\d+, 16\), this config builds \(\d+, 9\)"):
        ganforge.load(run)


def test_pruning_removes_tensor_files_without_a_record_and_runs_what_must_precede_it(tmp_path):
    """A kill between a tensor file's rename and its record's, or inside a prune, left a checkpoint-sized file no
    listing showed and no prune removed; best.json is written before pruning drops what it no longer names."""
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, {"w": torch.ones(2) * step}, {}, keep=5)
    folder = ckpt.checkpoint_dir(tmp_path)
    (folder / "00000009.safetensors").write_bytes(b"a kill before its record")
    (folder / "00000002.json").unlink()  # a prune killed after the record went (it now goes last)
    seen = []
    ckpt.save_checkpoint(tmp_path, 4, {"w": torch.ones(2)}, {}, keep=2,
                         before_pruning=lambda: seen.append(sorted(p.name for p in folder.iterdir())))
    assert seen[0][:2] == ["00000001.json", "00000001.safetensors"]  # nothing pruned yet
    assert sorted(p.name for p in folder.iterdir()) == ["00000003.json", "00000003.safetensors", "00000004.json",
                                                         "00000004.safetensors"]


def test_best_checkpoints_rank_those_at_the_largest_resolution_first(tmp_path):
    """A growing PGAN's swd_avg at 8 px is the 8 px level alone: lower than its 16 px values, and not comparable;
    within a resolution the best value ranks first."""
    config = copy.deepcopy(TINY_PGAN)  # 4 px to step 4, 8 px to 12, 16 px to 20
    config.update(metrics=["swd"], metrics_every=4, best_metric="swd_avg", keep_best=3)
    trainer = Trainer(resolve_run_config(None, config), tmp_path / "run")
    trainer.run_dir.mkdir()
    ckpt.write_json_atomic(trainer.run_dir / ckpt.BEST_NAME, {"metric": "swd_avg", "best": [
        {"step": 8, "value": 50.0}, {"step": 16, "value": 240.0}]})
    trainer.step = 20
    assert [(e["step"], e["value"]) for e in trainer.update_best(230.0)] == [(20, 230.0), (16, 240.0), (8, 50.0)]
    assert [trainer.resolution_after(step) for step in (4, 5, 12, 13)] == [4, 8, 8, 16]


def test_a_damaged_best_json_is_refused_by_name_when_training_resumes(tmp_path):
    config = copy.deepcopy(TINY_PGAN)
    config.update(metrics=["swd"], metrics_every=16, metrics_n=32, best_metric="swd_avg", keep_best=1)
    run = tmp_path / "run"
    ganforge.train(config, run, until=17)
    best = json.loads((run / "best.json").read_text())
    assert [entry["step"] for entry in best["best"]] == [16]
    for damaged in ('{"metric": "swd_avg", "be', "{}", '{"best": [{"step": "16", "value": 1.0}]}'):
        (run / "best.json").write_text(damaged)
        with pytest.raises(ckpt.CheckpointError, match="best.json: .*; delete it to rank the best checkpoints afresh"):
            ganforge.train(config, run)
    (run / "best.json").unlink()
    assert ganforge.train(config, run).step == 20


@pytest.mark.parametrize("blob", [b"\x80\x02]q\x00(K\x01\x86.", b"\x80\x02\x86.", b"\x80\x02}q\x00(X\x01\x00\x00\x00a"])
def test_any_corrupt_pickle_is_a_one_line_refusal(tmp_path, blob):
    from ganforge.safe_load import load_weights_only

    path = tmp_path / "weights.pth"
    path.write_bytes(blob)
    with pytest.raises(ValueError, match=r"weights.pth: refused to load as test weights \(.*\); only tensors"):
        load_weights_only(path, what="test weights")


def test_eager_networks_are_channels_last_on_the_cpu_too(tmp_path):
    """oneDNN's native layout (bench_train --modes fp32 nchw: BigGAN 1.23x per step on 2 CPU cores); a network in
    torch's default layout would convert every activation at every convolution."""
    from ganforge.families import resolve_run_config
    from ganforge.training.engine import Trainer

    trainer = Trainer(resolve_run_config(None, copy.deepcopy(TINY_PGAN)), tmp_path / "run")
    weights = [p for net in trainer.family.nets.values() for p in net.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert not all(p.is_contiguous() for p in weights)  # really converted: a 3x3 kernel is not both


@pytest.mark.parametrize(("family", "nchw"), [("wgan-gp", {"D"}), ("stargan2", {"G", "G_ema"})])
def test_instance_norm_networks_stay_nchw_on_the_cpu(tmp_path, family, nchw):
    """torch's instance norm needs NCHW memory (batch norm over [1, N·C, H, W]): in channels_last each norm would
    transpose twice (WGAN-GP's instance-norm critic and StarGAN v2's G: 1.13x and 1.07x per step at full widths);
    their other networks (BatchNorm or no norm) keep channels_last."""
    from reliability_runs import tiny_run

    from ganforge.families import resolve_run_config
    from ganforge.training.engine import Trainer

    trainer = Trainer(resolve_run_config(None, tiny_run(family)), tmp_path / "run")
    for name, net in trainer.family.nets.items():
        kernels = [p for p in net.parameters() if p.dim() == 4 and p.shape[-1] > 1]
        if not kernels:
            continue
        has_instance_norm = any(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules())
        assert has_instance_norm == (name in nchw), name
        layout = torch.contiguous_format if name in nchw else torch.channels_last
        assert all(p.is_contiguous(memory_format=layout) for p in kernels), name


def test_a_batch_splits_into_equal_consecutive_micro_batches():
    images, labels = torch.arange(6.0).view(6, 1, 1, 1), torch.arange(6).view(6, 1)
    batch = Batch(images, labels, (images + 10, images + 20), torch.arange(6))
    assert len(batch.parts(1)) == 1 and batch.parts(1)[0] is batch
    parts = batch.parts(3)
    assert [part.part for part in parts] == [(0, 3), (1, 3), (2, 3)] and all(part.whole is batch for part in parts)
    assert [part.images.flatten().tolist() for part in parts] == [[0, 1], [2, 3], [4, 5]]
    assert parts[1].labels.flatten().tolist() == [2, 3] and parts[2].reference_labels.tolist() == [4, 5]
    assert parts[2].references[1].flatten().tolist() == [24, 25]
    assert Batch(images, None).parts(2)[1].labels is None
    with pytest.raises(ValueError, match="a batch of 6 does not split into 4 equal micro-batches"):
        batch.parts(4)


def test_interleaved_micro_batches_take_every_kth_sample_and_share_whole_batch_draws_alike():
    """The split the processes use for PGAN's paper variant (DistInfo.shard): a whole-batch draw (latents) is
    shared as the images were, so each slice pairs its images with their own latents."""
    images = torch.arange(6.0).view(6, 1, 1, 1)
    parts = Batch(images, torch.arange(6).view(6, 1)).parts(2, interleaved=True)
    assert [part.images.flatten().tolist() for part in parts] == [[0, 2, 4], [1, 3, 5]]
    assert parts[1].labels.flatten().tolist() == [1, 3, 5] and parts[1].interleaved
    latents = torch.arange(6) * 10
    assert parts[1].share(latents).tolist() == [10, 30, 50]
    assert Batch(images, None).parts(3)[2].share(latents).tolist() == [40, 50]
    whole = Batch(images, None)
    assert whole.share(latents) is latents


@pytest.mark.parametrize(("micro_batches", "data"), [(0, "fresh"), (2, "none")])
def test_a_phase_refuses_micro_batches_it_cannot_split(micro_batches, data):
    with pytest.raises(ValueError, match=f"phase D: micro_batches {micro_batches}"):
        Phase("D", ("D",), lambda batch: None, micro_batches=micro_batches, data=data)


def test_deterministic_steps_run_under_torch_s_deterministic_algorithms_and_leave_the_process_as_it_was(
        tmp_path, monkeypatch):
    flags = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    run = tmp_path / "run"
    seen = []
    train_step = Trainer._train_step

    def watched(self: Trainer, plan: StepPlan) -> dict[str, torch.Tensor]:
        seen.append((torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
                     torch.backends.cudnn.benchmark))
        return train_step(self, plan)

    monkeypatch.setattr(Trainer, "_train_step", watched)
    ganforge.train({**TINY_PGAN, "deterministic": True}, run, until=2)
    assert seen == [(True, True, False)] * 2
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
            torch.backends.cudnn.deterministic) == flags  # restored after each step
    assert ganforge.train(TINY_PGAN, run, until=3).step == 3  # it changes how, not what: a resume may drop it
    assert seen[-1][0] is flags[0]
    # an op without a deterministic kernel stops the run with one line naming it
    refusal = (r"^deterministic: true, but put_ has no deterministic implementation on this device; set "
               r"deterministic: false to train with it$")
    with pytest.raises(ConfigError, match=refusal), deterministic_algorithms(torch.device("cpu")):
        torch.zeros(3).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))
    # on CUDA, cuBLAS also needs its fixed workspace, set unless the user chose one
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "recorded, so that the teardown restores the original")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    with deterministic_algorithms(torch.device("cuda")):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with deterministic_algorithms(torch.device("cuda")):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def _grown(resolution: int, widths: list[int], iterations: list[int]) -> dict:
    config = copy.deepcopy(TINY_PGAN)
    config["model"].update(resolution=resolution, widths=widths)
    config["model"]["schedule"]["max_iter_at_scale"] = iterations
    return config


@pytest.mark.slow
def test_a_finished_run_grows_new_scales_keeping_what_it_trained(tmp_path):
    """pytorch_GAN_zoo #125: a run trained to 8 px trains on to 16 px (a scale added to resolution, widths and
    schedule); its trained layers come back bit for bit, the new ones start from their initialisation, and the
    optimisers start the new scale afresh, as every growth does. Growing before the saved schedule's end, or
    changing what was trained, is refused."""
    run = tmp_path / "run"
    small, large = _grown(8, [16, 16], [4, 8]), _grown(16, [16, 16, 8], [4, 8, 8])
    assert ganforge.train(small, run, until=8).step == 8
    with pytest.raises(ckpt.CheckpointError, match="step 8; the networks' new scales start at step 12, where the "
                                                   "saved schedule ends: finish it first"):
        ganforge.train(large, run)
    assert ganforge.train(small, run).step == 12
    trained = tensors_of(run, 12)
    for changed, message in (
            (_grown(16, [16, 16, 8], [4, 6, 8]), r"model.schedule.max_iter_at_scale must keep the trained \[4, 8\]"),
            (_grown(16, [32, 16, 8], [4, 8, 8]), r"model.widths must keep the trained \[16, 16\]"),
            ({**large, "model": {**large["model"], "lr": 0.002}}, "every other setting must stay as trained; "
                                                                  "changed: model.lr")):
        with pytest.raises(ConfigError, match=r"model.resolution 8 → 16 adds scales to the trained run, so "
                                              + message):
            ganforge.train(changed, run)
    trainer = Trainer(resolve_run_config(None, copy.deepcopy(large)), tmp_path / "fresh")  # the same seed's init
    trainer.loader.close()
    fresh = trainer.family.nets
    broken = {key: value for key, value in trained.items() if key != "net/D/blocks.0.conv.bias"}
    with pytest.raises(ckpt.CheckpointError, match=r"network 'D' does not match this config \(missing "
                                                   r"\['blocks.0.conv.bias'\]"):  # a trained layer's, not a new one
        ckpt.load_network_states(copy.deepcopy(fresh), broken, run, new_layers={
            name: set(net.state_dict()) - {key.split("/", 2)[2] for key in trained if key.startswith(f"net/{name}/")}
            for name, net in fresh.items()})
    resumed = Trainer(resolve_run_config(None, copy.deepcopy(large)), run)  # the grown networks, before a step
    resumed.loader.close()
    grown = {f"net/{name}/{key}": value for name, net in resumed.family.nets.items()
             for key, value in net.state_dict().items()}
    nets = [key for key in trained if key.startswith("net/")]
    assert nets and all(torch.equal(grown[key], trained[key]) for key in nets)
    added = sorted(key for key in grown if key not in trained)
    assert added and all(key.startswith(("net/G/", "net/G_ema/", "net/D/")) for key in added)
    assert not any(optimizer.state for optimizer in resumed.family.optimizers.values())  # Adam starts 16 px at zero
    for key in added:
        net, name = key.split("/", 2)[1:]
        assert torch.equal(grown[key], fresh[net].state_dict()[name]), key
    for key in added:  # diverged before the grown run's first checkpoint: a rollback to the small run's last one
        net, name = key.split("/", 2)[1:]
        resumed.family.nets[net].state_dict()[name].fill_(float("nan"))
    resumed._restore(ckpt.latest_valid_checkpoint(run))  # puts the new layers back at their initialisation too
    for key in added:
        net, name = key.split("/", 2)[1:]
        assert torch.equal(resumed.family.nets[net].state_dict()[name], fresh[net].state_dict()[name]), key
    stopped = ganforge.train(large, run, until=12)  # at the boundary: the small run's checkpoint stays as it was
    assert (stopped.step, stopped.trained) == (12, False) and "nothing trained or written" in stopped.summary()
    assert tensors_of(run, 12).keys() == trained.keys()
    result = ganforge.train(large, run)
    assert result.step == 20
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["res"] for r in log if "res" in r][-2:] == [16, 16]
