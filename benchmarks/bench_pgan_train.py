"""PGAN training throughput (real images per second through a full D + G step) at each resolution.

Runs the real engine step (WGAN-GP + drift D step, G step, EMA update) on random data of the right shape, with
the paper's widths scaled by --width-div (CPU: 16 keeps it tolerable; GPU: 1 is the real CelebA-128 model).
Prints one line per resolution; on CUDA the main run takes `amp: auto` (bf16 autocast), and a second run in fp32
beside it gives the bf16 speed-up.

    python benchmarks/bench_pgan_train.py --resolution 128 --width-div 16 --batch 16 --steps 5
    python benchmarks/bench_pgan_train.py --resolution 128 --width-div 1 --batch 16 --steps 20 --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch

from ganforge.families import resolve_run_config
from ganforge.models.pgan import pgan_widths
from ganforge.training.engine import Trainer


def measure(args: argparse.Namespace, amp: str) -> list[tuple[int, float]]:
    scales = args.resolution.bit_length() - 2
    widths = [max(w // args.width_div, 4) for w in pgan_widths(args.resolution)]
    config = resolve_run_config("pgan", {
        "data": f"builtin:shapes?count=256&resolution={args.resolution}", "device": args.device, "amp": amp,
        "progress": False, "tensorboard": False, "log_every": 10**9, "sample_every": 10**9,
        "checkpoint_every": 10**9,
        "model": {"resolution": args.resolution, "widths": widths, "latent_dim": widths[0],
                  "schedule": {"max_iter_at_scale": [10**6] * scales, "alpha_jumps": 0, "alpha_jump_size": 1,
                               "batch_size": args.batch}}})
    trainer = Trainer(config, args.scratch, restart=True)
    results = []
    for segment in trainer.family.segments:
        trainer.step = segment.start
        plan = trainer.family.plan(trainer.step)
        for _ in range(args.warmup):
            trainer.train_step(plan)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step(plan)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        results.append((segment.resolution, args.steps * args.batch / (time.perf_counter() - start)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--width-div", type=int, default=16, help="divide the paper's widths (1 = real model)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--scratch", default="/tmp/ganforge-bench-pgan")
    args = parser.parse_args()
    if args.resolution < 8 or args.resolution & (args.resolution - 1):
        parser.error(f"--resolution {args.resolution}: expected a power of two >= 8")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, widths / {args.width_div}, "
          f"batch {args.batch}")
    main_run = measure(args, "auto")
    baseline = measure(args, "off") if torch.cuda.is_available() and args.device != "cpu" else None
    for index, (res, rate) in enumerate(main_run):
        line = f"res {res:5d}: {rate:9.1f} img/s"
        if baseline:
            line += f"   fp32 {baseline[index][1]:9.1f} img/s   bf16 speed-up x{rate / baseline[index][1]:.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
