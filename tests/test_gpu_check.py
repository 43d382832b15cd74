"""benchmarks/gpu_check.py --device cpu --quick: every case lands in the JSON with a status, none silently left out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from benchmark_scripts import load_benchmark
from reliability_runs import FAMILIES


def _load_gpu_check():
    return load_benchmark("gpu_check")


@pytest.mark.slow  # an end-to-end script run (~15 s): CI runs it, the fast lane does not
def test_gpu_check_quick_on_cpu_records_every_case(tmp_path: Path) -> None:
    module = _load_gpu_check()
    out = tmp_path / "check.json"
    module.main(["--device", "cpu", "--quick", "--out", str(out), "--scratch", str(tmp_path / "scratch")])
    cases = {entry["case"]: entry for entry in json.loads(out.read_text())["cases"]}
    expected = {f"train/{family}/{mode}" for family in FAMILIES for mode in ("fp32", "bf16", "compiled")}
    expected |= {f"speed/{name}/step0/{mode}" for name in ("biggan", "stargan2", "wgan-gp")
                 for mode in ("fp32", "bf16", "compiled")}
    expected |= {f"speed/pgan16/step{start}/{mode}" for start in (99, 199, 299) for mode in ("fp32", "bf16")}
    expected |= {"speed/pgan16/step199/compiled", "speed/pgan16/step299/compiled"}  # the two largest resolutions
    expected |= {"metric/fid_features", "metric/dinov2_features", "metric/swd", "metric/on_device_vs_cpu",
                 "metric/frechet", "resample/routes", "penalty/routes"}
    expected |= {f"resume/{family}" for family in FAMILIES}
    autotuned = {f"speed/{name}/cudnn_benchmark" for name in ("biggan/step0", "stargan2/step0", "wgan-gp/step0",
                                                             "pgan16/step99", "pgan16/step199", "pgan16/step299")}
    assert set(cases) == expected | autotuned
    for name in autotuned:
        assert cases[name] == {"case": name, "status": "skipped", "reason": "cuDNN autotuning exists on CUDA only"}
    for name, entry in cases.items():
        assert entry["status"] in ("ok", "failed", "skipped"), name
        assert entry["status"] == "ok" or entry["reason"], name  # a case that did not run says why
    for family in FAMILIES:  # tiny training runs on CPU in fp32 and bf16 with finite losses
        for mode in ("fp32", "bf16"):
            assert cases[f"train/{family}/{mode}"]["status"] == "ok", cases[f"train/{family}/{mode}"]
            assert cases[f"train/{family}/{mode}"]["finite"] is True
        # the chaos control: 3 steps from weights nudged by 1e-5 stay close; bf16 differs at step 1 by its rounding
        assert 0 < cases[f"train/{family}/fp32"]["perturbed_rel_diff"] < 1e-2, family
        bf16 = cases[f"train/{family}/bf16"]
        assert 1e-4 < bf16["first_step_rel_diff_vs_fp32"] <= bf16["max_rel_diff_vs_fp32"] < 0.5, family
    # on the CPU a resume is exact (the device's defaults: channels_last, fused Adam); --quick resumes one family
    assert cases["resume/wgan-gp"]["status"] == "ok" and cases["resume/wgan-gp"]["max_abs_diff"] == 0.0
    assert {name for name, entry in cases.items() if name.startswith("resume/") and entry["status"] == "skipped"} == {
        f"resume/{family}" for family in FAMILIES if family != "wgan-gp"}
    assert cases["train/wgan-gp/compiled"]["first_step_rel_diff_vs_fp32"] < 1e-4
    assert cases["speed/wgan-gp/step0/bf16"]["speedup_vs_fp32"] == pytest.approx(
        cases["speed/wgan-gp/step0/fp32"]["s_per_step"] / cases["speed/wgan-gp/step0/bf16"]["s_per_step"])
    assert cases["train/wgan-gp/compiled"]["status"] == "ok"
    assert cases["speed/wgan-gp/step0/fp32"]["img_per_s"] > 0
    for name in ("pgan16/step299", "wgan-gp/step0", "stargan2/step0", "biggan/step0"):  # GP steps are counted too
        assert cases[f"speed/{name}/fp32"]["tflop_per_step"] > 0, name
    # PGAN's step at 16 px does more work than at 4 px (more layers, more pixels)
    flops = {start: cases[f"speed/pgan16/step{start}/fp32"]["tflop_per_step"] for start in (99, 299)}
    assert flops[299] > 4 * flops[99]
    assert cases["metric/swd"]["status"] == "ok" and cases["metric/frechet"]["status"] == "ok"
    assert cases["metric/swd"]["swd_avg"] > 0  # two independent random sets differ
    assert cases["metric/on_device_vs_cpu"]["max_rel_diff"] == 0.0  # the CPU twice here
    for name in ("fid_features", "dinov2_features"):  # with random weights where the real ones are not at hand
        assert cases[f"metric/{name}"]["status"] == "ok" and cases[f"metric/{name}"]["img_per_s"] > 0
        assert cases[f"metric/{name}"]["weights"].startswith(("random stand-in weights", "real ")), name
    routes = cases["resample/routes"]  # both routes timed per shape, and the rule's choice beside them
    assert routes["status"] == "ok" and routes["cases"] == len(routes["rows"]) == 2
    assert all(row[key] > 0 for row in routes["rows"] for key in ("separate_ms", "fused_ms", "fused_penalty_ms"))
    assert [row["rule"] for row in routes["rows"]] == ["separate", "separate"]  # 2 × 8 × 8 pixels on the CPU
    penalty = cases["penalty/routes"]  # autograd's double backward and the route, per shape
    assert penalty["status"] == "ok" and penalty["cases"] == len(penalty["rows"]) == 2
    assert all(row["autograd_ms"] > 0 and row["route_ms"] > 0 for row in penalty["rows"])
    assert [row["rule"] for row in penalty["rows"]] == ["autograd", "autograd"]


def test_operator_flops_counts_a_gradient_penalty_step_by_hand() -> None:
    """Linear y = x W^T (B x I -> B x O), 2BIO FLOPs per matrix product. A plain step: forward, then backward to W
    and to x: 3 products. A penalty step: forward, dy/dx = 1 W (create_graph), then the penalty's backward to W
    through that product: 3 products too, counted although autograd.grad runs (FlopCounterMode's hooks break it)."""
    module = _load_gpu_check()
    batch, inputs, outputs = 8, 16, 4
    layer = torch.nn.Linear(inputs, outputs, bias=False)
    x = torch.randn(batch, inputs, requires_grad=True)
    with module.OperatorFlops() as plain:
        layer(x).sum().backward()
    assert plain.total == 3 * 2 * batch * inputs * outputs
    with module.OperatorFlops() as penalty:
        (grad,) = torch.autograd.grad(layer(x).sum(), x, create_graph=True)
        grad.square().sum().backward()
    assert penalty.total == 3 * 2 * batch * inputs * outputs


def test_relative_differences_scale_by_each_value_over_the_reference_run() -> None:
    module = _load_gpu_check()
    reference = [{"a": 2.0, "b": -0.5}, {"a": -4.0, "b": 1.0}]  # sizes over the run: a 4, b 1
    run = [{"a": 2.4, "b": -0.5}, {"a": -4.0, "b": 0.5}]
    assert module.relative_differences(run, reference) == pytest.approx([0.1, 0.5])


def test_perturb_weights_nudges_trained_networks_by_the_relative_size_and_leaves_ema_copies() -> None:
    from reliability_runs import TINY_RUNS

    module = _load_gpu_check()
    trainer = module.build(TINY_RUNS["pgan"], "fp32", torch.device("cpu"), Path("/tmp/ganforge-perturb-test"))
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in trainer.family.nets.items()}
    module.perturb_weights(trainer, 1e-3)
    for name, net in trainer.family.nets.items():
        changed = [(p - old).abs().sum() / old.abs().sum() for p, old in zip(net.parameters(), before[name],
                                                                                   strict=True)
                   if old.abs().sum() > 0]
        if name in trainer.family.ema_pairs:
            assert max(changed) == 0, name
        else:  # E|N(0,1)| = 0.8: each weight moves by about 0.8e-3 of its size
            assert all(4e-4 < c < 1.6e-3 for c in changed), (name, changed)


