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
import os
import signal
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as torch_dist

from ganforge.augment.augmenter import Augmenter
from ganforge.config import RESUMABLE_CHANGES, ConfigError, RunConfig, to_dict
from ganforge.data.loader import Batch, BatchLoader
from ganforge.data.store import open_dataset, resolved_data_spec
from ganforge.distributed import DistInfo, init_distributed, pick_device, shutdown_distributed
from ganforge.errors import RankFailedError, RunStopped, is_out_of_memory
from ganforge.families import get_family, migrated_saved_config, resolve_run_config
from ganforge.families.base import Family, StepPlan
from ganforge.nn.ema import EmaPair
from ganforge.nn.spectral_norm import singular_value_estimates
from ganforge.training import checkpoint as ckpt
from ganforge.training.log import (
    EARLY_STOP_EVENT,
    PER_CLASS_METRICS_NAME,
    SINGULAR_VALUES_NAME,
    SWD_FLOOR_NAME,
    RunLogger,
)
from ganforge.training.lookahead import Lookahead
from ganforge.training.loss_scale import DynamicLossScale
from ganforge.training.speed import compile_networks, eager_memory_format, keep_freed_host_memory
from ganforge.viz.animation import write_progress_gif
from ganforge.viz.grid import sample_caption, save_grid
from ganforge.viz.report import REPORT_NAME, ReportRefresher, written_by_ganforge

if TYPE_CHECKING:
    from ganforge.metrics.fid_stats import ReferenceStats
    from ganforge.metrics.registry import MetricSettings

FIXED_LATENT_OFFSET = 1_000_003  # fixed sample latents use their own seed, apart from the training stream
MAX_ROLLBACKS = 3


class NonFiniteError(RunStopped):
    """A loss or weight became NaN/Inf; names the phase and step so the run can be inspected."""


class TrainingOutOfMemory(ValueError):
    """A step needed more memory than the device has: says where (step, resolution, batch), which checkpoint the
    run can go on from, and what to change (a one-line error, not a traceback of allocator statistics)."""


