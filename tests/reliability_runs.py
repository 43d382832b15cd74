"""Tiny runs of all four families and the subprocess plumbing shared by the reliability tests and
`tools/kill_resume.py`: start `ganforge train` as a child process, kill it at a chosen moment, and check what the
run directory holds afterwards (every checkpoint readable, resumes from the newest one, exact final weights).

Importable from the tests (tests/ is on sys.path there) and from the tool (which puts tests/ on sys.path).
"""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from ganforge.training import checkpoint as ckpt

SHAPES = "builtin:shapes?count=64&resolution=16"
SHAPES32 = "builtin:shapes?count=64&resolution=32"
_COMMON = {"log_every": 1, "sample_every": 1000, "checkpoint_every": 1, "keep_checkpoints": 3, "sample_count": 4,
           "progress": False, "tensorboard": False, "seed": 3}

# log_every 1 (every step leaves a record to check resumes against) and checkpoint_every 1 (a kill at a random
# moment often lands inside a checkpoint write); keep_checkpoints 3 so that pruning runs under the kills too
# ema_rampup 0.5 where the EMA is always on: a warm-up whose decay still changes step by step within these few
# steps, so the resume checks cover it
TINY_RUNS: dict[str, dict[str, Any]] = {
    "pgan": {**_COMMON, "family": "pgan", "data": SHAPES, "model": {
        "resolution": 16, "latent_dim": 8, "widths": [8, 8, 4],
        "schedule": {"max_iter_at_scale": [3, 4, 4], "alpha_jumps": 2, "alpha_jump_size": 1, "batch_size": 4},
        "ema_rampup": 0.5}},
    "wgan-gp": {**_COMMON, "family": "wgan-gp", "data": SHAPES32, "model": {
        "features_g": 2, "features_d": 2, "latent_dim": 8, "batch_size": 4, "critic_steps": 2, "steps": 10,
        "ema_decay": 0.9}},
    "stargan2": {**_COMMON, "family": "stargan2", "data": SHAPES32, "model": {
        "resolution": 32, "domain_column": "shape", "base_dim": 4, "max_conv_dim": 8, "mapping_dim": 8,
        "latent_dim": 4, "style_dim": 8, "w_hpf": 0.0, "batch_size": 4, "steps": 6, "ds_iter": 4,
        "ema_rampup": 0.5}},
    "biggan": {**_COMMON, "family": "biggan", "data": SHAPES32, "model": {
        "g_ch": 4, "d_ch": 4, "latent_dim": 16, "shared_dim": 8, "g_attention": [16], "d_attention": [16],
        "batch_size": 4, "num_d_steps": 2, "num_d_accumulations": 1, "num_g_accumulations": 1, "steps": 8,
        "ema_start": 2, "ema_decay": 0.9, "ema_rampup": 0.5}},
}
FAMILIES = tuple(TINY_RUNS)


def tiny_run(family: str, length: int = 1, **top: Any) -> dict[str, Any]:
    """A fresh copy of a family's tiny config, `length` times as many steps, top-level keys replaced by `top`."""
    config = {**copy.deepcopy(TINY_RUNS[family]), **top}
    model = config["model"]
    if "schedule" in model:
        model["schedule"]["max_iter_at_scale"] = [n * length for n in model["schedule"]["max_iter_at_scale"]]
    else:
        model["steps"] *= length
    return config


