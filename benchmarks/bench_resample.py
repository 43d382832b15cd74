"""Convolutions beside a ×2 resampling (ganforge.nn.resample): the two steps against one strided convolution.

    python benchmarks/bench_resample.py                  # the 2-core CPU: the shapes its size rule was set from
    python benchmarks/bench_resample.py --device cuda    # GPU shapes (also a case of gpu_check.py)

For each case (upsampling then conv3×3, or conv3×3 then a 2×2 average pool; float32, channels_last as most eager
networks run, or `--layout nchw` as StarGAN v2's G and the instance-norm critics run on the CPU) the best of
`--repeats` timings of both routes: forward + backward of the parameters and the input, and a gradient penalty's
double backward (what a D step with WGAN-GP or R1 runs). `rule` is the route `upsample_conv` / `conv_downsample` take
at that size on that device.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from ganforge.nn.resample import conv_downsample, fuses_resampling, upsample_conv

# (direction, batch, channels, full-resolution side): PGAN-like widths (512 up to 32 px, halving above), the batches
# the families train with on each device
CPU_CASES = [(direction, batch, channels, size) for direction in ("up", "down")
             for batch, channels, size in [(16, 512, 8), (4, 512, 16), (16, 256, 16), (4, 512, 32), (16, 128, 32),
                                           (16, 64, 32), (16, 32, 32), (4, 256, 64)]]
CUDA_CASES = [(direction, batch, channels, size) for direction in ("up", "down")
              for batch, channels, size in [(64, 512, 8), (64, 512, 16), (16, 512, 32), (64, 512, 32), (16, 256, 64),
                                            (64, 256, 64), (16, 128, 128), (64, 128, 128), (8, 64, 256),
                                            (32, 64, 256)]]
QUICK_CASES = [("up", 2, 4, 8), ("down", 2, 4, 8)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_ms(run: Callable[[], None], repeats: int, device: torch.device) -> float:
    run()  # warm-up: kernel selection, allocations
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        begin = time.perf_counter()
        run()
        _sync(device)
        best = min(best, time.perf_counter() - begin)
    return best * 1e3


LAYOUTS = {"channels_last": torch.channels_last, "nchw": torch.contiguous_format}


def _route_ms(function: Callable[..., torch.Tensor], conv: nn.Module, x: torch.Tensor, fused: bool, repeats: int,
              device: torch.device) -> tuple[float, float]:
    def step() -> None:
        function(conv, x, fused=fused).sum().backward()

    def penalty() -> None:
        (grad,) = torch.autograd.grad(function(conv, x, fused=fused).square().sum(), x, create_graph=True)
        grad.square().sum().backward()

    return best_ms(step, repeats, device), best_ms(penalty, repeats, device)


def route_timings(device: torch.device, cases: list[tuple[str, int, int, int]], repeats: int,
                  layout: torch.memory_format = torch.channels_last) -> list[dict]:
    """Per case: ms of both routes for forward + backward and for the penalty's double backward."""
    rows = []
    for direction, batch, channels, size in cases:
        torch.manual_seed(0)
        conv = nn.Conv2d(channels, channels, 3, padding=1).to(device).to(memory_format=layout)
        side = size // 2 if direction == "up" else size
        x = torch.randn(batch, channels, side, side, device=device).contiguous(memory_format=layout)
        x.requires_grad_(True)
        function = upsample_conv if direction == "up" else conv_downsample
        row = {"direction": direction, "batch": batch, "channels": channels, "size": size,
               "rule": "fused" if fuses_resampling(size, size, device.type, batch) else "separate"}
        for fused in (False, True):
            route = "fused" if fused else "separate"
            row[f"{route}_ms"], row[f"{route}_penalty_ms"] = _route_ms(function, conv, x, fused, repeats, device)
        row["speed_up"] = row["separate_ms"] / row["fused_ms"]
        row["penalty_speed_up"] = row["separate_penalty_ms"] / row["fused_penalty_ms"]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'':4s} {'batch':>5s} {'ch':>4s} {'px':>4s} {'separate':>9s} {'fused':>8s} {'x':>5s} "
             f"{'penalty sep':>11s} {'fused':>8s} {'x':>5s}  rule"]
    for r in rows:
        lines.append(f"{r['direction']:4s} {r['batch']:5d} {r['channels']:4d} {r['size']:4d} {r['separate_ms']:9.2f} "
                     f"{r['fused_ms']:8.2f} {r['speed_up']:5.2f} {r['separate_penalty_ms']:11.2f} "
                     f"{r['fused_penalty_ms']:8.2f} {r['penalty_speed_up']:5.2f}  {r['rule']}")
    return "\n".join(lines)


def route_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a benchmark of two routes at CPU or GPU shapes (this one's and bench_penalty.py's)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="two tiny cases (the test suite)")
    return parser


def route_cases(args: argparse.Namespace, cpu: list, cuda: list, quick: list) -> tuple[torch.device, list]:
    """The device and its cases (the CPU's, a GPU's, or the quick ones), torch's threads set."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    return device, quick if args.quick else cpu if device.type == "cpu" else cuda


def main(argv: list[str] | None = None) -> list[dict]:
    parser = route_parser(__doc__)
    parser.add_argument("--layout", choices=list(LAYOUTS), default="channels_last")
    args = parser.parse_args(argv)
    device, cases = route_cases(args, CPU_CASES, CUDA_CASES, QUICK_CASES)
    rows = route_timings(device, cases, args.repeats, LAYOUTS[args.layout])
    print(f"torch {torch.__version__}, {device}, threads {torch.get_num_threads()}, float32, {args.layout}; ms")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
