"""Never lose a run: `ganforge train` children SIGKILLed at seeded moments (one inside a checkpoint write) and
resumed, for every family; a SIGTERMed run. Short versions: `tools/kill_resume.py --kills 20` is the long one."""

from __future__ import annotations

import json
import os
import signal

import pytest
from reliability_runs import (
    checkpoint_tensors,
    differing_tensors,
    kill_and_resume,
    reference_run,
    tiny_run,
    write_config,
)

import ganforge
from ganforge.cli import main
from ganforge.training import checkpoint as ckpt
from ganforge.training.engine import Trainer


@pytest.mark.slow
@pytest.mark.parametrize(("family", "kills"), [("pgan", 2), ("wgan-gp", 1), ("stargan2", 1), ("biggan", 1)])
def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path, family: str, kills: int) -> None:
    # The first kill waits for a checkpoint write; on a fast CPU a tiny run can write its checkpoint and finish between
    # two polls for the temp file (seen once on an AVX-512 Xeon), so another seed's kill schedule gets a turn
    for seed in (11, 12, 13):
        (tmp_path / f"seed{seed}").mkdir()
        report, run = kill_and_resume(family, tmp_path / f"seed{seed}", kills=kills, seed=seed,
                                      finish_in_process=True)
        if report.sessions[0].ended == "killed-at-write":
            break
    assert report.sessions[0].ended == "killed-at-write"
    assert len(report.sessions) == kills + 1 and report.sessions[-1].ended == "finished"
    assert report.resumes_checked >= 1
    final = report.sessions[-1].newest_after
    straight = reference_run(family, tmp_path)
    assert differing_tensors(checkpoint_tensors(straight, final), checkpoint_tensors(run, final)) == []


@pytest.mark.slow
def test_sigterm_writes_a_final_checkpoint_and_the_resumed_run_is_exact(tmp_path, monkeypatch, capsys) -> None:
    # no periodic checkpoints (only the first scale's end, step 3): the one at step 5 can only be the signal handler's
    config = tiny_run("pgan", checkpoint_every=1000)
    path = write_config(config, tmp_path / "pgan.json")
    original = Trainer.train_step

    def step_with_sigterm(self: Trainer, plan):
        if self.step == 4:  # as a cluster's pre-emption would, in the middle of step 5
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, plan)

    monkeypatch.setattr(Trainer, "train_step", step_with_sigterm)
    run = tmp_path / "run"
    assert main(["train", "pgan", "-c", str(path), "--run-dir", str(run)]) == 0
    assert "interrupted at step 5" in capsys.readouterr().out
    assert ckpt.checkpoint_steps(run) == [3, 5]  # the 4 px scale's end (kept for good), then the SIGTERM's
    assert ckpt.load_checkpoint(ckpt.checkpoint_dir(run) / "00000005.json").meta["progress"]["res"] == 8
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the engine put the default handler back

    monkeypatch.setattr(Trainer, "train_step", original)
    assert main(["train", "pgan", "-c", str(path), "--run-dir", str(run)]) == 0
    assert "finished at step 11" in capsys.readouterr().out
    straight = tmp_path / "straight"
    ganforge.train(config, straight)
    assert differing_tensors(checkpoint_tensors(straight, 11), checkpoint_tensors(run, 11)) == []
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "event" not in r] == list(range(1, 12))  # resumed right after the SIGTERM
    assert [(r["step"], r["event"]) for r in log if "event" in r] == [(5, "resume")]  # checkpoint
