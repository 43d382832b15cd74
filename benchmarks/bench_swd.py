"""SWD time and peak memory: ganforge's streaming implementation vs a straightforward numpy one.

The numpy baseline follows the official description literally (written here from it, not copied): per
minibatch a scipy Laplacian pyramid and the 7x7 descriptors of every level, all kept as float32 until the end,
then per level concatenate, normalise, and 4 x 128 directions with np.sort along the descriptor axis. Each
implementation runs in a fresh subprocess; peak RSS is that process's ru_maxrss. Images are synthetic (smooth
random fields plus noise, uint8) and generated batch by batch from a seed, so no set is ever held whole.

    python benchmarks/bench_swd.py --n 16384 --res 128 --baseline-n 2048

When the baseline runs on fewer images than ours, its figures are also extrapolated linearly to --n (time
grows slightly faster than linearly because of the sorts, so the extrapolated time is a lower bound).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def synthetic_batches(n: int, res: int, seed: int, batch: int = 64):
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch):
        count = min(batch, n - start)
        coarse = rng.uniform(0, 255, (count, 3, res // 8, res // 8))
        smooth = coarse.repeat(8, axis=2).repeat(8, axis=3)
        yield np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)


def run_ours(n: int, res: int) -> dict:
    from ganforge.metrics.swd import SWDStats, swd_from_stats

    stats = []
    for seed in (1, 2):
        st = SWDStats(seed=seed)
        for batch in synthetic_batches(n, res, seed):
            st.update(batch)
        stats.append(st)
    return swd_from_stats(*stats, seed=0)


def run_numpy(n: int, res: int) -> dict:
    import scipy.ndimage

    kernel = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(np.float32) / 256.0
    rng = np.random.RandomState(0)

    def down(x):
        return scipy.ndimage.convolve(x, kernel[None, None], mode="mirror")[:, :, ::2, ::2]

    def up(x):
        z = np.zeros((x.shape[0], x.shape[1], x.shape[2] * 2, x.shape[3] * 2), x.dtype)
        z[:, :, ::2, ::2] = x
        return scipy.ndimage.convolve(z, kernel[None, None] * 4.0, mode="mirror")

    levels = []
    size = res
    while size >= 16:
        levels.append(size)
        size //= 2
    descriptors = []
    for seed in (1, 2):
        per_level = [[] for _ in levels]
        for batch in synthetic_batches(n, res, seed):
            pyramid = [batch.astype(np.float32)]
            for _ in levels[1:]:
                pyramid.append(down(pyramid[-1]))
                pyramid[-2] -= up(pyramid[-1])
            for lod, level in enumerate(pyramid):
                count = level.shape[0] * 128
                patch, chan, dy, dx = np.ogrid[0:count, 0:3, -3:4, -3:4]
                y = dy + rng.randint(3, level.shape[2] - 3, size=(count, 1, 1, 1))
                x = dx + rng.randint(3, level.shape[3] - 3, size=(count, 1, 1, 1))
                image = patch // 128
                per_level[lod].append(level[image, chan, y, x])
        finalized = []
        for chunks in per_level:
            desc = np.concatenate(chunks)
            desc -= desc.mean(axis=(0, 2, 3), keepdims=True)
            desc /= desc.std(axis=(0, 2, 3), keepdims=True)
            finalized.append(desc.reshape(desc.shape[0], -1))
        descriptors.append(finalized)
    values = []
    for desc_a, desc_b in zip(*descriptors, strict=True):
        repeats = []
        for _ in range(4):
            dirs = rng.randn(desc_a.shape[1], 128)
            dirs = (dirs / np.sqrt((dirs**2).sum(0, keepdims=True))).astype(np.float32)
            proj_a = np.sort(desc_a @ dirs, axis=0)
            proj_b = np.sort(desc_b @ dirs, axis=0)
            repeats.append(np.abs(proj_a - proj_b).mean())
        values.append(float(np.mean(repeats)) * 1e3)
    return {"resolutions": levels, "swd": values, "avg": float(np.mean(values))}


def sort_and_project_floor(n: int, res: int, threads: int, chunk: int = 16) -> dict:
    """Seconds that projecting and sorting alone take for n images/set here: a floor for any exact implementation.

    Every exact implementation computes 2 sets x levels x 512 projections of n x 128 descriptors (147-d) and
    sorts each direction's projections. Both steps are timed at their fastest on this machine (float32 BLAS
    GEMM onto 128 directions at once; numpy's row sort, the fastest CPU sort we found, on `threads` threads),
    warm and best of three, on one level of one set, then scaled to the whole metric.
    """
    from concurrent.futures import ThreadPoolExecutor

    rows = n * 128
    levels = len([s for s in (res, res // 2, res // 4, res // 8, res // 16) if s >= 16])
    rng = np.random.default_rng(0)
    desc = rng.standard_normal((rows, 147), dtype=np.float32)
    dirs = rng.standard_normal((128, 147), dtype=np.float32)
    out = np.empty((128, rows), np.float32)
    gemm, sort = [], []
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(3):
            start = time.perf_counter()
            np.matmul(dirs, desc.T, out=out)
            gemm.append(time.perf_counter() - start)
            rows_to_sort = out[:chunk].copy()
            start = time.perf_counter()
            list(pool.map(np.ndarray.sort, rows_to_sort))
            sort.append(time.perf_counter() - start)
    per_set_level = {"project": min(gemm) * 4, "sort": min(sort) * 512 / chunk}
    return {key: value * 2 * levels for key, value in per_set_level.items()}


def worker(kind: str, n: int, res: int, threads: int) -> None:
    start = time.perf_counter()
    runs = {"ours": run_ours, "numpy": run_numpy, "floor": lambda n, res: sort_and_project_floor(n, res, threads)}
    result = runs[kind](n, res)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"kind": kind, "n": n, "seconds": seconds, "peak_rss_mb": peak_mb, "result": result}))


def measure(kind: str, n: int, res: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--n", str(n), "--res", str(res), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:  # the worker's own error, not a CalledProcessError naming the command
        sys.exit(f"bench_swd: the {kind} worker failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=16384, help="images per set for ours")
    parser.add_argument("--baseline-n", type=int, default=None, help="images per set for numpy (default: --n)")
    parser.add_argument("--res", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch/BLAS threads in each worker (1: fair on a "
                        "shared machine, where 2 contending threads run slower than 1)")
    parser.add_argument("--worker", choices=["ours", "numpy", "floor"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.res < 16 or args.res & (args.res - 1) or min(args.n, args.baseline_n or args.n) < 1:
        parser.error(f"--res {args.res} --n {args.n}: expected a power-of-two resolution >= 16 (SWD's pyramid "
                     "starts at 16 px) and positive image counts")
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        worker(args.worker, args.n, args.res, args.threads)
        return
    base_n = args.baseline_n or args.n
    rows = [measure("ours", args.n, args.res, args.threads)]
    if base_n != args.n:
        rows.append(measure("ours", base_n, args.res, args.threads))
    rows.append(measure("numpy", base_n, args.res, args.threads))
    print(f"SWD, {args.res}x{args.res}, two sets, {args.threads} threads")
    print(f"{'impl':8s} {'images/set':>10s} {'seconds':>9s} {'peak RSS MB':>12s}  swd x1e3 per level (avg)")
    for row in rows:
        res = row["result"]
        print(f"{row['kind']:8s} {row['n']:10d} {row['seconds']:9.1f} {row['peak_rss_mb']:12.0f}  "
              + " ".join(f"{v:.3f}" for v in res["swd"]) + f" ({res['avg']:.3f})")
    numpy_row, ours_same = rows[-1], rows[-2]
    print(f"speed-up at {base_n} images/set: {numpy_row['seconds'] / ours_same['seconds']:.1f}x, "
          f"memory ratio {numpy_row['peak_rss_mb'] / ours_same['peak_rss_mb']:.1f}x")
    floor = measure("floor", base_n, args.res, args.threads)["result"]
    floor_s = floor["project"] + floor["sort"]
    print(f"projecting ({floor['project']:.1f} s) + sorting ({floor['sort']:.1f} s) alone at {base_n} images/set, "
          f"at the best speed this machine gives them: {floor_s:.1f} s, so no exact implementation here can be more "
          f"than {numpy_row['seconds'] / floor_s:.1f}x faster than numpy")
    if base_n != args.n:
        scale = args.n / base_n
        print(f"numpy extrapolated linearly to {args.n} images/set: >= {numpy_row['seconds'] * scale:.0f} s, "
              f"~{numpy_row['peak_rss_mb'] * scale:.0f} MB peak RSS (not run: would not fit / too slow here); "
              f"speed-up vs ours at {args.n}: >= {numpy_row['seconds'] * scale / rows[0]['seconds']:.1f}x")


if __name__ == "__main__":
    main()
