"""ganforge's training step timed beside the official implementations' own, same config, same device, same process.

    python benchmarks/bench_vs_reference.py --refs DIR --device cuda --width-div 1 --pgan-res 128
    python benchmarks/bench_vs_reference.py --refs DIR --device cpu --width-div 8 --steps 3   # the 2-core CPU

DIR holds checkouts of facebookresearch/pytorch_GAN_zoo, ajbrock/BigGAN-PyTorch and clovaai/stargan-v2 (any folder
whose name contains the repository's name). Their code is imported and run as it is, never copied: for each
reference the timed iteration is the official code's own step (the zoo's `ProgressiveGAN.optimizeParameters`,
BigGAN-PyTorch's `train_fns.GAN_training_function`, StarGAN v2's `Solver.train` loop body with its InputFetcher),
built the way the official training script builds it, fed batches already on the device; ganforge's is
`Trainer.train_step` at the same config (the PGAN zoo variant, configs/biggan_cifar10.yaml, configs/stargan2_afhq.yaml),
fed by its own loader. Each family runs in its own Python process, so the references' module names (`models`,
`utils`, `core`, ...) and the torch flags their scripts set (cudnn.benchmark) never meet ganforge's.

What the references import only for data loading, sample sheets, videos and face landmarks, and a timed step never
runs (torchvision, ffmpeg, cv2, skimage where missing), is replaced by empty placeholder modules; munch, which
StarGAN v2 uses for real, must be installed. Widths are divided by `--width-div` on both sides (StarGAN v2's widths
are fixed by the official code, so it runs at `--stargan-res` instead).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import build, sync, timed_steps  # noqa: E402 - the same Trainer set-up and timing as the GPU check

from ganforge.models.pgan import pgan_widths  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REPOS = {"pgan": "pytorch_GAN_zoo", "biggan": "BigGAN-PyTorch", "stargan2": "stargan-v2"}
UNUSED_BY_A_STEP = ["torchvision", "torchvision.transforms", "torchvision.datasets", "torchvision.datasets.utils",
                    "torchvision.utils", "torchvision.models", "ffmpeg", "cv2", "skimage", "skimage.filters"]
# BigGAN-PyTorch's scripts/launch_cifar_ema.sh (the preset configs/biggan_cifar10.yaml reproduces)
BIGGAN_CIFAR_ARGS = ["--shuffle", "--batch_size", "50", "--num_G_accumulations", "1", "--num_D_accumulations", "1",
                     "--num_D_steps", "4", "--G_lr", "2e-4", "--D_lr", "2e-4", "--dataset", "C10", "--G_ortho", "0.0",
                     "--G_attn", "0", "--D_attn", "0", "--G_init", "N02", "--D_init", "N02", "--ema", "--use_ema",
                     "--ema_start", "1000"]


class _Placeholder:
    """Stands for any attribute of a module the references import but a training step never uses."""


def _placeholder_attribute(attr: str) -> type:
    if attr.startswith("__"):
        raise AttributeError(attr)
    return type(attr, (_Placeholder,), {})


def stub_missing_modules(names: list[str]) -> list[str]:
    """Empty modules for `names` that cannot be imported here; returns those stubbed."""
    stubbed = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            module = types.ModuleType(name)
            module.__path__ = []  # a package: its stubbed submodules import
            module.__getattr__ = _placeholder_attribute  # PEP 562
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent in sys.modules:
                setattr(sys.modules[parent], child, module)
            stubbed.append(name)
    return stubbed


def find_repo(refs: Path, family: str) -> Path:
    matches = sorted(p for p in refs.iterdir() if p.is_dir() and REPOS[family].lower() in p.name.lower())
    if not matches:
        raise FileNotFoundError(f"--refs {refs}: no folder named like {REPOS[family]!r} (a checkout of the "
                                f"official code); clone it there")
    return matches[0]


def timed(step: Callable[[], Any], device: torch.device, warmup: int, steps: int) -> float:
    """Seconds per call of `step` after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    sync(device)
    begin = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - begin) / steps


