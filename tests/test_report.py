"""`ganforge report` (data extraction with hand-computed values, the page without matplotlib, a tiny run end to end)
and the logs people read (TensorBoard sample grids and config, plain progress lines when not on a terminal)."""

import copy
import io
import json
import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from pgan_tiny import TINY_PGAN
from PIL import Image

import ganforge
from ganforge.cli import main
from ganforge.training import checkpoint as ckpt
from ganforge.training import log as log_module
from ganforge.training.log import RunLogger, progress_line
from ganforge.viz import plots, report
from ganforge.viz.report import ReportRefresher, checkpoint_rows, last_common_point, write_report
from ganforge.viz.run_data import (
    ReportError,
    align_by_kimg,
    curve_keys,
    elapsed_seconds,
    kimg_at_steps,
    metric_keys,
    phase_of,
    read_run,
    smooth,
    smoothing_weight,
    thin,
)


def write_jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))


def fake_run(path, log, metrics=(), best=None, config=None):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config or {"family": "pgan", "data": str(path / "absent")}))
    write_jsonl(path / "log.jsonl", log)
    if metrics:
        write_jsonl(path / "metrics.jsonl", metrics)
    if best is not None:
        (path / "best.json").write_text(json.dumps(best))
    return path


# --- data extraction ----------------------------------------------------------------------------------------------

def test_log_parsing_keeps_the_resumed_history_and_counts_broken_lines(tmp_path):
    run = fake_run(tmp_path / "run", [
        {"step": 4, "kimg": 0.016, "loss_D": 1.0},
        {"step": 8, "kimg": 0.032, "loss_D": 2.0},
        {"step": 12, "kimg": 0.048, "loss_D": 3.0},  # logged, then the run was killed and resumed from step 8
        '{"step": 13, "kimg": 0.05',  # cut by the kill
        {"step": 12, "kimg": 0.048, "loss_D": 30.0},
        {"step": 12, "event": "rollback", "reason": "step 13, phase D: loss is nan", "attempt": 1},
        {"step": 16, "kimg": 0.064, "loss_D": 40.0},
    ])
    parsed = read_run(run)
    assert [(r["step"], r["loss_D"]) for r in parsed.log] == [(4, 1.0), (8, 2.0), (12, 30.0), (16, 40.0)]
    assert [e["event"] for e in parsed.events] == ["rollback"]
    assert parsed.notes == ["log.jsonl: 1 unreadable line skipped"]
    # resumed at another log_every: the killed attempt's step 10, which no new record replaces, goes too
    other = fake_run(tmp_path / "other", [
        {"step": 4, "kimg": 0.016, "loss_D": 1.0}, {"step": 8, "kimg": 0.032, "loss_D": 2.0},
        {"step": 10, "kimg": 0.04, "loss_D": 3.0},  # logged, then killed before the next checkpoint (8 is newest)
        {"step": 8, "event": "resume"},
        {"step": 12, "kimg": 0.048, "loss_D": 4.0}, {"step": 16, "kimg": 0.064, "loss_D": 5.0},
        {"step": 16, "event": "stopped early", "reason": "patience"}])  # logged after its step's record: kept
    assert [(r["step"], r["loss_D"]) for r in read_run(other).log] == [(4, 1.0), (8, 2.0), (12, 4.0), (16, 5.0)]


def test_curves_are_the_logged_terms_grouped_by_the_network_they_train():
    records = [{"step": 4, "kimg": 0.1, "scale": 0, "res": 4, "alpha": 0.5, "loss_D": 1.0, "gp": 0.1,
                "loss_G": 2.0, "img_per_s": 9.0, "D_ref_real": 0.3, "G_lat_sty": 0.2, "ortho_G": 1e-3}]
    assert curve_keys(records) == ["loss_D", "gp", "loss_G", "D_ref_real", "G_lat_sty", "ortho_G"]
    assert [phase_of(k) for k in curve_keys(records)] == ["D", "D", "G", "D", "G", "G"]  # gp: the D step's
    assert [phase_of(k) for k in ("r1", "drift", "wdist", "gdpp", "aug_p")] == ["D", "D", "D", "G", "other"]


def test_smoothing_is_tensorboards_debiased_moving_average():
    values = np.array([1.0, 2.0, 3.0])
    # weight 0.5: 0.5/0.5 = 1; (0.25 + 1)/0.75 = 5/3; (0.625 + 1.5)/0.875 = 17/7
    assert smooth(values, 0.5) == pytest.approx([1.0, 5 / 3, 17 / 7])
    assert smooth(values, 0.0) == pytest.approx(values)
    assert [smoothing_weight(n) for n in (5, 10, 100, 10_000)] == pytest.approx([0.0, 0.5, 0.95, 0.98])


def test_elapsed_time_and_kimg_come_from_the_logged_rates():
    log = [{"step": 10, "kimg": 0.1, "img_per_s": 50.0}, {"step": 20, "kimg": 0.3, "img_per_s": 100.0}]
    assert elapsed_seconds(log) == pytest.approx([2.0, 4.0])  # 100 images at 50/s, then 200 at 100/s
    assert kimg_at_steps(log, [5, 15, 20]) == pytest.approx([0.05, 0.2, 0.3])  # from (0, 0) through the log


