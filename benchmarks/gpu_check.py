"""One GPU check: training in fp32, bf16 and compiled, resume, throughput, FLOP/s and MFU, peak memory, metric timings,
and the two routes of a convolution beside a resampling and of a gradient penalty's convolutions (which the size rules
of ganforge.nn.resample and ganforge.nn.double_backward off the CPU need).

    python benchmarks/gpu_check.py --device cuda --out gpu_check.json     # < 8 min on one H100/H200
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/c.json  # tiny sizes, < 1 min (run by the tests)

Every case runs in its own try/except and lands in the JSON with a status (ok, failed with the error, or skipped
with the reason); nothing is left out silently. The JSON is rewritten after every case, so a run stopped from outside
keeps what it measured. Eager cases run first, then compiled ones and fp32 with cuDNN autotuning (CUDA only), under
`--budget-s`: such a case that would start after the budget is recorded as skipped for that reason, and
`--case-limit-s` fails a case that hangs. Training cases compare each mode's losses with fp32 at step 1 and over the
run, beside a chaos control (fp32 from weights nudged by 1e-5; see family_cases).
FLOPs are counted once per case over one eager fp32 training step with torch's per-operator formulas (a dispatch
mode, so gradient-penalty steps count too), so TFLOP/s = FLOPs per step / seconds per step; MFU divides by the
device's dense peak (bf16 for bf16 runs, TF32 for fp32 and compiled runs, as the engine allows TF32 on CUDA).
On CUDA each timed case also runs one step under torch's sync debug mode and records its host synchronisations.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import gc
import json
import logging
import math
import os
import re
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_penalty  # noqa: E402 - the penalty routes' timings
from bench_resample import CUDA_CASES, QUICK_CASES, route_timings  # noqa: E402 - the resampling routes' timings
from reliability_runs import TINY_RUNS  # noqa: E402 - the suite's tiny config of every family

from ganforge.api import train  # noqa: E402
from ganforge.families import resolve_run_config  # noqa: E402
from ganforge.metrics.dinov2 import DINOV2_WEIGHTS, DINOv2, load_dinov2  # noqa: E402
from ganforge.metrics.evaluate import evaluate  # noqa: E402
from ganforge.metrics.fid import frechet_distance  # noqa: E402
from ganforge.metrics.float32 import reference_float32  # noqa: E402
from ganforge.metrics.inception import InceptionV3FID, default_cache_dir, load_inception  # noqa: E402
from ganforge.metrics.swd import swd  # noqa: E402
from ganforge.models.pgan import pgan_widths  # noqa: E402
from ganforge.training.engine import Trainer  # noqa: E402

# NVIDIA's dense peak TFLOP/s (bf16, tf32, fp32) by a fragment of the CUDA device name, the first match counting:
# PCIe and NVL boards run lower clocks and power than SXM ones, whose names CUDA gives without "SXM" (an H100 SXM is
# "NVIDIA H100 80GB HBM3", an H200 SXM "NVIDIA H200"); a name none matches has no MFU rather than a guessed one
PEAKS = (("H100 PCIe", (756.0, 378.0, 51.2)), ("H100 NVL", (835.0, 418.0, 60.0)), ("H200 NVL", (835.0, 418.0, 60.0)),
         ("H100", (989.0, 494.0, 67.0)), ("H200", (989.0, 494.0, 67.0)), ("A100", (312.0, 156.0, 19.5)))
MODES = {"fp32": ("off", False), "bf16": ("bf16", False), "compiled": ("off", True)}
AUTOTUNED = "cudnn_benchmark"  # fp32 with torch.backends.cudnn.benchmark on (CUDA only)
Case = tuple[str, Callable[[], dict[str, Any]]]
PERTURBATION = 1e-5  # relative nudge of every weight in the fp32 control run (bf16 rounds at 2^-9 = 2e-3)


def peaks(device: torch.device) -> tuple[str, tuple[float, float, float] | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((value for key, value in PEAKS if key in name), None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def eager_networks(trainer: Trainer) -> list[str]:
    """The networks of a compiled trainer that fell back to eager (training.speed.compile_network drops their
    compiled call and warns once, in the case where it happened)."""
    return [name for name, net in trainer.family.nets.items() if getattr(net, "_compiled_call_impl", None) is None]


def release_memory(device: torch.device) -> None:
    """Free what dropped trainers held (their networks and optimisers sit in reference cycles)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def build(config: dict[str, Any], mode: str, device: torch.device, scratch: Path) -> Trainer:
    amp, compiled = MODES[mode]
    config = {**copy.deepcopy(config), "device": str(device), "amp": amp, "compile": compiled, "progress": False,
              "tensorboard": False, "log_every": 10**9, "sample_every": 10**9, "checkpoint_every": 10**9}
    return Trainer(resolve_run_config(None, config), scratch, restart=True)