def reference_defaults() -> None:
    """torch's process defaults (ganforge's engine allows TF32 matmuls on CUDA; the references never do)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = False


# ---------------------------------------------------------------------------------------------------- PGAN (zoo)
@contextlib.contextmanager
def float_adam_betas() -> Iterator[None]:
    """The zoo passes Adam `betas=[0, 0.99]`, which torch >= 2.6 refuses (int and float); the same values as floats."""
    original = torch.optim.Adam.__init__

    def init(self: torch.optim.Adam, params: Any, *a: Any, betas: Any = (0.9, 0.999), **kw: Any) -> None:
        original(self, params, *a, betas=tuple(float(b) for b in betas), **kw)

    torch.optim.Adam.__init__ = init
    try:
        yield
    finally:
        torch.optim.Adam.__init__ = original


def pgan_setup(args: argparse.Namespace) -> tuple[dict[str, Any], list[int], int]:
    widths = [max(w // args.width_div, 4) for w in pgan_widths(args.pgan_res)]
    scales = len(widths)
    config = {"family": "pgan", "data": f"builtin:shapes?count=256&resolution={args.pgan_res}", "model": {
        "variant": "zoo", "resolution": args.pgan_res, "widths": widths, "latent_dim": widths[0], "schedule": {
            "max_iter_at_scale": [100] * scales, "alpha_jumps": 0, "alpha_jump_size": 1, "batch_size": 16}}}
    return config, widths, 16


def pgan_reference(repo: Path, args: argparse.Namespace, device: torch.device) -> dict[int, float]:
    """s/iteration of the zoo's optimizeParameters at each timed resolution (alpha 0: the stable phase)."""
    sys.path.insert(0, str(repo))
    from models.progressive_gan import ProgressiveGAN  # the zoo's pgan_config.py defaults below
    _, widths, batch = pgan_setup(args)
    with float_adam_betas():
        model = ProgressiveGAN(dimLatentVector=widths[0], depthScale0=widths[0], miniBatchStdDev=True,
                               lambdaGP=10.0, epsilonD=0.001, baseLearningRate=0.001,
                               useGPU=device.type == "cuda")
    out = {}
    resolution = 4
    for width in [None, *widths[1:]]:
        if width is not None:
            with float_adam_betas():
                model.addScale(width)
            resolution *= 2
        if resolution in args.pgan_times:
            assert model.getOriginalG().alpha == 0 and model.getOriginalD().alpha == 0  # no fade: the stable phase
            real = torch.rand(batch, 3, resolution, resolution, device=device) * 2 - 1
            out[resolution] = timed(lambda real=real: model.optimizeParameters(real), device, args.warmup,
                                    args.steps)
    return out


def pgan_ganforge(args: argparse.Namespace, device: torch.device, mode: str, scratch: Path) -> dict[int, float]:
    config, widths, _ = pgan_setup(args)
    trainer = build(config, mode, device, scratch)
    out = {}
    for index in range(len(widths)):
        resolution = 4 * 2**index
        if resolution in args.pgan_times:
            out[resolution] = timed_steps(trainer, 100 * (index + 1) - 1, args.warmup, args.steps)["s_per_step"]
    return out


