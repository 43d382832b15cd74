"""Shared test fixtures: the ../shared reference folder and tiny temporary run directories."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import pytest
import torch

# One intra-op thread for every test: the networks here are tiny, so a second thread mostly waits for a core (several
# times slower on the shared 2-core machine), `pytest -n 2` already uses both cores, and subprocess runs (torchrun,
# kill-and-resume) get OMP_NUM_THREADS=1 so in-process reference runs compute bit-identically to them.
torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared"


def shared_path(*parts: str) -> Path:
    """Path inside ../shared, or skip the calling test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not available: {path} is absent (it lives in ../shared beside the project)")
    return path


@pytest.fixture
def shared() -> type:
    """Gives tests `shared("fixtures", "metrics")`-style access with a clear skip when absent."""
    return shared_path


@pytest.fixture(params=["separate", "fused"])
def resampling_route(request, monkeypatch) -> str:
    """Every resampling convolution (ganforge.nn.resample) on one route, whatever the size: tiny test inputs
    would otherwise take the separate one only."""
    from ganforge.nn import resample

    fused = request.param == "fused"
    monkeypatch.setattr(resample, "FUSED_MIN_BATCH_PIXELS_CPU", 0 if fused else 2**62)
    monkeypatch.setattr(resample, "FUSED_MIN_SIZE", 0 if fused else 2**62)
    return request.param


def write_inception_standin(path: Path) -> Path:
    """The seeded stand-in for the FID Inception weights (../shared/fixtures/inception/recipe.py: the real file's
    layout, random values) saved at `path`, for tests that must get past the weights lookup; skips when absent."""
    import importlib.util
    import json

    recipe = shared_path("fixtures", "inception", "recipe.py")
    spec = importlib.util.spec_from_file_location("inception_recipe", recipe)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.save(module.standin_state_dict(json.loads((recipe.parent / "layout.json").read_text())), path)
    return path