def host_syncs(trainer: Trainer, plan: Any) -> int | None:
    """Synchronising CUDA calls in one training step (torch's sync debug mode); None off CUDA."""
    if trainer.device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_step(plan)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def timed_steps(trainer: Trainer, start: int, warmup: int, steps: int) -> dict[str, Any]:
    """img/s and s/step at schedule step `start` (the plan is held fixed), peak memory, host syncs per step."""
    device = trainer.device
    trainer.step = start
    plan = trainer.family.plan(start)
    for _ in range(warmup):
        trainer.train_step(plan)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    drawn_before = trainer.images_seen
    begin = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(plan)
    sync(device)
    seconds = (time.perf_counter() - begin) / steps
    # the real images a step draws: BigGAN's D steps and accumulations draw several batches (its preset 8 of 256)
    reals_per_step = (trainer.images_seen - drawn_before) // steps
    return {"resolution": plan.resolution, "batch": plan.batch_size, "s_per_step": seconds,
            "img_per_s": plan.batch_size / seconds, "reals_per_step": reals_per_step,
            "reals_per_s": reals_per_step / seconds,
            "peak_mem_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "host_syncs_per_step": host_syncs(trainer, plan)}


class OperatorFlops(TorchDispatchMode):
    """Sums torch's per-operator FLOP formulas (flop_counter.flop_registry) over everything dispatched.
    FlopCounterMode itself attaches module hooks that break the autograd.grad of gradient penalties."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func.overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def step_flops(trainer: Trainer, start: int) -> int:
    """FLOPs of one eager training step at schedule step `start`, backward passes and penalties included."""
    trainer.step = start
    plan = trainer.family.plan(start)
    with OperatorFlops() as counter:
        trainer.train_step(plan)
    return counter.total


class CaseTimeout(BaseException):
    """Not an Exception: torch.compile wraps the Exceptions raised while it compiles into its own, which
    ganforge's compile fallback catches (the case then timed eager steps as compiled ones)."""


_ALARMS: list[float] = []  # when the case time limit fired: a case whose alarm fired failed, however it ended


def _on_alarm(signum: int, frame: Any) -> None:
    _ALARMS.append(time.perf_counter())
    raise CaseTimeout("case time limit reached")


class _LogLines(logging.Handler):
    """The first lines of the warnings a logger emits while attached."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.getMessage().splitlines() or [""])[0])


class Runner:
    """Runs cases in order, records each outcome, rewrites the JSON after each, and keeps the time budget."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device = args, device
        self.results: list[dict[str, Any]] = []
        self.begin = time.perf_counter()

    def record(self, name: str, fn: Callable[[], dict[str, Any]], *, budgeted: bool = False) -> None:
        if self.args.cases and not any(fnmatch.fnmatch(name, pattern) for pattern in self.args.cases):
            self.skip(name, f"not selected by --cases {' '.join(self.args.cases)}")
            return
        spent = time.perf_counter() - self.begin
        if budgeted and self.args.budget_s and spent > self.args.budget_s:
            self.skip(name, f"time budget of {self.args.budget_s:g} s spent ({spent:.0f} s) before this case")
            return
        begin = time.perf_counter()
        limit = self.args.case_limit_s
        _ALARMS.clear()
        if limit:
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.alarm(int(limit))
        dynamo = _LogLines()  # dynamo says it gave up recompiling (and runs the rest eagerly) in its log, not warnings
        logging.getLogger("torch._dynamo").addHandler(dynamo)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                entry = {"case": name, "status": "ok", **fn()}
            except (Exception, CaseTimeout) as err:  # noqa: BLE001 - recorded with its reason; the others still run
                entry = {"case": name, "status": "failed", "reason": f"{type(err).__name__}: {err}",
                         "traceback": traceback.format_exc(limit=3)}
            finally:
                if limit:
                    signal.alarm(0)
                logging.getLogger("torch._dynamo").removeHandler(dynamo)
        messages = list(dict.fromkeys((str(w.message).splitlines() or [""])[0] for w in caught)) + dynamo.lines
        if messages:
            entry["warnings"] = messages[:5]
        eager = next((m for m in messages if "runs eagerly" in m or "torch._dynamo hit config." in m), None)
        if _ALARMS:
            entry.update(status="failed", reason=f"case time limit of {limit:g} s reached")
        elif eager and "compiled" in name and entry["status"] == "ok":  # its figures would be eager ones
            entry.update(status="failed", reason=f"compiled, yet a network fell back to eager: {eager}")
        entry["wall_s"] = round(time.perf_counter() - begin, 2)
        self.results.append(entry)
        print(f"{entry['status']:7s} {name} ({entry['wall_s']} s)" + (f": {entry['reason']}" if "reason" in entry
                                                                       else ""), flush=True)
        self.save()

    def skip(self, name: str, reason: str) -> None:
        self.results.append({"case": name, "status": "skipped", "reason": reason})
        print(f"skipped {name}: {reason}", flush=True)
        self.save()

    def report(self) -> dict[str, Any]:
        return {"device": peaks(self.device)[0], "torch": torch.__version__, "quick": self.args.quick,
                "seconds": time.perf_counter() - self.begin, "cases": self.results}

    def save(self) -> None:
        self.args.out.write_text(json.dumps(self.report(), indent=1))


def relative_differences(run: list[dict[str, float]], reference: list[dict[str, float]]) -> list[float]:
    """Per step, the largest difference of any logged value from the reference run, relative to that value's size
    over the reference run (hinge losses pass through 0, so not to the value itself)."""
    scale = {k: max(max(abs(entry[k]) for entry in reference), 1e-6) for k in reference[0]}
    return [max(abs(a[k] - b[k]) / scale[k] for k in b) for a, b in zip(run, reference, strict=True)]


def perturb_weights(trainer: Trainer, relative: float, seed: int = 0) -> None:
    """Every trained weight times (1 + relative · N(0, 1)): a nudge of the size rounding makes."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, net in trainer.family.nets.items():
            if name in trainer.family.ema_pairs:
                continue
            for param in net.parameters():
                noise = torch.randn(param.shape, generator=generator).to(param.device, param.dtype)
                param.mul_(1 + relative * noise)


def family_cases(args: argparse.Namespace, device: torch.device) -> tuple[list[Case], list[Case]]:
    """(1) every family's tiny config trains in fp32, bf16 and compiled; losses finite; each compared with fp32.

    A difference from fp32 after 20 steps means little on its own: GAN training amplifies any difference (Adam
    divides by running gradient RMS, hinge and ReLU kinks switch), so the fp32 case also reruns with every weight
    nudged by a relative PERTURBATION and reports how far that run drifts (`perturbed_rel_diff`). bf16 or compiled
    drifting no more than that is rounding amplified by training; drifting at the first step
    (`first_step_rel_diff_vs_fp32`, same weights, no update yet) is the precision itself.
    Returns (eager cases, compiled cases)."""
    steps = 3 if args.quick else 20
    eager: list[Case] = []
    compiled: list[Case] = []
    for family, config in TINY_RUNS.items():
        fp32_losses: list[dict[str, float]] = []
        for mode in MODES:
            def case(family: str = family, config: dict = config, mode: str = mode,
                     fp32_losses: list = fp32_losses) -> dict[str, Any]:
                torch.manual_seed(0)
                logs = build(config, mode, device, args.scratch / family).stepped_losses(steps)
                finite = all(math.isfinite(v) for entry in logs for v in entry.values())
                out: dict[str, Any] = {"steps": steps, "finite": finite, "last": logs[-1]}
                if mode == "fp32":
                    fp32_losses[:] = logs
                    torch.manual_seed(0)
                    nudged = build(config, mode, device, args.scratch / family)
                    perturb_weights(nudged, PERTURBATION)
                    out["perturbed_rel_diff"] = max(relative_differences(nudged.stepped_losses(steps), logs))
                elif fp32_losses:
                    diffs = relative_differences(logs, fp32_losses)
                    out["first_step_rel_diff_vs_fp32"] = diffs[0]
                    out["max_rel_diff_vs_fp32"] = max(diffs)
                if not finite:
                    raise FloatingPointError(f"non-finite loss in {logs}")
                return out

            (compiled if mode == "compiled" else eager).append((f"train/{family}/{mode}", case))
    return eager, compiled


def resume_cases(args: argparse.Namespace, device: torch.device) -> list[Case]:
    """(6) every family's tiny config trained straight and in two pieces (stopped halfway, resumed from its
    checkpoint) on the device's defaults (CUDA: channels_last weights, fused Adam): the resumed run must finish with
    finite weights; `max_abs_diff` says how far its final weights are from the straight run's (0 on the CPU; on CUDA
    cuDNN's atomically accumulating kernels may leave rounding, which training amplifies). With `--deterministic`
    both runs take `deterministic: true`, which promises 0 (an op without a deterministic kernel fails the case,
    naming it); main() then sets cuBLAS's workspace before any CUDA work, as that mode needs."""
    cases: list[Case] = []
    for family, config in TINY_RUNS.items():
        def case(family: str = family, config: dict = config) -> dict[str, Any]:
            config = {**copy.deepcopy(config), "device": str(device), "checkpoint_every": 10**9, "log_every": 10**9,
                      "deterministic": args.deterministic}
            runs = args.scratch / "resume" / family
            total = train(config, runs / "straight", restart=True).total_steps
            train(config, runs / "pieces", restart=True, until=total // 2)
            if train(config, runs / "pieces").stop != "finished":
                raise RuntimeError("the resumed run did not finish")
            straight, pieces = (safetensors.torch.load_file(runs / name / "checkpoints" / f"{total:08d}.safetensors")
                                for name in ("straight", "pieces"))
            weights = [key for key in straight if key.startswith("net/")]
            if not all(torch.isfinite(pieces[key]).all() for key in weights):
                raise FloatingPointError("the resumed run's weights are not finite")
            diff = max((straight[key].double() - pieces[key].double()).abs().max().item() for key in weights)
            return {"steps": total, "stopped_at": total // 2, "deterministic": args.deterministic,
                    "max_abs_diff": diff}

        cases.append((f"resume/{family}", case))
    return cases


def throughput_configs(quick: bool) -> dict[str, tuple[dict[str, Any], list[int] | None]]:
    """name -> (run config, schedule steps to time; None: step 0). PGAN: the last step of each resolution."""
    res = 16 if quick else 128
    widths = [max(w // 16, 4) for w in pgan_widths(res)] if quick else pgan_widths(res)
    scales = res.bit_length() - 2
    pgan = {"family": "pgan", "data": f"builtin:shapes?count=256&resolution={res}", "model": {
        "resolution": res, "widths": widths, "latent_dim": widths[0],
        "schedule": {"max_iter_at_scale": [100] * scales, "alpha_jumps": 0, "alpha_jump_size": 1,
                     "batch_size": 4 if quick else 16}}}
    tiny = TINY_RUNS
    biggan = copy.deepcopy(tiny["biggan"]) if quick else {
        "family": "biggan", "data": "builtin:shapes?count=512&resolution=128", "model": {"batch_size": 256}}
    stargan2 = copy.deepcopy(tiny["stargan2"]) if quick else {
        "family": "stargan2", "data": "builtin:shapes?count=64&resolution=256", "model": {
            "resolution": 256, "domain_column": "shape", "w_hpf": 0.0, "batch_size": 8}}
    wgan = copy.deepcopy(tiny["wgan-gp"]) if quick else {
        "family": "wgan-gp", "data": "builtin:shapes?count=512&resolution=64", "model": {}}
    return {f"pgan{res}": (pgan, [100 * (i + 1) - 1 for i in range(scales)]), "biggan": (biggan, None),
            "stargan2": (stargan2, None), "wgan-gp": (wgan, None)}


def throughput_cases(args: argparse.Namespace, device: torch.device) -> tuple[list[Case], list[Case], list[Case]]:
    """(2)-(4) img/s, s/step, TFLOP/s, MFU, peak memory and host syncs of the real models in fp32, bf16 and
    compiled, and in fp32 with cuDNN autotuning (`torch.backends.cudnn.benchmark`, which BigGAN-PyTorch and StarGAN
    v2 set and ganforge does not yet: measured before it becomes a default). Compiled PGAN is timed at its two
    largest resolutions only (each resolution compiles anew). Every case after fp32 says its speed-up over fp32.
    Returns (eager cases, compiled cases, autotuned cases)."""
    warmup, steps = (1, 2) if args.quick else (3, 10)
    device_name, peak = peaks(device)
    eager: list[Case] = []
    compiled: list[Case] = []
    autotuned: list[Case] = []
    # one trainer alive at a time, so that a case's peak memory is its own: the cases of one model and mode follow
    # each other (every start), and the trainer is built anew when either changes
    live: dict[str, Any] = {"key": None, "trainer": None}
    for name, (config, starts) in throughput_configs(args.quick).items():
        flops: dict[int, int] = {}
        fp32_seconds: dict[int, float] = {}
        starts = starts or [0]
        for mode in [*MODES, AUTOTUNED]:
            for start in starts:
                if mode == "compiled" and start not in starts[-2:]:
                    continue

                def case(config: dict = config, mode: str = mode, start: int = start, name: str = name,
                         flops: dict = flops, fp32_seconds: dict = fp32_seconds) -> dict[str, Any]:
                    if live["key"] != (name, mode):
                        live["trainer"] = None
                        release_memory(device)
                        live["trainer"] = build(config, "fp32" if mode == AUTOTUNED else mode, device,
                                                args.scratch / f"speed-{name}-{mode}")
                        live["key"] = (name, mode)
                    trainer = live["trainer"]
                    if start not in flops:
                        flops[start] = step_flops(build(config, "fp32", device, args.scratch / "flops"), start)
                        release_memory(device)  # the counting trainer's
                    autotune = torch.backends.cudnn.benchmark
                    torch.backends.cudnn.benchmark = mode == AUTOTUNED or autotune
                    try:
                        out = timed_steps(trainer, start, warmup, steps)
                    finally:
                        torch.backends.cudnn.benchmark = autotune
                    if mode == "compiled" and (eager := eager_networks(trainer)):  # fell back in an earlier case
                        raise RuntimeError(f"compiled, yet {', '.join(eager)} run eagerly (compiling failed; the "
                                           "warnings of this model's first compiled case say why)")
                    out["device"] = device_name
                    out["tflop_per_step"] = flops[start] / 1e12
                    out["tflop_per_s"] = flops[start] / out["s_per_step"] / 1e12
                    if peak is not None:
                        out["mfu"] = out["tflop_per_s"] / (peak[0] if mode == "bf16" else peak[1])
                    if mode == "fp32":
                        fp32_seconds[start] = out["s_per_step"]
                    elif start in fp32_seconds:
                        out["speedup_vs_fp32"] = fp32_seconds[start] / out["s_per_step"]
                    return out

                group = compiled if mode == "compiled" else autotuned if mode == AUTOTUNED else eager
                group.append((f"speed/{name}/step{start}/{mode}", case))
    return eager, compiled, autotuned


def metric_cases(args: argparse.Namespace, device: torch.device) -> list[Case]:
    """(5) FID and FD_DINOv2 feature extraction img/s, SWD of 16,384 images per set at 128 px, Fréchet distance
    time."""
    n_features, batch = (8, 8) if args.quick else (2048, 256)

    def feature_rate(load: Callable[[], torch.nn.Module], stand_in: Callable[[], torch.nn.Module],
                     weights: str) -> dict[str, Any]:
        """img/s of a feature network on uint8 64 px images (resized inside to its input size); without its weights
        here, the same network with random weights (the same arithmetic)."""
        try:
            model = load()
        except Exception as err:  # noqa: BLE001 - no weights here: time the same network with random weights
            model, weights = stand_in().to(device).eval(), f"random stand-in weights ({type(err).__name__})"
        images = torch.randint(0, 256, (n_features, 3, 64, 64), dtype=torch.uint8)

        @torch.no_grad()
        @reference_float32()  # as metrics run them: the train cases before left TF32 matmuls on
        def run(count: int) -> None:
            for start in range(0, count, batch):
                model(images[start:start + batch].to(device))

        if not args.quick:
            run(8)  # warm-up: cuDNN autotuning
        sync(device)
        begin = time.perf_counter()
        run(n_features)
        sync(device)
        return {"images": n_features, "img_per_s": n_features / (time.perf_counter() - begin), "weights": weights}

    def inception() -> dict[str, Any]:
        return feature_rate(lambda: load_inception(device=device), InceptionV3FID, "real FID Inception weights")

    def dinov2() -> dict[str, Any]:
        def local_weights() -> torch.nn.Module:  # never a 1.2 GB download inside a timed check
            path = Path(os.environ.get(DINOV2_WEIGHTS.env) or default_cache_dir() / "weights" / DINOV2_WEIGHTS.name)
            if args.quick or not path.is_file():
                raise FileNotFoundError(f"--quick, or no {path}")
            return load_dinov2(path, device=device)

        # --quick: a narrow ViT of the same design (the full one's 304M parameters take seconds to build on a CPU)
        stand_in = (lambda: DINOv2(dim=64, depth=2, heads=4)) if args.quick else DINOv2
        return feature_rate(local_weights, stand_in, "real DINOv2 ViT-L/14 weights")

    def sliced() -> dict[str, Any]:
        n, res = (64, 32) if args.quick else (16384, 128)
        generator = torch.Generator().manual_seed(0)
        a = torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8, generator=generator)
        b = torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8, generator=generator)
        begin = time.perf_counter()
        value = swd(a, b, device=device)
        return {"images_per_set": n, "resolution": res, "seconds": time.perf_counter() - begin,
                "swd_avg": float(value["avg"])}

    def on_device_vs_cpu() -> dict[str, Any]:
        """`evaluate`'s pixel metrics where training-time metrics now run (the training GPU) against the CPU, where
        they ran before: the same values up to float rounding."""
        n, res = (32, 32) if args.quick else (1024, 64)
        generator = torch.Generator().manual_seed(1)
        a, b = (torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8, generator=generator) for _ in range(2))
        values, seconds = {}, {}
        evaluate(a[:8], b[:8], ["swd", "msssim"], device=device)  # warm-up: the device's first kernels
        for where in (device, torch.device("cpu")):
            begin = time.perf_counter()
            result = evaluate(a, b, ["swd", "msssim"], device=where)
            sync(device)
            seconds[where.type] = time.perf_counter() - begin
            values[where.type] = {"swd_avg": float(result["swd"]["avg"]), "msssim": float(result["msssim"]["mean"])}
        return {"images_per_set": n, "resolution": res, "values": values, "seconds": seconds,
                "max_rel_diff": max(abs(values[device.type][k] - values["cpu"][k]) / abs(values["cpu"][k])
                                    for k in values["cpu"])}

    def frechet() -> dict[str, Any]:
        dim, samples = (64, 256) if args.quick else (2048, 10000)
        feats = torch.randn(2, samples, dim, dtype=torch.float64)
        stats = [(f.mean(0), torch.cov(f.T)) for f in feats]
        frechet_distance(*stats[0], *stats[1], device=device)  # warm-up: cuSOLVER's and cuBLAS's first calls
        sync(device)
        begin = time.perf_counter()
        value = frechet_distance(*stats[0], *stats[1], device=device)
        sync(device)
        return {"dim": dim, "seconds": time.perf_counter() - begin, "value": value}

    return [("metric/fid_features", inception), ("metric/dinov2_features", dinov2), ("metric/swd", sliced),
            ("metric/on_device_vs_cpu", on_device_vs_cpu), ("metric/frechet", frechet)]