def test_alignment_by_kimg_interpolates_and_leaves_uncovered_points_empty():
    grid, aligned = align_by_kimg({"a": (np.array([0.0, 1.0, 2.0]), np.array([0.0, 10.0, 20.0])),
                                   "b": (np.array([1.5, 0.5]), np.array([7.0, 5.0]))})  # unsorted on purpose
    assert grid == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert aligned["a"] == pytest.approx([0.0, 5.0, 10.0, 15.0, 20.0])
    assert np.isnan(aligned["b"][[0, 4]]).all() and aligned["b"][1:4] == pytest.approx([5.0, 6.0, 7.0])
    assert last_common_point({"a": (np.array([0.0, 2.0]), np.array([0.0, 20.0])),
                              "b": (np.array([0.5, 1.5]), np.array([5.0, 7.0]))}) == (1.5, {"a": 15.0, "b": 7.0})
    assert last_common_point({"a": (np.array([0.0]), np.array([1.0])), "b": (np.array([1.0]), np.array([2.0]))}) \
        is None


def test_best_checkpoints_are_marked_at_their_kimg_and_rank(tmp_path):
    run = read_run(fake_run(
        tmp_path / "run",
        log=[{"step": 8, "kimg": 0.032}, {"step": 16, "kimg": 0.064}, {"step": 24, "kimg": 0.096}],
        metrics=[{"step": 16, "kimg": 0.064, "swd_avg": 2.0},
                 {"step": 24, "n": 64, "source": "evaluate", "swd_avg": 1.0}],  # a `ganforge evaluate` row: no kimg
        best={"metric": "swd_avg", "best": [{"step": 24, "value": 1.0}, {"step": 16, "value": 2.0}]}))
    assert [p["kimg"] for p in run.metric_points()] == pytest.approx([0.064, 0.096])
    assert [(p["rank"], p["step"], p["value"]) for p in run.best_points()] == [(1, 24, 1.0), (2, 16, 2.0)]
    assert [p["kimg"] for p in run.best_points()] == pytest.approx([0.096, 0.064])


def test_curves_draw_one_protocol_and_the_table_every_row(tmp_path):
    """`ganforge evaluate` rows (their own image count and real set) beside training's own at the same steps would
    draw a zig-zag: the curves keep training's rows, or without any the evaluate rows of the most used count and
    real set (newest per step); the table lists every row with its n and real set."""
    log = [{"step": 8, "kimg": 0.032}, {"step": 16, "kimg": 0.064}]
    test_set = {"n": 512, "real": "/data/mnist32_test", "source": "evaluate"}
    mixed = read_run(fake_run(tmp_path / "mixed", log=log, metrics=[
        {"step": 8, "kimg": 0.032, "swd_avg": 90.0}, {"step": 16, "kimg": 0.064, "swd_avg": 80.0},
        {"step": 16, **test_set, "swd_avg": 120.0}]))
    assert [p["swd_avg"] for p in mixed.curve_points("swd_avg")] == [90.0, 80.0]
    table = report._metrics_table(mixed)
    assert re.findall(r"<th>(.*?)</th>", table)[-3:] == ["n", "real", "source"]
    assert "<td>/data/mnist32_test</td>" in table
    assert "curve draws training's own values where training computed that metric" in table
    evaluated = read_run(fake_run(tmp_path / "evaluated", log=log, metrics=[
        {"step": 8, **test_set, "swd_avg": 100.0}, {"step": 16, **test_set, "swd_avg": 95.0},
        {"step": 16, "n": 64, "real": "/data/other", "source": "evaluate", "swd_avg": 300.0},
        {"step": 16, **test_set, "swd_avg": 94.0}]))  # the same protocol again later: the newest counts
    assert [(p["step"], p["swd_avg"]) for p in evaluated.curve_points("swd_avg")] == [(8, 100.0), (16, 94.0)]
    upgraded = read_run(fake_run(tmp_path / "upgraded", log=log, config={"family": "pgan", "data": "/data/train"},
                                 metrics=[{"step": 8, "n": 64, "source": "evaluate", "swd_avg": 70.0},  # no `real`
                                          {"step": 16, "n": 64, "real": "/data/train", "source": "evaluate",
                                           "swd_avg": 60.0}]))
    # older rows were of the run's own data
    assert [p["swd_avg"] for p in upgraded.curve_points("swd_avg")] == [70.0, 60.0]
    kid_rows = read_run(fake_run(tmp_path / "kid", log=log, metrics=[
        {"step": 8, **test_set, "kid_mean": 0.10}, {"step": 16, **test_set, "kid_mean": 0.08},
        {"step": 16, **test_set, "kid_subsets": 5, "kid_subset_size": 3, "kid_mean": 0.5}]))  # other KID settings
    assert [(p["step"], p["kid_mean"]) for p in kid_rows.curve_points("kid_mean")] == [(8, 0.10), (16, 0.08)]
    assert re.findall(r"<th>(.*?)</th>", report._metrics_table(kid_rows))[-5:] == [
        "n", "real", "kid_subsets", "kid_subset_size", "source"]
    # each curve picks its own rows: SWD and FID evaluated at the same steps one after the other, FID in both modes
    separate = read_run(fake_run(tmp_path / "separate", log=log, metrics=[
        {"step": 8, **test_set, "swd_avg": 100.0}, {"step": 8, **test_set, "fid_mode": "legacy-tf", "fid": 50.0},
        {"step": 16, **test_set, "swd_avg": 90.0}, {"step": 16, **test_set, "fid_mode": "legacy-tf", "fid": 40.0},
        {"step": 16, **test_set, "fid_mode": "clean", "fid": 45.0}]))
    assert [(p["step"], p["swd_avg"]) for p in separate.curve_points("swd_avg")] == [(8, 100.0), (16, 90.0)]
    assert [(p["step"], p["fid"]) for p in separate.curve_points("fid")] == [(8, 50.0), (16, 40.0)]
    # a generator sampled on other batch-norm statistics (`evaluate --bn`) is another protocol, listed with its mode
    standing = {**test_set, "bn": "standing:16"}
    bn_rows = read_run(fake_run(tmp_path / "bn", log=log, metrics=[
        {"step": 8, **test_set, "swd_avg": 100.0}, {"step": 16, **test_set, "swd_avg": 90.0},
        {"step": 16, **standing, "swd_avg": 60.0}]))
    assert [(p["step"], p["swd_avg"]) for p in bn_rows.curve_points("swd_avg")] == [(8, 100.0), (16, 90.0)]
    assert "<th>bn</th>" in report._metrics_table(bn_rows) and "<td>standing:16</td>" in report._metrics_table(bn_rows)
    # precision/recall rows of Inception features (before 2026-12, no pr_features) beside VGG-16 ones: training's
    # curve keeps its newest rows' space, evaluate's the most used; FID in the same rows is one protocol throughout
    vgg = {"pr_features": "vgg16-fc2"}
    resumed = read_run(fake_run(tmp_path / "pr", log=log, metrics=[
        {"step": 8, "fid": 50.0, "pr_precision": 0.9}, {"step": 16, **vgg, "fid": 40.0, "pr_precision": 0.5}]))
    assert [(p["step"], p["pr_precision"]) for p in resumed.curve_points("pr_precision")] == [(16, 0.5)]
    assert [(p["step"], p["fid"]) for p in resumed.curve_points("fid")] == [(8, 50.0), (16, 40.0)]
    evaluated_pr = read_run(fake_run(tmp_path / "pr_evaluated", log=log, metrics=[
        {"step": 8, **test_set, "fid": 50.0, "pr_precision": 0.9}, {"step": 8, **test_set, **vgg, "pr_precision": 0.6},
        {"step": 16, **test_set, **vgg, "fid": 40.0, "pr_precision": 0.5}]))
    assert [(p["step"], p["pr_precision"]) for p in evaluated_pr.curve_points("pr_precision")] == [(8, 0.6), (16, 0.5)]
    assert [(p["step"], p["fid"]) for p in evaluated_pr.curve_points("fid")] == [(8, 50.0), (16, 40.0)]


