"""`ganforge export`: each generator family's sampling generator as ONNX, run by onnxruntime at another batch size,
gives the images `ganforge generate` makes; the description says what to feed it; what cannot be exported is
refused in one line."""

from __future__ import annotations

import dataclasses
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


def untrained(family: str, raw: dict) -> LoadedModel:
    config = resolve_run_config(family, raw)
    built = build_family(config, torch.device("cpu"))
    for net in built.nets.values():
        net.eval()
    return LoadedModel(family=built, config=config, step=0, plan=built.plan(0))


@pytest.mark.parametrize("guide", ["latent", "reference"])
def test_a_stargan2_run_exports_its_translation(tmp_path, guide: str) -> None:
    model = untrained("stargan2", tiny_run("stargan2"))
    exported = export_onnx(model, tmp_path / "t.onnx", guide=guide)
    assert exported.max_difference is not None and exported.max_difference <= 1e-4
    described = json.loads(exported.description.read_text())
    styling = "z" if guide == "latent" else "x_ref"
    assert list(described["inputs"]) == ["x", styling, "y"] and described["guide"] == guide
    assert described["domains"] == model.family.domain_names and described["output"]["shape"] == ["batch", 3, 32, 32]
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, 32, 32, generator=generator) * 2 - 1
    y = torch.tensor([0, 2, 1])
    nets = model.nets
    if guide == "latent":
        inputs = {"x": x, "z": torch.randn(3, 4, generator=generator), "y": y}
        style = nets["F_ema"](inputs["z"], y)
    else:
        inputs = {"x": x, "x_ref": torch.rand(3, 3, 32, 32, generator=generator) * 2 - 1, "y": y}
        style = nets["E_ema"](inputs["x_ref"], y)
    with torch.no_grad():
        expected = nets["G_ema"](x, style).clamp(-1, 1).numpy()
    np.testing.assert_allclose(run_exported(exported.path, inputs), expected, atol=1e-4, rtol=0)


def test_what_cannot_be_exported_is_refused(tmp_path, monkeypatch) -> None:
    model = untrained("stargan2", tiny_run("stargan2"))
    with pytest.raises(ConfigError, match="guide 'style': expected one of latent, reference"):
        export_onnx(model, tmp_path / "g.onnx", guide="style")
    model.family.arch = dataclasses.replace(model.family.arch, w_hpf=1.0)  # as a CelebA-HQ run
    with pytest.raises(ConfigError, match="model.w_hpf = 1: the face masks cut the landmark heatmaps at a threshold"):
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
    with pytest.raises(ConfigError, match="guide 'latent': only StarGAN v2 runs take a style guide"):
        export_onnx(model, tmp_path / "g.onnx", guide="latent")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"ONNX export needs the onnx extra: pip install \"ganforge\[onnx\]\""):
        export_onnx(model, tmp_path / "g.onnx")
    assert not (tmp_path / "g.onnx").exists()
