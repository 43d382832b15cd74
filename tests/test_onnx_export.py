"""`ganforge export`: each generator family's sampling generator as ONNX, run by onnxruntime at another batch size,
gives the images `ganforge generate` makes; the description says what to feed it; what cannot be exported is
refused in one line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from pgan_tiny import TINY_PGAN
from reliability_runs import tiny_run

import ganforge
from ganforge.cli import main
from ganforge.config import ConfigError
from ganforge.families import resolve_run_config
from ganforge.interop.onnx_export import export_onnx
from ganforge.run_loader import LoadedModel, build_family

onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install -e '.[test]')")
pytest.importorskip("onnxscript", reason="onnxscript not installed (pip install -e '.[onnx]')")


def run_exported(path, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["images"], {name: tensor.numpy() for name, tensor in inputs.items()})[0]


def test_a_pgan_run_exports_from_the_command_line(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    ganforge.train(TINY_PGAN, run)
    out = tmp_path / "export" / "g.onnx"
    assert main(["export", str(run), "-o", str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(f"wrote {out} and {out.with_suffix('.json')} from step 20 of {run}; onnxruntime "
                              "matches PyTorch to ")
    model = ganforge.load(run, device="cpu")
    z = model.latents(5, seed=9)["z"]
    np.testing.assert_allclose(run_exported(out, {"z": z}), model.generate(z).numpy(), atol=1e-4, rtol=0)
    described = json.loads(out.with_suffix(".json").read_text())
    assert described["inputs"] == {"z": {"shape": ["batch", 16], "dtype": "float32",
                                         "meaning": "latent vectors, drawn from N(0, I)"}}
    assert described["output"]["shape"] == ["batch", 3, 16, 16] and described["generator"] == "G_ema"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["biggan", "wgan-gp"])
def test_class_conditional_and_batch_statistics_generators_export(tmp_path, family: str) -> None:
    run = tmp_path / "run"
    ganforge.train(tiny_run(family), run)
    model = ganforge.load(run, device="cpu")
    exported = export_onnx(model, tmp_path / "g.onnx")
    assert exported.max_difference is not None and exported.max_difference <= 1e-4
    inputs = model.latents(3, seed=4)
    np.testing.assert_allclose(run_exported(exported.path, inputs), model.generate(inputs).numpy(), atol=1e-4,
                               rtol=0)
    described = json.loads(exported.description.read_text())
    assert sorted(described["inputs"]) == sorted(inputs)
    if family == "biggan":  # class indices, and their names
        assert described["inputs"]["y"]["dtype"] == "int64" and len(described["classes"]) == model.family.n_classes


def test_what_cannot_be_exported_is_refused(tmp_path, monkeypatch) -> None:
    config = resolve_run_config("stargan2", tiny_run("stargan2"))
    family = build_family(config, torch.device("cpu"))
    model = LoadedModel(family=family, config=config, step=0, plan=family.plan(0))
    with pytest.raises(ConfigError, match="stargan2: export is for generators of latents"):
        export_onnx(model, tmp_path / "g.onnx")
    config = resolve_run_config("biggan", {**tiny_run("biggan"), "model": {**tiny_run("biggan")["model"],
                                                                        "standing_stats": 2}})
    family = build_family(config, torch.device("cpu"))
    model = LoadedModel(family=family, config=config, step=0, plan=family.plan(0))
    with pytest.raises(ConfigError, match="model.standing_stats: this BigGAN run re-estimates"):
        export_onnx(model, tmp_path / "g.onnx")
    config = resolve_run_config("pgan", TINY_PGAN)
    family = build_family(config, torch.device("cpu"))
    model = LoadedModel(family=family, config=config, step=0, plan=family.plan(0))
    with pytest.raises(ConfigError, match=r"g\.pt: expected a \.onnx file name"):
        export_onnx(model, tmp_path / "g.pt")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"ONNX export needs the onnx extra: pip install \"ganforge\[onnx\]\""):
        export_onnx(model, tmp_path / "g.onnx")
    assert not (tmp_path / "g.onnx").exists()
