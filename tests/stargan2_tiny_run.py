"""A tiny trained StarGAN v2 run on two-domain folders in the official layout, shared by the translate and
evaluation tests: built-in shapes (background "dark" vs "light") written as PNGs to `<root>/{train,val}/<domain>/`,
prepared with `prepare_domain_folders`, trained for a few steps with the tiny preset's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

import ganforge
from ganforge.config import read_config_file
from ganforge.data.domains import prepare_domain_folders
from ganforge.data.loader import BatchLoader
from ganforge.data.store import open_dataset
from ganforge.families.stargan2 import StarGAN2Family, StepInputs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DOMAINS = ["dark", "light"]
SPLIT_COUNTS = {"train": 6, "val": 3}  # images per domain


def draw_step_inputs(family: StarGAN2Family, batch_size: int) -> StepInputs:
    """One step's shared inputs as training makes them: the engine's loader in the family's domain-pair mode."""
    loader = BatchLoader(family.dataset, seed=0, dist=family.dist, device=family.device,
                         options=family.data_options())
    return family.step_inputs(loader.next(batch_size, family.img_size), batch_size)


def write_domain_folders(root: Path, resolution: int = 32) -> Path:
    """PNG folders `root/train/<domain>/` and `root/val/<domain>/` cut from the built-in shapes."""
    shapes = open_dataset(f"builtin:shapes?count=64&resolution={resolution}")
    column = [name for name, _ in shapes.label_columns].index("background")
    classes = shapes.label_columns[column][1]
    taken = {domain: 0 for domain in DOMAINS}
    for index, label in enumerate(shapes.labels[:, column]):
        domain = classes[label]
        if domain not in taken:
            continue
        position = taken[domain]
        split = "train" if position < SPLIT_COUNTS["train"] else "val"
        if position < sum(SPLIT_COUNTS.values()):
            folder = root / split / domain
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(shapes.images(resolution)[index].transpose(1, 2, 0)).save(folder / f"{index:03d}.png")
        taken[domain] += 1
    return root


def train_tiny_run(workdir: Path, steps: int = 2, **settings: Any) -> tuple[Path, Path]:
    """(run directory, prepared domain stores folder) of a tiny run trained on `<stores>/train`; `settings`
    replace top-level config keys."""
    stores = workdir / "stores"
    prepare_domain_folders(write_domain_folders(workdir / "folders"), stores, resolution=32)
    raw = read_config_file(CONFIGS / "stargan2_tiny.yaml")
    raw.update({"data": str(stores / "train"), "progress": False, "tensorboard": False, "sample_every": steps,
                "checkpoint_every": steps, **settings})
    raw["model"].update(steps=steps, domain_column=None, base_dim=4, max_conv_dim=8, mapping_dim=8, batch_size=2)
    run = workdir / "run"
    ganforge.train(raw, run)
    return run, stores
