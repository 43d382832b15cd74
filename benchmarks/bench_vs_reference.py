"""ganforge's training step timed beside the official implementations' own, same config, same device, same process.

    python benchmarks/bench_vs_reference.py --refs DIR --device cuda --width-div 1 --pgan-res 128
    python benchmarks/bench_vs_reference.py --refs DIR --device cpu --width-div 8 --steps 3   # the 2-core CPU

DIR holds checkouts of the official code (any folder whose name contains the repository's name), e.g. the commits
measured in benchmarks/README.md:

    git clone https://github.com/facebookresearch/pytorch_GAN_zoo DIR/pytorch_GAN_zoo   # b75dee4
    git clone https://github.com/ajbrock/BigGAN-PyTorch DIR/BigGAN-PyTorch               # 9845943
    git clone https://github.com/clovaai/stargan-v2 DIR/stargan-v2                       # 875b70a
    pip install munch                                                                    # StarGAN v2 needs it

Their code is imported and run as it is, never copied: for each reference the timed iteration is the official
code's own step (the zoo's `ProgressiveGAN.optimizeParameters`, BigGAN-PyTorch's `train_fns.GAN_training_function`,
StarGAN v2's `Solver.train` loop itself, stepped from a thread, with its InputFetcher), built the way the official
training script builds it, fed batches already on the device; ganforge's is `Trainer.train_step` at the same config
(the PGAN zoo variant, configs/biggan_cifar10.yaml, configs/stargan2_afhq.yaml), fed by its own loader. The sides are
timed in turn, one step each per round, and the medians compared, so load that comes and goes on the machine falls on
both alike; each step runs under the torch flags its own code set (the references' scripts: cudnn.benchmark, no TF32
matmuls; ganforge's engine: TF32 on CUDA). Each family runs in its own Python process, so the references' module
names (`models`, `utils`, `core`, ...) never meet each other. In one process the sides also share the allocator and the
caches, so each side's memory habits can move the other's time, and ganforge's trainer sets the process's heap policy
on the CPU (training/speed.keep_freed_host_memory), which the reference then shares: `--apart` times each side in a
process of its own, as each program runs by itself (the reference's process builds no ganforge trainer and keeps
glibc's defaults; ganforge's builds the reference's networks but never steps them).

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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import build, sync  # noqa: E402 - the same Trainer set-up and timing as the GPU check

from ganforge.models.pgan import pgan_widths  # noqa: E402
from ganforge.training.engine import Trainer  # noqa: E402

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


Step = Callable[[], Any]
Flags = tuple[bool, bool, bool]


def torch_flags() -> Flags:
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)


def set_torch_flags(flags: Flags) -> None:
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = flags


def with_flags(step: Step, flags: Flags) -> Step:
    """`step` under the torch flags its own code set up (the reference's script or ganforge's engine)."""
    def run() -> Any:
        set_torch_flags(flags)
        return step()
    return run


def interleaved_medians(steps: dict[str, Step], device: torch.device, warmup: int, rounds: int) -> dict[str, float]:
    """Median seconds per call of each step, calling them in turn round after round, so load that comes and goes
    on the machine falls on every side alike; `warmup` untimed rounds first (compiling happens there)."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            sync(device)
            begin = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - begin)
    return {name: statistics.median(values) for name, values in times.items()}


def reference_defaults() -> Flags:
    """torch's process defaults (ganforge's engine allows TF32 matmuls on CUDA; the references never do)."""
    return (False, True, False)


class SteppedLoop:
    """A training loop that pulls its batches from an iterator, run in a thread one iteration per `step()`: the
    official StarGAN v2 loop is one function, so this is how its own iterations are timed without rewriting it."""

    def __init__(self, loop: Callable[[Iterator[Any]], Any], batch: Step) -> None:
        self._go, self._done = threading.Semaphore(0), threading.Semaphore(0)

        def batches() -> Iterator[Any]:
            while True:
                self._done.release()  # the loop asks for its next batch: the previous iteration is over
                self._go.acquire()
                yield batch()

        threading.Thread(target=loop, args=(batches(),), daemon=True).start()
        self._done.acquire()  # set-up finished, first batch asked for

    def step(self) -> None:
        self._go.release()
        self._done.acquire()


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


