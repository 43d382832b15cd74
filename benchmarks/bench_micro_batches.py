"""`model.micro_batches` (StarGAN v2, PGAN): peak memory and s/step of the same training step computed in k slices.

    python benchmarks/bench_micro_batches.py --width-div 4                       # CPU: 64 px, batch 8, widths / 4
    python benchmarks/bench_micro_batches.py --device cuda --resolution 256      # the official 256 px, batch 8
    python benchmarks/bench_micro_batches.py --family pgan --resolution 128 --batch 16 --width-div 4
    python benchmarks/bench_micro_batches.py --family pgan --device cuda --resolution 1024 --batch 16

Each k runs in its own process, so the CPU figure (the process's peak resident memory, torch and Python included)
is that k's alone; on CUDA the figure is torch's peak allocated memory over the timed steps. PGAN is timed at its
last scale (the full resolution, no fade, after the scale's first step), with the official widths (fmap_base 8192,
fmap_max 512) divided by `--width-div`.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import build, timed_steps  # noqa: E402 - the same Trainer set-up and timing as the GPU check

from ganforge.models.pgan import pgan_widths  # noqa: E402


def config(family: str, resolution: int, batch: int, width_div: int, micro_batches: int) -> dict:
    """StarGAN v2's official networks at `resolution` (AFHQ's w_hpf 0), or PGAN's (the paper variant, one step
    per scale), widths divided by `width_div`."""
    data = f"builtin:shapes?count=64&resolution={resolution}"
    if family == "pgan":
        scales = int(math.log2(resolution)) - 1
        return {"family": "pgan", "data": data, "model": {
            "resolution": resolution, "micro_batches": micro_batches,
            "widths": [max(width // width_div, 4) for width in pgan_widths(resolution)],
            # timed at the last scale's second step: no fade, and past the optimiser reset a new scale begins with
            "schedule": {"max_iter_at_scale": [1] * (scales - 1) + [2], "alpha_jumps": 0, "batch_size": batch}}}
    return {"family": "stargan2", "data": data, "model": {
        "resolution": resolution, "domain_column": "shape", "w_hpf": 0.0, "batch_size": batch,
        "micro_batches": micro_batches, "base_dim": max(2**14 // resolution // width_div, 4),
        "max_conv_dim": max(512 // width_div, 4)}}


def measure(args: argparse.Namespace) -> dict:
    """One k, in this process: s/step and peak memory over `--steps` steps after `--warmup`."""
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = build(config(args.family, args.resolution, args.batch, args.width_div, args.one), "fp32", device,
                        Path(scratch))
        last_scale = trainer.family.total_steps() - 1 if args.family == "pgan" else 0
        out = timed_steps(trainer, last_scale, args.warmup, args.steps)
    if device.type != "cuda":
        out["peak_mem_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux
    return {"micro_batches": args.one, "s_per_step": out["s_per_step"], "peak_mem_gb": out["peak_mem_gb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=("stargan2", "pgan"), default="stargan2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--width-div", type=int, default=1)
    parser.add_argument("--micro-batches", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child process: this k alone
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args)))
        return
    name = {"stargan2": "StarGAN v2", "pgan": "PGAN"}[args.family]
    print(f"{name}, {args.device}, {args.resolution} px, batch {args.batch}, widths / {args.width_div}")
    print(f"{'micro_batches':>13s} {'s/step':>8s} {'peak GB':>8s}")
    for k in args.micro_batches:
        child = [sys.executable, __file__, *sys.argv[1:], "--one", str(k)]
        done = subprocess.run(child, capture_output=True, text=True, check=False)
        if done.returncode:  # e.g. out of memory at this k: say why and go on with the next
            why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
            print(f"{k:>13d} failed: {why}")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{k:>13d} {row['s_per_step']:8.3f} {row['peak_mem_gb']:8.2f}")


if __name__ == "__main__":
    main()
