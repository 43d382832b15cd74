"""Kill-and-resume, the long version: train a family's tiny run (three times its test length) in child processes,
SIGKILL it `--kills` times at seeded random moments (at a random time from the start, after a random step, or the
moment a checkpoint temp file appears, i.e. inside an atomic write), SIGTERM its second session, resume each
time, and check that every checkpoint present after every kill loads and verifies, every resume started from the
newest complete checkpoint, replayed steps log identical values, and the final weights equal an uninterrupted
run's bit for bit.

    .venv/bin/python tools/kill_resume.py --family pgan --kills 20 [--seed 0] [--workdir DIR]

Prints one summary line per family and exits 1 on any violation (the test suite runs a short version of the same
harness: tests/test_reliability_kill.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reliability_runs import (  # noqa: E402 - needs the path above
    FAMILIES,
    checkpoint_tensors,
    differing_tensors,
    kill_and_resume,
    reference_run,
    summary_line,
)


def check_family(family: str, kills: int, seed: int, length: int, workdir: Path) -> bool:
    start = time.monotonic()
    report, run = kill_and_resume(family, workdir, kills=kills, seed=seed, terminate_at=1, length=length)
    straight = reference_run(family, workdir, length=length)
    last = report.sessions[-1].newest_after
    differing = differing_tensors(checkpoint_tensors(straight, last), checkpoint_tensors(run, last))
    print(f"{summary_line(report, not differing)}  ({time.monotonic() - start:.0f} s)", flush=True)
    if differing:
        print(f"  differing tensors: {differing[:8]}", flush=True)
    return not differing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=[*FAMILIES, "all"], default="all")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--length", type=int, default=3, help="steps of the tiny configs × this (room for kills)")
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    families = FAMILIES if args.family == "all" else (args.family,)
    ok = True
    with tempfile.TemporaryDirectory(prefix="kill_resume-") as tmp:
        for family in families:
            workdir = (args.workdir or Path(tmp)) / family
            workdir.mkdir(parents=True, exist_ok=True)
            try:
                ok &= check_family(family, args.kills, args.seed, args.length, workdir)
            except (AssertionError, ValueError, TimeoutError) as err:  # CheckpointError is a ValueError
                print(f"{family:9s} FAILED: {err}", flush=True)
                ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