def test_thinning_keeps_first_and_last_evenly():
    assert thin(list(range(5)), 24) == [0, 1, 2, 3, 4]
    picked = thin(list(range(100)), 24)
    assert len(picked) == 24 and picked[0] == 0 and picked[-1] == 99 and picked == sorted(picked)


def test_log_scale_only_for_positive_curves_spanning_decades():
    assert plots.wants_log_scale([np.array([1.0, 100.0])])
    assert not plots.wants_log_scale([np.array([1.0, 10.0])])
    assert not plots.wants_log_scale([np.array([-1.0, 100.0])])
    assert plots.metric_groups(["swd_16", "swd_avg", "fid", "kid_mean", "fd_dinov2", "lpips_latent/mean"]) == {
        "swd": ["swd_16", "swd_avg"], "fid": ["fid"], "kid": ["kid_mean"], "fd_dinov2": ["fd_dinov2"],
        "lpips": ["lpips_latent/mean"]}


def test_not_a_run_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(ReportError, match=r"not a ganforge run \(no config.json or log.jsonl\)"):
        read_run(tmp_path)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip() == f"ganforge report: error: {tmp_path / 'missing'}: no such run directory"
    (tmp_path / "c.yaml").write_text("family: pgan\n")
    with pytest.raises(ReportError, match=r"c\.yaml: a file, not a run directory"):
        read_run(tmp_path / "c.yaml")
    run = fake_run(tmp_path / "run", [{"step": 1, "kimg": 0.001}])
    with pytest.raises(ReportError, match="is a directory"):
        write_report([run], tmp_path)


