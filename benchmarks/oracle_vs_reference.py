"""ganforge's training steps against the official code's own, from the same weights, batches and noise.

    python benchmarks/oracle_vs_reference.py --refs DIR                       # PGAN zoo, 16 px, stable and fading
    python benchmarks/oracle_vs_reference.py --refs DIR --scale 3 --alpha 0.25 --steps 8

DIR holds a checkout of facebookresearch/pytorch_GAN_zoo (see bench_vs_reference.py for the clone command and the
commit). Its code is imported and run as it is, never copied. The check:

1. builds the zoo's ProgressiveGAN (the zoo's pgan_config.py defaults: WGAN-GP, λ 10, ε-drift 0.001, Adam
   lr 0.001 β (0, 0.99), EMA 0.999) at the given widths, grows it with its own `addScale` to `--scale` and sets
   alpha on G, D and the EMA G (the zoo's `updateAlpha` reaches the EMA G only under DataParallel);
2. writes it with the zoo's own `save` and reads that file with ganforge's importer (`ganforge import pgan-zoo`'s
   route), into a ganforge Trainer at the same config (`model.variant: zoo`);
3. runs `--steps` iterations on both: the zoo's `optimizeParameters` (D step with gradient penalty and drift, G
   step, EMA update) and ganforge's `Trainer.train_step`, fed the same real batches (built-in shapes, blended as
   the zoo's trainer blends them during a fade), ganforge replaying the noise the zoo drew (its latents and the
   penalty's mixing weights, recorded by wrapping torch.randn and torch.rand during the zoo's step);
4. prints each step's losses on both sides, on the zoo's scale (the zoo sums its losses over the batch, ganforge
   logs means: × N), and at the end the largest difference of every weight of G, D and the EMA G, relative to
   the largest weight of its tensor.

The two sides should differ by float rounding only (ganforge averages its losses where the zoo sums them, and
divides Adam's ε by N to take the same steps: PGANFamily.adam_eps); the exit status is 1 when a loss or a weight
differs by more than `--tolerance` (relative). During the 4→8 fade (`--scale 1` with alpha > 0) they must differ:
the zoo's D ignores alpha there, a zoo bug ganforge fixes (docs/fidelity.md).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_reference import UNUSED_BY_A_STEP, find_repo, float_adam_betas, stub_missing_modules  # noqa: E402
from gpu_check import build  # noqa: E402

from ganforge.data.builtin import make_shapes  # noqa: E402
from ganforge.data.loader import Batch  # noqa: E402
from ganforge.interop.pgan_zoo import convert_zoo_state, read_zoo_checkpoint  # noqa: E402
from ganforge.training.engine import Trainer  # noqa: E402

FADE_JUMP = 1000  # ganforge's schedule: alpha 1 - k/4 for k·FADE_JUMP <= local step < (k+1)·FADE_JUMP


@contextlib.contextmanager
def recorded_noise() -> Iterator[list[torch.Tensor]]:
    """Every tensor torch.randn and torch.rand return inside the context, in order (copies)."""
    drawn: list[torch.Tensor] = []
    originals = torch.randn, torch.rand

    def recording(function: Any) -> Any:
        def draw(*args: Any, **kwargs: Any) -> torch.Tensor:
            out = function(*args, **kwargs)
            drawn.append(out.detach().clone())
            return out
        return draw

    torch.randn, torch.rand = recording(originals[0]), recording(originals[1])
    try:
        yield drawn
    finally:
        torch.randn, torch.rand = originals


def replay_noise(trainer: Trainer, drawn: list[torch.Tensor]) -> None:
    """The family's noise draws take the recorded tensors in order, reshaped to what each call asks for (the zoo
    draws the penalty's mixing weights as [N, 1], ganforge as [N, 1, 1, 1])."""
    family = trainer.family

    def take(*shape: int) -> torch.Tensor:
        if not drawn:
            raise RuntimeError(f"ganforge drew noise of shape {shape} that the reference step never drew")
        tensor = drawn.pop(0)
        if tensor.numel() != torch.Size(shape).numel():
            raise RuntimeError(f"ganforge drew noise of shape {shape}, the reference {tuple(tensor.shape)}")
        return tensor.reshape(shape).to(trainer.device)

    family.randn = family.rand = take


def zoo_blend(real: torch.Tensor, alpha: float) -> torch.Tensor:
    """The zoo trainer's real-image blend during a fade (`inScaleUpdate`): alpha · up(avgpool(x)) + (1 - alpha) · x."""
    if alpha == 0:
        return real
    low = F.interpolate(F.avg_pool2d(real, (2, 2)), scale_factor=2, mode="nearest")
    return alpha * low + (1 - alpha) * real


