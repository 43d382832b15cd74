"""`ganforge export`: a run's sampling generator as an ONNX file, for serving without PyTorch or ganforge.

The graph maps a run's latent inputs (z; a class-conditional run's class indices too) to images in [-1, 1] at the
run's resolution, any batch size, exactly as `ganforge generate` makes them (the EMA generator where the run keeps
one, clamped to [-1, 1]; a DCGAN that samples with batch statistics normalises over the batch given). A StarGAN v2
run's graph translates source images into target domains, its style from a latent (`guide="latent"`: the EMA mapping
network) or from a reference image (`guide="reference"`: the EMA style encoder), as `ganforge translate` does. A JSON
file beside it says what to feed it. Exported with torch's ONNX exporter (the `onnx` extra: onnx and onnxscript);
where onnxruntime is installed, the file is run on fresh inputs and compared with PyTorch before the command succeeds.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganforge.errors import ConfigError
from ganforge.run_loader import LoadedModel

ONNX_EXTRA = 'pip install "ganforge[onnx]" (onnx and onnxscript; onnxruntime to check the file)'
TOLERANCE = 1e-4  # largest |ONNX - PyTorch| accepted on the check's images in [-1, 1]


class _Sampler(torch.nn.Module):
    """The run's sampling generator as a module of its latent inputs, in the order of `names`."""

    def __init__(self, model: LoadedModel, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names
        self.generator = model.nets[model.family.sample_net]  # registered, so its weights are the graph's

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        family = self.model.family
        return family.generate(dict(zip(self.names, inputs, strict=True)), family.sample_net, self.model.plan
                               ).clamp(-1, 1)


class _Translator(torch.nn.Module):
    """A StarGAN v2 run's EMA generator translating sources `x` into domains `y`, styled by latents `z` (F) or by
    references `x_ref` (E)."""

    def __init__(self, model: LoadedModel, guide: str) -> None:
        super().__init__()
        self.generator = model.nets["G_ema"]
        self.styler = model.nets["F_ema" if guide == "latent" else "E_ema"]

    def forward(self, x: torch.Tensor, guide: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.generator(x, self.styler(guide, y)).clamp(-1, 1)


GUIDES = ("latent", "reference")


@dataclass
class Exported:
    path: Path
    description: Path
    max_difference: float | None  # against PyTorch on fresh latents; None without onnxruntime


def export_onnx(model: LoadedModel, out: Path, *, opset: int | None = None, check_n: int = 8,
                guide: str | None = None) -> Exported:
    """Write `out` (.onnx) and `out` with .json, and check the file with onnxruntime when it is installed.
    `guide` (StarGAN v2 runs only, default "latent"): where the translation's style comes from."""
    translates = model.family.translates
    if guide is not None and not translates:
        raise ConfigError(f"guide {guide!r}: only StarGAN v2 runs take a style guide; a {model.config.family} "
                          "run's graph is its generator of latents")
    if translates and (guide := guide or "latent") not in GUIDES:
        raise ConfigError(f"guide {guide!r}: expected one of {', '.join(GUIDES)}")
    if translates and model.family.arch.w_hpf > 0:
        raise ConfigError(f"model.w_hpf = {model.family.arch.w_hpf:g}: the face masks cut the landmark heatmaps at "
                          "a threshold, so onnxruntime's rounding flips single mask values (by 0.19 in one of 262,144 "
                          "on stand-in weights) and the exported translation cannot be checked against PyTorch to "
                          "1e-4; export is for w_hpf = 0 runs (AFHQ's)")
    if getattr(model.family.config, "standing_stats", 0):
        raise ConfigError("model.standing_stats: this BigGAN run re-estimates its BN statistics from fresh samples at "
                          "every sampling call, which a fixed graph cannot hold; export is for runs that sample with "
                          "their running statistics (standing_stats 0)")
    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"{out}: expected a .onnx file name")
    try:
        import onnx  # noqa: F401 - torch's exporter needs it and onnxscript
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError(f"ONNX export needs the onnx extra: {ONNX_EXTRA}") from None
    example = _translation_inputs(model, guide, 2, seed=0) if translates else model.latents(2, seed=0)
    names = list(example) if translates else sorted(example)
    sampler = (_Translator(model, guide) if translates else _Sampler(model, names)).eval()
    size = torch.export.Dim("batch", min=1)
    batch = tuple({0: size} for _ in names)  # every input's first dimension, one size
    out.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), _quiet_exporter():
        torch.onnx.export(sampler, tuple(example[name].to(model.device) for name in names), str(out), dynamo=True,
                          input_names=names, output_names=["images"], opset_version=opset, external_data=False,
                          dynamic_shapes=batch if translates else (batch,))  # _Sampler.forward(*inputs)
    description = out.with_suffix(".json")
    description.write_text(json.dumps(_describe(model, example, names, guide), indent=1) + "\n")
    fresh = _translation_inputs(model, guide, check_n, seed=1) if translates else model.latents(check_n, seed=1)
    return Exported(out, description, _check(sampler, out, names, fresh))