def test_metric_rows_of_steps_a_resume_trained_again_are_dropped(tmp_path):
    """Killed after its 12-step SWD tick and resumed from the step-8 checkpoint: the abandoned attempt's rows go,
    those the new attempt passed (replaced, as the log's) and those it has not reached yet; evaluate rows stay."""
    log = [{"step": 8, "kimg": 0.032}, {"step": 12, "kimg": 0.048}, {"step": 16, "kimg": 0.064},
           {"step": 12, "kimg": 0.048}]  # resumed from 8: at step 12 again, short of the old 16
    metrics = [{"step": 8, "kimg": 0.032, "swd_avg": 9.0}, {"step": 12, "kimg": 0.048, "swd_avg": 8.0},
               {"step": 16, "kimg": 0.064, "swd_avg": 7.0}, {"step": 12, "n": 64, "source": "evaluate", "swd_avg": 5.0},
               {"step": 12, "kimg": 0.048, "swd_avg": 6.0}]
    run = read_run(fake_run(tmp_path / "run", log, metrics))
    assert [(r["step"], r["swd_avg"]) for r in run.metrics] == [(8, 9.0), (12, 5.0), (12, 6.0)]
    assert [r["swd_avg"] for r in run.curve_points("swd_avg")] == [9.0, 6.0]
    crashed = read_run(fake_run(tmp_path / "crashed", log[:2], metrics[:3]))  # never resumed: its tick at 16,
    assert [r["step"] for r in crashed.metrics] == [8, 12, 16]  # past the last log line, stands
    later = fake_run(tmp_path / "later", [{"step": 4}, {"step": 8}, {"step": 4}, {"step": 8}, {"step": 12}],
                     [{"step": 6, "swd_avg": 1.0}, {"step": 14, "swd_avg": 2.0}],
                     config={"family": "pgan", "log_every": 4})  # resumed early, crashed after a tick at 14:
    assert [r["step"] for r in read_run(later).metrics] == [6, 14]  # within a log interval of the last line


def test_the_checkpoint_table_shows_the_values_best_json_ranked(tmp_path):
    """An `evaluate` row of fewer images at a checkpoint's step is listed in the metric table, not put beside the
    checkpoint's rank, which best.json gave on training's value."""
    run = fake_run(tmp_path / "run", [{"step": 8, "kimg": 0.032}, {"step": 16, "kimg": 0.064}],
                   metrics=[{"step": 8, "kimg": 0.032, "swd_avg": 9.0}, {"step": 16, "kimg": 0.064, "swd_avg": 7.0},
                            {"step": 16, "n": 64, "source": "evaluate", "swd_avg": 55.0}],
                   best={"metric": "swd_avg", "best": [{"step": 16, "value": 7.0}]})
    (run / "checkpoints").mkdir()
    for step in (8, 16):
        (run / "checkpoints" / f"{step:08d}.json").write_text("{}")
    rows = checkpoint_rows(read_run(run))
    assert [(r["step"], r["value"], r["best_rank"]) for r in rows] == [(8, 9.0, None), (16, 7.0, 1)]


# --- pages --------------------------------------------------------------------------------------------------------

def test_comparison_overlays_runs_and_tabulates_them_at_a_common_kimg(tmp_path):
    a = fake_run(tmp_path / "a", [{"step": 10, "kimg": 1.0, "loss_D": 1.0, "img_per_s": 10.0},
                                  {"step": 20, "kimg": 2.0, "loss_D": 0.5, "img_per_s": 10.0}],
                 metrics=[{"step": 10, "kimg": 1.0, "fid": 100.0}, {"step": 20, "kimg": 2.0, "fid": 50.0}],
                 config={"family": "pgan", "seed": 0})
    b = fake_run(tmp_path / "b", [{"step": 10, "kimg": 0.5, "loss_D": 2.0, "img_per_s": 5.0},
                                  {"step": 30, "kimg": 1.5, "loss_D": 1.0, "img_per_s": 5.0}],
                 metrics=[{"step": 10, "kimg": 0.5, "fid": 80.0}, {"step": 30, "kimg": 1.5, "fid": 60.0}],
                 config={"family": "pgan", "seed": 1})
    header, rows = report.comparison_table([read_run(a), read_run(b)])
    assert header == ["run", "step", "kimg", "fid (last)", "fid @ 1.5 kimg"]
    assert rows == [["a", "20", "2", "50", "75"], ["b", "30", "1.5", "60", "60"]]  # a at 1.5 kimg: halfway 100→50
    out = tmp_path / "cmp.html"
    assert main(["report", str(a), str(b), "-o", str(out)]) == 0
    page = out.read_text()
    assert "Comparison: a, b" in page and "<td>seed</td><td>0</td><td>1</td>" in page
    assert page.count('class="plot"') == 3  # losses, metrics, speed (no PGAN schedule logged)


def test_a_comparison_takes_every_run_at_one_image_count_and_names_nested_config_differences(tmp_path):
    """SWD and FID depend on the image count: where the runs share one, every value is of it; a run without the
    metric leaves the common kimg to the others. A changed model.lr is named, not the whole model section."""
    def run(name, lr, metrics):
        return fake_run(tmp_path / name, [{"step": 10, "kimg": 1.0}, {"step": 20, "kimg": 2.0}], metrics=metrics,
                        config={"family": "pgan", "metrics_n": 2048, "model": {"lr": lr, "widths": [8, 8]}})

    a = run("a", 0.001, [{"step": 20, "kimg": 2.0, "msssim_mean": 0.30},  # before training rows recorded n
                         {"step": 20, "n": 512, "source": "evaluate", "msssim_mean": 0.23}])
    b = run("b", 0.002, [{"step": 20, "n": 512, "source": "evaluate", "msssim_mean": 0.25},
                         {"step": 10, "kimg": 1.0, "n": 2048, "msssim_mean": 0.40},
                         {"step": 20, "kimg": 2.0, "n": 2048, "msssim_mean": 0.31}])
    c = run("c", 0.001, [])
    header, rows = report.comparison_table([read_run(a), read_run(b), read_run(c)])
    assert header[3:] == ["msssim_mean (last) (n=2048)", "msssim_mean @ 2 kimg (n=2048)"]
    assert [row[3:] for row in rows] == [["0.3", "0.3"], ["0.31", "0.31"], ["–", "–"]]
    page = report.render_comparison([read_run(a), read_run(b)])
    assert "<td>model.lr</td><td>0.001</td><td>0.002</td>" in page and "widths" not in page.split("Losses")[0]
    (tmp_path / "a" / "config.json").write_text(json.dumps({"family": "pgan", "metrics_n": 2048,
                                                             "model": {"lr": 0.001, "widths": [8, 8], "gdpp": None}}))
    page = report.render_comparison([read_run(a), read_run(b)])  # a key one run lacks is not one set to null
    assert "<td>model.gdpp</td><td>null</td><td>(not set)</td>" in page
    d = run("d", 0.001, [{"step": 20, "n": 1024, "source": "evaluate", "msssim_mean": 0.27}])  # no count shared
    header, rows = report.comparison_table([read_run(c), read_run(d), read_run(a)])
    assert header[3] == "msssim_mean (last)" and [row[3] for row in rows] == ["–", "0.27 (n=1024)", "0.3 (n=2048)"]


