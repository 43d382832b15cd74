"""Training throughput of every family at its reference config (widths scaled for CPU), eager vs compiled.

    python benchmarks/bench_train.py --width-div 8 --steps 3            # CPU: reference configs, widths / 8
    python benchmarks/bench_train.py --device cuda --width-div 1 --steps 20

One table: img/s (the batch over the seconds per step; a BigGAN step draws a batch of reals for each of its 4 D
steps) and s/step. Compiling happens during the warm-up steps, which are not timed. Mode `nchw` is fp32 with the
networks in the plain NCHW layout the references use (ganforge's eager networks are channels_last, except
instance-norm networks on the CPU): `--modes fp32 nchw` measures what that layout gains.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import build, timed_steps  # noqa: E402 - the same Trainer set-up and timing as the GPU check

from ganforge.models.pgan import pgan_widths  # noqa: E402


def reference_configs(div: int) -> dict[str, dict[str, Any]]:
    """The configs the maintainers time against the official code: PGAN zoo 32 px, BigGAN CIFAR (batch 16),
    StarGAN v2 64 px (batch 4), WGAN-GP 64 px; channel widths divided by `div`."""
    widths = [max(w // div, 4) for w in pgan_widths(32)]
    return {
        "pgan": {"family": "pgan", "data": "builtin:shapes?count=256&resolution=32", "model": {
            "variant": "zoo", "resolution": 32, "widths": widths, "latent_dim": widths[0], "schedule": {
                "max_iter_at_scale": [100] * 4, "alpha_jumps": 0, "alpha_jump_size": 1, "batch_size": 16}}},
        "biggan": {"family": "biggan", "data": "builtin:shapes?count=256&resolution=32", "model": {
            "g_ch": max(64 // div, 4), "d_ch": max(64 // div, 4), "g_attention": [], "d_attention": [],
            "batch_size": 16, "num_d_steps": 4, "num_d_accumulations": 1, "num_g_accumulations": 1}},
        "stargan2": {"family": "stargan2", "data": "builtin:shapes?count=64&resolution=64", "model": {
            "resolution": 64, "domain_column": "shape", "w_hpf": 0.0, "batch_size": 4,
            "base_dim": max(2**14 // 64 // div, 4), "max_conv_dim": max(512 // div, 4)}},
        "wgan-gp": {"family": "wgan-gp", "data": "builtin:shapes?count=256&resolution=64", "model": {
            "features_g": max(64 // div, 2), "features_d": max(64 // div, 2), "batch_size": 16}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width-div", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--families", nargs="*", default=None, choices=["pgan", "biggan", "stargan2", "wgan-gp"],
                        help="default: all")
    parser.add_argument("--modes", nargs="*", default=["fp32", "compiled"],
                        choices=["fp32", "bf16", "compiled", "nchw"])
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/ganforge-bench-train"))
    args = parser.parse_args()
    device = torch.device(args.device)
    configs = reference_configs(args.width_div)
    print(f"torch {torch.__version__}, {device}, threads {torch.get_num_threads()}, widths / {args.width_div}")
    print(f"{'family':10s} {'mode':9s} {'res':>4s} {'batch':>5s} {'img/s':>8s} {'s/step':>8s}")
    for family in args.families or list(configs):
        start = 399 if family == "pgan" else 0  # PGAN: the stable 32 px phase
        for mode in args.modes:
            try:
                trainer = build(configs[family], "fp32" if mode == "nchw" else mode, device, args.scratch / family)
                if mode == "nchw":
                    for net in trainer.family.nets.values():
                        net.to(memory_format=torch.contiguous_format)
                out = timed_steps(trainer, start, args.warmup, args.steps)
            except Exception as err:  # noqa: BLE001 - one row says why, the others still run
                print(f"{family:10s} {mode:9s} failed: {type(err).__name__}: {str(err)[:100]}", flush=True)
                continue
            print(f"{family:10s} {mode:9s} {out['resolution']:4d} {out['batch']:5d} {out['img_per_s']:8.1f} "
                  f"{out['s_per_step']:8.3f}", flush=True)


if __name__ == "__main__":
    main()
