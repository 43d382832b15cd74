"""`ganforge export`: a run's sampling generator as an ONNX file, for serving without PyTorch or ganforge.

The graph maps a run's latent inputs (z; a class-conditional run's class indices too) to images in [-1, 1] at the
run's resolution, any batch size, exactly as `ganforge generate` makes them (the EMA generator where the run keeps
one, clamped to [-1, 1]; a DCGAN or BigGAN that samples with batch statistics normalises over the batch given). A
StarGAN v2 run's graph translates source images into target domains, its style from a latent (`guide="latent"`: the
EMA mapping network) or from a reference image (`guide="reference"`: the EMA style encoder), as `ganforge translate`
does; with w_hpf > 0 the face-mask network is inside the graph and its masks are a second output. A JSON file beside
it says what to feed it. Exported with torch's ONNX exporter (the `onnx` extra: onnx and onnxscript);
where onnxruntime is installed, the file is run on fresh inputs and compared with PyTorch before the command succeeds.
Both files are written under temporary names and put in place only once the graph has its opset and passed that
check, so a failed export leaves no file, and an existing one is replaced only when asked (`overwrite`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganforge.errors import ConfigError
from ganforge.families.base import BATCH_DEPENDENT_NOTE
from ganforge.models.fan import face_masks
from ganforge.run_loader import LoadedModel

ONNX_EXTRA = 'pip install "ganforge[onnx]" (onnx and onnxscript; onnxruntime to check the file)'
MIN_OPSET = 18  # the dynamo exporter's own operator implementations start here
TOLERANCE = 1e-4  # largest |ONNX - PyTorch| accepted on the check's images in [-1, 1]
# face masks (w_hpf > 0) cut heatmaps at a threshold: a value at it may land on either side under another runtime's
# rounding (1 in 262,144 on the stand-in FAN weights, by 0.19); this share of mask values may so differ
MASK_FLIP_SHARE = 1e-3


class _Sampler(torch.nn.Module):
    """The run's sampling generator as a module of its latent inputs, in the order of `names`."""

    def __init__(self, model: LoadedModel, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names
        self.generator = model.nets[model.family.sample_net]  # registered, so its weights are the graph's

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        family = self.model.family
        with _untracked_batch_norm(self.generator) if family.batch_dependent_samples else contextlib.nullcontext():
            return family.generate(dict(zip(self.names, inputs, strict=True)), family.sample_net, self.model.plan
                                   ).clamp(-1, 1)


@contextlib.contextmanager
def _untracked_batch_norm(net: torch.nn.Module) -> Iterator[None]:
    """Batch norm in training mode on the batch alone, its running statistics not passed: given them, torch's
    exporter writes an inference BatchNormalization, which normalises by them (BigGAN's batch-statistics sampling
    came out as its eval mode, 1.1 apart)."""
    norms = [(m, m.track_running_stats) for m in net.modules() if hasattr(m, "track_running_stats")]
    try:
        for m, _ in norms:
            m.track_running_stats = False
        yield
    finally:
        for m, tracking in norms:
            m.track_running_stats = tracking


class _Translator(torch.nn.Module):
    """A StarGAN v2 run's EMA generator translating sources `x` into domains `y`, styled by latents `z` (F) or by
    references `x_ref` (E). With w_hpf > 0 the face-mask network is part of the graph, and the masks it made are a
    second output (N, 2, 256, 256: coarse, fine), so that a check can tell the generator from the masks."""

    def __init__(self, model: LoadedModel, guide: str) -> None:
        super().__init__()
        self.generator = model.nets["G_ema"]
        self.styler = model.nets["F_ema" if guide == "latent" else "E_ema"]
        self.fan = model.family.fan if model.family.arch.w_hpf > 0 else None

    def masks(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(face_masks(self.fan, x), dim=1)

    def translate(self, x: torch.Tensor, guide: torch.Tensor, y: torch.Tensor,
                  masks: torch.Tensor | None) -> torch.Tensor:
        pair = None if masks is None else (masks[:, :1], masks[:, 1:])
        return self.generator(x, self.styler(guide, y), pair).clamp(-1, 1)

    def forward(self, x: torch.Tensor, guide: torch.Tensor,
                y: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.fan is None:
            return self.translate(x, guide, y, None)
        masks = self.masks(x)
        return self.translate(x, guide, y, masks), masks


GUIDES = ("latent", "reference")


@dataclass
class Exported:
    path: Path
    description: Path
    max_difference: float | None  # against PyTorch on fresh latents; None without onnxruntime


def export_onnx(model: LoadedModel, out: Path, *, opset: int | None = None, check_n: int = 8,
                guide: str | None = None, wing_weights: str | Path | None = None, overwrite: bool = False) -> Exported:
    """Write `out` (.onnx) and `out` with .json, and check the file with onnxruntime when it is installed.
    `guide` (StarGAN v2 runs only, default "latent"): where the translation's style comes from; `wing_weights`:
    the face-mask network of a w_hpf > 0 run (default: the run's config, $GANFORGE_WING_WEIGHTS, the cache);
    `overwrite`: replace files of those names (else refused, before anything is traced)."""
    translates = model.family.translates
    if guide is not None and not translates:
        raise ConfigError(f"guide {guide!r}: only StarGAN v2 runs take a style guide; a {model.config.family} "
                          "run's graph is its generator of latents")
    if translates and (guide := guide or "latent") not in GUIDES:
        raise ConfigError(f"guide {guide!r}: expected one of {', '.join(GUIDES)}")
    if wing_weights is not None and not (translates and model.family.arch.w_hpf > 0):
        raise ConfigError(f"--wing-weights {wing_weights}: only StarGAN v2 runs with w_hpf > 0 use face masks")
    if translates:
        model.family.load_fan(wing_weights)  # w_hpf > 0 only: the masks are part of the graph
    if getattr(model.family.config, "standing_stats", 0):
        raise ConfigError("model.standing_stats: this BigGAN run re-estimates its BN statistics from fresh samples at "
                          "every sampling call, which a fixed graph cannot hold; export is for runs that sample with "
                          "their running statistics (standing_stats 0)")
    out = Path(out)
    if out.suffix != ".onnx":
        raise ConfigError(f"{out}: expected a .onnx file name")
    description = out.with_suffix(".json")
    if not overwrite and (existing := [str(path) for path in (out, description) if path.exists()]):
        raise ConfigError(f"{' and '.join(existing)} exist{'s' if len(existing) == 1 else ''}; --overwrite "
                          "(Python: overwrite=True) replaces them, or give another name")
    try:
        import onnx  # torch's exporter needs it and onnxscript
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError(f"ONNX export needs the onnx extra: {ONNX_EXTRA}") from None
    if opset is not None and not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ConfigError(f"--opset {opset}: torch's exporter writes opsets {MIN_OPSET} to "
                          f"{onnx.defs.onnx_opset_version()} (older ones only by a conversion that fails for these "
                          "graphs)")
    example = _translation_inputs(model, guide, 2, seed=0) if translates else model.latents(2, seed=0)
    names = list(example) if translates else sorted(example)
    sampler = (_Translator(model, guide) if translates else _Sampler(model, names)).eval()
    size = torch.export.Dim("batch", min=1)
    batch = tuple({0: size} for _ in names)  # every input's first dimension, one size
    out.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    temporary = [out.with_name(f".{out.stem}.{token}.onnx"), out.with_name(f".{out.stem}.{token}.json")]
    try:
        with torch.no_grad(), _quiet_exporter():
            torch.onnx.export(sampler, tuple(example[name].to(model.device) for name in names), str(temporary[0]),
                              dynamo=True, input_names=names, output_names=_output_names(sampler),
                              opset_version=opset, external_data=False,
                              dynamic_shapes=batch if translates else (batch,))  # _Sampler.forward(*inputs)
        _check_opset(temporary[0], opset)
        temporary[1].write_text(json.dumps(_describe(model, example, names, guide), indent=1) + "\n")
        fresh = _translation_inputs(model, guide, check_n, seed=1) if translates else model.latents(check_n, seed=1)
        difference = _check(sampler, temporary[0], names, fresh)
        os.replace(temporary[0], out)
        os.replace(temporary[1], description)
    finally:
        for path in temporary:
            path.unlink(missing_ok=True)
    return Exported(out, description, difference)


def _check_opset(path: Path, wanted: int | None) -> None:
    """The exporter writes its own opset where it cannot convert to the one asked for (printing why): refused."""
    if wanted is None:
        return
    import onnx

    written = next((entry.version for entry in onnx.load(str(path), load_external_data=False).opset_import
                    if entry.domain in ("", "ai.onnx")), None)
    if written != wanted:
        raise ConfigError(f"--opset {wanted}: torch's exporter could not write this graph at opset {wanted} (it "
                          f"wrote {written}); leave --opset out, or give {written}")


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
    quieted = {logging.getLogger("torch.onnx._internal.exporter._registration"): logging.ERROR}
    levels = {logger: logger.level for logger in quieted}
    for logger, level in quieted.items():
        logger.setLevel(level)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message="# The axis name")  # z and y share the batch axis, as meant
            yield
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)


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
            meaning = ("class indices of the run's label columns (label_columns)" if tensor.ndim > 1
                       else "class indices (classes)")
        inputs[name] = {"shape": ["batch", *tensor.shape[1:]], "dtype": str(tensor.dtype).removeprefix("torch."),
                        "meaning": meaning}
    described: dict[str, Any] = {
        "family": model.config.family, "step": model.step, "generator": family.sample_net, "inputs": inputs,
        "output": {"name": "images", "shape": ["batch", *_image_shape(model)], "dtype": "float32",
                   "range": [-1, 1], "layout": "NCHW, RGB"}}
    if family.samples_by_class:
        described["classes"] = family.class_names()
    if family.conditioning():  # column k of `labels` indexes these classes
        described["label_columns"] = [{"name": name, "classes": classes} for name, classes in family.conditioning()]
    if family.batch_dependent_samples:
        described["batch_statistics"] = BATCH_DEPENDENT_NOTE
    if family.translates:
        described.update(guide=guide, domains=list(family.domain_names))
    if family.translates and family.arch.w_hpf > 0:
        described["masks"] = {"name": "masks", "shape": ["batch", 2, 256, 256], "dtype": "float32", "range": [0, 1],
                              "meaning": "the face masks (coarse, fine) of the sources that the generator used, made "
                                         "inside the graph by the face-mask network (wing.ckpt)"}
    return described


def _image_shape(model: LoadedModel) -> list[int]:
    if model.family.translates:
        return [3, model.plan.resolution, model.plan.resolution]
    return list(model.generate(n=1).shape[1:])


def _output_names(sampler: torch.nn.Module) -> list[str]:
    return ["images", "masks"] if getattr(sampler, "fan", None) is not None else ["images"]


def _check(sampler: torch.nn.Module, path: Path, names: list[str], fresh: dict[str, torch.Tensor]) -> float | None:
    """max |ONNX − PyTorch| of the images on inputs other than the traced ones (another batch size: the dimension is
    dynamic). A graph with face masks: the masks may differ where a heatmap value sits at the recipe's threshold
    (MASK_FLIP_SHARE of them at most); the images are compared with PyTorch's from the graph's own masks."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    try:
        outputs = session.run(_output_names(sampler), {name: fresh[name].numpy() for name in names})
    except Exception as err:  # onnxruntime's own error types (a dimension the graph fixed, an unsupported op)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"onnxruntime cannot run the exported graph on a batch of {len(fresh[names[0]])} ({reason});"
                          " nothing written") from None
    device = next(sampler.parameters()).device
    inputs = [fresh[name].to(device) for name in names]
    with torch.no_grad():
        if len(outputs) == 2:
            masks = torch.from_numpy(outputs[1]).to(device)
            flipped = float((masks - sampler.masks(inputs[0])).abs().gt(TOLERANCE).float().mean())
            if flipped > MASK_FLIP_SHARE:
                raise ConfigError(f"onnxruntime's face masks differ from PyTorch's in {flipped:.2%} of their values "
                                  f"(at most {MASK_FLIP_SHARE:.2%} may cross the recipe's threshold); nothing written")
            expected = sampler.translate(*inputs, masks).float().cpu().numpy()
        else:
            expected = sampler(*inputs).float().cpu().numpy()
    difference = float(np.abs(outputs[0] - expected).max())
    if not difference <= TOLERANCE:
        raise ConfigError(f"onnxruntime's images differ from PyTorch's by {difference:.2e} (more than {TOLERANCE:g});"
                          " nothing written")
    return difference
