"""Lookahead on every trained network (`lookahead: {every: k, alpha: a}`, Lookahead-minmax): every k-th engine step
each trained weight moves to slow + a·(fast − slow) and the slow copy follows; EMA copies follow the fast weights;
the slow weights are checkpointed so a resumed run ends on the uninterrupted run's weights."""

import json
from pathlib import Path

import pytest
import torch
from reliability_runs import FAMILIES, checkpoint_tensors, differing_tensors, tiny_run
from torch import nn

from ganforge.config import ConfigError, LookaheadConfig, read_config_file
from ganforge.families import resolve_run_config
from ganforge.training import checkpoint as ckpt
from ganforge.training.engine import Trainer
from ganforge.training.lookahead import Lookahead


def _trainer(config: dict, run_dir, **top) -> Trainer:
    return Trainer(resolve_run_config(None, json.loads(json.dumps({**config, **top}))), run_dir)


def test_a_pull_moves_each_weight_a_fraction_back_to_the_slow_copy_every_k_steps():
    net = nn.Linear(3, 2)
    start = {key: p.detach().clone() for key, p in net.named_parameters()}
    lookahead = Lookahead(LookaheadConfig(every=3, alpha=0.25), {"G": net})
    with torch.no_grad():
        net.weight.add_(4.0)
        net.bias.sub_(8.0)
    assert not lookahead.after_step(0) and not lookahead.after_step(1)  # steps 0, 1: no pull, weights as trained
    assert torch.equal(net.weight, start["weight"] + 4.0)
    assert lookahead.after_step(2)  # third step: slow + 0.25·(fast − slow)
    torch.testing.assert_close(net.weight.detach(), start["weight"] + 1.0, rtol=0, atol=1e-6)
    torch.testing.assert_close(net.bias.detach(), start["bias"] - 2.0, rtol=0, atol=1e-6)
    assert torch.equal(lookahead.slow["G"]["weight"], net.weight.detach())  # the slow copy takes that value
    with torch.no_grad():
        net.weight.add_(4.0)
    assert not lookahead.after_step(4) and lookahead.after_step(5)  # counted from the run's first step
    torch.testing.assert_close(net.weight.detach(), start["weight"] + 2.0, rtol=0, atol=1e-6)


def test_restoring_no_slow_weights_starts_them_from_the_loaded_ones_and_a_mismatch_is_refused():
    net = nn.Linear(2, 2)
    lookahead = Lookahead(LookaheadConfig(), {"D": net})
    with torch.no_grad():
        net.weight.fill_(7.0)
    lookahead.load_state_tensors({"net/D/weight": net.weight.detach()})  # an importer's checkpoint: none saved
    assert torch.equal(lookahead.slow["D"]["weight"], torch.full((2, 2), 7.0))
    saved = {key: value + 1 for key, value in lookahead.state_tensors().items()}
    lookahead.load_state_tensors(saved)
    assert torch.equal(lookahead.slow["D"]["weight"], torch.full((2, 2), 8.0))
    with pytest.raises(ValueError, match=r"missing \['lookahead/D/bias'\], unexpected \['lookahead/G/bias'\]"):
        lookahead.load_state_tensors({"lookahead/D/weight": saved["lookahead/D/weight"],
                                      "lookahead/G/bias": saved["lookahead/D/bias"]})


def _states(trainer: Trainer) -> dict[str, dict[str, torch.Tensor]]:
    return {name: {k: v.clone() for k, v in net.state_dict().items()} for name, net in trainer.family.nets.items()}


def test_the_engine_pulls_after_the_ema_update_and_only_at_the_end_of_a_round(tmp_path):
    config = tiny_run("pgan")
    plain = _trainer(config, tmp_path / "plain")  # one after the other: each Trainer reseeds the global RNG
    start = _states(plain)
    plain.stepped_losses(2)
    after_two = _states(plain)
    plain.stepped_losses(1)
    after_three = _states(plain)
    pulled = _trainer(config, tmp_path / "pulled", lookahead={"every": 3, "alpha": 0.5})
    assert set(pulled.lookahead.nets) == {"G", "D"}  # the trained nets; the EMA generator is not one
    pulled.stepped_losses(2)
    for name, state in _states(pulled).items():  # steps 0 and 1: identical training
        assert differing_tensors(after_two[name], state) == [], name
    pulled.stepped_losses(1)
    got = _states(pulled)
    for name in ("G", "D"):  # after step 2: halfway between the start and where the plain run got
        moved = 0
        for key, fast in after_three[name].items():
            torch.testing.assert_close(got[name][key], (start[name][key] + fast) / 2, rtol=1e-6, atol=1e-7)
            moved += int(not torch.equal(fast, start[name][key]))
        assert moved > 0
    # the EMA was updated from the fast weights before the pull: the same as the plain run's
    assert differing_tensors(after_three["G_ema"], got["G_ema"]) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_a_resumed_run_ends_on_the_uninterrupted_weights_and_slow_weights(tmp_path, family):
    config = tiny_run(family, lookahead={"every": 3, "alpha": 0.5})
    straight = _trainer(config, tmp_path / "straight")
    total = straight.family.total_steps()
    straight.train()
    _trainer(config, tmp_path / "pieces").train(until=4)  # stops a step into the second round
    resumed = _trainer(config, tmp_path / "pieces")
    assert resumed.step == 4
    resumed.train()
    a, b = checkpoint_tensors(tmp_path / "straight", total), checkpoint_tensors(tmp_path / "pieces", total)
    slow = sorted(key for key in a if key.startswith("lookahead/"))
    assert {key.split("/")[1] for key in slow} == set(straight.family.optimizers)  # every trained net's slow copy
    assert differing_tensors(a, b) == []


@pytest.mark.parametrize("setting, message", [
    ({"every": 1}, r"^lookahead\.every: expected at least 2 steps between pulls, got 1"),
    ({"alpha": 1.0}, r"^lookahead\.alpha: expected a fraction strictly between 0 and 1, got 1\.0 \(1 does nothing"),
    ({"alpha": 0}, r"^lookahead\.alpha: expected a fraction strictly between 0 and 1, got 0\.0"),
    ({"evry": 5}, r"^unknown config key 'lookahead\.evry': did you mean 'every'\?"),
])
def test_settings_that_would_do_nothing_or_undo_training_are_refused(setting, message):
    with pytest.raises(ConfigError, match=message):
        resolve_run_config(None, {**tiny_run("wgan-gp"), "lookahead": setting})


def test_lookahead_is_off_by_default_and_a_resume_may_not_switch_it_on(tmp_path):
    config = tiny_run("wgan-gp")
    assert resolve_run_config(None, config).lookahead is None
    _trainer(config, tmp_path / "run").train(until=2)
    assert not any(key.startswith("lookahead/") for key in checkpoint_tensors(tmp_path / "run", 2))
    with pytest.raises(ConfigError, match=r'different config \(saved → now: lookahead: null → \{"every": 5'):
        _trainer(config, tmp_path / "run", lookahead={"every": 5})
    assert ckpt.checkpoint_steps(tmp_path / "run") == [1, 2]  # nothing written by the refusal


def test_no_shipped_config_uses_lookahead():
    """No reference uses it; the quick start did until PGAN's styles made it slower than it steadied (session 15)."""
    configs = Path(__file__).resolve().parents[1] / "configs"
    using = {path.name: resolve_run_config(None, read_config_file(path)).lookahead
             for path in sorted(configs.glob("*.yaml"))}
    assert {name: la for name, la in using.items() if la is not None} == {}
    assert len(using) > 10  # every paper config was read