def test_gpu_check_selection_and_budget_are_recorded_not_silent(tmp_path: Path) -> None:
    """--cases runs only the matching cases; a compiled case past --budget-s is skipped with that reason."""
    module = _load_gpu_check()
    out = tmp_path / "check.json"
    module.main(["--device", "cpu", "--quick", "--out", str(out), "--scratch", str(tmp_path / "scratch"),
                 "--cases", "train/wgan-gp/*", "--budget-s", "0.001"])
    cases = {entry["case"]: entry for entry in json.loads(out.read_text())["cases"]}
    assert cases["train/wgan-gp/fp32"]["status"] == "ok" and cases["train/wgan-gp/bf16"]["status"] == "ok"
    assert cases["train/wgan-gp/compiled"]["status"] == "skipped"
    assert cases["train/wgan-gp/compiled"]["reason"].startswith("time budget of 0.001 s spent")
    assert cases["metric/swd"]["reason"] == "not selected by --cases train/wgan-gp/*"


def test_deterministic_resume_cases_train_with_it_and_set_cublas_s_workspace(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "recorded, so that the teardown restores the original")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    out = tmp_path / "check.json"
    _load_gpu_check().main(["--device", "cpu", "--quick", "--out", str(out), "--scratch", str(tmp_path / "scratch"),
                            "--cases", "resume/*", "--deterministic"])
    cases = {entry["case"]: entry for entry in json.loads(out.read_text())["cases"]}
    assert cases["resume/wgan-gp"]["status"] == "ok" and cases["resume/wgan-gp"]["deterministic"] is True
    assert cases["resume/wgan-gp"]["max_abs_diff"] == 0.0
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_a_case_past_its_time_limit_fails_with_the_reason_and_the_next_case_runs(tmp_path: Path) -> None:
    import argparse
    import time

    module = _load_gpu_check()
    args = argparse.Namespace(cases=None, budget_s=0, case_limit_s=1, quick=True, out=tmp_path / "c.json")
    runner = module.Runner(args, torch.device("cpu"))
    runner.record("hangs", lambda: time.sleep(5) or {})
    runner.record("quick", lambda: {"value": 1})
    hung, quick = runner.results
    assert hung["status"] == "failed" and hung["reason"] == "case time limit of 1 s reached"
    assert hung["wall_s"] < 3
    assert quick["status"] == "ok" and quick["value"] == 1
    assert [entry["case"] for entry in json.loads(args.out.read_text())["cases"]] == ["hangs", "quick"]


