"""Where one training step's time goes: torch's profiler over a family's reference config (bench_train.py's),
the top operators by self time, and the share of convolutions against everything else (Python, optimiser, EMA).

    python benchmarks/profile_step.py --family pgan --width-div 8 --threads 1
    python benchmarks/profile_step.py --family biggan --device cuda --width-div 1
    python benchmarks/profile_step.py --family pgan --real --mode bf16 --device cuda   # gpu_check's PGAN-128 at 128 px

The convolution share counts operators only: on CUDA each operator carries the device time of the kernels it launched
(the kernels, listed too under cuDNN's names, would count it twice).

A step whose time is nearly all convolution forward and backward cannot get much faster per iteration without doing
less arithmetic than the reference does; one dominated by small operators gains from compile and fusion.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import reference_configs  # noqa: E402 - the configs the maintainers time against the references
from gpu_check import MODES, build, sync, throughput_configs  # noqa: E402

CONVOLUTION_OPS = ("convolution", "conv2d", "cudnn_convolution")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="pgan", choices=["pgan", "biggan", "stargan2", "wgan-gp"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width-div", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: torch's default)")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps, after 2 warm-up steps")
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--mode", default="fp32", choices=list(MODES), help="precision / compile, as gpu_check's")
    parser.add_argument("--real", action="store_true", help="gpu_check's real-size model of the family (PGAN-128 "
                        "at its last 128 px step, BigGAN 128 px batch 256, StarGAN v2 256 px batch 8, WGAN-GP 64 px)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.real:
        config, starts = throughput_configs(quick=False)["pgan128" if args.family == "pgan" else args.family]
        start = starts[-1] if starts else 0
    else:
        config = reference_configs(args.width_div)[args.family]
        start = 399 if args.family == "pgan" else 0  # PGAN: the stable 32 px phase, as bench_train times it
    trainer = build(config, args.mode, device, Path("/tmp/ganforge-profile"))
    trainer.step = start
    plan = trainer.family.plan(start)
    for _ in range(2):
        trainer.train_step(plan)
    sync(device)
    begin = time.perf_counter()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            trainer.train_step(plan)
        sync(device)
    seconds = (time.perf_counter() - begin) / args.steps
    events = prof.key_averages()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    # operators only: on CUDA each operator carries the device time of the kernels it launched, and the kernels are
    # events of their own too (named by cuDNN, not "convolution"), which would count that time twice
    operators = [e for e in events if e.device_type == DeviceType.CPU]
    total = sum(getattr(e, attr) for e in operators)
    conv = sum(getattr(e, attr) for e in operators if any(op in e.key for op in CONVOLUTION_OPS))
    size = "real size" if args.real else f"widths / {args.width_div}"
    print(f"torch {torch.__version__}, {device}, threads {torch.get_num_threads()}, {args.family}, {size}, "
          f"{args.mode}, step {start}, {seconds:.3f} s/step under the profiler")
    print(events.table(sort_by=attr, row_limit=args.rows))
    print(f"convolutions (forward and backward): {conv / total:.1%} of {'device' if device.type == 'cuda' else 'CPU'}"
          f" self time; everything else: {1 - conv / total:.1%}")


if __name__ == "__main__":
    main()
