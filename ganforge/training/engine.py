"""The one training loop every family runs in.

Per step: ask the family for its plan (batch size, resolution, schedule position), run its phases (each: fetch
data if needed, forward the loss under autocast, backward, average gradients across ranks, step the optimisers of
the networks it trains), update EMA networks, then on ticks write logs, sample grids, metrics and checkpoints.
Everything random flows from the config seed through the torch RNG and the loader's (seed, epoch) permutation,
both saved in checkpoints, so a resumed run continues the same random streams.
"""

from __future__ import annotations

import contextlib
import json
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as torch_dist

from ganforge.augment.augmenter import Augmenter
from ganforge.config import ConfigError, RunConfig, to_dict
from ganforge.data.loader import Batch, BatchLoader
from ganforge.data.store import open_dataset
from ganforge.distributed import DistInfo, init_distributed, pick_device, shutdown_distributed
from ganforge.families import get_family, resolve_run_config
from ganforge.families.base import Family, StepPlan
from ganforge.nn.ema import ema_update
from ganforge.training import checkpoint as ckpt
from ganforge.training.log import RunLogger
from ganforge.training.loss_scale import DynamicLossScale
from ganforge.training.speed import compile_networks
from ganforge.viz.animation import write_progress_gif
from ganforge.viz.grid import save_grid
from ganforge.viz.report import ReportRefresher

FIXED_LATENT_OFFSET = 1_000_003  # fixed sample latents use their own seed, apart from the training stream
MAX_ROLLBACKS = 3


class NonFiniteError(RuntimeError):
    """A loss or weight became NaN/Inf; names the phase and step so the run can be inspected."""


class PendingValues:
    """What the steps since the last host read left on the training device: the sums of their log values and, per
    phase, the first non-finite loss (step and value). Nothing here waits for the device; `read` fetches it all in
    one transfer at a log, sample, metric or checkpoint point, so a GPU runs ahead of the host between those."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.first_nonfinite: dict[str, torch.Tensor] = {}  # phase -> [step, loss]; step -1 while all finite

    def watch_loss(self, step: int, phase: str, loss: torch.Tensor) -> None:
        """Remember (on the device) the first step at which `phase`'s loss is NaN/Inf, with its value."""
        value = loss.detach().double()
        first = self.first_nonfinite.get(phase)
        if first is None:
            first = self.first_nonfinite[phase] = torch.full((2,), -1.0, dtype=torch.float64, device=value.device)
        is_first = ~torch.isfinite(value) & (first[0] < 0)
        first.copy_(torch.where(is_first, torch.stack([torch.full_like(value, step), value]), first))

    def add_step(self, logs: dict[str, torch.Tensor | float]) -> None:
        """Add one step's log values (summed in float64, as Python floats would be)."""
        for key, value in logs.items():
            value = torch.as_tensor(value).detach().double()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.steps += 1

    def read(self, *, logs: bool) -> dict[str, float]:
        """One device→host transfer: raise NonFiniteError for the earliest non-finite loss since the last read;
        with `logs`, return the mean log values of the steps since then and start a new average."""
        phases = list(self.first_nonfinite)
        keys = list(self.sums) if logs else []
        parts = [self.first_nonfinite[p] for p in phases] + [self.sums[k].reshape(1) for k in keys]
        values = torch.cat(parts).tolist() if parts else []
        found = [(values[2 * i], i) for i in range(len(phases)) if values[2 * i] >= 0]
        if found:
            step, index = min(found)
            raise NonFiniteError(f"step {int(step)}, phase {phases[index]}: loss is {values[2 * index + 1]}; "
                                 "stopping before it reaches a checkpoint or a sample")
        means = {key: value / self.steps for key, value in zip(keys, values[2 * len(phases):], strict=True)}
        if logs:
            self.sums, self.steps = {}, 0
        return means


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    interrupted: bool


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """The forward passes' precision: float32 unless the config asks for autocast (`auto`: bf16 on CUDA only)."""
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if amp == "fp16":
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()


