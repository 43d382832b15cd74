"""benchmarks/bench_vs_reference.py's own machinery (the official checkouts it times are not part of the suite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from benchmark_scripts import load_benchmark

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_vs_reference.py"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_vs_reference")


def test_missing_modules_are_stubbed_as_packages_whose_names_import_and_subclass(bench) -> None:
    names = ["gf_absent_pkg", "gf_absent_pkg.datasets", "json"]
    try:
        assert bench.stub_missing_modules(names) == ["gf_absent_pkg", "gf_absent_pkg.datasets"]
        from gf_absent_pkg.datasets import CIFAR10  # a reference subclasses such names at import time

        class Subclass(CIFAR10):
            pass

        assert issubclass(Subclass, bench._Placeholder)
        import gf_absent_pkg
        assert gf_absent_pkg.datasets is sys.modules["gf_absent_pkg.datasets"]
        with pytest.raises(AttributeError):
            gf_absent_pkg.__file__  # noqa: B018 - dunder lookups must not be faked
        assert sys.modules["json"].__name__ == "json" and hasattr(sys.modules["json"], "dumps")  # importable: kept
    finally:
        for name in names[:2]:
            sys.modules.pop(name, None)


def test_the_zoo_s_int_and_float_betas_are_passed_as_floats_only_inside_the_context(bench) -> None:
    weights = [torch.nn.Parameter(torch.zeros(2))]
    with bench.float_adam_betas():
        assert torch.optim.Adam(weights, betas=[0, 0.99], lr=0.001).defaults["betas"] == (0.0, 0.99)
    with pytest.raises(ValueError, match="betas"):  # torch's own check is back
        torch.optim.Adam(weights, betas=[0, 0.99], lr=0.001)


def test_each_family_process_gets_the_command_line_without_the_family_list(bench) -> None:
    argv = ["--refs", "r", "--families", "pgan", "biggan", "--steps", "2", "--families=stargan2", "--modes", "fp32"]
    assert bench._without_option(argv, "--families") == ["--refs", "r", "--steps", "2", "--modes", "fp32"]


def test_a_missing_checkout_names_the_repository_to_clone(bench, tmp_path: Path) -> None:
    (tmp_path / "ajbrock+BigGAN-PyTorch").mkdir()
    assert bench.find_repo(tmp_path, "biggan").name == "ajbrock+BigGAN-PyTorch"
    with pytest.raises(FileNotFoundError, match="pytorch_GAN_zoo"):
        bench.find_repo(tmp_path, "pgan")


def test_a_family_whose_checkout_is_missing_is_reported_and_the_table_still_prints(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--refs", str(tmp_path), "--families", "pgan",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "pgan      failed: FileNotFoundError: --refs" in proc.stdout
    assert '"error": "failed"' in out.read_text()


def test_apart_merges_the_reference_process_and_ganforge_s(bench, tmp_path: Path) -> None:
    reference = {"family": "pgan", "reference_s": {"32": 0.5}, "ganforge_s": {"fp32": {}}, "repo": "zoo"}
    ours = {"family": "pgan", "reference_s": {}, "ganforge_s": {"fp32": {"32": 0.25}}, "repo": "zoo"}
    assert bench.merged_sides(reference, ours) == {**reference, "ganforge_s": {"fp32": {"32": 0.25}}}
    failed = bench.merged_sides(reference, {**ours, "error": "failed", "log": "Traceback"})
    assert failed["error"] == "failed" and failed["log"] == "Traceback" and failed["reference_s"] == {"32": 0.5}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--refs", str(tmp_path), "--families", "pgan", "--apart"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "pgan      failed: FileNotFoundError: --refs" in proc.stdout, proc.stderr


def test_a_loop_that_pulls_its_batches_runs_one_whole_iteration_per_step(bench) -> None:
    done = []

    def loop(batches):  # stands for the official StarGAN v2 Solver.train
        for index, batch in enumerate(batches):
            done.append((index, batch))

    counter = iter(range(100))
    stepped = bench.SteppedLoop(loop, lambda: next(counter) * 10)
    assert done == []  # set up, first batch asked for, nothing run yet
    stepped.step()
    stepped.step()
    assert done == [(0, 0), (1, 10)]  # each step returned after its iteration finished


def test_steps_are_timed_in_turn_after_their_warm_up(bench) -> None:
    calls = []
    medians = bench.interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                                        torch.device("cpu"), warmup=1, rounds=2)
    assert calls == ["a", "b"] * 3 and set(medians) == {"a", "b"} and all(v >= 0 for v in medians.values())
