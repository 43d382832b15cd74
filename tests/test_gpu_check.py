"""benchmarks/gpu_check.py --device cpu --quick: every case lands in the JSON with a status, none silently left out."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from reliability_runs import FAMILIES

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow  # an end-to-end script run (~15 s): CI runs it, the fast lane does not
def test_gpu_check_quick_on_cpu_records_every_case(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "check.json"
    module.main(["--device", "cpu", "--quick", "--out", str(out), "--scratch", str(tmp_path / "scratch")])
    cases = {entry["case"]: entry for entry in json.loads(out.read_text())["cases"]}
    expected = {f"train/{family}/{mode}" for family in FAMILIES for mode in ("fp32", "bf16", "compiled")}
    expected |= {f"speed/{name}/step0/{mode}" for name in ("biggan", "stargan2", "wgan-gp")
                 for mode in ("fp32", "bf16", "compiled")}
    expected |= {f"speed/pgan16/step{start}/{mode}" for start in (99, 199, 299)
                 for mode in ("fp32", "bf16", "compiled")}
    expected |= {"metric/fid_features", "metric/swd", "metric/frechet"}
    assert set(cases) == expected
    for name, entry in cases.items():
        assert entry["status"] in ("ok", "failed", "skipped"), name
        assert entry["status"] == "ok" or entry["reason"], name  # a case that did not run says why
    for family in FAMILIES:  # tiny training runs on CPU in fp32 and bf16 with finite losses
        for mode in ("fp32", "bf16"):
            assert cases[f"train/{family}/{mode}"]["status"] == "ok", cases[f"train/{family}/{mode}"]
            assert cases[f"train/{family}/{mode}"]["finite"] is True
    assert cases["train/wgan-gp/compiled"]["status"] == "ok"
    assert cases["speed/wgan-gp/step0/fp32"]["img_per_s"] > 0
    assert cases["metric/swd"]["status"] == "ok" and cases["metric/frechet"]["status"] == "ok"