def resample_case(args: argparse.Namespace, device: torch.device) -> Case:
    """(6) The two routes of every resampling convolution (benchmarks/bench_resample.py) at GPU shapes: where one
    strided convolution beats upsample/pool plus conv3×3 on this GPU, which sets ganforge.nn.resample's rule off the
    CPU (StyleGAN's 128 px until measured)."""
    def routes() -> dict[str, Any]:
        rows = route_timings(device, QUICK_CASES if args.quick else CUDA_CASES, 2 if args.quick else 10)
        return {"rows": rows, "rule_right": sum((r["rule"] == "fused") == (r["speed_up"] > 1) for r in rows),
                "cases": len(rows)}

    return ("resample/routes", routes)


def penalty_case(args: argparse.Namespace, device: torch.device) -> Case:
    """(7) A gradient penalty's convolutions on autograd's double backward and on ganforge.nn.double_backward's route
    (benchmarks/bench_penalty.py) at GPU shapes: whether the route's size rule, set on the CPU, holds on this GPU."""
    def routes() -> dict[str, Any]:
        cases = bench_penalty.QUICK_CASES if args.quick else bench_penalty.CUDA_CASES
        rows = bench_penalty.penalty_timings(device, cases, 2 if args.quick else 10)
        return {"rows": rows, "rule_right": sum((r["rule"] == "route") == (r["speed_up"] > 1) for r in rows),
                "cases": len(rows)}

    return ("penalty/routes", routes)