def child_env() -> dict[str, str]:
    """One intra-op thread in children: the reference run in the parent uses one too, and the machine is shared."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def write_config(config: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(config, indent=1))
    return path


def torchrun(args: list[str], *, timeout: float) -> subprocess.CompletedProcess:
    """`torchrun ARGS` (a script and its arguments, or `-m MODULE ...`) in two CPU processes (gloo), output captured.
    Python's faulthandler is on in the ranks, so a rank that a signal kills prints its Python stack (or `<no Python
    frame>` at the interpreter's teardown, as the gloo race that init_distributed explains did), which
    `torchrun_failure` shows."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], env={**child_env(), "PYTHONFAULTHANDLER": "1"}, capture_output=True, text=True,
                          timeout=timeout)


def torchrun_cli(args: list[str], *, timeout: float) -> subprocess.CompletedProcess:
    """`ganforge ARGS` under `torchrun`."""
    return torchrun(["-m", "ganforge.cli", *args], timeout=timeout)


def torchrun_failure(done: subprocess.CompletedProcess) -> str:
    """What a failed two-process run printed: the ranks' stdout (whether both reached their summary line) and the end
    of stderr (a rank's own error or stack comes before torchrun's summary of who failed)."""
    return (f"exit status {done.returncode}\n--- stdout ---\n{done.stdout[-2000:]}\n"
            f"--- stderr ---\n{done.stderr[-6000:]}")


def train_command(family: str, config_path: Path, run: Path) -> list[str]:
    return [sys.executable, "-m", "ganforge.cli", "train", family, "-c", str(config_path), "--run-dir", str(run)]


def checkpoint_tensors(run: Path, step: int) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(ckpt.checkpoint_dir(run) / f"{step:08d}.safetensors"))


def differing_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names whose tensors are not bit-identical (or present on one side only)."""
    return sorted(set(a) ^ set(b)) + [k for k in sorted(set(a) & set(b)) if not torch.equal(a[k], b[k])]


def verify_checkpoints(run: Path) -> int:
    """Load and verify every checkpoint record present; returns the newest step (0 when there is none).

    Raises CheckpointError for any record that does not load: a half-written checkpoint must never exist.
    """
    steps = ckpt.checkpoint_steps(run)
    for step in steps:
        ckpt.load_checkpoint(ckpt.checkpoint_dir(run) / f"{step:08d}.json")
    return steps[-1] if steps else 0


def read_log(run: Path, start: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Records of log.jsonl from byte `start` and the new end offset. A line cut by a kill does not parse and is
    ignored (the next session's first record starts on the same line, so it is lost too: callers allow that)."""
    path = run / "log.jsonl"
    if not path.is_file():
        return [], start
    data = path.read_bytes()
    records = []
    for line in data[start:].splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records, len(data)


@dataclass
class Session:
    """One child `ganforge train`: how it ended and what it resumed from."""

    resumed_from: int  # newest complete checkpoint when it started
    first_logged: int | None  # the first step it logged (None: killed before logging one)
    ended: str  # "killed-at-time", "killed-after-step", "killed-at-write", "terminated" or "finished"
    newest_after: int  # newest complete checkpoint after it ended
    torn_write: bool  # a checkpoint temp file was left behind: the kill landed inside an atomic write


@dataclass
class KillReport:
    family: str
    sessions: list[Session] = field(default_factory=list)
    replayed_steps: int = 0  # steps logged by more than one session (each compared value by value)

    @property
    def torn_writes(self) -> int:
        return sum(s.torn_write for s in self.sessions)

    @property
    def resumes_checked(self) -> int:
        return sum(s.first_logged is not None for s in self.sessions[1:])


def _kill(proc: subprocess.Popen, run: Path, rng: random.Random, steps: tuple[int, int, int], log_offset: int,
          in_write: bool, timeout: float) -> str:
    """SIGKILL `proc` at a seeded random moment; returns how ("finished" if it finished first).

    While steps are left (`steps` = the first step this session will run, the run's length, and the kills still to
    come), three kills in four wait until the session has logged a step drawn from its share of what is left, then
    kill when a checkpoint temp file next appears (`in_write`: inside an atomic write) or after a random short
    delay. The others kill at a random time after the start: in start-up, network building or any step."""
    first, total, kills_left = steps
    deadline = time.monotonic() + timeout
    if first >= total or rng.random() < 0.25:
        kill_at = time.monotonic() + rng.uniform(0.2, 6.0)
        while proc.poll() is None and time.monotonic() < kill_at:
            time.sleep(0.01)
        return _sigkill(proc, "killed-at-time")
    share = max(0, (total - first) // kills_left - 1)  # spread the kills over the run
    target, delay = rng.randint(first, min(total - 1, first + share)), rng.uniform(0.0, 0.3)
    while not any(r.get("step", 0) >= target for r in read_log(run, log_offset)[0]):
        if proc.poll() is not None:
            return "finished"
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"training child did not reach step {target} within {timeout} s")
        time.sleep(0.02)
    armed_at, folder = time.monotonic(), ckpt.checkpoint_dir(run)
    if not in_write:
        time.sleep(delay)
        return _sigkill(proc, "killed-after-step")
    while time.monotonic() - armed_at < 5 and proc.poll() is None:  # the step's checkpoint follows its log record
        if folder.is_dir() and any(name.endswith(".tmp") for name in os.listdir(folder)):
            break
        time.sleep(0.0005)
    return _sigkill(proc, "killed-at-write")


def _sigkill(proc: subprocess.Popen, how: str) -> str:
    if proc.poll() is not None:
        return "finished"
    proc.kill()
    return how


def _terminate_after_a_step(proc: subprocess.Popen, run: Path, start: int, timeout: float) -> str:
    """SIGTERM `proc` once it has logged a step after log offset `start` (a resume's event is no step)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if any("event" not in record for record in read_log(run, start)[0]):
            proc.send_signal(signal.SIGTERM)
            return "terminated"
        time.sleep(0.01)
    return "finished"


def kill_and_resume(family: str, workdir: Path, *, kills: int, seed: int, terminate_at: int | None = None,
                    length: int = 1, finish_in_process: bool = False,
                    timeout: float = 300.0) -> tuple[KillReport, Path]:
    """Train `family`'s tiny run (`length` times longer) in child processes, SIGKILLing `kills` of them (every other
    step-targeted kill inside a checkpoint write) and SIGTERMing session `terminate_at`, until it finishes.

    Checked after every session: every checkpoint record present loads and verifies, the session resumed right
    after the newest complete checkpoint, steps it replayed logged the same values as before, and a SIGTERMed child
    exited 0 with a checkpoint of the step it stopped at. `finish_in_process` runs the last session in this process
    (saves a child's start-up in the test suite). Raises AssertionError / CheckpointError on any violation."""
    rng = random.Random(seed)
    config = tiny_run(family, length=length)
    config_path = write_config(config, workdir / f"{family}.json")
    run = workdir / f"{family}-killed"
    report = KillReport(family)
    total = total_steps(config)
    by_step: dict[int, dict[str, Any]] = {}
    offset = 0
    while True:
        index = len(report.sessions)
        resumed_from = verify_checkpoints(run)
        last = index >= kills + (terminate_at is not None)
        if last and finish_in_process:
            import ganforge

            ganforge.train(config, run)
            ended = "finished"
        else:
            proc = subprocess.Popen(train_command(family, config_path, run), env=child_env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if last:
                ended = "finished"
            elif index == terminate_at and resumed_from + 2 < total:
                ended = _terminate_after_a_step(proc, run, offset, timeout)
            else:
                kills_left = kills + (terminate_at is not None) - index
                ended = _kill(proc, run, rng, (resumed_from + 1, total, kills_left), offset, index % 2 == 0, timeout)
            out, err = proc.communicate(timeout=timeout)
            if ended in ("finished", "terminated"):
                assert proc.returncode == 0, f"{family} session {index} ({ended}) exited {proc.returncode}: {err}"
        records, offset = read_log(run, offset)
        records = [r for r in records if "event" not in r]  # resume (and rollback) events: not steps
        folder = ckpt.checkpoint_dir(run)
        torn = folder.is_dir() and any(name.endswith(".tmp") for name in os.listdir(folder))
        newest = verify_checkpoints(run)
        steps = [r["step"] for r in records]
        assert steps == list(range(resumed_from + 1, resumed_from + 1 + len(steps))), (
            f"{family} session {index} logged steps {steps}, but the newest complete checkpoint was {resumed_from}")
        if ended == "terminated":
            assert f"interrupted at step {steps[-1]}" in out and newest == steps[-1], (out, newest)
        for record in records:
            values = {k: v for k, v in record.items() if k != "img_per_s"}
            if record["step"] in by_step:
                assert by_step[record["step"]] == values, f"{family}: step {record['step']} replayed differently"
                report.replayed_steps += 1
            by_step[record["step"]] = values
        report.sessions.append(Session(resumed_from, steps[0] if steps else None, ended, newest, torn))
        if ended == "finished":
            assert newest == total, f"{family}: finished with newest checkpoint {newest}, expected {total}"
            return report, run


def total_steps(config: dict[str, Any]) -> int:
    model = config["model"]
    if "schedule" in model:
        return sum(model["schedule"]["max_iter_at_scale"])
    return int(model["steps"])


def reference_run(family: str, workdir: Path, length: int = 1) -> Path:
    """The same tiny run, uninterrupted, in this process with one thread (as the children use)."""
    import ganforge

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = workdir / f"{family}-straight"
        result = ganforge.train(tiny_run(family, length=length), run)
        assert not result.interrupted
        return run
    finally:
        torch.set_num_threads(threads)


def summary_line(report: KillReport, exact: bool) -> str:
    kinds = [s.ended for s in report.sessions]
    return (f"{report.family:9s} {len(kinds):2d} sessions: SIGKILL at a random time {kinds.count('killed-at-time')}, "
            f"after a random step {kinds.count('killed-after-step')}, at a checkpoint write "
            f"{kinds.count('killed-at-write')} ({report.torn_writes} left a torn temp file); "
            f"SIGTERM {kinds.count('terminated')}; {report.resumes_checked} resumes from the newest checkpoint, "
            f"{report.replayed_steps} replayed steps identical; final weights "
            f"{'identical' if exact else 'DIFFER'} to an uninterrupted run")
