"""The engine/family contract: what every family declares (the generator of samples, conditioning, data options,
phases' batches), the one path to D (the augmentation seam), and runs saved before the contract's renames."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from reliability_runs import TINY_RUNS

from ganforge.config import ConfigError
from ganforge.families import resolve_run_config
from ganforge.families.base import Phase
from ganforge.training import checkpoint as ckpt
from ganforge.training.engine import Trainer


def trainer(family: str, run: Path, **model: Any) -> Trainer:
    config = json.loads(json.dumps(TINY_RUNS[family]))  # a deep copy
    config["model"].update(model)
    return Trainer(resolve_run_config(None, config), run)


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": value for name, net in trainer.family.nets.items()
            for key, value in net.state_dict().items()}


def assert_same_weights(a: Trainer, b: Trainer) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key, value in wa.items():
        assert torch.equal(value, wb[key]), key


@pytest.mark.parametrize("family", sorted(TINY_RUNS))
def test_every_image_d_sees_goes_through_the_augment_seam(tmp_path: Path, family: str) -> None:
    """One step of each family: every D forward's input has passed through `family.augment` (issue 15's seam):
    it is the augmented batch, or (BigGAN's fakes and reals in one forward) the augmented batches concatenated."""
    run = trainer(family, tmp_path / "run")
    augmented: list[torch.Tensor] = []
    forwards = 0

    def augment(images: torch.Tensor) -> torch.Tensor:
        out = images * 1.0  # a new tensor per call, so D's input can be traced back to this call
        augmented.append(out)
        return out

    def check_input(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        nonlocal forwards
        parts = augmented[:]
        augmented.clear()
        assert args[0] is parts[0] if len(parts) == 1 else torch.equal(args[0], torch.cat(parts))
        forwards += 1

    run.family.augment = augment
    run.family.observe_real_logits = lambda logits: None  # the stand-in augmentation collects no statistic
    run.family.nets["D"].register_forward_pre_hook(check_input)
    run.train_step(run.family.plan(0))
    assert forwards and not augmented


def test_sample_generator_and_conditioning_are_declared_by_the_family(tmp_path: Path) -> None:
    pgan = trainer("pgan", tmp_path / "p").family
    assert (pgan.sample_nets(), pgan.sample_net, pgan.label_count, pgan.samples_by_class) == (
        ["G_ema", "G"], "G_ema", None, False)
    no_ema = trainer("wgan-gp", tmp_path / "w", ema_decay=None).family
    assert (no_ema.sample_nets(), no_ema.sample_net) == (["G"], "G")
    biggan = trainer("biggan", tmp_path / "b").family
    assert (biggan.label_count, biggan.samples_by_class, biggan.label_count_key) == (4, True, "n_classes")
    stargan = trainer("stargan2", tmp_path / "s").family
    assert (stargan.label_count, stargan.samples_by_class, stargan.label_count_key) == (4, False, "num_domains")


def test_a_phase_asking_for_the_previous_batch_needs_an_earlier_one(tmp_path: Path) -> None:
    run = trainer("wgan-gp", tmp_path / "run")
    run.family.phases = lambda step, plan: [Phase("G", ("G",), lambda batch: (torch.zeros(()), {}),
                                                  data="previous")]
    with pytest.raises(RuntimeError, match="no earlier phase of this step drew one"):
        run.train_step(run.family.plan(0))
    with pytest.raises(ValueError, match="reuse_batch needs data='fresh'"):
        Phase("D", ("D",), lambda batch: None, data="none", reuse_batch=True)


@pytest.mark.parametrize(("family", "old", "new", "value"), [
    ("wgan-gp", "z_dim", "latent_dim", 8), ("biggan", "dim_z", "latent_dim", 16),
    ("stargan2", "img_size", "resolution", 32)])
def test_old_spellings_load_with_a_deprecation_message(family: str, old: str, new: str, value: int,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    model = {k: v for k, v in TINY_RUNS[family]["model"].items() if k != new}
    with caplog.at_level("WARNING"):
        config = resolve_run_config(None, {**TINY_RUNS[family], "model": {**model, old: value}})
    assert getattr(config.model, new) == value
    assert f"model.{old} is deprecated: it is now called '{new}'" in caplog.text
    with pytest.raises(ConfigError, match=f"model.{old}: the old spelling of '{new}', which is also given"):
        resolve_run_config(None, {**TINY_RUNS[family], "model": {**model, old: value, new: value}})


def rewrite_checkpoint_meta(run: Path, change: Any) -> None:
    """Edit the newest checkpoint's JSON record in place (the tensor file and its hash stay as they are)."""
    path = ckpt.checkpoint_dir(run) / f"{max(ckpt.checkpoint_steps(run)):08d}.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.slow
def test_a_stargan2_run_saved_before_the_renames_and_the_loader_mode_resumes_exactly(tmp_path: Path) -> None:
    """A checkpoint as the earlier layout wrote it (model.img_size in the saved configs, the draws' generator in the
    family state, no domain-pair state in the loader's) resumes to the weights of an uninterrupted run."""
    straight = trainer("stargan2", tmp_path / "straight")
    straight.train()
    first = trainer("stargan2", tmp_path / "old")
    first.train(until=3)

    def to_old_layout(meta: dict[str, Any]) -> None:
        meta["family_state"]["rng"] = meta["loader"].pop("domain_pairs")["rng"]
        meta["config"]["model"]["img_size"] = meta["config"]["model"].pop("resolution")

    rewrite_checkpoint_meta(tmp_path / "old", to_old_layout)
    saved = json.loads((tmp_path / "old" / "config.json").read_text())
    saved["model"]["img_size"] = saved["model"].pop("resolution")
    (tmp_path / "old" / "config.json").write_text(json.dumps(saved))
    resumed = Trainer(resolve_run_config(None, saved), tmp_path / "old")
    assert resumed.step == 3
    resumed.train()
    assert resumed.images_seen == straight.images_seen
    assert_same_weights(resumed, straight)
