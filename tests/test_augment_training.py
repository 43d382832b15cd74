"""Augmentation wired into training (issue 15): the `augment` config key, every family training through it, G's
gradient through it, ADA's p in logs and checkpoints, bit-exact resume, one process equal to two, `ganforge info`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from reliability_runs import FAMILIES, tiny_run
from test_distributed import pgan_for_two_processes, train_one_and_two_processes

from ganforge.cli import main
from ganforge.config import ConfigError
from ganforge.families import resolve_run_config
from ganforge.training import checkpoint as ckpt
from ganforge.training.engine import Trainer

# ADA whose p moves every step by 8 reals (2 D steps of 4) / (0.02 kimg * 1000) = 0.4, towards a target the tiny
# BigGAN's real logits cross within a few steps (p rises, then falls)
FAST_ADA = {"kind": "ada", "interval": 1, "speed_kimg": 0.02, "target": 0.1}
AUGMENTS = {"diffaugment": {"kind": "diffaugment"}, "ada": {"kind": "ada", "p": 0.5}}


def make_trainer(run: Path, family: str, augment: dict[str, Any] | None, **top: Any) -> Trainer:
    config = tiny_run(family, **top)
    if augment is not None:
        config["augment"] = augment
    return Trainer(resolve_run_config(None, config), run)


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {f"{name}.{key}": value for name, net in trainer.family.nets.items()
            for key, value in net.state_dict().items()}


def log_records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", sorted(AUGMENTS))
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_with_augmentation(tmp_path: Path, family: str, kind: str) -> None:
    trainer = make_trainer(tmp_path / "run", family, AUGMENTS[kind])
    assert trainer.family.augment is trainer.augmenter
    trainer.train(until=2)
    records = [r for r in log_records(tmp_path / "run") if "step" in r and "event" not in r]
    assert [r["step"] for r in records] == [1, 2]
    losses = [v for r in records for k, v in r.items() if k.startswith(("loss", "D_", "G_"))]
    assert losses and all(math.isfinite(v) for v in losses)
    assert all(r.get("aug_p") == (0.5 if kind == "ada" else None) for r in records)


def generator_gradients(run: Path, family: str, augment: dict[str, Any] | None) -> dict[str, torch.Tensor]:
    """G's gradients from the G phase of step 0, after the D phases, from the same seed."""
    trainer = make_trainer(run, family, augment)
    plan = trainer.family.plan(0)
    phases = trainer.family.phases(0, plan)
    g_phase = next(p for p in phases if p.trains == ("G",))
    assert g_phase.data == "none"
    G = trainer.family.nets["G"]
    G.requires_grad_(True)
    trainer.family.nets["D"].requires_grad_(False)
    loss, _ = g_phase.loss(None)
    loss.backward()
    return {name: p.grad.clone() for name, p in G.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", sorted(AUGMENTS))
@pytest.mark.parametrize("family", ["pgan", "wgan-gp", "biggan"])
def test_generator_gradient_flows_through_the_augmentation(tmp_path: Path, family: str, kind: str) -> None:
    plain = generator_gradients(tmp_path / "plain", family, None)
    augmented = generator_gradients(tmp_path / "aug", family, AUGMENTS[kind])
    assert plain.keys() == augmented.keys() and augmented
    assert all(torch.isfinite(g).all() for g in augmented.values())
    assert any(g.abs().sum() > 0 for g in augmented.values())
    assert any(not torch.allclose(augmented[k], plain[k]) for k in plain)


def test_ada_statistic_counts_the_real_logits_of_d_phases_only(tmp_path: Path) -> None:
    """BigGAN with 2 D steps of 4 reals: 8 signs per step (not the fakes' or G's), and p's pace counts the 8 reals
    drawn. The signs stay on the device until p is adjusted (or a checkpoint flushes them): no host sync in the
    other steps."""
    trainer = make_trainer(tmp_path / "run", "biggan", {"kind": "ada", "interval": 4})
    trainer.train_step(trainer.family.plan(0))
    controller = trainer.augmenter.controller
    assert (controller.steps, controller.sign_count, controller.images) == (1, 0.0, 8)
    trainer.augmenter.flush()
    assert (controller.steps, controller.sign_count, controller.images) == (1, 8.0, 8)
    assert abs(controller.sign_sum) <= 8


@pytest.mark.parametrize("family", ["wgan-gp", "wgan", "pgan"])
def test_adaptive_ada_is_refused_for_a_wasserstein_critic(tmp_path: Path, family: str) -> None:
    """Nothing trains where a Wasserstein critic's zero lies, so the sign ADA steers by means nothing: a new run is
    refused before it writes anything; a fixed p is fine."""
    config = {**tiny_run("wgan-gp" if family == "wgan" else family), "family": family}  # wgan: the same networks
    config["augment"] = {"kind": "ada"}
    with pytest.raises(ConfigError, match=r"^augment: ADA's adaptive p steers by the sign of D's outputs on reals .*"
                                          r"Wasserstein critic's loss is unchanged by a constant"):
        Trainer(resolve_run_config(None, config), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    config["augment"] = {"kind": "ada", "p": 0.2}
    assert Trainer(resolve_run_config(None, config), tmp_path / "run").augmenter.p == 0.2


def test_a_saved_adaptive_wasserstein_run_resumes_with_a_warning(tmp_path: Path, monkeypatch) -> None:
    from ganforge.families.dcgan import WGANGPFamily

    with monkeypatch.context() as patched:  # a run trained before the refusal
        patched.setattr(WGANGPFamily, "unsigned_critic", classmethod(lambda cls, config: None))
        make_trainer(tmp_path / "run", "wgan-gp", {"kind": "ada"}).train(until=1)
    with pytest.warns(UserWarning, match="^augment: ADA's adaptive p steers"):
        resumed = make_trainer(tmp_path / "run", "wgan-gp", {"kind": "ada"})
    assert resumed.step == 1


@pytest.mark.parametrize("r1_interval", [4, 1])
def test_ada_counts_pgans_real_half_once_per_d_phase(tmp_path: Path, r1_interval: int) -> None:
    """PGAN's D scores reals and fakes in one call (or, with R1 every step, the reals in their own): ADA sees the
    real half's signs once per D phase, not the fakes' or the penalty's. A lazy R1 phase (step 0 of every 4) scores
    the reals again and counts them again, as stylegan2-ada's Dr1 phase reports its real signs."""
    config = tiny_run("pgan")
    config["model"].update(loss="logistic-r1", r1_interval=r1_interval)
    config["augment"] = {"kind": "ada", "interval": 4}
    trainer = Trainer(resolve_run_config(None, config), tmp_path / "run")
    scores: list[torch.Tensor] = []  # D's outputs, call by call; the D phase's first call holds the reals first
    trainer.family.nets["D"].register_forward_hook(lambda module, args, out: scores.append(out.detach().clone()))
    observed: list[torch.Tensor] = []
    update = trainer.augmenter.update
    trainer.augmenter.update = lambda logits: observed.append(logits.detach().clone()) or update(logits)
    plan = trainer.family.plan(0)
    trainer.train_step(plan)
    trainer.augmenter.flush()
    evaluations = 2 if r1_interval > 1 else 1
    assert len(observed) == evaluations and trainer.augmenter.controller.sign_count == evaluations * plan.batch_size
    assert torch.equal(observed[0], scores[0][:plan.batch_size])
    assert not torch.equal(observed[0], scores[0][-plan.batch_size:]) or len(scores[0]) == plan.batch_size
    if r1_interval > 1:  # D phase: reals and fakes in one call; the lazy R1 phase: the reals alone
        assert len(scores[0]) == 2 * plan.batch_size and torch.equal(observed[1], scores[-2])


def test_ada_p_follows_the_controller_and_is_logged_and_checkpointed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = make_trainer(run, "biggan", FAST_ADA, checkpoint_every=100)
    trainer.train(until=6)
    ps = [r["aug_p"] for r in log_records(run) if "aug_p" in r]
    assert len(ps) == 6 and max(ps) > 0 and min(ps[ps.index(max(ps)):]) < max(ps)  # up and down again
    previous = 0.0
    for p in ps:  # each step: ±0.4, floored at 0
        assert any(math.isclose(p, max(previous + d, 0.0), abs_tol=1e-6) for d in (0.4, -0.4)), (previous, p)
        previous = p
    meta = ckpt.latest_valid_checkpoint(run).meta
    assert meta["augment"]["ada"]["p"] == trainer.augmenter.p == ps[-1]


@pytest.mark.slow
def test_stopped_and_resumed_ada_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    whole = make_trainer(tmp_path / "whole", "biggan", FAST_ADA, checkpoint_every=100)
    whole.train()
    make_trainer(tmp_path / "parts", "biggan", FAST_ADA, checkpoint_every=100).train(until=3)
    resumed = make_trainer(tmp_path / "parts", "biggan", FAST_ADA, checkpoint_every=100)
    assert resumed.step == 3 and resumed.augmenter.p > 0  # stopped while augmenting
    resumed.train()
    assert resumed.augmenter.controller.state_dict() == whole.augmenter.controller.state_dict()
    assert whole.augmenter.p > 0
    wa, wb = weights(whole), weights(resumed)
    assert wa.keys() == wb.keys()
    for key, value in wa.items():
        assert torch.equal(value, wb[key]), key


def test_a_run_saved_before_the_augment_key_resumes_without_augmentation(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_trainer(run, "wgan-gp", None).train(until=2)
    for path in [run / "config.json", *ckpt.checkpoint_dir(run).glob("*.json")]:
        data = json.loads(path.read_text())
        data.get("config", data).pop("augment")
        data.pop("augment", None)
        path.write_text(json.dumps(data))
    resumed = make_trainer(run, "wgan-gp", None)
    assert resumed.step == 2 and resumed.family.augment is None and resumed.config.augment.kind == "none"


@pytest.mark.slow
@pytest.mark.parametrize("augment", [{"kind": "ada", "p": 0.5}, {"kind": "ada", "interval": 100}],
                         ids=["fixed-p", "adaptive"])
def test_two_process_ada_run_matches_single_process_run(tmp_path: Path, augment: dict[str, Any]) -> None:
    """Fixed p: every sample is augmented as in one process (the weights agree). Adaptive (an interval longer than
    the run): the statistic sums the signs of both ranks."""
    config = pgan_for_two_processes()
    config.update(augment=augment, checkpoint_every=4)
    config["model"]["loss"] = "logistic-r1"  # a D whose sign ADA's adaptive p can steer by
    single, ddp = train_one_and_two_processes(config, tmp_path, until=4)
    states = [ckpt.latest_valid_checkpoint(run).meta["augment"] for run in (single, ddp)]
    assert states[0] == states[1]
    if "interval" in augment:
        assert states[0]["ada"]["sign_count"] == 4 * 8  # four steps, each one D evaluation of 8 reals


def test_info_shows_the_augmentation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "pgan", "--set", "augment.kind=ada", "--set", "model.loss=logistic-r1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["augment"]
    assert shown == {"kind": "ada", "pipeline": "bgc", "p": 0.0, "target": 0.6, "speed_kimg": 500.0, "interval": 4}
    assert main(["info", "dcgan", "--set", "augment.kind=diffaugment"]) == 0
    assert "augment: {'kind': 'diffaugment', 'policy': 'color,translation,cutout'}" in capsys.readouterr().out


def test_a_key_that_does_nothing_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"^augment\.policy: does nothing with augment\.kind 'ada'"):
        resolve_run_config(None, {"family": "wgan-gp", "augment": {"kind": "ada", "policy": "color"}})
    assert main(["info", "pgan", "--set", "augment.kind=ada", "--set", "augment.policy=color"]) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "augment.policy: does nothing with augment.kind 'ada'" in err
    with pytest.raises(ConfigError, match="unknown config key 'augment.kinds'"):
        resolve_run_config(None, {"family": "pgan", "augment": {"kinds": "ada"}})


def test_a_run_saved_with_ada_at_a_fixed_p_of_0_loads_unaugmented() -> None:
    """Refused for a new run (it augments nothing); a run saved with it before still loads and resumes as what it
    did: no augmentation."""
    from ganforge.families import migrated_saved_config

    config = tiny_run("wgan-gp")
    config["augment"] = {"kind": "ada", "p": 0}
    with pytest.raises(ConfigError, match=r"^augment\.p: expected a probability in \(0, 1\], got 0\.0"):
        resolve_run_config(None, config)
    assert resolve_run_config(None, migrated_saved_config(config)).augment.kind == "none"
