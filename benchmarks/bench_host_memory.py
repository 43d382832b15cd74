"""A CPU training step with glibc's default heap against the heap the trainer keeps (keep_freed_host_memory).

    python benchmarks/bench_host_memory.py                      # every family, reference configs, widths / 8
    python benchmarks/bench_host_memory.py --families pgan --rounds 4

Each family runs bench_train.py's reference config (PGAN: the stable 32 px phase) in processes of their own, one
per heap policy and round, alternating (a policy set with mallopt lasts as long as its process, and load that comes
and goes on the machine falls on both alike): page faults, system and user CPU seconds, and wall seconds per step,
medians over the rounds. 'default' builds the same trainer with keep_freed_host_memory replaced by a no-op.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import reference_configs  # noqa: E402 - the configs the maintainers time against the references
from gpu_check import build  # noqa: E402

from ganforge.training import engine  # noqa: E402

POLICIES = ("default", "kept")
FIGURES = ("faults", "system_ms", "user_ms", "wall_ms")


def measure(family: str, policy: str, width_div: int, warmup: int, steps: int) -> dict[str, float]:
    """Per-step figures of one family's trainer under one heap policy, in this process."""
    kept = []
    if policy == "default":
        engine.keep_freed_host_memory = lambda: False
    else:  # the trainer's own call, its answer recorded: "kept" must not silently be the default
        keep = engine.keep_freed_host_memory
        engine.keep_freed_host_memory = lambda: kept.append(keep()) or kept[-1]
    trainer = build(reference_configs(width_div)[family], "fp32", torch.device("cpu"),
                    Path(f"/tmp/ganforge-bench-host-memory/{family}"))
    start = 399 if family == "pgan" else 0
    trainer.step = start
    plan = trainer.family.plan(start)
    for _ in range(warmup):
        trainer.train_step(plan)
    before, begin = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        trainer.train_step(plan)
    wall, after = time.perf_counter() - begin, resource.getrusage(resource.RUSAGE_SELF)
    return {"kept": bool(kept) and kept[-1], "faults": (after.ru_minflt - before.ru_minflt) / steps,
            "system_ms": (after.ru_stime - before.ru_stime) * 1000 / steps,
            "user_ms": (after.ru_utime - before.ru_utime) * 1000 / steps, "wall_ms": wall * 1000 / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="*", default=["pgan", "biggan", "stargan2", "wgan-gp"])
    parser.add_argument("--width-div", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="processes per policy and family, alternating")
    parser.add_argument("--one", nargs=2, metavar=("FAMILY", "POLICY"), help=argparse.SUPPRESS)  # internal
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure(*args.one, args.width_div, args.warmup, args.steps)), flush=True)
        return
    print(f"torch {torch.__version__}, cpu, threads {torch.get_num_threads()}, widths / {args.width_div}, "
          f"{args.steps} steps after {args.warmup}, median of {args.rounds} processes per policy")
    print(f"{'family':10s} {'heap':8s} {'faults/step':>12s} {'sys ms':>8s} {'user ms':>8s} {'wall ms':>8s}")
    for family in args.families:
        runs: dict[str, list[dict[str, float]]] = {policy: [] for policy in POLICIES}
        for _ in range(args.rounds):
            for policy in POLICIES:
                out = subprocess.run([sys.executable, __file__, "--one", family, policy, "--width-div",
                                      str(args.width_div), "--steps", str(args.steps), "--warmup", str(args.warmup)],
                                     capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"{family} ({policy} heap) failed:\n{out.stderr[-3000:]}")
                line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")][-1]
                run = json.loads(line[len("RESULT "):])
                if run["kept"] != (policy == "kept"):
                    sys.exit(f"{family}: the trainer did not keep the heap (no glibc, or a MALLOC_* / "
                             "GLIBC_TUNABLES setting of the user's)")
                runs[policy].append(run)
        for policy in POLICIES:
            cells = " ".join(f"{statistics.median(run[key] for run in runs[policy]):{w}.{p}f}"
                             for key, w, p in zip(FIGURES, (12, 8, 8, 8), (0, 1, 0, 0), strict=True))
            print(f"{family:10s} {policy:8s} {cells}", flush=True)
        wall = {policy: statistics.median(run["wall_ms"] for run in runs[policy]) for policy in POLICIES}
        print(f"{family:10s} kept heap: {wall['default'] / wall['kept']:.2f}x the default's steps per second",
              flush=True)


if __name__ == "__main__":
    main()