def pgan_config(args: argparse.Namespace) -> dict[str, Any]:
    widths = [max(w // args.width_div, 4) for w in pgan_widths(args.pgan_res)]
    return {"family": "pgan", "data": f"builtin:shapes?count=256&resolution={args.pgan_res}", "model": {
        "variant": "zoo", "resolution": args.pgan_res, "widths": widths, "latent_dim": widths[0], "schedule": {
            "max_iter_at_scale": [100] * len(widths), "alpha_jumps": 0, "alpha_jump_size": 1, "batch_size": 16}}}


def pgan_reference(repo: Path, args: argparse.Namespace, device: torch.device) -> Iterator[tuple[int, Step]]:
    """The zoo's optimizeParameters (D step, G step, EMA) at each timed resolution, alpha 0 (the stable phase),
    built with the zoo's pgan_config.py defaults. The model grows in place: time each step before the next."""
    sys.path.insert(0, str(repo))
    from models.progressive_gan import ProgressiveGAN
    widths = pgan_config(args)["model"]["widths"]
    flags = reference_defaults()
    with float_adam_betas():
        model = ProgressiveGAN(dimLatentVector=widths[0], depthScale0=widths[0], miniBatchStdDev=True,
                               lambdaGP=10.0, epsilonD=0.001, baseLearningRate=0.001,
                               useGPU=device.type == "cuda")
    for index, width in enumerate(widths):
        if index:
            with float_adam_betas():
                model.addScale(width)
        resolution = 4 * 2**index
        if resolution in args.pgan_times:
            assert model.getOriginalG().alpha == 0 and model.getOriginalD().alpha == 0  # no fade: the stable phase
            real = torch.rand(16, 3, resolution, resolution, device=device) * 2 - 1
            yield resolution, with_flags(lambda real=real: model.optimizeParameters(real), flags)


def ganforge_step(trainer: Trainer, start: int) -> Step:
    """One `Trainer.train_step` at schedule step `start` (held fixed, as gpu_check times it)."""
    trainer.step = start
    plan = trainer.family.plan(start)
    return lambda: trainer.train_step(plan)


def pgan_ganforge(args: argparse.Namespace, trainer: Trainer, resolution: int) -> Step:
    return ganforge_step(trainer, 100 * resolution.bit_length() - 201)  # the last step at `resolution`


# ---------------------------------------------------------------------------------------------------- BigGAN
def biggan_config(args: argparse.Namespace) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "configs" / "biggan_cifar10.yaml").read_text())
    config["data"] = "builtin:shapes?count=512&resolution=32"
    config["model"].update(n_classes=None, g_ch=max(64 // args.width_div, 4), d_ch=max(64 // args.width_div, 4))
    for key in ("metrics", "metrics_every", "metrics_n", "best_metric", "keep_best"):
        config.pop(key, None)
    return config


def biggan_reference(repo: Path, args: argparse.Namespace, device: torch.device) -> Iterator[tuple[int, Step]]:
    """BigGAN-PyTorch's training function (4 D steps + 1 G step + EMA), built as train.py builds it."""
    sys.path.insert(0, str(repo))
    import BigGAN
    import train_fns
    import utils
    n_classes = label_count(biggan_config(args))
    ch = str(max(64 // args.width_div, 4))
    config = vars(utils.prepare_parser().parse_args([*BIGGAN_CIFAR_ARGS, "--G_ch", ch, "--D_ch", ch]))
    config.update(resolution=32, n_classes=n_classes, G_activation=utils.activation_dict[config["G_nl"]],
                  D_activation=utils.activation_dict[config["D_nl"]])
    utils.seed_rng(0)
    flags = (*reference_defaults()[:2], True)  # train.py: cudnn.benchmark
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

    yield 32, with_flags(step, flags)


def biggan_ganforge(args: argparse.Namespace, trainer: Trainer, resolution: int) -> Step:
    return ganforge_step(trainer, 0)


# ---------------------------------------------------------------------------------------------------- StarGAN v2
def stargan2_config(args: argparse.Namespace) -> dict[str, Any]:
    config = yaml.safe_load((ROOT / "configs" / "stargan2_afhq.yaml").read_text())
    config["data"] = f"builtin:shapes?count=64&resolution={args.stargan_res}"
    config["model"].update(resolution=args.stargan_res, domain_column="shape", batch_size=args.stargan_batch)
    return config


def stargan2_reference(repo: Path, args: argparse.Namespace, device: torch.device) -> Iterator[tuple[int, Step]]:
    """Iterations (2 D + 2 G steps + EMA) of the official `Solver.train` loop itself, AFHQ settings, its
    InputFetcher fed fixed batches already on the device."""
    sys.path.insert(0, str(repo))
    from core.solver import Solver
    from munch import Munch
    model = stargan2_config(args)["model"]
    num_domains = label_count(stargan2_config(args))
    never = 10**9
    solver_args = Munch(
        img_size=args.stargan_res, num_domains=num_domains, latent_dim=16, hidden_dim=512, style_dim=64,
        lambda_reg=model["lambda_reg"], lambda_cyc=model["lambda_cyc"], lambda_sty=model["lambda_sty"],
        lambda_ds=model["lambda_ds"], ds_iter=model["ds_iter"], w_hpf=0.0, randcrop_prob=0.5, total_iters=never,
        resume_iter=0, batch_size=args.stargan_batch, val_batch_size=args.stargan_batch, lr=1e-4, f_lr=1e-6,
        beta1=0.0, beta2=0.99, weight_decay=1e-4, mode="train", seed=777, checkpoint_dir=tempfile.mkdtemp(),
        sample_dir=tempfile.mkdtemp(), eval_dir=tempfile.mkdtemp(), print_every=never, sample_every=never,
        save_every=never, eval_every=never)
    flags = (*reference_defaults()[:2], True)  # main.py: cudnn.benchmark
    set_torch_flags(flags)
    torch.manual_seed(solver_args.seed)
    solver = Solver(solver_args)
    batch, res = args.stargan_batch, args.stargan_res
    x = torch.rand(batch, 3, res, res, device=device) * 2 - 1
    y = torch.randint(0, num_domains, (batch,), device=device)

    def loop(sources: Iterator[Any]) -> None:
        references = _Iterable(lambda: iter(lambda: (x.flip(0), x.flip(3), y.flip(0)), None))
        validation = _Iterable(lambda: iter(lambda: (x, y), None))
        solver.train(Munch(src=_Iterable(lambda: sources), ref=references, val=validation))

    yield res, with_flags(SteppedLoop(loop, lambda: (x, y)).step, flags)


class _Iterable:
    """A loader stand-in: `iter()` restarts the generator, as the official InputFetcher expects of a DataLoader."""

    def __init__(self, make: Callable[[], Iterator[Any]]) -> None:
        self.make = make

    def __iter__(self) -> Iterator[Any]:
        return self.make()


def stargan2_ganforge(args: argparse.Namespace, trainer: Trainer, resolution: int) -> Step:
    return ganforge_step(trainer, 0)


# ---------------------------------------------------------------------------------------------------- driver
def label_count(config: dict[str, Any]) -> int:
    from ganforge.data.store import open_dataset
    return len(open_dataset(config["data"]).label_columns[0][1])


REFERENCE_STEPS = {"pgan": pgan_reference, "biggan": biggan_reference, "stargan2": stargan2_reference}
GANFORGE_STEPS = {"pgan": pgan_ganforge, "biggan": biggan_ganforge, "stargan2": stargan2_ganforge}
CONFIGS = {"pgan": pgan_config, "biggan": biggan_config, "stargan2": stargan2_config}


def run_family(family: str, args: argparse.Namespace) -> None:
    """One family in this process: ganforge's trainers (one per mode) beside the reference, timed in turn at each
    resolution; the row is printed after every resolution, so a family stopped at its time limit keeps those."""
    device = torch.device(args.device)
    row: dict[str, Any] = {"family": family, "stubbed": stub_missing_modules(UNUSED_BY_A_STEP),
                           "reference_s": {}, "ganforge_s": {mode: {} for mode in args.modes}}
    repo = find_repo(args.refs, family)
    row["repo"] = repo.name
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-ref-{family}-"))
    modes = [] if args.side == "reference" else args.modes
    trainers = {mode: build(CONFIGS[family](args), mode, device, scratch / mode) for mode in modes}
    ours = torch_flags()  # the engine's (TF32, no cuDNN autotuning), taken before the reference sets its own
    for resolution, reference in REFERENCE_STEPS[family](repo, args, device):
        steps = {} if args.side == "ganforge" else {"reference": reference}
        steps.update({mode: with_flags(GANFORGE_STEPS[family](args, trainer, resolution), ours)
                      for mode, trainer in trainers.items()})
        medians = interleaved_medians(steps, device, args.warmup, args.steps)
        if "reference" in medians:
            row["reference_s"][resolution] = medians.pop("reference")
        for mode, seconds in medians.items():
            row["ganforge_s"][mode][resolution] = seconds
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


def merged_sides(reference: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """One row from the two processes of `--apart`: the reference's times from the first, ganforge's from the
    second, and the first error either reported (ganforge's if both failed)."""
    row = {**reference, "ganforge_s": ours.get("ganforge_s", {})}
    if "error" in ours:
        row["error"], row["log"] = ours["error"], ours["log"]
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
    parser.add_argument("--apart", action="store_true", help="time each side in a process of its own")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one family, rows on stdout
    parser.add_argument("--side", default="both", choices=["both", "reference", "ganforge"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.pgan_times = args.pgan_times or [args.pgan_res]
    if args.one:
        run_family(args.one, args)
        return
    forwarded = [arg for arg in _without_option(sys.argv[1:], "--families") if arg != "--apart"]
    print(f"torch {torch.__version__}, {args.device}, threads {torch.get_num_threads()}, widths / {args.width_div}")
    print(f"{'family':9s} {'res':>4s} {'reference s/it':>15s} " + " ".join(f"{m + ' s/it':>14s} {'speed-up':>8s}"
                                                                         for m in args.modes))
    rows = []
    for family in args.families:
        if args.apart:  # the reference's process, then ganforge's
            row = merged_sides(run_in_subprocess(family, [*forwarded, "--side", "reference"], args.family_limit_s),
                               run_in_subprocess(family, [*forwarded, "--side", "ganforge"], args.family_limit_s))
        else:
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