def _translation_inputs(model: LoadedModel, guide: str, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Example inputs of a translation graph: sources, latents or references, target domains (in forward's order)."""
    generator = torch.Generator().manual_seed(seed)
    family = model.family
    size = (n, 3, model.plan.resolution, model.plan.resolution)
    sources = torch.rand(size, generator=generator) * 2 - 1
    styling = (torch.randn(n, family.config.latent_dim, generator=generator) if guide == "latent"
               else torch.rand(size, generator=generator) * 2 - 1)
    domains = torch.randint(len(family.domain_names), (n,), generator=generator)
    return {"x": sources, "z" if guide == "latent" else "x_ref": styling, "y": domains}


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Without the exporter's progress lines, its notes on torchvision operators (this package needs none) and
    torch's own deprecation warnings from inside it: what the command prints is its result."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message="# The axis name")  # z and y share the batch axis, as meant
            yield
    finally:
        registration.setLevel(level)


MEANINGS = {"x": "source images in [-1, 1], NCHW RGB", "x_ref": "reference images in [-1, 1], NCHW RGB",
            "y": "target domain indices", "z": "latent vectors, drawn from N(0, I)"}


def _describe(model: LoadedModel, example: dict[str, torch.Tensor], names: list[str],
              guide: str | None) -> dict[str, Any]:
    """What to feed the graph and what it returns."""
    family = model.family
    inputs = {}
    for name in names:
        tensor = example[name]
        if family.translates:
            meaning = MEANINGS[name]
        elif tensor.is_floating_point():
            meaning = MEANINGS["z"]
        else:
            meaning = "class indices of the run's label columns" if tensor.ndim > 1 else "class indices"
        inputs[name] = {"shape": ["batch", *tensor.shape[1:]], "dtype": str(tensor.dtype).removeprefix("torch."),
                        "meaning": meaning}
    described: dict[str, Any] = {
        "family": model.config.family, "step": model.step, "generator": family.sample_net, "inputs": inputs,
        "output": {"name": "images", "shape": ["batch", *_image_shape(model)], "dtype": "float32",
                   "range": [-1, 1], "layout": "NCHW, RGB"}}
    if family.samples_by_class:
        described["classes"] = family.class_names()
    if family.translates:
        described.update(guide=guide, domains=list(family.domain_names))
    return described


def _image_shape(model: LoadedModel) -> list[int]:
    if model.family.translates:
        return [3, model.plan.resolution, model.plan.resolution]
    return list(model.generate(n=1).shape[1:])


def _check(sampler: torch.nn.Module, path: Path, names: list[str], fresh: dict[str, torch.Tensor]) -> float | None:
    """max |ONNX − PyTorch| on inputs other than the traced ones (another batch size: the dimension is dynamic)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["images"], {name: fresh[name].numpy() for name in names})[0]
    device = next(sampler.parameters()).device
    with torch.no_grad():
        expected = sampler(*(fresh[name].to(device) for name in names)).float().cpu().numpy()
    difference = float(np.abs(got - expected).max())
    if not difference <= TOLERANCE:
        raise ConfigError(f"{path}: onnxruntime's images differ from PyTorch's by {difference:.2e} (more than "
                          f"{TOLERANCE:g}); the file is written, but do not rely on it")
    return difference