# ---------------------------------------------------------------------------------------------------- BigGAN
def biggan_config(args: argparse.Namespace) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "configs" / "biggan_cifar10.yaml").read_text())
    config["data"] = "builtin:shapes?count=512&resolution=32"
    config["model"].update(n_classes=None, g_ch=max(64 // args.width_div, 4), d_ch=max(64 // args.width_div, 4))
    for key in ("metrics", "metrics_every", "metrics_n", "best_metric", "keep_best"):
        config.pop(key, None)
    return config


def biggan_reference(repo: Path, args: argparse.Namespace, device: torch.device,
                     n_classes: int) -> dict[int, float]:
    """s/iteration (4 D steps + 1 G step + EMA) of BigGAN-PyTorch's training function, built as train.py does."""
    sys.path.insert(0, str(repo))
    import BigGAN
    import train_fns
    import utils
    ch = str(max(64 // args.width_div, 4))
    config = vars(utils.prepare_parser().parse_args([*BIGGAN_CIFAR_ARGS, "--G_ch", ch, "--D_ch", ch]))
    config.update(resolution=32, n_classes=n_classes, G_activation=utils.activation_dict[config["G_nl"]],
                  D_activation=utils.activation_dict[config["D_nl"]])
    utils.seed_rng(0)
    torch.backends.cudnn.benchmark = True  # as train.py
    G = BigGAN.Generator(**config).to(device)
    D = BigGAN.Discriminator(**config).to(device)
    G_ema = BigGAN.Generator(**{**config, "skip_init": True, "no_optim": True}).to(device)
    ema = utils.ema(G, G_ema, config["ema_decay"], config["ema_start"])
    GD = BigGAN.G_D(G, D)
    state = {"itr": 0}
    z_, y_ = utils.prepare_z_y(config["batch_size"], G.dim_z, n_classes, device=device)
    train = train_fns.GAN_training_function(G, D, GD, z_, y_, ema, state, config)
    images = config["batch_size"] * config["num_D_steps"] * config["num_D_accumulations"]
    x = torch.rand(images, 3, 32, 32, device=device) * 2 - 1
    y = torch.randint(0, n_classes, (images,), device=device)

    def step() -> None:
        G.train()
        D.train()
        train(x, y)
        state["itr"] += 1

    return {32: timed(step, device, args.warmup, args.steps)}


def biggan_ganforge(args: argparse.Namespace, device: torch.device, mode: str, scratch: Path) -> dict[int, float]:
    return {32: timed_steps(build(biggan_config(args), mode, device, scratch), 0, args.warmup,
                            args.steps)["s_per_step"]}


# ---------------------------------------------------------------------------------------------------- StarGAN v2
def stargan2_config(args: argparse.Namespace) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "configs" / "stargan2_afhq.yaml").read_text())
    config["data"] = f"builtin:shapes?count=64&resolution={args.stargan_res}"
    config["model"].update(resolution=args.stargan_res, domain_column="shape", batch_size=args.stargan_batch)
    return config


def stargan2_reference(repo: Path, args: argparse.Namespace, device: torch.device,
                       num_domains: int) -> dict[int, float]:
    """s/iteration (2 D + 2 G steps + EMA) of the official Solver.train loop, AFHQ settings, on fixed batches."""
    sys.path.insert(0, str(repo))
    from core.solver import Solver
    from munch import Munch
    model = stargan2_config(args)["model"]
    warmup, steps = args.warmup, args.steps
    total = warmup + steps + 1
    never = 10**9
    solver_args = Munch(
        img_size=args.stargan_res, num_domains=num_domains, latent_dim=16, hidden_dim=512, style_dim=64,
        lambda_reg=model["lambda_reg"], lambda_cyc=model["lambda_cyc"], lambda_sty=model["lambda_sty"],
        lambda_ds=model["lambda_ds"], ds_iter=model["ds_iter"], w_hpf=0.0, randcrop_prob=0.5, total_iters=total,
        resume_iter=0, batch_size=args.stargan_batch, val_batch_size=args.stargan_batch, lr=1e-4, f_lr=1e-6,
        beta1=0.0, beta2=0.99, weight_decay=1e-4, mode="train", seed=777, checkpoint_dir=tempfile.mkdtemp(),
        sample_dir=tempfile.mkdtemp(), eval_dir=tempfile.mkdtemp(), print_every=never, sample_every=never,
        save_every=never, eval_every=never)
    torch.backends.cudnn.benchmark = True  # as main.py
    torch.manual_seed(solver_args.seed)
    solver = Solver(solver_args)
    batch, res = args.stargan_batch, args.stargan_res
    x = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    y = torch.randint(0, num_domains, (batch,), device=device)
    fetched: list[float] = []

    def sources() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:  # the fetcher takes one source batch at the start of each iteration: time stamps between them
            sync(device)
            fetched.append(time.perf_counter())
            yield x, y

    def references() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        while True:
            yield x.flip(0), x.flip(3), y.flip(0)

    def validation() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield x, y

    solver.train(Munch(src=_Iterable(sources), ref=_Iterable(references), val=_Iterable(validation)))
    sync(device)
    return {res: (fetched[warmup + steps] - fetched[warmup]) / steps}


class _Iterable:
    """A loader stand-in: `iter()` restarts the generator, as the official InputFetcher expects of a DataLoader."""

    def __init__(self, make: Callable[[], Iterator[Any]]) -> None:
        self.make = make

    def __iter__(self) -> Iterator[Any]:
        return self.make()


def stargan2_ganforge(args: argparse.Namespace, device: torch.device, mode: str, scratch: Path) -> dict[int, float]:
    return {args.stargan_res: timed_steps(build(stargan2_config(args), mode, device, scratch), 0, args.warmup,
                                          args.steps)["s_per_step"]}


# ---------------------------------------------------------------------------------------------------- driver
def label_count(config: dict[str, Any]) -> int:
    from ganforge.data.store import open_dataset
    return len(open_dataset(config["data"]).label_columns[0][1])


REFERENCE_STEPS = {"pgan": pgan_reference, "biggan": biggan_reference, "stargan2": stargan2_reference}
GANFORGE_STEPS = {"pgan": pgan_ganforge, "biggan": biggan_ganforge, "stargan2": stargan2_ganforge}
LABELLED_CONFIGS = {"biggan": biggan_config, "stargan2": stargan2_config}


def run_family(family: str, args: argparse.Namespace) -> None:
    """One family in this process: the reference first (torch defaults), then ganforge in each mode. The row is
    printed after every measurement, so a family stopped at its time limit keeps what it measured."""
    device = torch.device(args.device)
    row: dict[str, Any] = {"family": family, "stubbed": stub_missing_modules(UNUSED_BY_A_STEP)}
    reference_defaults()
    repo = find_repo(args.refs, family)
    row["repo"] = repo.name
    labels = [label_count(LABELLED_CONFIGS[family](args))] if family in LABELLED_CONFIGS else []
    row["reference_s"] = REFERENCE_STEPS[family](repo, args, device, *labels)
    row["ganforge_s"] = {}
    print("RESULT " + json.dumps(row), flush=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-ref-{family}-"))
    for mode in args.modes:
        row["ganforge_s"][mode] = GANFORGE_STEPS[family](args, device, mode, scratch / mode)
        print("RESULT " + json.dumps(row), flush=True)


def run_in_subprocess(family: str, argv: list[str], limit_s: float) -> dict[str, Any]:
    """The newest row the family's process printed, with the reason it stopped early if it did."""
    command = [sys.executable, __file__, *argv, "--one", family]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=limit_s)
        stdout, stderr, error = proc.stdout, proc.stderr, None if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired as stopped:
        stdout, stderr = (_text(stopped.stdout), _text(stopped.stderr))
        error = f"stopped at --family-limit-s {limit_s:g}"
    lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    row = json.loads(lines[-1][len("RESULT "):]) if lines else {"family": family, "reference_s": {}, "ganforge_s": {}}
    if error:
        row["error"], row["log"] = error, (stderr or stdout).strip()[-1500:]
    return row


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refs", type=Path, required=True, help="folder holding the official checkouts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--families", nargs="*", default=list(REPOS), choices=list(REPOS))
    parser.add_argument("--modes", nargs="*", default=["fp32"], choices=["fp32", "compiled"])
    parser.add_argument("--width-div", type=int, default=1)
    parser.add_argument("--pgan-res", type=int, default=32, help="PGAN's final resolution (its widths)")
    parser.add_argument("--pgan-times", type=int, nargs="*", default=None, help="resolutions to time; default the last")
    parser.add_argument("--stargan-res", type=int, default=64)
    parser.add_argument("--stargan-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--family-limit-s", type=float, default=3600.0, help="stop a family's process after this")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one family, rows on stdout
    args = parser.parse_args()
    args.pgan_times = args.pgan_times or [args.pgan_res]
    if args.one:
        run_family(args.one, args)
        return
    forwarded = _without_option(sys.argv[1:], "--families")
    print(f"torch {torch.__version__}, {args.device}, threads {torch.get_num_threads()}, widths / {args.width_div}")
    print(f"{'family':9s} {'res':>4s} {'reference s/it':>15s} " + " ".join(f"{m + ' s/it':>14s} {'speed-up':>8s}"
                                                                         for m in args.modes))
    rows = []
    for family in args.families:
        row = run_in_subprocess(family, forwarded, args.family_limit_s)
        rows.append(row)
        for res, ref in row["reference_s"].items():
            cells = " ".join(f"{row['ganforge_s'][m][res]:14.4f} {ref / row['ganforge_s'][m][res]:7.2f}x"
                             if m in row["ganforge_s"] else f"{'-':>14s} {'-':>8s}" for m in args.modes)
            print(f"{family:9s} {int(res):4d} {ref:15.4f} {cells}", flush=True)
        if "error" in row:
            print(f"{family:9s} {row['error']}: {(row['log'].splitlines() or [''])[-1]}", flush=True)
        if args.out:
            args.out.write_text(json.dumps({"torch": torch.__version__, "device": args.device, "rows": rows},
                                           indent=1))


def _without_option(argv: list[str], option: str) -> list[str]:
    """argv without `option` and the values that follow it (the driver passes one family per process)."""
    out, skipping = [], False
    for arg in argv:
        if arg == option or arg.startswith(option + "="):
            skipping = arg == option
            continue
        if skipping and not arg.startswith("--"):
            continue
        skipping = False
        out.append(arg)
    return out


if __name__ == "__main__":
    main()
