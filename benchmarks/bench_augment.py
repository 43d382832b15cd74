"""Small-data benchmark: the same DCGAN trained on 1,000 CelebA faces at 64 px with no augmentation, DiffAugment and
ADA, each scored by SWD against 5,000 held-out faces at every checkpoint (plus FID with local Inception weights).

    python benchmarks/bench_augment.py --steps 3000 --checkpoint-every 500

The faces are the first 1,000 (training) and the last 5,000 (held out) of ../shared/data's 10,000 aligned CelebA
images at 89×109, centre-cropped and resized to 64×64 by `ganforge prepare folder`. With 1,000 images D soon
memorises the training set; the point is whether augmentation keeps the generated distribution closer to faces D
never saw. Every run uses the same seed, config and step budget; only `augment` differs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ganforge.api import train
from ganforge.data.prepare import prepare_folder
from ganforge.evaluation.run_metrics import evaluate_run
from ganforge.training.checkpoint import checkpoint_steps

DEFAULT_FACES = Path(__file__).resolve().parents[2] / "shared/data/celeba-10k-89x109/img_align_celeba_89x109"
SETTINGS: dict[str, dict[str, Any]] = {
    "none": {"kind": "none"},
    "diffaugment": {"kind": "diffaugment", "policy": "color,translation,cutout"},
    # speed_kimg 100, not the paper's 500: p may then cross 0 → 1 within this short budget, as the paper's setting
    # does within its runs of thousands of kimg
    "ada": {"kind": "ada", "target": 0.6, "speed_kimg": 100, "pipeline": "bgc"},
}


def split_stores(faces: Path, scratch: Path, n_train: int, n_heldout: int, resolution: int) -> tuple[Path, Path]:
    """Training and held-out stores from disjoint slices of the sorted file list (links, then `prepare folder`)."""
    files = sorted(p for p in faces.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if len(files) < n_train + n_heldout:
        raise SystemExit(f"{faces}: {len(files)} images, need {n_train} + {n_heldout}")
    stores = []
    for name, chosen in (("train", files[:n_train]), ("heldout", files[-n_heldout:])):
        store = scratch / f"{name}{resolution}"
        if not (store / "manifest.json").is_file():
            links = scratch / f"{name}-files"
            links.mkdir(parents=True, exist_ok=True)
            for path in chosen:
                if not (links / path.name).exists():
                    (links / path.name).symlink_to(path)
            prepare_folder(links, store, resolution=resolution)
        stores.append(store)
    return stores[0], stores[1]


def run_config(data: Path, args: argparse.Namespace, augment: dict[str, Any]) -> dict[str, Any]:
    """The DCGAN tutorial's settings (BatchNorm D, BCE, Adam 2e-4 β1 0.5) at CPU widths."""
    return {
        "family": "dcgan", "data": str(data), "seed": 0, "progress": False, "log_every": 50,
        "sample_every": args.checkpoint_every, "checkpoint_every": args.checkpoint_every,
        "keep_checkpoints": 10**4, "augment": augment,
        "model": {"resolution": 64, "latent_dim": 100, "features_g": args.width, "features_d": args.width,
                  "critic_norm": "batch", "lr": 2.0e-4, "betas": [0.5, 0.999], "critic_steps": 1,
                  "critic_batches": "reuse", "batch_size": args.batch_size, "steps": args.steps, "ema_decay": None},
    }


def aug_p_at(run_dir: Path, step: int) -> float | None:
    """ADA's p at the last log line at or before `step`."""
    value = None
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("step", 0) <= step and "aug_p" in row:
            value = row["aug_p"]
    return value


def checkpoint_scores(run_dir: Path, metrics: list[str], heldout: Path, args: argparse.Namespace
                      ) -> dict[int, dict[str, Any]]:
    """Metrics of every checkpoint against the held-out faces; steps already in the run's metrics.jsonl (from an
    earlier, interrupted invocation with the same --n-heldout) are read back instead of recomputed."""
    def recorded() -> dict[int, dict[str, Any]]:
        path = run_dir / "metrics.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
        return {row["step"]: row for row in rows if row.get("source") == "evaluate" and row.get("n") == args.n_heldout
                and all(f"{m}_avg" in row or m in row for m in metrics)}

    done = recorded()
    steps = [step for step in checkpoint_steps(run_dir)  # the planned ones (not a checkpoint written on a signal)
             if step % args.checkpoint_every == 0 and (args.until is None or step <= args.until)]
    for step in steps:
        if step not in done:
            evaluate_run(run_dir, metrics, n=args.n_heldout, step=step, real=heldout,
                         inception_weights=args.inception_weights)
    return {step: {**row, "aug_p": aug_p_at(run_dir, step)} for step, row in recorded().items() if step in steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/ganforge-bench-augment"))
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-heldout", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--until", type=int, default=None,
                        help="train and score only this far into the --steps schedule (a later call goes on)")
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=32, help="features_g = features_d (tutorial: 64)")
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--inception-weights", type=Path, default=None, help="adds FID against the held-out faces")
    args = parser.parse_args()
    if not args.faces.is_dir():
        raise SystemExit(f"{args.faces}: no such folder (the 10k CelebA faces of ../shared/data, or --faces DIR)")
    args.scratch.mkdir(parents=True, exist_ok=True)
    train_store, heldout = split_stores(args.faces, args.scratch, args.n_train, args.n_heldout, 64)
    metrics = ["swd"] + (["fid"] if args.inception_weights else [])
    table: dict[str, dict[int, dict[str, Any]]] = {}
    for name in args.settings:
        run_dir = args.scratch / f"run-{name}"
        started = time.perf_counter()
        result = train(run_config(train_store, args, SETTINGS[name]), run_dir, until=args.until)
        if result.stop == "signal":  # checkpoint written; scoring now would race a rerun of this command
            raise SystemExit(result.summary())
        trained = time.perf_counter() - started
        table[name] = checkpoint_scores(run_dir, metrics, heldout, args)
        print(f"{name}: trained to step {args.until or args.steps} in {trained:.0f} s, evaluated in "
              f"{time.perf_counter() - started - trained:.0f} s", flush=True)
    print(f"\nDCGAN 64 px, {args.n_train} training faces, batch {args.batch_size}, width {args.width}; "
          f"SWD x1e3 (avg of 64/32/16 px) of {args.n_heldout} generated vs {args.n_heldout} held-out faces")
    header = f"{'step':>6s} {'kimg':>6s}" + "".join(f" {name:>12s}" for name in args.settings)
    print(header + ("  ADA p" if "ada" in args.settings else ""))
    for step in sorted({step for scores in table.values() for step in scores}):
        row = f"{step:6d} {step * args.batch_size / 1000:6.1f}"
        for name in args.settings:
            cell = table[name].get(step, {})
            text = f"{cell['swd_avg']:.1f}" if cell else "-"
            if cell.get("fid") is not None:
                text += f"/{cell['fid']:.1f}"
            row += f" {text:>12s}"
        p = table.get("ada", {}).get(step, {}).get("aug_p")
        print(row + (f"  {p:.3f}" if p is not None else ""))


if __name__ == "__main__":
    main()
