"""Time of the Fréchet distance on 2048-d covariances: ganforge (Cholesky + one symmetric eigenvalue problem, float64)
vs scipy.linalg.sqrtm (what pytorch-fid and stylegan2-ada use), single-threaded, plus their agreement.

    python benchmarks/bench_frechet.py [--dim 2048] [--samples 10000] [--threads 1] [--repeats 1]

Covariances come from random features with correlated dimensions (full rank for samples > dim); each method
runs `--repeats` times and the best wall time is kept (the machine may be shared). On a GPU (when one is
available) ours is also timed there.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)  # before numpy/scipy/torch load their BLAS

    import numpy as np
    import scipy.linalg
    import torch

    from ganforge.metrics.fid import frechet_distance

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((args.dim, args.dim)) / np.sqrt(args.dim)
    a = rng.standard_normal((args.samples, args.dim)) @ mix
    b = rng.standard_normal((args.samples, args.dim)) @ (mix + 0.2 * np.eye(args.dim)) + 0.05
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)

    def scipy_fid() -> float:
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
        return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))

    def best(fn) -> tuple[float, float]:
        times, value = [], 0.0
        for _ in range(args.repeats):
            start = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - start)
        return min(times), value

    t_ours, v_ours = best(lambda: frechet_distance(mu1, s1, mu2, s2))
    t_scipy, v_scipy = best(scipy_fid)
    print(f"Fréchet distance, {args.dim}-d covariances from {args.samples} samples, {args.threads} thread(s)")
    print(f"ours (cholesky + eigvalsh, float64, CPU): {t_ours:7.2f} s   FID {v_ours:.10f}")
    print(f"scipy.linalg.sqrtm:                       {t_scipy:7.2f} s   FID {v_scipy:.10f}")
    print(f"speed-up {t_scipy / t_ours:.1f}x, relative difference {abs(v_ours - v_scipy) / abs(v_scipy):.2e}")
    if torch.cuda.is_available():
        frechet_distance(mu1, s1, mu2, s2, device="cuda")  # warm-up
        torch.cuda.synchronize()
        t_gpu, v_gpu = best(lambda: frechet_distance(mu1, s1, mu2, s2, device="cuda"))
        print(f"ours on {torch.cuda.get_device_name()}: {t_gpu:.3f} s   FID {v_gpu:.10f}")


if __name__ == "__main__":
    main()