def test_the_same_run_twice_is_refused_and_big_numbers_are_not_written_in_e_notation(tmp_path, monkeypatch):
    fake_run(tmp_path / "run", [{"step": 1, "kimg": 0.001, "loss_D": 1.0}])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ReportError, match=r"report: \./run is the run run already names; give each run once"):
        write_report(["run", "./run"])
    assert [report._number(v) for v in (13200.4, 9999.7, 1234.5, 0.012345, 3)] == [
        "13200", "10000", "1234", "0.01235", "3"]


def test_an_unreadable_sample_grid_is_named_and_the_page_written(tmp_path):
    run = fake_run(tmp_path / "run", [{"step": 4, "kimg": 0.016, "loss_D": 1.0}],
                   config={"family": "pgan", "metrics": ["swd"], "metrics_every": 500})
    (run / "samples").mkdir()
    Image.new("RGB", (8, 8)).save(run / "samples" / "00000004.png")
    whole = (run / "samples" / "00000004.png").read_bytes()
    (run / "samples" / "00000004.png").write_bytes(whole[: len(whole) // 2])  # a kill mid-write, before atomic PNGs
    page = write_report([run]).read_text()
    assert "samples/00000004.png not shown:" in page
    assert "No metric tick yet (swd every 500 steps and at the end of training)" in page


def test_a_run_without_log_lines_shows_its_newest_checkpoint_step(tmp_path):
    """Stopped before its first log line (a launch script's log interval longer than the run) or imported: the
    page and a comparison give the newest checkpoint's step instead of nothing."""
    quiet = fake_run(tmp_path / "quiet", [])
    (quiet / "checkpoints").mkdir()
    for step in (5, 10):
        (quiet / "checkpoints" / f"{step:08d}.json").write_text("{}")
    parsed = read_run(quiet)
    assert "step 10 (its newest checkpoint; no log lines yet)" in report._summary(parsed, checkpoint_rows(parsed), None)
    _, rows = report.comparison_table([read_run(quiet)])
    assert rows[0][:2] == ["quiet", "10"]


def test_the_page_says_whether_the_run_is_training_stopped_or_finished(tmp_path):
    """What a user opening the page first asks: the lock tells a running trainer (even in this process, as the
    refresher's pages are written inside training), the newest checkpoint the schedule's length, and a log that ran
    past the newest checkpoint (a kill) where a resume really starts."""
    run = tmp_path / "run"
    ganforge.train(TINY_PGAN, run, until=8)
    assert ckpt.training_active(run) is False and ckpt.training_active(tmp_path / "never") is False
    meta_line = re.compile(r"<p class=meta>(.*?) · written")
    assert "not training: step 8 of 20; a resume continues from step 8" in \
        meta_line.search((run / "report.html").read_text())[1]
    with ckpt.training_lock(run):
        assert ckpt.training_active(run) is True
        assert "<b>training now</b>: step 8 of 20 ·" in meta_line.search(write_report([run]).read_text())[1]
        assert "finished" not in meta_line.search(write_report([run], training=False).read_text())[1]
    with open(run / "log.jsonl", "a") as log:
        log.write(json.dumps({"step": 10, "kimg": 0.08, "loss_D": 1.0}) + "\n")
    assert "not training: step 10 of 20; a resume starts from its newest checkpoint that verifies, step 8" in \
        meta_line.search(write_report([run]).read_text())[1]
    newest = run / "checkpoints" / "00000008.safetensors"
    newest.write_bytes(newest.read_bytes()[:-8])  # cut short: a resume skips it
    earlier = ckpt.checkpoint_steps(run)[-2]
    assert f"a resume starts from its newest checkpoint that verifies, step {earlier}" in \
        meta_line.search(write_report([run]).read_text())[1]
    # the last step logged and its checkpoint not written (killed in the final metric tick): not finished
    finished = tmp_path / "finished"
    ganforge.train(TINY_PGAN, finished)
    assert "finished: step 20 of 20 ·" in meta_line.search((finished / "report.html").read_text())[1]
    for path in (finished / "checkpoints").glob("00000020.*"):
        path.unlink()
    line = meta_line.search(write_report([finished]).read_text())[1]
    assert "finished" not in line and "a resume starts from its newest checkpoint that verifies, step 16" in line


def test_a_report_probing_the_lock_does_not_make_a_starting_run_refuse(tmp_path):
    """`training_active` holds a shared lock for an instant; a run starting in that instant waits it out."""
    import fcntl
    import threading

    run = tmp_path / "run"
    run.mkdir()
    (run / ckpt.LOCK_NAME).touch()
    probe = os.open(run / ckpt.LOCK_NAME, os.O_RDONLY)
    fcntl.flock(probe, fcntl.LOCK_SH)
    threading.Timer(0.08, os.close, [probe]).start()
    with ckpt.training_lock(run):
        assert ckpt.training_active(run) is True


def test_runs_with_the_same_folder_name_are_told_apart_by_path(tmp_path, monkeypatch):
    first = fake_run(tmp_path / "x" / "run", [{"step": 1, "kimg": 0.001, "loss_D": 1.0}])
    second = fake_run(tmp_path / "y" / "run", [{"step": 1, "kimg": 0.001, "loss_D": 2.0}])
    monkeypatch.chdir(tmp_path)
    assert write_report([first, second]) == Path("report-compare.html")
    assert f"Comparison: {first}, {second}" in (tmp_path / "report-compare.html").read_text()


def test_values_a_hand_edited_record_holds_never_reach_the_page_as_markup(tmp_path, monkeypatch):
    payload = "<img src=x onerror=alert(1)>"
    a = fake_run(tmp_path / "a", [{"step": 4, "kimg": payload, "loss_D": 1.0}],
                 metrics=[{"step": 4, "kimg": 0.016, "n": payload, "swd_avg": payload},
                          {"step": 4, "kimg": 0.016, "n": payload, "swd_16": 3.0}])
    b = fake_run(tmp_path / "b", [{"step": 4, "kimg": 0.016, "loss_D": 1.0}],
                 metrics=[{"step": 4, "kimg": 0.016, "n": 64, "swd_16": 2.0}])
    pages = [write_report([a]).read_text(), report.render_comparison([read_run(a), read_run(b)])]
    assert all("<img src=x" not in page for page in pages)
    assert "&lt;img src=x" in pages[0]  # the metric table's `n` column shows it, escaped
    assert [report._number(v) for v in ("12", [1], True, None, float("nan"), np.float32(0.5), np.int64(7))] == [
        "–", "–", "–", "–", "–", "0.5", "7"]


def test_damaged_config_and_best_files_are_named_and_the_page_written(tmp_path):
    run = fake_run(tmp_path / "run", [{"step": 4, "kimg": 0.016, "loss_D": 1.0}], best=[1],
                   config={"family": "pgan", "model": "x", "sample_count": "many"})
    parsed = read_run(run)
    assert parsed.config is None and parsed.best is None
    assert parsed.notes == ['config.json: model is "x", expected dict; the run\'s config is not used',
                            "best.json: expected an object with a metric name and a list of best checkpoints; the "
                            "best checkpoints are not marked"]
    (run / "config.json").write_text("[1, 2]")
    (run / "best.json").write_text(json.dumps({"metric": "swd_avg", "best": 5}))
    assert read_run(run).notes[0] == "config.json: expected a JSON object, got list; the run's config is not used"
    assert "best.json: expected an object" in write_report([run]).read_text()


def test_a_default_report_path_keeps_a_file_ganforge_did_not_write(tmp_path, monkeypatch):
    a = fake_run(tmp_path / "a", [{"step": 1, "kimg": 0.001, "loss_D": 1.0}])
    b = fake_run(tmp_path / "b", [{"step": 1, "kimg": 0.001, "loss_D": 2.0}])
    monkeypatch.chdir(tmp_path)
    for runs, default in (([a, b], Path("report-compare.html")), ([a], a / "report.html")):
        default.write_text("<html>my notes</html>")
        with pytest.raises(ReportError, match=f"^{re.escape(str(default))}: the file exists and is not a report "):
            write_report(runs)
        assert default.read_text() == "<html>my notes</html>"
    with pytest.raises(ReportError, match=r"config\.json is a file, not a folder to write the report in$"):
        write_report([a], tmp_path / "a" / "config.json" / "x.html")


def test_run_names_are_shown_literally_in_the_plots(tmp_path):
    assert plots._plain("lr$_$1") == r"lr\$_\$1" and plots._plain("_base") == "\u200b_base"
    assert plots._plain("run") == "run"
    runs = [fake_run(tmp_path / name, [{"step": 4, "kimg": 0.016, "loss_D": 1.0, "img_per_s": 9.0}])
            for name in ("lr$_$1", "_base")]
    page = write_report(runs, tmp_path / "cmp.html").read_text()  # mathtext would fail to parse the first name
    assert page.count('class="plot"') == (2 if plots.available() else 0)


def test_without_matplotlib_the_page_keeps_tables_and_images_and_names_the_extra(tmp_path, monkeypatch, capsys):
    run = fake_run(tmp_path / "run", [{"step": 4, "kimg": 0.016, "loss_D": 1.0, "img_per_s": 10.0}],
                   metrics=[{"step": 4, "kimg": 0.016, "swd_avg": 3.0}],
                   config={"family": "pgan", "data": "builtin:shapes?count=16&resolution=16", "sample_count": 4})
    Image.new("RGB", (40, 40), (200, 30, 30)).save((run / "samples").mkdir() or run / "samples" / "00000004.png")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib...` now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert not plots.available()
    assert main(["report", str(run)]) == 0
    assert "tables and images only: pip install 'ganforge[report]' adds the plots" in capsys.readouterr().out
    page = (run / "report.html").read_text()
    assert "Plots need matplotlib, which is not installed" in page and 'class="plot"' not in page
    assert page.count("<img") == 3  # the EMA grid in the slider, the real grid, the EMA grid beside it
    assert "real: 4 images of builtin:shapes" in page and "<td>swd_avg</td>" not in page  # metric table headers


def test_checkpoint_table_uses_the_checkpoint_verification_once_per_file(tmp_path, monkeypatch):
    run = tmp_path / "run"
    for step in (8, 16):
        shape = {"count": 1, "resolution": 4, "channels": 3, "labels": []}  # what a record must say of its data
        ckpt.save_checkpoint(run, step, {"w": torch.ones(3) * step},
                             {"config": {}, "images_seen": step * 4, "dataset": shape}, keep=5)
    (run / "config.json").write_text("{}")
    tensors = run / "checkpoints" / "00000016.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-4])
    calls = []
    real_load = ckpt.load_checkpoint
    monkeypatch.setattr(ckpt, "load_checkpoint", lambda path: calls.append(path.name) or real_load(path))
    cache = {}
    rows = checkpoint_rows(read_run(run), cache)
    assert [(r["step"], r["kimg"], r["verified"]) for r in rows] == [(8, 0.032, True), (16, 0.064, False)]  # its JSON
    assert "content does not match the hash recorded in 00000016.json" in rows[1]["problem"]
    checkpoint_rows(read_run(run), cache)
    assert calls == ["00000008.json", "00000016.json"]  # the second table hashed nothing again


def test_refresher_waits_between_writes_and_warns_instead_of_failing(tmp_path, capsys):
    run = fake_run(tmp_path / "run", [{"step": 1, "kimg": 0.001}])
    refresher = ReportRefresher(run)
    assert refresher.tick() is None and not (run / "report.html").exists()  # too soon after the start
    refresher._last_end -= ReportRefresher.MIN_INTERVAL
    assert refresher.tick() == run / "report.html"
    (run / "report.html").unlink()
    (run / "report.html").mkdir()  # the page cannot be written
    assert refresher.write() is None
    assert "ganforge: warning: report not written:" in capsys.readouterr().err


# --- a tiny run end to end -------------------------------------------------------------------------------------------

class FakeSummaryWriter:
    """Records what the logger sends to TensorBoard (the package is an optional extra)."""

    def __init__(self):
        self.scalars, self.images, self.texts = [], [], []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_image(self, tag, image, step, dataformats):
        self.images.append((tag, image, step, dataformats))

    def add_text(self, tag, text, step):
        self.texts.append((tag, text, step))

    def close(self):
        pass


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny PGAN run with SWD as best_metric and TensorBoard going to a fake writer."""
    writer = FakeSummaryWriter()
    config = copy.deepcopy(TINY_PGAN)
    config.update(metrics=["swd"], metrics_every=16, metrics_n=64, best_metric="swd_avg", tensorboard=True)
    run = tmp_path_factory.mktemp("report") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(log_module, "_tensorboard_writer", lambda *args, **kwargs: writer)
        ganforge.train(config, run)
    return run, writer


@pytest.mark.slow
def test_training_writes_the_report_and_sends_grids_and_config_to_tensorboard(tiny_run):
    run, writer = tiny_run
    page = (run / "report.html").read_text()
    assert [(tag, step) for tag, _, step, _ in writer.images] == [
        (f"samples/{net}", step) for step in (8, 16, 20) for net in ("G_ema", "G")]
    tag, image, step, layout = writer.images[-1]
    assert layout == "HWC" and np.array_equal(image, np.asarray(Image.open(run / "samples" / "00000020-G.png")))
    assert [(tag, step) for tag, _, step in writer.texts] == [("config", 0)]
    assert json.loads(writer.texts[0][1]) == json.loads((run / "config.json").read_text())
    assert "finished: step 20 of 20 ·" in page
    assert page.count('class="plot"') == 4  # losses, PGAN schedule, metrics, speed
    assert page.count('class="frame grids"') == 3 and page.count("sha256 verified") == 5  # 8, 16, 20; scale ends
    assert "real: 8 images of builtin:shapes?count=64&amp;resolution=16" in page
    best = json.loads((run / "best.json").read_text())["best"]
    assert "<td>#1</td>" in page and f"<td>{best[0]['step']}</td>" in page


@pytest.mark.slow
def test_report_command_rewrites_the_page_from_the_run(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    out = tmp_path / "again.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    first, again = (run / "report.html").read_text(), out.read_text()
    written = re.compile(r" · written [^<]*")  # the time of writing differs
    assert written.sub("", first) == written.sub("", again)


# --- logs people read -------------------------------------------------------------------------------------------------

class FakeClock:
    now = 0.0

    def perf_counter(self):
        return self.now


def test_a_stop_logs_its_partial_interval_and_tensorboard_drops_what_a_resume_or_rollback_redoes(tmp_path,
                                                                                                 monkeypatch):
    """--until between two log points: the steps since the last one are logged (they were lost); a resume or a
    rollback makes TensorBoard drop the events after its checkpoint (its curves ran back and forth)."""
    purges, writer = [], FakeSummaryWriter()

    def fake_writer(folder, requested, purge_step=None):
        purges.append(purge_step)
        return writer

    monkeypatch.setattr(log_module, "_tensorboard_writer", fake_writer)
    writer.close = lambda: None
    config = {**copy.deepcopy(TINY_PGAN), "tensorboard": True, "checkpoint_every": 100}
    run = tmp_path / "run"
    assert ganforge.train(config, run, until=6).step == 6
    assert ganforge.train(config, run, until=8).step == 8
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r.get("event")) for r in records] == [(4, None), (6, None), (6, "resume"), (8, None)]
    assert purges == [1, 7]
    assert sorted({step for tag, _, step in writer.scalars if tag == "loss_G"}) == [4, 6, 8]
    logger = RunLogger(tmp_path / "x", total_steps=10, start_step=0, enabled=False, progress=False,
                       tensorboard=True)
    logger._tb = writer
    logger.restart_at(8)  # a rollback to the checkpoint at step 8
    assert purges == [1, 7, 9]


def test_log_lines_are_valid_json_whatever_the_values():
    line = log_module.json_line({"step": 3, "loss_D": float("nan"), "loss_G": float("inf"), "kimg": 0.1})
    assert json.loads(line) == {"step": 3, "loss_D": None, "loss_G": None, "kimg": 0.1} and line.endswith("\n")


def test_progress_line_has_step_kimg_losses_rate_and_eta():
    record = {"step": 25, "kimg": 0.1, "res": 8, "alpha": 0.5, "loss_D": 0.123456, "img_per_s": 39.6}
    assert progress_line(record, 100, 3725.0) == \
        "step 25/100 (25%)  kimg 0.1  res 8  alpha 0.5  loss_D 0.1235  img/s 40  ETA 1:02:05"
    assert progress_line({"step": 1}, 4, None) == "step 1/4 (25%)"


def test_not_a_terminal_gets_one_plain_line_per_logged_step(tmp_path, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(log_module, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    stream = io.StringIO()  # isatty() is False, as under nohup or in CI
    logger = RunLogger(tmp_path, total_steps=100, start_step=20, enabled=True, progress=True, tensorboard=False,
                       stream=stream)
    for _ in range(21, 41):
        logger.step_done({"loss_D": 1.0})
    clock.now = 10.0
    logger.log({"step": 40, "kimg": 0.16, "loss_D": 0.5, "img_per_s": 8.0})  # 20 steps in 10 s, 60 to go: 30 s
    logger.log({"step": 40, "event": "rollback", "reason": "nan", "attempt": 1})
    logger.close()
    assert stream.getvalue() == "step 40/100 (40%)  kimg 0.16  loss_D 0.5  img/s 8  ETA 0:00:30\n"


def test_plain_line_eta_follows_the_pace_of_the_last_interval(tmp_path, monkeypatch):
    """A growing GAN slows down: 20 cheap steps in 2 s, then 20 at 1 s each; with 60 left the ETA is 60 s, not the
    27 s the average since the start (22 s for 40 steps) would give."""
    clock = FakeClock()
    monkeypatch.setattr(log_module, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    stream = io.StringIO()
    logger = RunLogger(tmp_path, total_steps=100, start_step=0, enabled=True, progress=True, tensorboard=False,
                       stream=stream)
    clock.now = 2.0
    logger.log({"step": 20, "loss_D": 0.5})
    clock.now = 22.0
    logger.log({"step": 40, "loss_D": 0.5})
    logger.log({"step": 40, "loss_D": 0.5})  # the same step again (a resumed log point): no pace, no ETA
    logger.close()
    first, second, repeated = stream.getvalue().splitlines()
    assert first.endswith("ETA 0:00:08") and second.endswith("ETA 0:01:00") and "ETA" not in repeated


def test_a_terminal_still_gets_the_progress_bar(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    logger = RunLogger(tmp_path, total_steps=10, start_step=0, enabled=True, progress=True, tensorboard=False,
                       stream=stream)
    logger.step_done({"loss_D": 1.0})
    logger.log({"step": 1, "kimg": 0.004, "loss_D": 1.0, "img_per_s": 8.0})
    logger.close()
    assert "\r" in stream.getvalue() and "step 1/10" not in stream.getvalue()


def test_metric_values_are_the_numbers_and_the_fid_mode_is_shown_beside_them():
    records = [{"step": 10, "kimg": 0.5, "n": 64, "fid": 41.5, "kid": 0.02, "fid_mode": "clean", "source": "evaluate"},
               {"step": 20, "kimg": 1.0, "n": 64, "swd_avg": 30.0, "swd_32": float("nan")}]
    assert metric_keys(records) == ["fid", "kid", "swd_avg"]
    run = types.SimpleNamespace(metric_points=lambda: records)
    table = report._metrics_table(run)
    header = re.findall(r"<th>(.*?)</th>", table)
    assert header == ["step", "kimg", "fid", "kid", "swd_avg", "n", "fid_mode", "source"]
    assert "<td>clean</td>" in table and "<td>evaluate</td>" in table