class Trainer:
    """Builds a run (new or resumed) and trains it to the end of the family's schedule."""

    def __init__(self, config: RunConfig, run_dir: Path, *, restart: bool = False,
                 dist: DistInfo | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.dist = dist or init_distributed("cuda" if config.device.startswith("cuda") or (
            config.device == "auto" and torch.cuda.is_available()) else "cpu")
        self.device = pick_device(config.device, self.dist)
        if self.device.type == "cuda":  # float32 storage and sums; matmuls and convolutions on TF32 tensor cores
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        resume = None if restart else ckpt.latest_valid_checkpoint(self.run_dir)
        if resume is not None:
            _check_same_config(self.run_dir, resume.meta["config"], to_dict(config))
        self.config = config
        self.loss_scale = DynamicLossScale(device=self.device) if config.amp == "fp16" else None
        if config.metrics:
            check_training_metrics(config)
        torch.manual_seed(config.seed)  # same on every rank: identical initial weights everywhere
        self.dataset = open_dataset(config.data)
        family_cls = get_family(config.family)
        self.family: Family = family_cls(config.model, self.dataset, self.device, self.dist)
        check_batch_sizes(self.family, self.dist.world_size)
        if self.device.type == "cuda":
            for net in self.family.nets.values():
                net.to(memory_format=torch.channels_last)
        if config.compile:
            compile_networks(self.family.nets)
        self.loader = BatchLoader(self.dataset, seed=config.seed, dist=self.dist, device=self.device,
                                  options=self.family.data_options())
        # draws from the device's default stream, global batch then shard: resume and W processes augment alike
        self.augmenter = Augmenter(config.augment, self.dist)
        self.family.augment = self.augmenter if self.augmenter.enabled else None
        self.step = 0
        self.images_seen = 0
        if resume is not None:
            self._restore(resume)
        self.fixed_inputs = self.family.sample_latents(
            config.sample_count, torch.Generator().manual_seed(config.seed + FIXED_LATENT_OFFSET))
        self._stop_requested = False
        self.pending = PendingValues()
        if restart and self.dist.is_main:  # last: only a config, dataset and family that all work replace the run
            delete_checkpoints(self.run_dir)

    # --- state ------------------------------------------------------------------------------------------------
    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = ckpt.run_state(self.config, self.family, self.step, images_seen=self.images_seen,
                                       loader_state=self.loader.state_dict(),
                                       loss_scale=self.loss_scale.state_dict() if self.loss_scale else None,
                                       world_size=self.dist.world_size)
        meta["augment"] = self.augmenter.state_dict()  # ADA's p and its statistic's accumulators
        return tensors, meta

    def _restore(self, resume: ckpt.Checkpoint) -> None:
        meta, tensors = resume.meta, resume.tensors
        if meta.get("family") != self.family.name:
            raise ckpt.CheckpointError(f"{resume.path}: checkpoint of family {meta.get('family')!r}, "
                                       f"not {self.family.name!r}")
        ckpt.load_network_states(self.family.nets, tensors, resume.path)
        for name, optimizer in self.family.optimizers.items():
            ckpt.optimizer_from_tensors(name, optimizer, tensors, meta["optimizers"][name])
        torch.set_rng_state(tensors["rng/torch"])
        if self.device.type == "cuda" and "rng/cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng/cuda"], self.device)
        self.loader.load_state_dict(meta["loader"])
        if self.loss_scale is not None and meta.get("loss_scale"):
            self.loss_scale.load_state_dict(meta["loss_scale"])
        self.family.load_family_state(meta.get("family_state", {}))
        self.augmenter.load_state_dict(meta.get("augment", {}))
        self.step = resume.step
        self.images_seen = int(meta.get("images_seen", 0))

    def save_checkpoint(self, score: float | None = None) -> None:
        """Write a checkpoint; with `score` (the run's `best_metric` at this step) keep it among the best."""
        self.check_ranks_in_sync()
        self.augmenter.flush()  # every rank: ADA's signs since its last adjustment are summed into the state
        if not self.dist.is_main:
            return
        tensors, meta = self.state_tensors()
        for name, value in tensors.items():
            if value.dtype.is_floating_point and not torch.isfinite(value).all():
                raise NonFiniteError(f"step {self.step}: {name} holds NaN/Inf; no checkpoint written")
        best = self.update_best(score)
        try:
            ckpt.save_checkpoint(self.run_dir, self.step, tensors, meta, keep=self.config.keep_checkpoints,
                                 protect={entry["step"] for entry in best})
        except OSError as err:
            raise ckpt.CheckpointError(
                f"could not write checkpoint {self.step} in {ckpt.checkpoint_dir(self.run_dir)}: {err.strerror} "
                "(disk full or not writable?); the earlier checkpoints are intact") from None
        if score is not None:
            ckpt.write_json_atomic(self.run_dir / "best.json", {"metric": self.config.best_metric, "best": best})

    def update_best(self, score: float | None) -> list[dict[str, Any]]:
        """The `keep_best` best (step, value) pairs so far, including this step's score."""
        path = self.run_dir / "best.json"
        best = json.loads(path.read_text())["best"] if path.is_file() else []
        if score is None:
            return best
        from ganforge.metrics.registry import higher_is_better

        best = [entry for entry in best if entry["step"] != self.step] + [{"step": self.step, "value": score}]
        best.sort(key=lambda e: -e["value"] if higher_is_better(self.config.best_metric) else e["value"])
        return best[: self.config.keep_best]

    def check_ranks_in_sync(self) -> None:
        """Every rank must hold the same weights; a silent divergence would make the checkpoint a lie."""
        if not self.dist.enabled:
            return
        with torch.no_grad():
            local = torch.stack([p.double().sum() for net in self.family.nets.values() for p in net.parameters()])
        gathered = [torch.empty_like(local) for _ in range(self.dist.world_size)]
        torch_dist.all_gather(gathered, local)
        if any(not torch.allclose(g, gathered[0], rtol=1e-6, atol=1e-8) for g in gathered[1:]):
            raise RuntimeError(f"step {self.step}: ranks hold different weights (distributed training diverged)")

    # --- the loop ---------------------------------------------------------------------------------------------
    def train(self, until: int | None = None) -> TrainResult:
        """Train to the end of the schedule, or stop (with a checkpoint) once `until` steps are done."""
        family, config = self.family, self.config
        total = family.total_steps()
        stop_at = total if until is None else min(until, total)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.write_json_atomic(self.run_dir / "config.json", to_dict(config))
        logger = RunLogger(self.run_dir, total_steps=total, start_step=self.step, enabled=self.dist.is_main,
                           progress=config.progress, tensorboard=config.tensorboard)
        logger.log_config(to_dict(config))
        report = ReportRefresher(self.run_dir) if self.dist.is_main else None  # RUN/report.html
        self.pending = PendingValues()
        rollbacks = 0
        previous_handlers = self._install_signal_handlers()
        try:
            while self.step < stop_at and not self._stop_requested:
                plan = family.plan(self.step)
                seen_before = self.images_seen
                self.pending.add_step(self.train_step(plan))
                self.step += 1
                logger.count_images(self.images_seen - seen_before)
                last = self.step == total
                log_tick = self.step % config.log_every == 0 or last
                sample_tick = self.dist.is_main and (self.step % config.sample_every == 0 or last)
                metric_tick = bool(config.metrics) and bool(
                    (config.metrics_every and self.step % config.metrics_every == 0) or last)
                checkpoint_tick = self.step % config.checkpoint_every == 0 or last
                if not (log_tick or sample_tick or metric_tick or checkpoint_tick or self.step == stop_at
                        or self._stop_requested):
                    logger.step_done(None)  # no host point: the device runs ahead
                    continue
                try:  # before anything is written: a NaN/Inf loss since the last read stops or rolls back here
                    means = self.pending.read(logs=log_tick)
                except NonFiniteError as err:
                    if config.on_nan != "rollback" or rollbacks >= MAX_ROLLBACKS:
                        raise
                    rollbacks += 1
                    self.roll_back(err, logger, rollbacks)
                    continue
                logger.step_done({**plan.progress, **means} if log_tick else None)
                if log_tick:
                    record = {"step": self.step, "kimg": self.images_seen / 1000, **plan.progress, **means,
                              "img_per_s": logger.throughput()}
                    if self.augmenter.p is not None:
                        record["aug_p"] = self.augmenter.p  # ADA's probability after this step
                    logger.log(record)
                if sample_tick:
                    logger.sample_images(self.step, self.write_samples(plan))
                scored = self.run_metrics(plan, logger) if metric_tick else None
                if checkpoint_tick or scored is not None:
                    self.save_checkpoint(score=scored)
                if report is not None and self.step % config.sample_every == 0:
                    report.tick()
            if self.step < total and (self._stop_requested or self.step == stop_at):
                self.pending.read(logs=False)  # a stop requested mid-interval: no checkpoint of non-finite weights
                self.save_checkpoint()
                if self._stop_requested:
                    logger.message(f"interrupted: checkpoint written at step {self.step} in {self.run_dir}")
        finally:
            self._restore_signal_handlers(previous_handlers)
            self.loader.close()
            logger.close()
            if self.dist.is_main:
                write_progress_gif(self.run_dir / "samples")
            if report is not None:
                report.write()
        return TrainResult(self.run_dir, self.step, interrupted=self.step < total)

    def roll_back(self, err: NonFiniteError, logger: RunLogger, attempt: int) -> None:
        """`on_nan: rollback`: back to the newest valid checkpoint, with reseeded noise and a skipped data batch so
        the failure is not replayed exactly (the run is then no longer bit-identical to an uninterrupted one)."""
        found = ckpt.latest_valid_checkpoint(self.run_dir)
        if found is None:
            raise NonFiniteError(f"{err}; no checkpoint to roll back to in {self.run_dir}") from err
        self._restore(found)
        self.pending = PendingValues()  # the discarded steps' logs and flags go with them
        torch.manual_seed(self.config.seed + 7919 * attempt)
        plan = self.family.plan(self.step)
        self.loader.next(plan.batch_size, plan.resolution, blend=plan.real_blend)
        logger.log({"step": self.step, "event": "rollback", "reason": str(err), "attempt": attempt})
        logger.message(f"{err}: rolled back to step {found.step} (attempt {attempt} of {MAX_ROLLBACKS})")

    def stepped_losses(self, steps: int) -> list[dict[str, float]]:
        """`steps` bare training steps (no ticks), each step's logged values as floats: for comparing two settings
        step by step (compiled against eager, bf16 against fp32). Reads the device once per step, unlike `train`."""
        values = []
        for _ in range(steps):
            values.append({key: float(value) for key, value in self.train_step(self.family.plan(self.step)).items()})
            self.step += 1
        return values

    def train_step(self, plan: StepPlan) -> dict[str, torch.Tensor]:
        """One step of every phase; returns the log values as device tensors and leaves the non-finite check of
        its losses in `self.pending` (read at the next host point), so nothing here waits for the device."""
        family = self.family
        family.begin_step(self.step, plan)
        logs: dict[str, torch.Tensor] = {}
        latest: Batch | None = None  # the step's latest real batch: what `data="previous"` phases receive
        for phase in family.phases(self.step, plan):
            for name, net in family.nets.items():
                if name not in family.ema_pairs:
                    net.requires_grad_(name in phase.trains)
            params = [p for name in phase.trains for p in family.nets[name].parameters()]
            drawn: list[Batch] = []  # kept for `reuse_batch` phases
            for repeat in range(phase.repeats):
                for name in phase.trains:
                    family.optimizers[name].zero_grad(set_to_none=True)
                for micro in range(phase.accumulate):
                    batch = None
                    if phase.data == "previous":
                        if latest is None:
                            raise RuntimeError(f"phase {phase.name} takes the previous phase's batch, but no earlier "
                                               "phase of this step drew one")
                        batch = latest
                    elif phase.data == "fresh" and phase.reuse_batch and repeat > 0:
                        batch = drawn[micro]
                    elif phase.data == "fresh":
                        batch = latest = self.loader.next(plan.batch_size, plan.resolution, blend=plan.real_blend)
                        self.images_seen += plan.batch_size
                        if phase.reuse_batch:
                            drawn.append(batch)
                    with _autocast(self.device, self.config.amp):
                        loss, phase_logs = phase.loss(batch)
                    self.pending.watch_loss(self.step, phase.name, loss)
                    loss = loss / phase.accumulate if phase.accumulate > 1 else loss
                    (self.loss_scale.scale(loss) if self.loss_scale else loss).backward()
                self.dist.all_reduce_grads(params)
                if self.loss_scale is not None:  # fp16 overflow: every rank skips this update and lowers the scale
                    found_inf = self.loss_scale.unscale(params)
                    stepped = [self.loss_scale.step(family.optimizers[name], found_inf) for name in phase.trains]
                    self.loss_scale.update(found_inf)
                    if not all(stepped):
                        continue
                else:
                    for name in phase.trains:
                        family.optimizers[name].step()
                if phase.after_step is not None:
                    phase.after_step()
                logs.update(phase_logs)  # the last micro-batch's values
        self.augmenter.end_step(plan.batch_size)
        decay = family.ema_decay(self.step)
        if decay is not None:
            for ema_name, source in family.ema_pairs.items():
                ema_update(family.nets[ema_name], family.nets[source], decay)
        return logs

    # --- outputs ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def write_samples(self, plan: StepPlan) -> dict[str, Path]:
        """The fixed-latent grids of this step, one per `family.sample_nets()` (an EMA generator's as STEP.png,
        others as STEP-NET.png); returns network name → PNG written."""
        inputs = {k: v.to(self.device) for k, v in self.fixed_inputs.items()}
        samples = self.run_dir / "samples"
        written = {}
        for net in self.family.sample_nets():
            suffix = "" if net in self.family.ema_pairs else f"-{net}"
            written[net] = samples / f"{self.step:08d}{suffix}.png"
            save_grid(self.family.generate(inputs, net, plan), written[net])
        return written

    def run_metrics(self, plan: StepPlan, logger: RunLogger) -> float | None:
        """Evaluate the configured metrics on rank 0; returns the `best_metric` value, if one is configured."""
        from ganforge.evaluation.run_metrics import evaluate_family

        if not self.dist.is_main:
            return None
        results = evaluate_family(self.family, self.dataset, plan, self.config.metrics, n=self.config.metrics_n,
                                  seed=self.config.seed, inception_weights=self.config.inception_weights,
                                  fid_mode=self.config.fid_mode)
        logger.metrics({"step": self.step, "kimg": self.images_seen / 1000, **results})
        if self.config.best_metric is None:
            return None
        if self.config.best_metric not in results:
            raise ConfigError(f"best_metric: {self.config.best_metric!r} is not among the computed values "
                              f"{sorted(results)}")
        return float(results[self.config.best_metric])

    # --- signals ----------------------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> dict[int, Any]:
        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_requested:  # second signal: stop now
                raise KeyboardInterrupt
            self._stop_requested = True

        previous = {}
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, request_stop)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def delete_checkpoints(run_dir: Path) -> None:
    """`--restart`: the run's checkpoints and the best-checkpoint list that indexes them go."""
    for step in ckpt.checkpoint_steps(run_dir):
        (ckpt.checkpoint_dir(run_dir) / f"{step:08d}.json").unlink()
        (ckpt.checkpoint_dir(run_dir) / f"{step:08d}.safetensors").unlink(missing_ok=True)
    (run_dir / "best.json").unlink(missing_ok=True)


