"""Real-image loader throughput at each PGAN resolution, next to the PGAN model's training throughput.

The loader serves the batches of a 128 px store (builtin shapes, or --data) at every level 4..128: with prefetch
(the background thread's rate: what a training step waits for is at most this) and without (all the host work on
the calling thread). The model column is bench_pgan_train.py's measurement (a full D + G step, widths divided by
--width-div). The loader should be at least 10x faster than the model at every resolution.

    python benchmarks/bench_loader.py --device cpu --width-div 16 --batch 16 --steps 3
    python benchmarks/bench_loader.py --device cuda --width-div 1 --batch 16 --steps 20
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_pgan_train import measure as measure_model  # this script's folder is on sys.path

from ganforge.data.loader import BatchLoader, DataOptions
from ganforge.data.store import open_dataset
from ganforge.distributed import DistInfo, pick_device

MIN_RATIO = 10.0  # the loader must outrun the model it feeds by this factor


def loader_rate(data: str, device: torch.device, resolution: int, batch: int, batches: int, prefetch: int) -> float:
    """Images per second the loader hands out at `resolution`, as float batches on `device` (mirror flips on)."""
    loader = BatchLoader(open_dataset(data), seed=0, dist=DistInfo(), device=device,
                         options=DataOptions(mirror=True), prefetch=prefetch)
    loader.next(batch, resolution)  # warm-up: epoch permutation, thread start, pages of the store
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        loader.next(batch, resolution, blend=0.5)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    loader.close()
    return batches * batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--data", default=None, help="a store or builtin source with every level up to --resolution "
                        "(default: builtin shapes)")
    parser.add_argument("--width-div", type=int, default=16, help="divide the paper's widths (1 = real model)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="model steps timed per resolution")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--loader-batches", type=int, default=200, help="loader batches timed per resolution")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--scratch", default="/tmp/ganforge-bench-loader")
    args = parser.parse_args()
    device = pick_device(args.device, DistInfo())
    data = args.data or f"builtin:shapes?count=256&resolution={args.resolution}"
    print(f"torch {torch.__version__}, {device}, threads {torch.get_num_threads()}, widths / {args.width_div}, "
          f"batch {args.batch}, data {data}")
    model = dict(measure_model(args, "auto"))
    print(f"{'res':>5} {'loader img/s':>14} {'no prefetch':>13} {'model img/s':>13} {'loader/model':>13}")
    for resolution, model_rate in sorted(model.items()):
        ahead = loader_rate(data, device, resolution, args.batch, args.loader_batches, prefetch=2)
        plain = loader_rate(data, device, resolution, args.batch, args.loader_batches, prefetch=0)
        ratio = min(ahead, plain) / model_rate
        verdict = "ok" if ratio >= MIN_RATIO else f"below {MIN_RATIO:g}x"
        print(f"{resolution:5d} {ahead:14.0f} {plain:13.0f} {model_rate:13.1f} {ratio:12.0f}x {verdict}", flush=True)


if __name__ == "__main__":
    main()