def pgan_zoo(repo: Path, args: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(repo))
    stub_missing_modules(UNUSED_BY_A_STEP)
    from models.progressive_gan import ProgressiveGAN

    widths = args.widths[:args.scale + 1]
    resolution, batch = 4 * 2**args.scale, args.batch
    torch.manual_seed(args.seed)
    with float_adam_betas():
        zoo = ProgressiveGAN(dimLatentVector=args.latent, depthScale0=widths[0], miniBatchStdDev=True,
                             lambdaGP=10.0, epsilonD=0.001, baseLearningRate=0.001, useGPU=False)
        for width in widths[1:]:
            zoo.addScale(width)
    for net in (zoo.getOriginalG(), zoo.getOriginalD(), zoo.getOriginalAvgG()):
        net.setNewAlpha(args.alpha)
    zoo.config.alpha = args.alpha

    local = FADE_JUMP * round(4 * (1 - args.alpha)) + 1  # a step of ganforge's schedule with this alpha
    config = {"family": "pgan", "data": f"builtin:shapes?count=64&resolution={resolution}", "seed": args.seed,
              "model": {"variant": "zoo", "resolution": resolution, "widths": widths, "latent_dim": args.latent,
                        "lr": 0.001, "adam_eps": 1e-8, "ema_decay": 0.999, "schedule": {
                            "max_iter_at_scale": [1] * args.scale + [4 * FADE_JUMP + args.steps + 1],
                            "alpha_jumps": [0] * args.scale + [4],
                            "alpha_jump_size": [0] * args.scale + [FADE_JUMP], "batch_size": batch}}}
    with tempfile.TemporaryDirectory() as scratch:
        zoo.save(Path(scratch) / "zoo.pt")
        states = convert_zoo_state(read_zoo_checkpoint(Path(scratch) / "zoo.pt"))
        trainer = build(config, "fp32", torch.device("cpu"), Path(scratch) / "run")
    for name, state in states.items():
        trainer.family.nets[name].load_state_dict(state)
    start = trainer.family.segments[-1].start + local
    assert trainer.family.position(start) == (args.scale, args.alpha), trainer.family.position(start)

    shapes = make_shapes(batch * args.steps, resolution, seed=args.seed)[0]
    images = torch.from_numpy(shapes).to(torch.get_default_dtype()) / 127.5 - 1
    rows = []
    for step in range(args.steps):
        real = zoo_blend(images[step * batch:(step + 1) * batch], args.alpha)
        with recorded_noise() as drawn:
            reference = zoo.optimizeParameters(real.clone())
        replay_noise(trainer, drawn)
        trainer.loader.next = lambda *_, real=real, **__: Batch(images=real.clone(), labels=None)
        trainer.step = start + step
        logs = {k: float(v) for k, v in trainer.train_step(trainer.family.plan(trainer.step)).items()}
        if drawn:
            raise RuntimeError(f"the reference drew {len(drawn)} noise tensors that ganforge did not use")
        rows.append({"step": step + 1,
                     "lossD": (reference["lossD"], batch * logs["loss_D"]),
                     "lossD_Grad": (reference["lossD_Grad"], batch * 10.0 * logs["gp"]),
                     "lossD_real+fake": (reference["lossD_real"] + reference["lossD_fake"], -batch * logs["wdist"]),
                     "lossG": (reference["lossG"], batch * logs["loss_G"])})

    with tempfile.TemporaryDirectory() as scratch:
        zoo.save(Path(scratch) / "zoo.pt")
        trained = convert_zoo_state(read_zoo_checkpoint(Path(scratch) / "zoo.pt"))
    weights = {}
    for name, state in trained.items():
        ours = trainer.family.nets[name].state_dict()
        weights[name] = max(float((ours[key] - tensor).abs().max() / tensor.abs().max().clamp_min(1e-12))
                            for key, tensor in state.items())
    return {"rows": rows, "weights": weights, "resolution": resolution}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refs", type=Path, required=True, help="folder holding a pytorch_GAN_zoo checkout")
    parser.add_argument("--scale", type=int, default=2, help="the zoo's scale to grow to (0: 4 px, 2: 16 px)")
    parser.add_argument("--alpha", type=float, default=0.5, choices=[0.0, 0.25, 0.5, 0.75, 1.0],
                        help="fade weight of the old path (the zoo's alpha); 0: the stable phase")
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 32, 32, 16, 16])
    parser.add_argument("--latent", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-9)
    args = parser.parse_args(argv)
    if not 1 <= args.scale < len(args.widths):
        parser.error(f"--scale {args.scale}: expected 1 to {len(args.widths) - 1} (one width per scale)")
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # rounding at 1e-16: a few steps cannot amplify it into a difference
    result = pgan_zoo(find_repo(args.refs, "pgan"), args)
    print(f"PGAN zoo at {result['resolution']} px, alpha {args.alpha}, batch {args.batch}, widths "
          f"{args.widths[:args.scale + 1]}: losses on the zoo's scale (summed over the batch), zoo | ganforge")
    worst = 0.0
    for row in result["rows"]:
        cells = []
        for key, (ref, ours) in ((k, v) for k, v in row.items() if k != "step"):
            worst = max(worst, abs(ours - ref) / max(abs(ref), 1e-6))
            cells.append(f"{key} {ref:+.6g} | {ours:+.6g}")
        print(f"step {row['step']}: " + ";  ".join(cells))
    print("weights after the last step, max |ganforge - zoo| / max |zoo| per tensor: "
          + ", ".join(f"{name} {value:.1e}" for name, value in result["weights"].items()))
    worst = max(worst, *result["weights"].values())
    print(f"largest relative difference {worst:.1e} (tolerance {args.tolerance:g}): "
          + ("the same training step" if worst <= args.tolerance else "DIFFERENT"))
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