def test_a_timeout_swallowed_inside_a_case_or_an_eager_fallback_still_fails_it(tmp_path: Path) -> None:
    """torch.compile catches what its compiling raises, and ganforge's compile fallback then runs eagerly: such a
    case must not report eager figures as compiled ones, nor pass after its time limit."""
    import argparse
    import contextlib
    import logging
    import time
    import warnings

    module = _load_gpu_check()
    args = argparse.Namespace(cases=None, budget_s=0, case_limit_s=1, quick=True, out=tmp_path / "c.json")
    runner = module.Runner(args, torch.device("cpu"))

    def swallows() -> dict:
        with contextlib.suppress(BaseException):  # what a wrapping compiler does
            time.sleep(5)
        return {"img_per_s": 1.0}

    def falls_back() -> dict:
        warnings.warn("compile: network G runs eagerly: InductorError: lowering failed", RuntimeWarning,
                      stacklevel=2)
        return {"img_per_s": 2.0}

    def gives_up_recompiling() -> dict:  # what dynamo logs at its recompile limit, running eagerly from then on
        logging.getLogger("torch._dynamo.convert_frame").warning("torch._dynamo hit config.%s (%s)\n   function: f",
                                                                 "recompile_limit", 8)
        return {"img_per_s": 4.0}

    runner.record("speed/x/compiled", swallows)
    runner.record("speed/y/compiled", falls_back)
    runner.record("speed/y/fp32", lambda: warnings.warn("a note", UserWarning, stacklevel=2) or {"img_per_s": 3.0})
    runner.record("speed/z/compiled", gives_up_recompiling)
    timed_out, eager, plain, limited = runner.results
    assert timed_out["status"] == "failed" and timed_out["reason"] == "case time limit of 1 s reached"
    assert eager["status"] == "failed" and eager["reason"] == ("compiled, yet a network fell back to eager: compile: "
                                                               "network G runs eagerly: InductorError: lowering failed")
    assert plain["status"] == "ok" and plain["warnings"] == ["a note"]
    assert limited["status"] == "failed" and limited["reason"] == ("compiled, yet a network fell back to eager: "
                                                                   "torch._dynamo hit config.recompile_limit (8)")


@pytest.mark.parametrize(("name", "peak"), [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                            ("NVIDIA H100 NVL", 835.0), ("NVIDIA H200", 989.0),
                                            ("NVIDIA H200 NVL", 835.0), ("NVIDIA GeForce RTX 4090", None)])
def test_peaks_are_the_boards(monkeypatch: pytest.MonkeyPatch, name: str, peak: float | None) -> None:
    module = _load_gpu_check()
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: name)
    found = module.peaks(torch.device("cuda"))
    assert found[0] == name and (found[1] and found[1][0]) == peak


def test_a_compiled_trainer_whose_network_fell_back_earlier_is_named(tmp_path: Path) -> None:
    """compile_network warns once, in the case where compiling failed; the trainer kept for the model's next
    compiled case then runs that network eagerly, which the case must refuse to report as compiled."""
    from reliability_runs import TINY_RUNS

    module = _load_gpu_check()
    trainer = module.build(TINY_RUNS["wgan-gp"], "compiled", torch.device("cpu"), tmp_path / "run")
    assert module.eager_networks(trainer) == []
    trainer.family.nets["D"]._compiled_call_impl = None  # what the fallback does
    assert module.eager_networks(trainer) == ["D"]