class PendingValues:
    """What the steps since the last host read left on the training device: the sums of their log values and, per
    phase, the first non-finite loss (step and value). Nothing here waits for the device; `read` fetches it all in
    one transfer at a log, sample, metric or checkpoint point, so a GPU runs ahead of the host between those."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}  # steps that logged each key (a phase may run on some steps only)
        # every key in the order it first appeared in the run, so log lines keep one order when a phase that runs
        # on some steps only (a lazy R1) is first seen in one interval and missing from the start of the next
        self.key_order: dict[str, None] = {}
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
            self.key_order.setdefault(key)
            value = torch.as_tensor(value).detach().double()
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1

    def read(self, *, logs: bool, current: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """One device→host transfer: raise NonFiniteError for the earliest non-finite loss since the last read;
        with `logs`, return the mean log values of the steps since then and start a new average. `current` (device
        scalars read as they are now, e.g. spectral-norm estimates) comes back in the same dict and transfer."""
        current = current or {}
        phases = list(self.first_nonfinite)
        keys = [key for key in self.key_order if key in self.sums] if logs else []
        parts = ([self.first_nonfinite[p] for p in phases] + [self.sums[k].reshape(1) for k in keys]
                 + [value.detach().reshape(1).double() for value in current.values()])
        values = torch.cat(parts).tolist() if parts else []
        found = [(values[2 * i], i) for i in range(len(phases)) if values[2 * i] >= 0]
        if found:
            step, index = min(found)
            raise NonFiniteError(f"step {int(step)}, phase {phases[index]}: loss is {values[2 * index + 1]}; "
                                 "stopping before it reaches a checkpoint or a sample")
        start = 2 * len(phases)
        means = {key: value / self.counts[key] for key, value in zip(keys, values[start:start + len(keys)],
                                                                      strict=True)}
        means.update(zip(current, values[start + len(keys):], strict=True))
        if logs:
            self.sums, self.counts = {}, {}
        return means


@dataclass
class TrainResult:
    """Where a `train` call left the run and why it stopped: `stop` is "finished" (the schedule's end), "until"
    (the `until` step: a normal stop), "signal" (SIGINT/SIGTERM, number in `signal`, after a checkpoint), "early"
    (`patience` metric ticks without a new best, now or before this call) or "already finished" (the run was
    complete before this call, which wrote nothing)."""

    run_dir: Path
    step: int
    total_steps: int
    stop: Literal["finished", "until", "signal", "already finished", "early"]
    signal_number: int | None = None
    early_reason: str = ""  # stop "early": which metric stopped improving since when (the config's `patience`)
    lengthen_with: str = ""  # a --set override that lengthens the schedule (family.lengthening_override)
    main_process: bool = True  # False on torchrun's other ranks: what follows training (printing, a final
    # metric, the report) is rank 0's alone, as the run's files are
    trained: bool = True  # False: stop "until" at the step a resumed run was at, where nothing was written

    @property
    def interrupted(self) -> bool:
        return self.stop == "signal"

    def summary(self) -> str:
        """The one line a command prints when training returns."""
        if self.stop == "already finished":
            return (f"already finished at step {self.step} in {self.run_dir} (lengthen the schedule with "
                    f"--set {self.lengthen_with} to train further)")
        if self.stop == "until" and not self.trained:
            return (f"at step {self.step} already (--until {self.step}): nothing trained or written in {self.run_dir}; "
                    "a later --until, or none, trains on")
        if self.stop == "until" and self.step == 0:
            return (f"stopped before step 1 (--until 0): the config and data check out and the networks were built "
                    f"(an untrained step-0 checkpoint in {self.run_dir}; the same command without --until trains)")
        if self.stop == "until":
            return (f"stopped at step {self.step} (--until); run the same command without --until to continue "
                    f"(checkpoint in {self.run_dir})")
        if self.stop == "early":
            return (f"stopped early at step {self.step} of {self.total_steps}: {self.early_reason} (patience); the "
                    f"best checkpoints are in {self.run_dir / 'best.json'} (--set patience=N with a larger N trains "
                    "on)")
        if self.stop == "signal":
            name = signal.Signals(self.signal_number).name if self.signal_number else "signal"
            return (f"interrupted at step {self.step} of {self.total_steps} ({name}): checkpoint "
                    f"{ckpt.checkpoint_dir(self.run_dir) / f'{self.step:08d}.json'}; run the same command to resume")
        return f"finished at step {self.step}: {self.run_dir} (checkpoints, samples/, log.jsonl)"


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """The forward passes' precision: float32 unless the config asks for autocast (`auto`: bf16 on CUDA only)."""
    if amp == "bf16" or (amp == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if amp == "fp16":
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()


def check_ada_can_steer(config: RunConfig, *, resumed: bool) -> None:
    """ADA's adaptive p follows the sign of D's outputs on reals, which some critics leave meaningless: refused for
    a new run, a warning for a run that already trained so (its config cannot change on resume)."""
    why = get_family(config.family).unsigned_critic(config.model) if config.augment.adaptive else None
    if why is None:
        return
    message = (f"augment: ADA's adaptive p steers by the sign of D's outputs on reals (r_t = E[sign(D(real))] "
               f"against its target), and {why}; set a fixed augment.p or use augment.kind diffaugment")
    if not resumed:
        raise ConfigError(message)
    warnings.warn(message, stacklevel=3)


@contextlib.contextmanager
def deterministic_algorithms(device: torch.device) -> Iterator[None]:
    """`deterministic: true` for the steps run inside: two runs of one config on one GPU, or a run and its resume,
    take bit-identical steps. CUDA's atomically accumulating kernels (cuDNN's fastest weight gradients, index_add,
    the backward of some interpolations) add in the order threads finish; torch then picks ordered ones, and an op
    with none stops the run with a one-line error naming it. cuBLAS also needs a fixed workspace, which it reads
    when the process first uses it: set here if unset (a script that ran CUDA matrix products before exports
    CUBLAS_WORKSPACE_CONFIG=:4096:8 itself). The process's own settings are restored afterwards."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    except RuntimeError as err:
        if "does not have a deterministic implementation" not in str(err):
            raise
        raise ConfigError(f"deterministic: true, but {str(err).splitlines()[0].split(' does not')[0]} has no "
                          "deterministic implementation on this device; set deterministic: false to train "
                          "with it") from err
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2:]


class Trainer:
    """Builds a run (new or resumed) and trains it to the end of the family's schedule."""

    def __init__(self, config: RunConfig, run_dir: Path, *, restart: bool = False,
                 dist: DistInfo | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.dist = dist or init_distributed("cuda" if config.device.startswith("cuda") or (
            config.device == "auto" and torch.cuda.is_available()) else "cpu")
        self.device = pick_device(config.device, self.dist)
        if self.device.type == "cuda":  # float32 storage and sums; matmuls and/or convolutions on TF32 tensor cores
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = cuda_tf32_flags(config.tf32)
        if self.device.type == "cpu":  # each step's activations reuse the last step's pages (measured on the CPU)
            keep_freed_host_memory()
        resume = None if restart else ckpt.latest_valid_checkpoint(self.run_dir, refuse_all_broken=True)
        check_ada_can_steer(config, resumed=resume is not None)
        config = replace(config, data=resolved_data_spec(config.data),  # resumable from any folder
                         init_from=config.init_from and os.path.abspath(os.path.expanduser(config.init_from)),
                         fid_real_stats=config.fid_real_stats and os.path.abspath(
                             os.path.expanduser(config.fid_real_stats)))
        self.dataset = open_run_dataset(config.data, self.run_dir, resume)
        if resume is not None and config.init_from is None:  # left out on resume: the run's own record stays
            config = replace(config, init_from=resume.meta["config"].get("init_from"))
        if resume is not None:
            imported = bool(resume.meta.get("imported"))  # an import no training step has followed yet
            _check_same_config(self.run_dir, resume.meta["config"], to_dict(config), imported=imported,
                               same_dataset=is_same_dataset(resume.meta.get("dataset"), self.dataset))
            _check_same_data(self.run_dir, resume.meta.get("dataset"), self.dataset, config.data, imported=imported)
        self.config = config
        self.loss_scale = DynamicLossScale(device=self.device) if config.amp == "fp16" else None
        # a generating family's metrics are computed by every rank together (each its share of the images), a
        # translating family's protocol by rank 0 alone, as the official code evaluates on one GPU
        self._metrics_shared = self.dist.enabled and bool(config.metrics) and not get_family(config.family).translates
        self.fid_real_stats = self._check_training_metrics(config)
        if self.fid_real_stats is not None:  # recorded with each FID: a resume may name the file where it is now
            from ganforge.download import file_digest

            path = Path(config.fid_real_stats)
            self._fid_real_stats_label = f"{path.name} sha256 {file_digest(path)[:12]}"
        torch.manual_seed(config.seed)  # same on every rank: identical initial weights everywhere
        family_cls = get_family(config.family)
        if family_cls.contiguous_shards(config.model):
            self.dist = replace(self.dist, contiguous=True)
        self.family: Family = family_cls(config.model, self.dataset, self.device, self.dist)
        check_batch_sizes(self.family, self.dist.world_size)
        self._trained_processes = None if resume is None or resume.meta.get("imported") else (  # an import: none
            _trained_processes(resume))
        self._check_ranks_resume_alike(resume.step if resume is not None else -1)  # the ranks' first vote
        self.kept_steps = self.family.kept_steps()  # checkpointed and never pruned (PGAN's scale ends)
        final = self.family.plan(self.family.total_steps() - 1).resolution
        if self.fid_real_stats is not None and self.fid_real_stats.resolution not in (None, final):
            raise ConfigError(f"fid_real_stats: {config.fid_real_stats} holds statistics of "
                              f"{self.fid_real_stats.resolution} px images, and this run's generator makes {final} px "
                              "ones (`ganforge stats DATA --resolution R` makes them at another size)")
        if resume is None and config.init_from:
            self._initialise_from(Path(config.init_from))
        # eager: channels_last where it pays (eager_memory_format); compiled: inductor lays out convolutions itself
        if not config.compile:
            for net in self.family.nets.values():
                net.to(memory_format=eager_memory_format(net, self.device))
        if config.compile:
            penalised = self.family.penalised_nets
            compile_networks(self.family.nets, frozenset(self.family.nets) if penalised is None else penalised)
        self.loader = BatchLoader(self.dataset, seed=config.seed, dist=self.dist, device=self.device,
                                  options=self.family.data_options())
        # draws from the device's default stream, global batch then shard: resume and W processes augment alike
        self.augmenter = Augmenter(config.augment, self.dist, device=self.device)
        self.family.augment = self.augmenter if self.augmenter.enabled else None
        # the networks some optimiser steps (optimisers are keyed by the net they step); EMA copies are not trained
        self.lookahead = Lookahead(config.lookahead, {name: self.family.nets[name] for name in
                                                      self.family.optimizers}) if config.lookahead else None
        # each network's parameters listed once (a step's requires_grad switches and EMA updates use the lists):
        # walking the module trees every phase costs host time, which a GPU step at small resolutions pays in full
        self.net_parameters = {name: list(net.parameters()) for name, net in self.family.nets.items()}
        self.ema_pairs = {ema: EmaPair(self.family.nets[ema], self.family.nets[source])
                          for ema, source in self.family.ema_pairs.items()}
        self.step = 0
        self.images_seen = 0
        self.resumed = resume is not None
        self.checkpointed_step: int | None = None  # the step of the newest checkpoint written or restored
        self._grown_layers: dict[str, dict[str, torch.Tensor]] | None = None  # a grown run's new layers at init
        if resume is not None:
            self._restore(resume)
            if config.best_metric is not None:  # every rank reads the one run folder: all of them refuse alike
                ckpt.read_best(self.run_dir)  # damaged: said now, not after training up to the next metric tick
        self.fixed_inputs = self.family.sample_latents(
            config.sample_count, torch.Generator().manual_seed(config.seed + FIXED_LATENT_OFFSET))
        self.fixed_cell_labels = self.family.sample_cell_labels(self.fixed_inputs)
        # written by the signal handler only; the loop reads it. Agreed on (`_stop_signal`) once per step: a handler
        # running between a vote's return and its assignment must not be overwritten, or a rank stops alone
        self._signal_received: int | None = None
        self._stop_signal: int | None = None
        self._early_reason: str | None = None  # agreed on by every rank at a metric tick (`patience`)
        self._skipped_metrics: set[tuple[str, int]] = set()  # (metric, resolution) already said to be skipped
        self._metrics_on: torch.device | None = None  # the CPU once a metric tick ran out of GPU memory
        self.pending = PendingValues()
        if restart and self.dist.is_main:  # last: only a config, dataset and family that all work replace the run
            removed = clear_run(self.run_dir)
            if removed:
                print(f"--restart: removed {removed} of the earlier run in {self.run_dir}")

    def _check_ranks_resume_alike(self, step: int) -> None:
        """Every rank must resume the same checkpoint (-1: none): nodes that each see a local copy of the run folder
        would otherwise train from different weights until a collective fails far from the cause."""
        if not self.dist.enabled:
            return
        highest, lowest = self.dist.max_over_ranks(step), -self.dist.max_over_ranks(-step)
        if highest != lowest:
            def named(found: int) -> str:
                return "none" if found < 0 else f"step {found}"

            raise ConfigError(f"rank {self.dist.rank}: the ranks found different checkpoints in {self.run_dir} "
                              f"({named(lowest)} to {named(highest)}; this rank: {named(step)}): every rank must read "
                              "one run folder, shared at the same path on every node (a network file system; if it "
                              "is, a node's listing may not be current yet: retry)")

    # --- state ------------------------------------------------------------------------------------------------
    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = ckpt.run_state(self.config, self.family, self.step, images_seen=self.images_seen,
                                       loader_state=self.loader.state_dict(),
                                       loss_scale=self.loss_scale.state_dict() if self.loss_scale else None,
                                       world_size=self.dist.world_size)
        meta["augment"] = self.augmenter.state_dict()  # ADA's p and its statistic's accumulators
        if self.lookahead is not None:
            tensors.update(self.lookahead.state_tensors())
        return tensors, meta

    def _restore(self, resume: ckpt.Checkpoint) -> None:
        meta, tensors = resume.meta, resume.tensors
        if meta.get("family") != self.family.name:
            raise ckpt.CheckpointError(f"{resume.path}: checkpoint of family {meta.get('family')!r}, "
                                       f"not {self.family.name!r}")
        grown_at = self.family.grown_at(meta["config"].get("model") or {})
        if grown_at is not None and resume.step != grown_at:
            raise ckpt.CheckpointError(
                f"{resume.path}: step {resume.step}; the networks' new scales start at step {grown_at}, where the "
                "saved schedule ends: finish it first (resume without the new settings), then grow the run")
        if grown_at is not None and self.lookahead is not None:
            raise ConfigError("lookahead: its slow weights cover the saved networks only; a run with lookahead cannot "
                              "grow new scales (train a new run at the larger size, or --init-from this one)")
        new_layers = None if grown_at is None else self._new_layer_keys(meta)
        ckpt.load_network_states(self.family.nets, tensors, resume.path, new_layers=new_layers)
        if new_layers is not None:  # their initialisation, kept at the resume and put back by a rollback to it
            states = {name: self.family.nets[name].state_dict() for name in new_layers}
            if self._grown_layers is None:
                self._grown_layers = {name: {key: states[name][key].clone() for key in keys}
                                      for name, keys in new_layers.items()}
            for name, layers in self._grown_layers.items():
                for key, value in layers.items():
                    states[name][key].copy_(value)
        try:  # a record edited by hand or cut: one line naming it, not a traceback
            if grown_at is None:  # a grown run's next step starts a scale: it resets the optimisers in every variant
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
        except (ckpt.CheckpointError, ConfigError) as err:  # refused on purpose: every checkpoint of the run alike
            raise ckpt.CheckpointError(f"{resume.path}: {err}") from None
        except (KeyError, TypeError, ValueError, IndexError) as err:
            detail = f"lacks {err}" if isinstance(err, KeyError) else str(err)
            raise ckpt.CheckpointError(f"{resume.path}: damaged checkpoint record ({detail}); an earlier checkpoint "
                                       "resumes if this one is moved away") from None
        if self.lookahead is not None:
            try:
                self.lookahead.load_state_tensors(tensors)
            except ValueError as err:
                raise ckpt.CheckpointError(f"{resume.path}: {err}") from None
        self.step = self.checkpointed_step = resume.step
        self.images_seen = int(meta.get("images_seen", 0))

    def _new_layer_keys(self, meta: dict[str, Any]) -> dict[str, set[str]]:
        """Per network, the tensors of the layers a grown run's saved networks lack: those of its networks built
        again from its saved config (on the meta device: shapes only) taken from the current ones."""
        saved = resolve_run_config(None, migrated_saved_config(dict(meta["config"])))
        with torch.device("meta"):
            small = get_family(saved.family)(saved.model, self.dataset, torch.device("meta"), self.dist)
        return {name: set(net.state_dict()) - set(small.nets[name].state_dict())
                for name, net in self.family.nets.items()}

    def save_checkpoint(self, score: float | None = None) -> None:
        """Write a checkpoint; with `score` (the run's `best_metric` at this step) keep it among the best."""
        self.check_ranks_in_sync()
        self.augmenter.flush()  # every rank: ADA's signs since its last adjustment are summed into the state
        self.checkpointed_step = self.step
        if not self.dist.is_main:
            return
        tensors, meta = self.state_tensors()
        for name, value in tensors.items():
            if value.dtype.is_floating_point and not torch.isfinite(value).all():
                raise NonFiniteError(f"step {self.step}: {name} holds NaN/Inf; no checkpoint written")
        best = self.update_best(score)

        def write_best() -> None:  # before the checkpoints it drops are pruned (a kill between keeps both)
            ckpt.write_json_atomic(self.run_dir / ckpt.BEST_NAME, {"metric": self.config.best_metric, "best": best})

        try:
            ckpt.save_checkpoint(self.run_dir, self.step, tensors, meta, keep=self.config.keep_checkpoints,
                                 protect={entry["step"] for entry in best} | self.kept_steps,
                                 before_pruning=write_best if score is not None else None)
        except OSError as err:
            raise ckpt.CheckpointError(
                f"could not write checkpoint {self.step} in {ckpt.checkpoint_dir(self.run_dir)}: {err.strerror} "
                "(disk full or not writable?); the earlier checkpoints are intact") from None

    def update_best(self, score: float | None) -> list[dict[str, Any]]:
        """The `keep_best` best (step, value) pairs so far, including this step's score: those at the largest
        resolution first (a growing PGAN's value at 16 px, the 16 px level alone, does not compare with its value at
        32 px), by value within a resolution."""
        best = ckpt.read_best(self.run_dir)
        if score is None:
            return best
        sign = -1 if ranks_higher(self.family, self.config.best_metric) else 1
        best = [entry for entry in best if entry["step"] != self.step] + [{"step": self.step, "value": score}]
        best.sort(key=lambda e: (-self.resolution_after(e["step"]), sign * e["value"]))
        return best[: self.config.keep_best]

    def resolution_after(self, step: int) -> int:
        """The resolution the networks had at `step` (a checkpoint's, a metric tick's: after that many steps)."""
        return self.family.plan(max(step - 1, 0)).resolution

    def patience_spent(self) -> bool:
        """Whether the last `patience` metric ticks at this resolution brought no new best `best_metric`; decided
        by rank 0, which holds the files, and voted to every rank (a failure to decide stops them all). The
        reason goes to `_early_reason`."""
        if self.config.patience is None:
            return False
        reason, error = None, None
        if self.dist.is_main:
            try:
                reason = self._patience_reason()
            except Exception as err:  # noqa: BLE001 (voted on first)
                error = err
        vote = self.dist.max_over_ranks(2 if error is not None else int(reason is not None))
        if vote == 2:
            raise error or RankFailedError(f"rank {self.dist.rank}: rank 0 could not decide on early stopping (its "
                                           "error is in its output)")
        if vote:
            self._early_reason = reason or "rank 0 stopped early"
        return self._early_reason is not None

    def _patience_reason(self) -> str | None:
        """From training's rows of metrics.jsonl up to this step (the newest per step, cut lines skipped) at this
        step's resolution: a growing PGAN's values at other sizes do not compare, and a fade worsens them for a
        while, so each scale counts its own ticks."""
        from ganforge.viz.run_data import read_jsonl

        key = self.config.best_metric
        resolution = self.resolution_after(self.step)
        rows, _ = read_jsonl(self.run_dir / "metrics.jsonl")
        values = {row["step"]: row[key] for row in rows if "source" not in row and isinstance(row.get(key), float | int)
                  and row["step"] <= self.step and self.resolution_after(row["step"]) == resolution}
        if not values:
            return None
        sign = -1 if ranks_higher(self.family, key) else 1
        best_step = min(sorted(values), key=lambda step: sign * values[step])  # the first of equal values
        since = [step for step in values if step > best_step]
        if len(since) < self.config.patience:
            return None
        ticks = f"{len(since)} metric tick{'s' if len(since) > 1 else ''}"
        return (f"{key} has not improved on its best {values[best_step]:.6g} (step {best_step}) in the {ticks} "
                "since")

    def check_ranks_in_sync(self) -> None:
        """Every rank must hold the same weights; a silent divergence would make the checkpoint a lie."""
        if not self.dist.enabled:
            return
        with torch.no_grad():
            local = torch.stack([p.double().sum() for net in self.family.nets.values() for p in net.parameters()])
        gathered = [torch.empty_like(local) for _ in range(self.dist.world_size)]
        torch_dist.all_gather(gathered, local)
        if any(not torch.allclose(g, gathered[0], rtol=1e-6, atol=1e-8) for g in gathered[1:]):
            raise RunStopped(f"step {self.step}: ranks hold different weights (distributed training diverged)")

    # --- the loop ---------------------------------------------------------------------------------------------
    def train(self, until: int | None = None) -> TrainResult:
        """Train to the end of the schedule, or stop (with a checkpoint) once `until` steps are done."""
        family, config = self.family, self.config
        total = family.total_steps()
        stop_at = total if until is None else min(until, total)
        if self.step >= total:  # nothing to do: nothing is written, not even the config
            self.loader.close()
            return TrainResult(self.run_dir, self.step, total, "already finished",
                               lengthen_with=family.lengthening_override())
        if self.step > 0 and self.patience_spent():  # nothing to do either, unless patience grew
            self.loader.close()
            return TrainResult(self.run_dir, self.step, total, "early", early_reason=self._early_reason or "")
        if until is not None and until < self.step:  # a stop the run is past
            self.loader.close()
            raise ConfigError(f"until={until}: the run is at step {self.step} already, past it; give a later step, "
                              "or leave it out to train to the end")
        if until == self.step and self.resumed:  # at the stop already: its checkpoint stands, nothing is written (a
            self.loader.close()  # run resumed to grow new scales would replace the small run's checkpoint)
            return TrainResult(self.run_dir, self.step, total, "until", trained=False)
        saved = self._trained_processes  # checked where steps are to be computed (a finished run may be read)
        if saved is not None and saved != self.dist.world_size and (
                why := family.process_count_change(saved, self.dist.world_size, self.step)):
            self.loader.close()
            raise ConfigError(f"{self.run_dir} trained in {saved} process{'es' if saved > 1 else ''} and this run has "
                              f"{self.dist.world_size}: {why}; resume it in {saved} (torchrun --nproc_per_node "
                              f"{saved}{', or without torchrun' if saved == 1 else ''})")
        if self.dist.is_main and self.step > 0:
            print(f"resuming from step {self.step} (of {total}) in {self.run_dir}")
        elif self.dist.is_main and not (self.run_dir / "config.json").exists() and self.run_dir.is_dir() and (
                others := len([p for p in self.run_dir.iterdir() if p.name != ckpt.LOCK_NAME])):  # not a run?
            print(f"{self.run_dir} holds no run (no config.json): a new run of {total} steps starts there, beside "
                  f"its {others} other entr{'ies' if others > 1 else 'y'}")
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.write_json_atomic(self.run_dir / "config.json", to_dict(config))
        logger = RunLogger(self.run_dir, total_steps=total, start_step=self.step, enabled=self.dist.is_main,
                           progress=config.progress, tensorboard=config.tensorboard)
        logger.log_config(to_dict(config))
        if self.step > 0:  # the steps an earlier attempt logged after this checkpoint are replaced (run_data)
            logger.log({"step": self.step, "event": "resume"})
        report = ReportRefresher(self.run_dir) if self.dist.is_main else None  # RUN/report.html
        self.pending = PendingValues()
        rollbacks = 0
        previous_handlers = self._install_signal_handlers()
        try:
            while self.step < stop_at and self._stop_signal is None and self._early_reason is None:
                plan = family.plan(self.step)
                seen_before = self.images_seen
                try:
                    self.pending.add_step(self.train_step(plan))
                except (MemoryError, RuntimeError) as err:
                    if not is_out_of_memory(err):
                        raise
                    raise TrainingOutOfMemory(self.out_of_memory_message(plan, err)) from err
                self.step += 1
                received = self._signal_received  # one read: the handler may run at any bytecode
                if self.dist.enabled:  # a signal may reach one rank a step before another: all stop together
                    received = self.dist.max_over_ranks(received or 0) or None
                self._stop_signal = received
                logger.count_images(self.images_seen - seen_before)
                last = self.step == total
                # a stop (--until, a signal) logs the steps since the last log point: they would be lost otherwise
                log_tick = self.step % config.log_every == 0 or last or self.step == stop_at \
                    or self._stop_signal is not None
                sample_step = self.step % config.sample_every == 0 or last  # a host point on every rank
                sample_tick = self.dist.is_main and sample_step
                metric_tick = bool(config.metrics) and bool(
                    (config.metrics_every and self.step % config.metrics_every == 0) or last)
                checkpoint_tick = self.step % config.checkpoint_every == 0 or last or self.step in self.kept_steps
                if not (log_tick or sample_step or metric_tick or checkpoint_tick or self.step == stop_at
                        or self._stop_signal is not None):
                    logger.step_done(None)  # no host point: the device runs ahead
                    continue
                watched = self.singular_value_estimates() if log_tick else {}
                try:  # before anything is written: a NaN/Inf loss since the last read stops or rolls back here
                    means = self.read_pending(logs=log_tick, current=watched)
                except NonFiniteError as err:
                    if config.on_nan != "rollback" or rollbacks >= MAX_ROLLBACKS:
                        logger.log({"step": self.step, "event": "stopped", "reason": str(err)})  # for the report
                        raise
                    rollbacks += 1
                    self.roll_back(err, logger, rollbacks)
                    continue
                singular_values = {key: means.pop(key) for key in watched}
                logger.step_done({**plan.progress, **means} if log_tick else None)
                if log_tick:
                    record = {"step": self.step, "kimg": self.images_seen / 1000, **plan.progress, **means,
                              "img_per_s": logger.throughput()}
                    if self.augmenter.p is not None:
                        record["aug_p"] = self.augmenter.p  # ADA's probability after this step
                    logger.log(record)
                    if singular_values:
                        logger.singular_values({"step": self.step, "kimg": self.images_seen / 1000,
                                                **singular_values})
                with logger.maintenance():
                    if sample_tick:
                        logger.sample_images(self.step, self.write_samples(plan))
                    scored = None
                    if metric_tick:
                        scored = self.run_metrics(plan, logger)  # all ranks, or rank 0 while the others wait
                        self.dist.barrier()
                    if checkpoint_tick or (metric_tick and config.best_metric is not None):  # every rank: collectives
                        self.save_checkpoint(score=scored)
                    if metric_tick and self.step < total and self.patience_spent():  # after its checkpoint
                        logger.message(f"step {self.step}: stopping early: {self._early_reason} (patience)")
                        logger.log({"step": self.step, "event": EARLY_STOP_EVENT, "reason": self._early_reason})
                    if report is not None and self.step % config.sample_every == 0:
                        report.tick()
            if self.step < total and self._early_reason is None and self.step != self.checkpointed_step and (
                    self._stop_signal is not None or self.step == stop_at):  # (a tick or rollback wrote it already)
                self.read_pending(logs=False)  # a stop requested mid-interval: no checkpoint of non-finite weights
                self.save_checkpoint()
        finally:
            self._restore_signal_handlers(previous_handlers)
            self.loader.close()
            logger.close()
            if self.dist.is_main:
                write_progress_gif(self.run_dir / "samples")
            if report is not None:
                report.write()
        if self.step >= total:
            return TrainResult(self.run_dir, self.step, total, "finished")
        if self._stop_signal is not None:
            return TrainResult(self.run_dir, self.step, total, "signal", signal_number=self._stop_signal)
        if self._early_reason is not None:
            return TrainResult(self.run_dir, self.step, total, "early", early_reason=self._early_reason)
        return TrainResult(self.run_dir, self.step, total, "until")

    def _initialise_from(self, source: Path) -> None:
        """`init_from`: a new run's networks start from another run's (fine-tuning, transfer to other classes or
        domains); every rank reads the same file, so all start alike."""
        found = ckpt.resolve_checkpoint(source)
        family = found.meta["config"].get("family")
        if family != self.config.family:
            raise ConfigError(f"init_from: {found.path} is a {family} checkpoint and this run is {self.config.family}")
        transfer = ckpt.transfer_network_states(self.family.nets, self.family.ema_pairs, found.tensors)
        if transfer.copied == 0:
            raise ConfigError(f"init_from: no tensor of {found.path} fits this run's networks ({transfer.summary()})")
        if self.dist.is_main:
            print(f"initialised from {found.path} (step {found.step}): {transfer.summary()}")

    def singular_value_estimates(self) -> dict[str, torch.Tensor]:
        """The σ estimates of every spectrally normalised layer of the trained nets ("G.linear.sv0": BigGAN's G and
        D), which BigGAN-PyTorch logs; read with the log values, in the same transfer, on rank 0 only."""
        if not self.dist.is_main:
            return {}
        return {f"{net}.{key}": value for net in self.family.optimizers
                for key, value in singular_value_estimates(self.family.nets[net]).items()}

    def out_of_memory_message(self, plan: StepPlan, err: BaseException) -> str:
        """Where the step ran out of memory and how to go on: a resume keeps the run's settings (batch and
        resolution are part of what a step computes), so either more memory or a new run with smaller ones."""
        cause = ". ".join(str(err).split(". ")[:2]).strip()  # "CUDA out of memory. Tried to allocate 2.00 GiB"
        share = f" ({plan.batch_size // self.dist.world_size} per process)" if self.dist.enabled else ""
        saved = ckpt.checkpoint_steps(self.run_dir)
        where = f"from the newest checkpoint, step {saved[-1]}" if saved else "no checkpoint was written yet"
        memory = self.device.type if isinstance(err, torch.OutOfMemoryError) else "host"
        finer = self.family.finer_micro_batches(plan)
        drawn = ", its augmentations drawn per slice" if self.config.augment.kind != "none" else ""
        slices = (f", or resume with --set {finer} (the same update computed in more slices{drawn})"
                  if finer is not None else "")
        return (f"out of {memory} memory in step {self.step + 1} at {plan.resolution} px with a batch of "
                f"{plan.batch_size}{share}{f' ({cause})' if cause else ''}; resume on a device with more memory "
                f"({where}){slices}, or start a new run (--restart or another --run) with a smaller batch or "
                "resolution, or with amp: bf16")

    def read_pending(self, *, logs: bool, current: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
        """`PendingValues.read` agreed over ranks: a non-finite loss on any rank stops (or rolls back) every rank
        at the same step, before any of them writes; the log means are averaged over ranks (the global batch's)."""
        try:
            means = self.pending.read(logs=logs, current=current)
        except NonFiniteError:
            self.dist.max_over_ranks(1)
            raise
        if self.dist.max_over_ranks(0):
            raise NonFiniteError(f"step {self.step}: a loss on another rank is NaN/Inf; stopping before it reaches "
                                 "a checkpoint or a sample")
        if logs:
            means.update(self.dist.mean_over_ranks({key: means[key] for key in means if key not in (current or {})}))
        return means

    def roll_back(self, err: NonFiniteError, logger: RunLogger, attempt: int) -> None:
        """`on_nan: rollback`: back to the newest valid checkpoint, with reseeded noise and a skipped data batch so
        the failure is not replayed exactly (the run is then no longer bit-identical to an uninterrupted one)."""
        found = ckpt.latest_valid_checkpoint(self.run_dir)
        if found is None:
            raise NonFiniteError(f"{err}; no checkpoint to roll back to in {self.run_dir}") from err
        self._restore(found)
        self.pending = PendingValues()  # the discarded steps' logs and flags go with them
        logger.restart_at(found.step)
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
        if not self.config.deterministic:
            return self._train_step(plan)
        with deterministic_algorithms(self.device):
            return self._train_step(plan)

    def _train_step(self, plan: StepPlan) -> dict[str, torch.Tensor]:
        family = self.family
        seen_before = self.images_seen
        family.begin_step(self.step, plan)
        logs: dict[str, torch.Tensor] = {}
        latest: Batch | None = None  # the step's latest real batch: what `data="previous"` phases receive
        for phase in family.phases(self.step, plan):
            for name, net_params in self.net_parameters.items():
                if name not in family.ema_pairs:
                    trains = name in phase.trains
                    for param in net_params:
                        param.requires_grad_(trains)
            params = [p for name in phase.trains for p in self.net_parameters[name]]
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
                    parts = [batch] if batch is None else batch.parts(phase.micro_batches,
                                                                      interleaved=not self.dist.contiguous)
                    part_logs = []
                    for part in parts:
                        with _autocast(self.device, self.config.amp):
                            loss, logged = phase.loss(part)
                        part_logs.append(logged)
                        self.pending.watch_loss(self.step + 1, phase.name, loss)  # counted as log.jsonl does
                        shares = phase.accumulate * len(parts)
                        loss = loss / shares if shares > 1 else loss
                        (self.loss_scale.scale(loss) if self.loss_scale else loss).backward()
                    phase_logs = part_logs[0] if len(parts) == 1 else {
                        key: sum(logged[key] for logged in part_logs) / len(parts) for key in part_logs[0]}
                self.dist.all_reduce_grads(params)
                if self.loss_scale is not None:  # fp16 overflow: every rank skips this update and lowers the scale
                    found_inf = self.loss_scale.unscale(params)
                    for name in phase.trains:
                        self.loss_scale.step(family.optimizers[name], found_inf)
                    self.loss_scale.update(found_inf)
                else:
                    for name in phase.trains:
                        family.optimizers[name].step()
                if phase.after_step is not None:  # after a skipped update too: a schedule (λ_ds) counts iterations
                    phase.after_step()
                logs.update(phase_logs)  # the last accumulated batch's values
        self.augmenter.end_step(self.images_seen - seen_before)  # the reals this step drew (ADA's pace)
        decay = family.ema_decay(self.step)
        if decay is not None:
            for pair in self.ema_pairs.values():
                pair.update(decay)
        if self.lookahead is not None:  # after the EMA update: the EMA follows the fast weights
            self.lookahead.after_step(self.step)
        return logs

    # --- outputs ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def write_samples(self, plan: StepPlan) -> dict[str, Path]:
        """The fixed-latent grids of this step, one per `family.sample_nets()` (an EMA generator's as STEP.png,
        others as STEP-NET.png), each captioned with what it shows ("EMA, step N" or "G, step N", so the GIF's
        frames carry their step too) and, for a conditional generator, each cell with its classes; returns network
        name → PNG written."""
        inputs = {k: v.to(self.device) for k, v in self.fixed_inputs.items()}
        samples = self.run_dir / "samples"
        written = {}
        for net in self.family.sample_nets():
            ema = net in self.family.ema_pairs
            written[net] = samples / f"{self.step:08d}{'' if ema else f'-{net}'}.png"
            save_grid(self.family.generate(inputs, net, plan), written[net], title=sample_caption(net, ema, self.step),
                      cell_labels=self.fixed_cell_labels)
        return written

    @contextlib.contextmanager
    def _main_rank_buffers(self) -> Iterator[None]:
        """Rank 0's buffers in the sampling generator for the block, each rank's own restored after it: the ranks'
        batch-norm running statistics differ where each normalises its own share (BigGAN without sync_bn), and a
        tick's shares must all sample rank 0's network, the one its checkpoint holds."""
        buffers = list(self.family.nets[self.family.sample_net].buffers())
        own = [buffer.detach().clone() for buffer in buffers]
        for buffer in buffers:
            torch_dist.broadcast(buffer, src=0)
        try:
            yield
        finally:
            with torch.no_grad():
                for buffer, value in zip(buffers, own, strict=True):
                    buffer.copy_(value)

    def _check_training_metrics(self, config: RunConfig) -> ReferenceStats | None:
        """`check_training_metrics` on every rank; the ranks that evaluate load the metric networks. With shared
        metrics rank 0 goes first (it downloads what is missing) while the others only check the config, then the
        others load theirs; after each turn the ranks vote, so that a failure anywhere stops every rank at once
        instead of leaving some waiting in a collective for it."""
        images = min(config.metrics_n, self.dataset.count)

        def check(evaluates: bool) -> ReferenceStats | None:
            return check_training_metrics(config, self.dataset.source, self.device, images=images,
                                          evaluates=evaluates)

        if not self._metrics_shared:
            return check(self.dist.is_main)

        def agreed(turn: Callable[[], ReferenceStats | None]) -> ReferenceStats | None:
            error, result = None, None
            try:
                result = turn()
            except Exception as err:  # noqa: BLE001 (voted on first)
                error = err
            if self.dist.max_over_ranks(int(error is not None), after_long_work=True):  # a download, say
                if error is not None:
                    raise error
                raise RankFailedError(f"rank {self.dist.rank}: another rank could not prepare the training metrics "
                                      "(its error is in its output)")
            return result

        stats = agreed(lambda: check(self.dist.is_main))
        return agreed(lambda: stats if self.dist.is_main else check(True))

    def run_metrics(self, plan: StepPlan, logger: RunLogger) -> float | None:
        """Evaluate the configured metrics (rank 0 alone, or every rank its share: `_metrics_shared`); returns the
        `best_metric` value on rank 0, if one is configured."""
        from ganforge.evaluation.run_metrics import evaluate_family
        from ganforge.metrics._images import ImageSetError
        from ganforge.metrics.ranks import RankShare
        from ganforge.metrics.registry import metric_of_output

        if not (self.dist.is_main or self._metrics_shared):
            return None
        share = RankShare.of(self.dist) if self._metrics_shared else None

        def evaluate(metrics: list[str]) -> dict[str, float]:
            def on(device: torch.device | None) -> dict[str, float]:
                return evaluate_family(self.family, self.dataset, plan, metrics, n=self.config.metrics_n,
                                       seed=self.config.seed, inception_weights=self.config.inception_weights,
                                       fid_mode=self.config.fid_mode, dinov2_weights=self.config.dinov2_weights,
                                       settings=training_metric_settings(self.config), metrics_on=device,
                                       real_stats=self.fid_real_stats, share=share)

            try:
                return on(self._metrics_on)
            except (MemoryError, RuntimeError) as err:
                # metrics share the training GPU: one that does not fit beside training goes on on the CPU
                if not (is_out_of_memory(err) and self._metrics_on is None and self.device.type == "cuda"):
                    raise
            from ganforge.metrics.evaluate import release_feature_networks

            release_feature_networks()
            torch.cuda.empty_cache()
            self._metrics_on = torch.device("cpu")
            logger.message(f"step {self.step}: the metrics ran out of GPU memory beside training; they are computed "
                           "on the CPU from now on (slower; lower metrics_n to keep them on the GPU)")
            return on(self._metrics_on)

        with self._main_rank_buffers() if share is not None else contextlib.nullcontext():
            try:
                results = evaluate(self.config.metrics)
                skipped = False
            except ImageSetError:  # a metric that needs larger images than this (PGAN) scale has: the others go on
                results, skipped = {}, True
                for name in self.config.metrics:
                    try:
                        results.update(evaluate([name]))
                    except ImageSetError as err:
                        if (name, plan.resolution) not in self._skipped_metrics:
                            self._skipped_metrics.add((name, plan.resolution))
                            logger.message(f"step {self.step}: {name} skipped at resolution {plan.resolution} "
                                           f"({err}); computed again once the images are large enough")
        if not self.dist.is_main:  # a share of the work done; the values are rank 0's
            return None
        if results:  # the KID/PR settings of the metrics computed go with their values (they are no values)
            computed = [name for name in map(metric_of_output, results) if name is not None]
            if "fid" in results and self.fid_real_stats is not None:  # which statistics the FID is against
                results["fid_real_stats"] = self._fid_real_stats_label
            counted = {} if self.family.translates else {"n": min(self.config.metrics_n, self.dataset.count)}
            logger.metrics({"step": self.step, "kimg": self.images_seen / 1000, **counted, **results},
                           settings=training_metric_settings(self.config).for_metrics(computed).given())
        if self.config.best_metric is None or (skipped and self.config.best_metric not in results):
            return None
        if self.config.best_metric not in results:  # (checked against `metrics` before training) NaN or infinite
            logger.message(f"step {self.step}: {self.config.best_metric} is not finite at this metric tick (a "
                           "collapsed or diverged generator, e.g. one flat colour channel); this checkpoint is not "
                           "ranked among the best")
            return None
        return float(results[self.config.best_metric])

    # --- signals ----------------------------------------------------------------------------------------------
    def _install_signal_handlers(self) -> dict[int, Any]:
        def request_stop(signum: int, frame: Any) -> None:
            if self._signal_received is not None:  # second signal: stop now
                raise KeyboardInterrupt
            self._signal_received = signum

        previous = {}
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, request_stop)
                # restart interrupted system calls: a signal inside a collective must not fail gloo's socket reads
                signal.siginterrupt(sig, False)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def ranks_higher(family: Family, key: str) -> bool:
    """Whether a higher value of metric output `key` is better (a translating family's protocol ranks its own)."""
    from ganforge.metrics.registry import higher_is_better

    return family.protocol_rankings[key] if family.translates else higher_is_better(key)


def run_outputs(run_dir: Path) -> dict[str, list[Path]]:
    """What ganforge wrote in a run directory (config.json aside, which a new run replaces): kinds of numbered
    files ("sample grids") and single files by name ("log.jsonl"), each matched by the name ganforge gives it, so
    anyone else's files stay where they are."""
    run_dir = Path(run_dir)
    checkpoints, samples = ckpt.checkpoint_dir(run_dir), run_dir / "samples"
    found = {
        "checkpoint files": [p for p in checkpoints.glob("*") if p.suffix in (".json", ".safetensors")
                             and p.stem.isdigit()] + list(checkpoints.glob(".*.tmp")),
        "sample grids": [p for p in samples.glob("*.png") if p.stem.split("-", 1)[0].isdigit()]
        + list(samples.glob(".*.png.tmp")) + list(samples.glob(".progress.gif.tmp")),  # cut short by a kill
        "TensorBoard event files": list((run_dir / "tb").glob("events.out.tfevents.*")),
        "evaluation records": list((run_dir / "eval").glob("stargan2-*.json")),
        **{path.name: [path] for path in (run_dir / "log.jsonl", run_dir / "metrics.jsonl",
                                          run_dir / PER_CLASS_METRICS_NAME,
                                          run_dir / SINGULAR_VALUES_NAME, run_dir / "swd.json",
                                          run_dir / SWD_FLOOR_NAME,
                                          run_dir / ckpt.BEST_NAME, samples / "progress.gif")},
        # a report.html of the user's own (which the run left as it was) is theirs
        **({REPORT_NAME: [run_dir / REPORT_NAME]} if written_by_ganforge(run_dir / REPORT_NAME) else {}),
        "report temp files": list(run_dir.glob(f".{REPORT_NAME}.*.tmp")),
    }
    return {kind: sorted(p for p in paths if p.is_file()) for kind, paths in found.items()}


def clear_run(run_dir: Path) -> str:
    """`--restart`: remove everything the earlier run wrote (`run_outputs`) and the folders that leaves empty;
    returns what went ("4 sample grids, log.jsonl, ..."; "" when nothing)."""
    removed = {kind: paths for kind, paths in run_outputs(run_dir).items() if paths}
    for path in (p for paths in removed.values() for p in paths):
        path.unlink()
    for folder in (ckpt.checkpoint_dir(run_dir), Path(run_dir) / "samples", Path(run_dir) / "tb",
                   Path(run_dir) / "eval"):
        with contextlib.suppress(OSError):  # absent, or holding files ganforge did not write
            folder.rmdir()
    return ", ".join(kind if " " not in kind else f"{len(paths)} {kind if len(paths) > 1 else kind[:-1]}"
                     for kind, paths in removed.items())


def _trained_processes(resume: ckpt.Checkpoint) -> int:
    """The process count the checkpoint was written in (a damaged record's value named, not a traceback)."""
    count = resume.meta.get("world_size", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ckpt.CheckpointError(f"{resume.path}: world_size {count!r}: expected the positive process count it was "
                                   "written in")
    return count


def check_batch_sizes(family: Family, world_size: int) -> None:
    """Every global batch size of the schedule must split evenly over the processes: uneven shares would still
    have their gradients averaged with equal weights."""
    for key, size in family.batch_sizes().items():
        if size % world_size:
            raise ConfigError(f"{key}: batch size {size} is not divisible by the {world_size} processes; use a "
                              f"multiple of {world_size}")
    family.check_shares(world_size)


def check_training_metrics(config: RunConfig, data_source: str | None = None,
                           device: torch.device | None = None, *, images: int | None = None,
                           evaluates: bool = True) -> ReferenceStats | None:
    """Unknown metric names, and an FID mode, DINOv2 weights, FID statistics file or KID/PR settings that no
    metric uses or `images` (what a tick compares) cannot serve fail now rather than hours into a run; returns the
    statistics of `fid_real_stats`, read and checked. On a process that `evaluates` (under torchrun every rank of
    a generating family, which computes its share of each tick; rank 0 alone for a translating family's protocol,
    the others neither download weights nor hold networks) the weights are found or downloaded and the metric
    networks loaded on the metrics' device and kept for the ticks, so a missing or wrong weights file fails now too
    (for a translating family: its protocol's networks, and its validation store beside the opened training store
    `data_source`)."""
    from ganforge.metrics.inception import DEFAULT_FID_MODE
    from ganforge.metrics.prdc import DC_K
    from ganforge.metrics.registry import INCEPTION_METRICS, METRICS, METRICS_SERVED, check_metrics

    settings = training_metric_settings(config)
    translates = get_family(config.family).translates
    # the names as the registry reads them (any case); a translating family's metrics are its protocol's
    names = check_metrics(config.metrics) if config.metrics and not translates else []
    protocol = (f"a {config.family} run is evaluated by its paper's protocol (FID and LPIPS per domain task), "
                "which has no {}")
    if config.dinov2_weights is not None and "fd_dinov2" not in names:
        raise ConfigError("dinov2_weights: " + (protocol.format("fd_dinov2") if translates else
                                                f"set for fd_dinov2, which is not among metrics {config.metrics}"))
    if config.fid_real_stats is not None and "fid" not in names:
        raise ConfigError("fid_real_stats: " + (protocol.format("statistics file (its FID compares with the "
                                                                "training images of each target domain)")
                                                if translates
                                                else f"set for fid, which is not among metrics {config.metrics}"))
    if translates:
        from ganforge.evaluation.stargan2 import check_protocol_ready

        if settings.given():
            raise ConfigError(f"{', '.join(settings.given())}: {protocol.format('KID or precision/recall')}")
        if config.metrics:
            check_protocol_ready(data_source or config.data, config.metrics, config.inception_weights,
                                 device or torch.device("cpu"), load_networks=evaluates)
        return None
    try:
        settings.check_used(names)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if images is not None and (config.kid_subset_size or 0) > images:
        raise ConfigError(f"kid_subset_size: {config.kid_subset_size} needs more than the {images} images each "
                          "metric tick compares (metrics_n, or all the dataset holds)")
    if images is not None and "pr" in names and settings.value("pr_k") >= images:  # the default k = 3 too
        k = settings.value("pr_k")
        raise ConfigError(f"pr_k: precision/recall with k = {k}{'' if config.pr_k else ' (the default)'} needs "
                          f"more than {k} images at each metric tick, which compares {images} (metrics_n, or all "
                          "the dataset holds)")
    if images is not None and "dc" in names and images <= DC_K:
        raise ConfigError(f"metrics: dc (density and coverage, k = {DC_K}) needs more than {DC_K} images at each "
                          f"metric tick, which compares {images} (metrics_n, or all the dataset holds)")
    if config.inception_weights is not None and not any(METRICS[name].needs_inception for name in names):
        raise ConfigError(f"inception_weights: for {', '.join(INCEPTION_METRICS)}, none of which is among metrics "
                          f"{config.metrics}")
    if config.fid_mode != DEFAULT_FID_MODE and not any(METRICS[name].needs_inception for name in names):
        raise ConfigError(f"fid_mode: {config.fid_mode!r} is for the Inception metrics "
                          f"({', '.join(INCEPTION_METRICS)}), and none of metrics {config.metrics} is one")
    stats = None
    if config.fid_real_stats is not None:
        from ganforge.metrics.fid_stats import StatsFileError, read_stats

        try:
            stats = read_stats(config.fid_real_stats)
        except StatsFileError as err:
            raise ConfigError(f"fid_real_stats: {err}") from None
        if stats.network != "inception":
            raise ConfigError(f"fid_real_stats: {config.fid_real_stats} holds {stats.network} statistics (for "
                              f"`ganforge evaluate --real-stats` with {' and '.join(METRICS_SERVED[stats.network])}); "
                              "training's FID needs Inception pool3 ones")
        if stats.fid_mode is not None and stats.fid_mode != config.fid_mode:
            raise ConfigError(f"fid_real_stats: {config.fid_real_stats}: statistics made with fid_mode "
                              f"{stats.fid_mode}, and this run's fid_mode is {config.fid_mode} (FIDs of different "
                              "modes do not compare)")
        if stats.fid_mode is None:
            warnings.warn(f"fid_real_stats: {config.fid_real_stats} does not say how it was made (a file from "
                          "elsewhere): its FIDs are right for TF-Inception statistics of images at the run's "
                          "resolution made as this run's fid_mode resizes (legacy-tf: TTUR's files; pytorch-fid: "
                          "pytorch-fid's --save-stats), not for BigGAN-PyTorch's inception moments (torchvision's "
                          "Inception); `ganforge stats` writes files that say", stacklevel=2)
    if not evaluates:
        return stats
    from ganforge.metrics.evaluate import load_feature_networks, metrics_device, resolve_network_weights

    for network in dict.fromkeys(METRICS[name].network for name in names if METRICS[name].network):
        resolve_network_weights(network, inception_weights=config.inception_weights,
                                dinov2_weights=config.dinov2_weights)
    if any(METRICS[name].network for name in names):

        load_feature_networks(names, device=metrics_device(device), fid_mode=config.fid_mode,
                              inception_weights=config.inception_weights, dinov2_weights=config.dinov2_weights)
    return stats


def training_metric_settings(config: RunConfig) -> MetricSettings:
    """The run's KID and precision/recall settings (config keys kid_subsets, kid_subset_size, pr_k) as a
    MetricSettings; a bad value is a ConfigError naming its key."""
    from ganforge.metrics.registry import MetricSettings

    try:
        return MetricSettings(kid_subsets=config.kid_subsets, kid_subset_size=config.kid_subset_size,
                              pr_k=config.pr_k, given_as="config")
    except ValueError as err:
        raise ConfigError(str(err)) from None


def open_run_dataset(spec: str, run_dir: Path, resume: ckpt.Checkpoint | None) -> Any:
    """The run's dataset; when a resumed run's own store is gone, an error saying where it was and what to do."""
    try:
        return open_dataset(spec)
    except (OSError, ValueError):
        saved = resume.meta["config"].get("data") if resume is not None else None
        if saved is None or resolved_data_spec(saved) != spec or Path(spec).exists():
            raise
        raise ConfigError(f"{run_dir} was trained on the dataset {spec}, which is no longer there (moved or "
                          "deleted?); resume with --data NEW_PATH naming where that same store is now") from None


def cuda_tf32_flags(tf32: str) -> tuple[bool, bool]:
    """(torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) for the config's `tf32`."""
    return tf32 == "all", tf32 != "off"


def is_same_dataset(saved_manifest: dict[str, Any] | None, dataset: Any) -> bool:
    """Whether `dataset` is the one a checkpoint recorded (its manifest): a store moved elsewhere still is."""
    if not saved_manifest:
        return False
    current = {k: v for k, v in dataset.manifest.items() if k != "skipped"}
    return json.loads(json.dumps(current)) == saved_manifest


def config_differences(saved: dict[str, Any], requested: dict[str, Any], prefix: str = "") -> dict[str, tuple]:
    """Dotted key path -> (saved value, requested value) for every setting that differs (nested mappings walked)."""
    differing = {}
    for key in sorted(set(saved) | set(requested), key=str):
        old, new = saved.get(key), requested.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            differing.update(config_differences(old, new, f"{prefix}{key}."))
        elif old != new:
            differing[f"{prefix}{key}"] = (old, new)
    return differing


# what makes a store the same data: a store replaced at its path by another (`prepare --overwrite`) differs here
# (not its crop source: re-preparing the same images with one, as StarGAN v2's training advises, is the same data)
DATASET_IDENTITY = ("source", "count", "resolution", "channels", "labels", "preprocessing")
# compared only where both manifests record it: stores written before the record are not other data for lacking it
RECORDED_SINCE = ("preprocessing",)
# what the networks are built for: an imported run that has not trained may take other data, not of other channels
# (a conditional family checks the label columns it conditions on itself)
NETWORK_SHAPING = ("channels",)


def _check_same_data(run_dir: Path, saved_manifest: dict[str, Any] | None, dataset: Any, data: str, *,
                     imported: bool = False) -> None:
    """A resume reads the data the run trained on: a store replaced at the same path (other images, count or
    channels) is refused by name, not trained on silently or failing later in a network's state dict. An
    imported run that has not trained yet may take other data of the same channels."""
    if not saved_manifest:  # checkpoints that predate the record
        return
    current = json.loads(json.dumps(dataset.manifest))
    keys = NETWORK_SHAPING if imported else DATASET_IDENTITY
    changed = [f"{key}: {json.dumps(saved_manifest.get(key))} → {json.dumps(current.get(key))}"
               for key in keys if saved_manifest.get(key) != current.get(key)
               and not (key in RECORDED_SINCE and None in (saved_manifest.get(key), current.get(key)))]
    if changed and imported:
        raise ConfigError(f"{data} does not fit the imported networks of {run_dir} ({'; '.join(changed)}): give data "
                          "of the channels they were made for")
    if changed:
        raise ConfigError(f"{data} is not the data {run_dir} was trained on ({'; '.join(changed)}). Resume with the "
                          f"run's own data, or train its weights on this data in a new run: --init-from {run_dir} "
                          "--run NEW_DIR")


def _check_same_config(run_dir: Path, saved: dict[str, Any], requested: dict[str, Any], *,
                       same_dataset: bool = False, imported: bool = False) -> None:
    """A resume must not silently change the run: any difference in the config is an error, except a longer
    schedule (training on for more steps changes nothing already done), the `RESUMABLE_CHANGES` settings and, with
    `same_dataset` or for an `imported` run that has not trained yet, the dataset. The saved config is read as a
    config file would be, so keys added since it was written compare at their defaults, and data paths compare
    resolved (as from the current directory)."""
    if saved.get("family") != requested["family"]:
        raise ConfigError(f"{run_dir} is a {saved.get('family')} run, not {requested['family']}: resume it with "
                          f"`ganforge train {saved.get('family')}`, or give a new --run directory")
    try:
        saved = to_dict(resolve_run_config(None, migrated_saved_config(dict(saved))))
    except ConfigError as err:
        raise ConfigError(f"{run_dir}: the run's saved config does not load: {err}") from None
    saved["data"], requested = resolved_data_spec(saved["data"]), {**requested,
                                                                   "data": resolved_data_spec(requested["data"])}
    may_change = set(RESUMABLE_CHANGES) - ({"device"} if saved["amp"] == "auto" else set())  # auto: per device
    if same_dataset or imported:
        may_change.add("data")
    differing = {path: values for path, values in config_differences(saved, requested).items()
                 if not any(path == key or path.startswith(f"{key}.") for key in may_change)}
    settable = {path.partition(".")[2] for path in may_change if path.startswith("model.")}
    # the saved model with the settings a resume may change as requested: only the schedule is left to compare
    saved_model = {**saved["model"], **{key: requested["model"][key] for key in settable if key in requested["model"]}}
    if any(path.startswith("model.") for path in differing) and saved["family"] == requested["family"] and get_family(
            saved["family"]).extends_schedule(saved_model, requested["model"]):
        differing = {path: values for path, values in differing.items() if not path.startswith("model.")}
    if differing:
        detail = "; ".join(f"{path}: {json.dumps(old)} → {json.dumps(new)}" for path, (old, new) in differing.items())
        other_data = (f" To train its weights on other data, start a new run from them: --init-from {run_dir} --run "
                      "NEW_DIR (--restart would delete them)." if "data" in differing else "")
        raise ConfigError(f"{run_dir} was trained with a different config (saved → now: {detail}). Resume without "
                          f"-c/--set, or start over with --restart or a new --run directory.{other_data}")


def train(config: RunConfig, run_dir: Path, *, restart: bool = False, until: int | None = None) -> TrainResult:
    """Train (or resume) the run in `run_dir`; returns where it stopped."""
    if until is not None and until < 0:  # before a restart clears anything (0: build the run, train nothing)
        raise ConfigError(f"until={until}: expected a step count of 0 or more")
    if restart and until == 0:
        raise ConfigError("until=0 with restart: it would delete what the run wrote and train nothing; leave one out")
    if Path(run_dir).exists() and not Path(run_dir).is_dir():  # before the lock makes the folder
        raise ConfigError(f"{run_dir}: is a file, not a run folder; give a folder for the run")
    # the main process alone guards the folder (torchrun's other ranks share it, on this node or another); RANK
    # counts only in a job of several processes, as init_distributed reads it
    other_rank = int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK", "0") != "0"
    with contextlib.nullcontext() if other_rank else ckpt.training_lock(run_dir):
        try:
            trainer = Trainer(config, run_dir, restart=restart)
        except BaseException:  # a refused config or resume: the process group it joined is left again
            shutdown_distributed(DistInfo(world_size=int(os.environ.get("WORLD_SIZE", "1"))))
            raise
        try:
            result = trainer.train(until=until)
            # rank 0 writes the last checkpoint, samples and report alone; the ranks leave the group together (not
            # after an error, where the other ranks may never arrive)
            trainer.dist.barrier()
            return replace(result, main_process=trainer.dist.is_main)
        finally:
            shutdown_distributed(trainer.dist)
            if trainer.config.metrics:  # the feature networks kept for the ticks (DINOv2: 1.2 GB) are let go
                from ganforge.metrics.evaluate import release_feature_networks

                release_feature_networks()