class _TinyFeatures(torch.nn.Module):
    """uint8 N x 3 x H x W → 16 float features: the VGG-16 fc2 extractor's contract at a tiny size."""

    def __init__(self) -> None:
        super().__init__()
        self.project = torch.nn.Linear(48, 16)
        with torch.no_grad():
            self.project.weight.copy_(torch.linspace(-1, 1, 48 * 16).view(16, 48).roll(5, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(images.to(self.project.weight.device).float() / 255, 4)
        return torch.relu(self.project(x.flatten(1)))


@pytest.fixture
def standin_vgg16(tmp_path, monkeypatch) -> Path:
    """Precision/recall's VGG-16 (528 MB) as a tiny stand-in: $GANFORGE_VGG16_WEIGHTS names a placeholder file and
    the loader gives a small fixed network with the real one's contract (tests/test_vgg16_fc2.py tests the real
    module)."""
    import sys

    import ganforge.metrics.evaluate  # noqa: F401 (the package re-exports its function under the module's name)

    evaluate_module = sys.modules["ganforge.metrics.evaluate"]
    path = tmp_path / "vgg16-397923af.pth"
    path.write_bytes(b"stand-in")
    monkeypatch.setenv("GANFORGE_VGG16_WEIGHTS", str(path))
    monkeypatch.setattr(evaluate_module, "load_vgg16_fc2", lambda weights, device=None: _TinyFeatures().to(
        device or "cpu"))
    evaluate_module.release_feature_networks()
    yield path
    evaluate_module.release_feature_networks()


@pytest.fixture
def no_feature_weights(tmp_path, monkeypatch) -> Path:
    """A user without the feature networks' weights: nothing named, an empty cache (returned), and offline."""
    import urllib.error
    import urllib.request

    for variable in ("GANFORGE_INCEPTION_WEIGHTS", "GANFORGE_DINOV2_WEIGHTS", "GANFORGE_VGG16_WEIGHTS"):
        monkeypatch.delenv(variable, raising=False)
    cache = tmp_path / "empty-cache"
    monkeypatch.setenv("GANFORGE_CACHE", str(cache))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return cache


# BigGAN-PyTorch's scripts/launch_cifar_ema.sh's settings, as train.py flags
CIFAR_LAUNCH_FLAGS = (
    "--shuffle --batch_size 50 --parallel --num_G_accumulations 1 --num_D_accumulations 1 --num_epochs 500 "
    "--num_D_steps 4 --G_lr 2e-4 --D_lr 2e-4 --dataset C10 --G_ortho 0.0 --G_attn 0 --D_attn 0 --G_init N02 "
    "--D_init N02 --ema --use_ema --ema_start 1000 --test_every 5000 --save_every 2000 --num_best_copies 5 "
    "--num_save_copies 2 --seed 0")


def write_launch_script(path: Path, flags: str) -> Path:
    """A launch script laid out as BigGAN-PyTorch's: a shebang, an environment prefix, one flag per line and a
    dangling backslash at the end of the file."""
    lines = flags.replace(" --", " \\\n--")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/bash\n# a comment\nCUDA_VISIBLE_DEVICES=0,1 python train.py \\\n{lines} \\")
    return path

# StarGAN v2's README command for AFHQ, as main.py flags
STARGAN2_AFHQ_FLAGS = ("--mode train --num_domains 3 --w_hpf 0 --lambda_reg 1 --lambda_sty 1 --lambda_ds 2 "
                       "--lambda_cyc 1 --train_img_dir data/afhq/train --val_img_dir data/afhq/val")


def reference_checkout(fragment: str,
                       where: str = "benchmarks/bench_vs_reference.py names the repositories and commits") -> Path:
    """The official code's checkout in $GANFORGE_REFS whose folder name contains `fragment` (any case), or skip the
    calling test saying what it needs (`where`: how to get it)."""
    refs = os.environ.get("GANFORGE_REFS")
    found = next((p for p in Path(refs).iterdir() if fragment.lower() in p.name.lower()), None) \
        if refs and Path(refs).is_dir() else None
    if found is None:
        pytest.skip(f"needs GANFORGE_REFS with a {fragment} checkout ({where})")
    return found


def argparse_options(source: Path, function: str | None = None) -> dict[str, dict[str, Any]]:
    """The options an official script's argparse parser declares, read from its source (never run): each by its
    long name, with its kind as the translations' tables write it ("on"/"off" for store_true/store_false, else the
    type's name, "str" without one), default (as argparse fills it in), dest and short forms. `function`: only the
    add_argument calls inside that function."""
    tree = ast.parse(source.read_text())
    if function is not None:
        tree = next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == function)
    options = {}
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "add_argument"):
            continue
        names = [arg.value for arg in call.args]
        if not names[0].startswith("-"):
            continue  # a positional argument
        keywords = {keyword.arg: keyword.value for keyword in call.keywords}
        action = ast.literal_eval(keywords["action"]) if "action" in keywords else None
        kind = {"store_true": "on", "store_false": "off"}.get(action) or (
            keywords["type"].id if "type" in keywords else "str")
        switch_default = {"on": False, "off": True}.get(kind)  # argparse's for store_true / store_false
        default = ast.literal_eval(keywords["default"]) if "default" in keywords else switch_default
        long = next(name for name in names if name.startswith("--")).removeprefix("--")
        options[long] = {"kind": kind, "default": float(default) if kind == "float" else default,
                         "dest": ast.literal_eval(keywords["dest"]) if "dest" in keywords else long,
                         "short": [name for name in names if not name.startswith("--")]}
    return options


def zoo_pgan_defaults() -> dict[str, Any]:
    """pytorch_GAN_zoo's PGAN defaults (standard_configurations/pgan_config.py's `_C.KEY = value` lines), read from
    the checkout's source in $GANFORGE_REFS (skips without it)."""
    source = next(reference_checkout("pytorch_GAN_zoo").rglob("standard_configurations/pgan_config.py"))
    return {node.targets[0].attr: ast.literal_eval(node.value) for node in ast.parse(source.read_text()).body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute)}


def assert_same_update(whole: list[tuple[str, list[torch.Tensor]]], sliced: list[tuple[str, list[torch.Tensor]]],
                       whole_logs: list[dict[str, float]], sliced_logs: list[dict[str, float]], *,
                       rel: float, abs_: float) -> None:
    """A step computed in micro-batches against the whole batch's: the same optimisers step in the same order, each
    with the whole batch's gradient to float rounding (relative to the network's largest gradient), and the logs
    are the whole batch's means."""
    assert [name for name, _ in sliced] == [name for name, _ in whole]
    for (name, expected), (_, got) in zip(whole, sliced, strict=True):
        scale = max(float(g.abs().max()) for g in expected)
        worst = max(float((g - e).abs().max()) for g, e in zip(got, expected, strict=True))
        assert worst < 1e-4 * scale, (name, worst, scale)
    for expected, got in zip(whole_logs, sliced_logs, strict=True):
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=rel, abs=abs_), key
