"""Shared test fixtures: the ../shared reference folder and tiny temporary run directories."""

from __future__ import annotations

from pathlib import Path

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