def table(results: list[dict[str, Any]]) -> str:
    """One row per case; training cases end with their loss differences (see family_cases)."""
    lines = [f"{'case':40s} {'status':8s} {'img/s':>9s} {'s/step':>8s} {'x fp32':>6s} {'TFLOP/s':>8s} {'MFU':>6s} "
             f"{'mem GB':>7s} {'syncs':>5s}"]
    for entry in results:
        def cell(key: str, fmt: str, entry: dict = entry) -> str:
            value = entry.get(key)
            width = int(re.match(r"\d*", fmt).group() or 0)
            return format(value, fmt) if isinstance(value, (int, float)) else "-".rjust(width)
        notes = [f"{label} {entry[key]:.1e}" for key, label in (
            ("first_step_rel_diff_vs_fp32", "vs fp32: step 1"), ("max_rel_diff_vs_fp32", "max"),
            ("perturbed_rel_diff", f"fp32 nudged by {PERTURBATION:g}: max"),
            ("max_abs_diff", "resumed vs straight: weights"), ("max_rel_diff", "vs CPU: max rel diff"))
            if key in entry]
        if "weights" in entry:  # feature networks: real weights, or a stand-in of the same arithmetic
            notes.append(entry["weights"])
        if entry["status"] != "ok":
            notes.append(entry["reason"][:80])
        lines.append(f"{entry['case']:40s} {entry['status']:8s} {cell('img_per_s', '9.1f')} "
                     f"{cell('s_per_step', '8.4f')} {cell('speedup_vs_fp32', '6.2f')} {cell('tflop_per_s', '8.2f')} "
                     f"{cell('mfu', '6.1%')} {cell('peak_mem_gb', '7.2f')} {cell('host_syncs_per_step', '5d')}"
                     + (f"  {', '.join(notes)}" if notes else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CPU, the test suite)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/ganforge-gpu-check"))
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="no compiled or autotuned case starts after this many seconds (0: no budget); the "
                        "default and --case-limit-s's leave time for the eager cases of one H100/H200 (8 minutes)")
    parser.add_argument("--cases", nargs="*", default=None, help="run only the cases matching these globs "
                        "(e.g. '*/compiled'); the others are recorded as not selected")
    parser.add_argument("--case-limit-s", type=float, default=120.0, help="a case running longer fails (0: none)")
    parser.add_argument("--deterministic", action="store_true", help="the resume cases train with `deterministic: "
                        "true` (run them alone: cuBLAS's deterministic workspace is then set for the whole process)")
    args = parser.parse_args(argv)
    if args.deterministic:  # cuBLAS reads it at its first use in the process
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device {args.device}: expected cuda, cuda:N or cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here (--device cpu --quick checks the script itself)")
    runner = Runner(args, device)
    train_eager, train_compiled = family_cases(args, device)
    speed_eager, speed_compiled, speed_autotuned = throughput_cases(args, device)
    resumes = resume_cases(args, device)
    if args.quick:  # tests/test_reliability_kill.py resumes every family exactly on the CPU
        for name, _ in [c for c in resumes if c[0] != "resume/wgan-gp"]:
            runner.skip(name, "--quick: resume/wgan-gp stands for the rest (the kill tests resume every family)")
        resumes = [c for c in resumes if c[0] == "resume/wgan-gp"]
    for name, case in train_eager + resumes + speed_eager + metric_cases(args, device) + [
            resample_case(args, device), penalty_case(args, device)]:
        runner.record(name, case)
    if args.quick:  # compiling takes minutes on CPU: one family stands for the rest
        for name, _ in speed_compiled + [c for c in train_compiled if c[0] != "train/wgan-gp/compiled"]:
            runner.skip(name, "--quick: compiling takes minutes on CPU; train/wgan-gp/compiled stands for the rest")
        train_compiled = [c for c in train_compiled if c[0] == "train/wgan-gp/compiled"]
        speed_compiled = []
    if device.type != "cuda":
        for name, _ in speed_autotuned:
            runner.skip(name, "cuDNN autotuning exists on CUDA only")
        speed_autotuned = []
    # every family compiles at all, then the real models' compiled speed, then cuDNN autotuning
    for name, case in train_compiled + speed_compiled + speed_autotuned:
        runner.record(name, case, budgeted=True)
    runner.save()
    print(table(runner.results))
    print(f"{len(runner.results)} cases in {runner.report()['seconds']:.0f} s; JSON in {args.out}")
    return runner.report()


if __name__ == "__main__":
    main()
