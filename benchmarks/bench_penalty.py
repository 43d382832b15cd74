"""A gradient penalty's convolutions (ganforge.nn.double_backward): autograd's own double backward against the route
`penalised_convolutions` takes from MIN_MULTIPLY_ADDS multiply-adds.

    python benchmarks/bench_penalty.py                  # the 2-core CPU: the shapes its size rule was set from
    python benchmarks/bench_penalty.py --device cuda    # GPU shapes (also a case of gpu_check.py)

Each case is a D-like layer (a conv3×3, or a stride-2 conv4×4 as the DCGAN critics' and the strided downsampling's,
then a leaky ReLU) on a batch of `channels`-channel images, float32 channels_last; the timed step is what a D step
with WGAN-GP or R1 runs for it: the forward, ∇ₓ with create_graph, and the backward of the penalty and the output
into the weights. Best of `--repeats`; `Madds` the convolution's multiply-adds (millions), `rule` the route the CPU's
threshold picks at that size (off the CPU the mode is not entered: autograd's until measured).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_resample import best_ms, route_cases, route_parser  # noqa: E402 - as the resampling routes' benchmark

from ganforge.nn.double_backward import MIN_MULTIPLY_ADDS, PenalisedConvolutions, multiply_adds  # noqa: E402

# (kernel, batch, channels, side): PGAN-like widths and the batches the families train with on each device
CPU_CASES = [(kernel, batch, channels, side) for kernel in (3, 4)
             for batch, channels, side in [(16, 8, 8), (16, 32, 8), (16, 128, 8), (16, 8, 16), (16, 64, 16),
                                           (16, 128, 16), (4, 16, 32), (16, 16, 32), (16, 64, 32), (4, 64, 64),
                                           (16, 8, 64)]]
CUDA_CASES = [(kernel, batch, channels, side) for kernel in (3, 4)
              for batch, channels, side in [(64, 512, 4), (64, 512, 8), (16, 512, 16), (64, 512, 16), (16, 256, 32),
                                            (64, 256, 32), (16, 128, 64), (64, 128, 64), (16, 64, 128),
                                            (8, 32, 256)]]
QUICK_CASES = [(3, 2, 4, 8), (4, 2, 4, 8)]


def _penalty_step(layer: nn.Module, x: torch.Tensor, routed: bool) -> Callable[[], None]:
    def step() -> None:
        images = x.detach().requires_grad_(True)
        if routed:
            with PenalisedConvolutions(0):
                out = F.leaky_relu(layer(images), 0.2)
        else:
            out = F.leaky_relu(layer(images), 0.2)
        (grad,) = torch.autograd.grad(out.sum(), images, create_graph=True)
        (grad.square().sum() + out.square().mean()).backward()

    return step


def penalty_timings(device: torch.device, cases: list[tuple[int, int, int, int]], repeats: int) -> list[dict]:
    """Per case: ms of autograd's and the route's penalty step, and which one the size rule picks."""
    rows = []
    for kernel, batch, channels, side in cases:
        torch.manual_seed(0)
        layer = nn.Conv2d(channels, channels, kernel, stride=1 if kernel == 3 else 2, padding=1)
        layer = layer.to(device).to(memory_format=torch.channels_last)
        x = torch.randn(batch, channels, side, side, device=device).contiguous(memory_format=torch.channels_last)
        madds = multiply_adds(x.shape, layer.weight, layer.stride)
        row = {"kernel": kernel, "batch": batch, "channels": channels, "size": side, "multiply_adds": madds,
               "rule": "route" if madds >= MIN_MULTIPLY_ADDS else "autograd"}
        row["autograd_ms"] = best_ms(_penalty_step(layer, x, False), repeats, device)
        row["route_ms"] = best_ms(_penalty_step(layer, x, True), repeats, device)
        row["speed_up"] = row["autograd_ms"] / row["route_ms"]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'kernel':>6s} {'batch':>5s} {'ch':>4s} {'px':>4s} {'Madds':>8s} {'autograd':>9s} {'route':>8s} "
             f"{'x':>5s}  rule"]
    for r in rows:
        lines.append(f"{r['kernel']:6d} {r['batch']:5d} {r['channels']:4d} {r['size']:4d} "
                     f"{r['multiply_adds'] / 1e6:8.1f} {r['autograd_ms']:9.2f} "
                     f"{r['route_ms']:8.2f} {r['speed_up']:5.2f}  {r['rule']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    args = route_parser(__doc__).parse_args(argv)
    device, cases = route_cases(args, CPU_CASES, CUDA_CASES, QUICK_CASES)
    rows = penalty_timings(device, cases, args.repeats)
    print(f"torch {torch.__version__}, {device}, threads {torch.get_num_threads()}, float32, channels_last; "
          f"ms per penalty step (forward, ∇ₓ, backward)")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
