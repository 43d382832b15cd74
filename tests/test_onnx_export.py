"""`ganforge export`: each generator family's sampling generator as ONNX, run by onnxruntime at another batch size,
gives the images `ganforge generate` makes; the description says what to feed it; what cannot be exported is
refused in one line."""

from __future__ import annotations

import dataclasses
import json
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from conftest import shared_path
from pgan_tiny import TINY_PGAN
from reliability_runs import tiny_run

import ganforge
from ganforge.cli import main
from ganforge.config import ConfigError
from ganforge.families import resolve_run_config
from ganforge.families.base import BATCH_DEPENDENT_NOTE
from ganforge.interop.onnx_export import export_onnx
from ganforge.models.fan import face_masks
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
@pytest.mark.parametrize("family", ["biggan", "biggan+batch", "wgan-gp", "wgan-gp+conditions"])
def test_class_conditional_and_batch_statistics_generators_export(tmp_path, family: str) -> None:
    """biggan+batch: the CIFAR preset's sampling on batch statistics, which the exporter wrote as eval-mode batch
    norm (onnxruntime 1.1 off PyTorch) until the graph was traced without the running statistics."""
    run = tmp_path / "run"
    family, _, variant = family.partition("+")
    conditional = variant == "conditions"
    config = tiny_run(family)
    if conditional:  # the tutorial's conditional WGAN-GP: a class per label column beside z
        config["model"] = {**config["model"], "conditions": ["shape"]}
    if variant == "batch":
        config["model"] = {**config["model"], "sample_eval_mode": False}
    ganforge.train(config, run)
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
    if family != "biggan" or variant == "batch":  # batch-normalised sampling: images depend on their batch-mates
        assert described["batch_statistics"] == BATCH_DEPENDENT_NOTE
    if conditional:  # which class each index of each column is
        assert described["inputs"]["labels"]["shape"] == ["batch", 1]
        assert described["label_columns"] == [{"name": "shape", "classes": model.family.conditioning()[0][1]}]


def untrained(family: str, raw: dict) -> LoadedModel:
    config = resolve_run_config(family, raw)
    built = build_family(config, torch.device("cpu"))
    for net in built.nets.values():
        net.eval()
    return LoadedModel(family=built, config=config, step=0, plan=built.plan(0))


def test_a_label_conditioned_pgan_exports_with_any_batch_and_keeps_existing_files(tmp_path) -> None:
    """The conditional PGAN's graph was fixed at the traced batch (len(z) became a constant), and the failed check
    left its .onnx and .json behind; an existing file (a run's checkpoint record, beside a chosen name) was replaced."""
    model = untrained("pgan", {**TINY_PGAN, "model": {**TINY_PGAN["model"], "conditions": ["shape", "background"]}})
    out = tmp_path / "g.onnx"
    exported = export_onnx(model, out)
    inputs = model.latents(5, seed=4)
    np.testing.assert_allclose(run_exported(out, inputs), model.generate(inputs).numpy(), atol=1e-4, rtol=0)
    assert json.loads(exported.description.read_text())["inputs"]["labels"]["shape"] == ["batch", 2]
    out.with_suffix(".json").write_text("mine")
    with pytest.raises(ConfigError, match=r"g.onnx and .*g.json exist; --overwrite \(Python: overwrite=True\)"):
        export_onnx(model, out)
    assert out.with_suffix(".json").read_text() == "mine"
    assert export_onnx(model, out, overwrite=True).max_difference is not None
    assert sorted(path.name for path in tmp_path.iterdir()) == ["g.json", "g.onnx"]  # no temporary file left
    with pytest.raises(ConfigError, match=r"--opset 17: torch's exporter writes opsets 18 to \d+"):
        export_onnx(model, tmp_path / "old.onnx", opset=17)  # it wrote opset 18 and said it had written 17


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


@pytest.mark.slow  # the face-mask network runs at 256 px inside the graph
def test_a_face_model_exports_with_its_mask_network(tmp_path) -> None:
    """w_hpf > 0 (CelebA-HQ): the FAN and the mask recipe are in the graph, the masks a second output. Where a
    heatmap value sits at the recipe's threshold the runtimes may round it to either side, so the masks are
    compared by the share that differs, and the images against PyTorch's translation from the graph's masks."""
    wing = shared_path("fixtures", "official", "stargan_v2", "wing", "wing_standin.ckpt")
    raw = tiny_run("stargan2")
    raw["model"] = {**raw["model"], "w_hpf": 1.0, "wing_weights": str(wing)}
    model = untrained("stargan2", raw)
    exported = export_onnx(model, tmp_path / "f.onnx", check_n=3)
    assert exported.max_difference is not None and exported.max_difference <= 1e-4
    described = json.loads(exported.description.read_text())
    assert described["masks"]["shape"] == ["batch", 2, 256, 256] and described["output"]["name"] == "images"
    generator = torch.Generator().manual_seed(5)
    x, z, y = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1, torch.randn(2, 4, generator=generator), \
        torch.tensor([1, 0])
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    images, masks = session.run(["images", "masks"], {"x": x.numpy(), "z": z.numpy(), "y": y.numpy()})
    expected_masks = torch.cat(face_masks(model.family.fan, x), dim=1).numpy()
    assert np.mean(np.abs(masks - expected_masks) > 1e-4) <= 1e-3 and masks.max() > 0.5  # the masks are not empty
    nets = model.nets
    with torch.no_grad():
        pair = (torch.from_numpy(masks[:, :1]), torch.from_numpy(masks[:, 1:]))
        expected = nets["G_ema"](x, nets["F_ema"](z, y), pair).clamp(-1, 1).numpy()
        unmasked = nets["G_ema"](x, nets["F_ema"](z, y)).clamp(-1, 1).numpy()
    np.testing.assert_allclose(images, expected, atol=1e-4, rtol=0)
    assert np.abs(images - unmasked).max() > 1e-3  # the masks reach the images


def test_what_cannot_be_exported_is_refused(tmp_path, monkeypatch) -> None:
    model = untrained("stargan2", tiny_run("stargan2"))
    with pytest.raises(ConfigError, match="guide 'style': expected one of latent, reference"):
        export_onnx(model, tmp_path / "g.onnx", guide="style")
    with pytest.raises(ConfigError, match=r"--wing-weights w\.ckpt: only StarGAN v2 runs with w_hpf > 0 use face"):
        export_onnx(model, tmp_path / "g.onnx", wing_weights="w.ckpt")  # a setting that would do nothing
    model.family.arch = dataclasses.replace(model.family.arch, w_hpf=1.0)  # as a CelebA-HQ run, offline, no weights
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GANFORGE_WING_WEIGHTS", raising=False)

    def offline(url, timeout):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ConfigError, match="model.w_hpf = 1 .* needs the official face masks.*wing.ckpt"):
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