def check_batch_sizes(family: Family, world_size: int) -> None:
    """Every global batch size of the schedule must split evenly over the processes: uneven shares would still
    have their gradients averaged with equal weights."""
    for key, size in family.batch_sizes().items():
        if size % world_size:
            raise ConfigError(f"{key}: batch size {size} is not divisible by the {world_size} processes; use a "
                              f"multiple of {world_size}")


def check_training_metrics(config: RunConfig) -> None:
    """Unknown metric names, and Inception weights that cannot be had, fail now rather than hours into a run."""
    from ganforge.metrics.inception import resolve_weights_path
    from ganforge.metrics.registry import METRICS, check_metrics

    if any(METRICS[name].needs_inception for name in check_metrics(config.metrics)):
        resolve_weights_path(config.inception_weights)


def _check_same_config(run_dir: Path, saved: dict[str, Any], requested: dict[str, Any]) -> None:
    """A resume must not silently change the run: any difference in the config is an error, except a longer
    schedule (training on for more steps changes nothing already done) and presentation-only keys. The saved
    config is read as a config file would be, so keys added since it was written compare at their defaults."""
    try:
        saved = to_dict(resolve_run_config(None, dict(saved)))
    except ConfigError as err:
        raise ConfigError(f"{run_dir}: the run's saved config does not load: {err}") from None
    keys = ("progress", "tensorboard", "on_nan", "inception_weights", "compile")  # same weights: may change
    differing = [k for k in sorted(set(saved) | set(requested))
                 if k not in keys and saved.get(k) != requested.get(k)]
    if differing == ["model"] and saved.get("family") == requested.get("family") and get_family(
            saved["family"]).extends_schedule(saved["model"], requested["model"]):
        return
    if differing:
        detail = "; ".join(f"{k}: run has {json.dumps(saved.get(k))}, now {json.dumps(requested.get(k))}"
                           for k in differing[:4])
        raise ConfigError(f"{run_dir} was trained with a different config ({detail}). Resume without -c/--set, "
                          "or start over with --restart or a new --run directory.")


def train(config: RunConfig, run_dir: Path, *, restart: bool = False, until: int | None = None) -> TrainResult:
    """Train (or resume) the run in `run_dir`; returns where it stopped."""
    trainer = Trainer(config, run_dir, restart=restart)
    try:
        return trainer.train(until=until)
    finally:
        shutdown_distributed(trainer.dist)
