"""Progressive GAN (Karras et al. 2018) as a family: growing schedule, fade-in, WGAN-GP + drift (or, as an option,
StyleGAN's logistic loss with R1: `loss: logistic-r1`), EMA generator.

Two variants share everything but a few documented details (see models/pgan.py for the network side):
- `paper` (official TF code): Adam state reset at the start of every fade and every stable phase, EMA kept
  across growth, mirror augmentation on, gradient penalty on the gradient TF differentiates (with respect to
  images upscaled to the final resolution: the native norm divided by final / current resolution).
- `zoo` (pytorch_GAN_zoo): Adam state and EMA reset at each growth, no mirroring, penalty at the native
  resolution, GDPP weighted against the batch-summed G loss as the zoo does.
Both fix the zoo's bugs: D fades at 4→8 too, a per-scale learning rate really reaches the optimiser, and the
optimiser state is checkpointed. With `conditions` each variant trains as its reference's AC-GAN (see d_loss).

Alpha follows the zoo: it is the weight of the OLD (lower-resolution) path, 1 at the start of a fade, 0 after.
"""

from __future__ import annotations

import bisect
import copy
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch

from ganforge.config import COMMAND_LINE, ConfigError, from_dict
from ganforge.data.loader import Batch, DataOptions
from ganforge.families.base import Family, Phase, StepPlan, check_adam, check_conditions, condition_columns
from ganforge.families.pgan_zoo_config import ZOO_ALPHA_JUMP_SIZE, ZOO_ALPHA_JUMPS
from ganforge.losses import (
    WASSERSTEIN_CRITIC,
    drift_penalty,
    gdpp_loss,
    gradient_penalty,
    logistic_discriminator_loss,
    nonsaturating_generator_loss,
    r1_penalty,
    wgan_critic_loss,
    wgan_generator_loss,
)
from ganforge.models.pgan import PGANArch, PGANDiscriminator, PGANGenerator, pgan_widths
from ganforge.nn.double_backward import penalised_convolutions
from ganforge.nn.ema import check_ema_rampup, copy_weights
from ganforge.nn.optim import adam
from ganforge.settings import Settings

# Each unit's own schedule keys with their defaults; the other unit's keys do nothing and must stay unset (None).
UNIT_KEYS: dict[str, dict[str, Any]] = {
    "iterations": {"max_iter_at_scale": [48000, 96000, 96000, 96000, 96000, 96000], "alpha_jumps": ZOO_ALPHA_JUMPS,
                   "alpha_jump_size": ZOO_ALPHA_JUMP_SIZE},
    "kimg": {"stable_kimg": 600.0, "transition_kimg": 600.0, "total_kimg": None},
}
# Keys that do nothing in some configs (then refused), with the defaults every saved run config held before.
_MODEL_DEFAULTS = {"fmap_base": 8192, "fmap_max": 512}
# Each loss's own keys with their defaults; another loss's keys do nothing and must stay unset (None).
LOSS_KEYS: dict[str, dict[str, float]] = {"wgan-gp": {"lambda_gp": 10.0, "drift": 0.001},
                                          "logistic-r1": {"r1_gamma": 10.0, "r1_interval": 1}}
_BATCH_DEFAULT = 16
# Model keys newer than some saved run configs, with the value that behaves as those runs did without them.
_ADDED_LATER: dict[str, Any] = {"ema_rampup": None, "loss": "wgan-gp", "r1_gamma": None, "r1_interval": None,
                                "styles": False, "mapping_layers": None, "conditions": None,
                                "condition_weight_d": None, "condition_weight_g": None, "micro_batches": 1}
_CONDITION_WEIGHT_DEFAULT = 1.0  # weightConditionD / weightConditionG of the zoo's presets that condition (dtd)
_MAPPING_LAYERS_DEFAULT = 2


def _other_unit(unit: str) -> str:
    return "kimg" if unit == "iterations" else "iterations"


def _resolutions(resolution: int) -> list[int]:
    return [4 * 2**s for s in range(int(math.log2(resolution)) - 1)]


@dataclass
class PGANSchedule(Settings):
    """Zoo style (`unit: iterations`: maxIterAtScale + linear alpha jumps) or official style (`unit: kimg`).

    The keys of the unit not chosen default to None and are refused when set: they would do nothing. So is
    `batch_size` when `batch_per_resolution` names every resolution (checked by PGANConfig, which knows them).
    """

    unit: Literal["iterations", "kimg"] = "iterations"
    max_iter_at_scale: list[int] | None = None
    # a scale's fade: alpha_jumps steps of alpha over alpha_jump_size iterations each (no fade: alpha_jumps 0)
    alpha_jumps: list[int] | int | None = None
    alpha_jump_size: list[int] | int | None = None
    stable_kimg: float | None = None
    transition_kimg: float | None = None
    total_kimg: float | None = None
    batch_size: int | None = None  # default 16 where some resolution has no batch_per_resolution entry
    batch_per_resolution: dict[int, int] = field(default_factory=dict)
    lr_per_resolution: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        other = _other_unit(self.unit)
        for key in UNIT_KEYS[other]:
            if getattr(self, key) is not None:
                raise ConfigError(f"model.schedule.{key}: a `unit: {other}` key, but this schedule has "
                                  f"`unit: {self.unit}` (keys {', '.join(UNIT_KEYS[self.unit])}), where it would "
                                  "do nothing; remove it or change the unit")
        for key, default in UNIT_KEYS[self.unit].items():
            if getattr(self, key) is None:
                setattr(self, key, copy.deepcopy(default))


@dataclass
class PGANConfig(Settings):
    variant: Literal["paper", "zoo"] = "paper"
    resolution: int = 128
    latent_dim: int = 512
    widths: list[int] | None = None  # per scale 4, 8, …; default min(fmap_base / 2^(log2 res − 1), fmap_max)
    fmap_base: int | None = None  # 8192 unless widths are given (then refused: it would do nothing)
    fmap_max: int | None = None  # 512 unless widths are given
    mbstd_group_size: int = 4
    # StyleGAN's latent at every layer of G (see models.pgan); off in both references
    styles: bool = False
    mapping_layers: int | None = None  # of the styles' mapping network: 2 with styles (refused without)
    loss: Literal["wgan-gp", "logistic-r1"] = "wgan-gp"  # logistic-r1: StyleGAN's loss on these networks
    lambda_gp: float | None = None  # wgan-gp's penalty weight, 10 (refused with logistic-r1: it would do nothing)
    drift: float | None = None  # wgan-gp's ε-drift, 0.001 (likewise)
    r1_gamma: float | None = None  # logistic-r1's γ, 10 as StyleGAN's (refused with wgan-gp)
    # logistic-r1: R1 every this many steps (StyleGAN2's lazy regularisation, which uses 16); 1: every step (StyleGAN)
    r1_interval: int | None = None
    gdpp: float = 0.0  # weight of the GDPP term in the G loss; 0 = off
    # every phase's batch computed in this many slices whose gradients add up before the optimiser step: the
    # activation memory of a slice (the zoo's issue #113: 512-1024 px); each slice holds whole minibatch-stddev
    # groups, so the update is the whole batch's up to float rounding (with augment on, each slice draws its own
    # transforms). One count for every resolution, or {resolution: count} for some (the others whole): official
    # schedules' batches fall with the resolution, and a batch of one group cannot be sliced
    micro_batches: int | dict[int, int] = 1
    # AC-GAN as pytorch_GAN_zoo (its attribute dict) and the TF code (its labels) condition: label columns of the
    # store given to G, whose classes D also predicts; the weights of D's and G's classification losses (default 1)
    conditions: list[str] | None = None
    condition_weight_d: float | None = None
    condition_weight_g: float | None = None
    lr: float = 0.001
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    adam_eps: float = 1e-8  # the reference's ε (the zoo variant divides it by the batch: see PGANFamily.adam_eps)
    ema_decay: float = 0.999
    ema_rampup: float | None = None  # stylegan2-ada's EMA warm-up (e.g. 0.05; see nn.ema.ramped_ema_decay); None: off
    mirror: bool | None = None  # None: the variant's default (paper on, zoo off)
    schedule: PGANSchedule = field(default_factory=PGANSchedule)

    def __post_init__(self) -> None:
        if self.resolution < 4 or self.resolution & (self.resolution - 1):
            raise ConfigError(f"model.resolution: expected a power of two >= 4, got {self.resolution}")
        for name, default in _MODEL_DEFAULTS.items():
            if self.widths is not None and getattr(self, name) is not None:
                raise ConfigError(f"model.{name}: does nothing when model.widths is given (the widths set every "
                                  "scale); remove one of them")
            if self.widths is None and getattr(self, name) is None:
                setattr(self, name, default)
        for loss, keys in LOSS_KEYS.items():
            for name, default in keys.items():
                value = getattr(self, name)
                if loss != self.loss and value is not None:
                    raise ConfigError(f"model.{name}: a `loss: {loss}` setting, but this config has `loss: "
                                      f"{self.loss}`, where it would do nothing; remove it or change the loss")
                if loss == self.loss:
                    if value is None:
                        setattr(self, name, default)
                    elif value < 0:
                        raise ConfigError(f"model.{name}: expected a number >= 0, got {value}")
        if not self.styles and self.mapping_layers is not None:
            raise ConfigError(f"model.mapping_layers: {self.mapping_layers} does nothing without model.styles: true; "
                              "remove it or turn the styles on")
        if self.styles and self.mapping_layers is None:
            self.mapping_layers = _MAPPING_LAYERS_DEFAULT
        if self.mapping_layers is not None and self.mapping_layers < 0:
            raise ConfigError(f"model.mapping_layers: expected an integer >= 0, got {self.mapping_layers!r}")
        check_conditions(self.conditions)
        if self.conditions is not None and self.styles:
            raise ConfigError("model.conditions: label conditioning is offered for the references' G, not with "
                              "model.styles")
        for name in ("condition_weight_d", "condition_weight_g"):
            value = getattr(self, name)
            if self.conditions is None and value is not None:
                raise ConfigError(f"model.{name}: does nothing without model.conditions (the label columns to "
                                  "condition on); remove it or name the columns")
            if self.conditions is not None:
                if value is None:
                    setattr(self, name, _CONDITION_WEIGHT_DEFAULT)
                elif value < 0:
                    raise ConfigError(f"model.{name}: expected a number >= 0, got {value}")
        per_resolution = self.micro_batches if isinstance(self.micro_batches, dict) else {}
        for resolution, count in per_resolution.items():
            if resolution not in _resolutions(self.resolution):
                raise ConfigError(f"model.micro_batches.{resolution}: {resolution} px is not one of the networks' "
                                  f"resolutions {_resolutions(self.resolution)}")
            if count < 1:
                raise ConfigError(f"model.micro_batches.{resolution}: expected an integer >= 1, got {count!r}")
        if not isinstance(self.micro_batches, dict) and self.micro_batches < 1:
            raise ConfigError(f"model.micro_batches: expected an integer >= 1, got {self.micro_batches!r}")
        most = max(per_resolution.values(), default=1) if isinstance(self.micro_batches, dict) else self.micro_batches
        if most > 1 and self.gdpp > 0:
            raise ConfigError(f"model.micro_batches: {self.micro_batches} with model.gdpp {self.gdpp}: GDPP compares "
                              "the eigenvectors of a whole batch's D features, which slices do not add up to; use "
                              "model.micro_batches: 1 or turn GDPP off")
        check_adam(self.betas, self.adam_eps)
        if self.gdpp < 0:
            raise ConfigError(f"model.gdpp: expected a weight >= 0 (0: off), got {self.gdpp}")
        if self.r1_interval is not None and self.r1_interval < 1:
            raise ConfigError(f"model.r1_interval: expected an integer >= 1, got {self.r1_interval!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay: expected a number in [0, 1), got {self.ema_decay}")
        check_ema_rampup(self.ema_rampup, decay=self.ema_decay)
        for name in ("latent_dim", "mbstd_group_size", "fmap_base", "fmap_max"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"model.{name}: expected a positive integer, got {getattr(self, name)}")
        sched = self.schedule
        if set(_resolutions(self.resolution)) <= set(sched.batch_per_resolution):
            if sched.batch_size is not None:
                raise ConfigError(f"model.schedule.batch_size: does nothing, batch_per_resolution names every "
                                  f"resolution {_resolutions(self.resolution)}; remove it")
        elif sched.batch_size is None:
            sched.batch_size = _BATCH_DEFAULT


def without_idle_jumps(data: dict[str, Any]) -> dict[str, Any]:
    """A saved PGAN run config whose alpha jump pairs hold a 0 beside a count (a fade of no iterations, accepted
    before such pairs were refused) with the no-fade pair (0, 0) that schedules the same steps."""
    model = data.get("model")
    schedule = model.get("schedule") if isinstance(model, dict) else None
    if not isinstance(schedule, dict) or schedule.get("unit", "iterations") != "iterations":
        return data
    jumps, sizes = schedule.get("alpha_jumps"), schedule.get("alpha_jump_size")
    if not all(isinstance(v, int) or (isinstance(v, list) and all(isinstance(e, int) for e in v))
               for v in (jumps, sizes)):
        return data  # unset (the defaults pair) or malformed: left to the checks
    if isinstance(jumps, int) and isinstance(sizes, int):  # one pair for every scale from 1
        if not (jumps and not sizes):
            return data
        fixed: tuple[Any, Any] = (0, 0)
    else:  # what compile_schedule refuses for new runs, and only that (a resume with the -c file still matches)
        length = max(len(v) for v in (jumps, sizes) if isinstance(v, list))
        listed = [v if isinstance(v, list) else [v] * length for v in (jumps, sizes)]
        if len(listed[0]) != len(listed[1]):
            return data  # lengths the checks name
        pairs = list(zip(*listed, strict=True))
        new_jumps = [0 if j and not z else j for j, z in pairs]
        new_sizes = [0 if z and not j else z for j, z in pairs] if isinstance(sizes, list) else sizes
        if new_jumps == listed[0] and new_sizes == sizes:
            return data
        fixed = (new_jumps if new_jumps != listed[0] else jumps, new_sizes)
    return {**data, "model": {**model, "schedule": {**schedule, "alpha_jumps": fixed[0],
                                                     "alpha_jump_size": fixed[1]}}}


def _without_inert_keys(model: Any, *, only_old_defaults: bool) -> Any:
    """A model mapping saved by ganforge before inert keys were refused, with those keys unset (None).

    Such saved configs list every PGANConfig and PGANSchedule key, the inert ones with the old defaults (which
    did nothing). With `only_old_defaults`, a value the user set there (ignored then too) is kept, so that
    loading it names it as an error instead of dropping it silently.
    """
    schedule = model.get("schedule") if isinstance(model, dict) else None
    if (not isinstance(schedule, dict) or set(model) != {f.name for f in fields(PGANConfig)} - set(_ADDED_LATER)
            or set(schedule) != {f.name for f in fields(PGANSchedule)}):
        return model
    inert_model = set(_MODEL_DEFAULTS) if model.get("widths") is not None else set()
    inert_schedule = set(UNIT_KEYS[_other_unit(schedule.get("unit"))])
    try:
        if set(_resolutions(int(model["resolution"]))) <= {int(k) for k in schedule["batch_per_resolution"] or {}}:
            inert_schedule.add("batch_size")
    except (TypeError, ValueError):  # malformed: left for the config check to name
        pass
    old = {**_MODEL_DEFAULTS, **UNIT_KEYS["iterations"], **UNIT_KEYS["kimg"], "batch_size": _BATCH_DEFAULT}

    def unset(keys: set[str], values: dict[str, Any]) -> dict[str, Any]:
        return {k: None if k in keys and (not only_old_defaults or v == old[k]) else v for k, v in values.items()}

    return {**unset(inert_model, model), "schedule": unset(inert_schedule, schedule)}


@dataclass(frozen=True)
class ScaleSegment:
    """One resolution's stretch of the run: [start, start + steps) with the first `fade_steps` fading in."""

    scale: int
    resolution: int
    batch_size: int
    start: int
    steps: int
    fade_steps: int
    alpha_jumps: int  # > 0: zoo-style stepwise alpha with this many jumps; 0: continuous (kimg) fade

    def alpha(self, local_step: int) -> float:
        if self.scale == 0 or local_step >= self.fade_steps:
            return 0.0
        if self.alpha_jumps:
            size = self.fade_steps // self.alpha_jumps
            return max(0.0, 1.0 - (local_step // size) / self.alpha_jumps)
        return 1.0 - local_step / self.fade_steps


def _per_scale(value: list[int] | int, scales: int, key: str) -> list[int]:
    """One entry per scale; a longer list is cut to the networks' scales, as the zoo cuts its lists, with a warning
    (runs saved with one must still load); scale 0 (4×4) has nothing to fade from, so its entry must be 0 (anything
    else would be ignored)."""
    if any(entry < 0 for entry in (value if isinstance(value, list) else [value])):
        raise ConfigError(f"model.schedule.{key}: expected counts >= 0, got {value}")
    if isinstance(value, int):
        return [0] + [value] * (scales - 1)
    if len(value) < scales:
        raise ConfigError(f"model.schedule.{key}: {len(value)} entries but the networks have {scales} scales")
    if len(value) > scales:
        warnings.warn(f"model.schedule.{key}: {len(value)} entries for the networks' {scales} scales; the last "
                      f"{len(value) - scales} are not used", stacklevel=2)
    if value[0] != 0:
        raise ConfigError(f"model.schedule.{key}[0]: scale 0 (4x4) has no lower resolution to fade from, so its "
                          f"entry must be 0, got {value[0]}")
    return list(value[:scales])


def resolution_lr(config: PGANConfig, resolution: int) -> float:
    """G's and D's learning rate at `resolution` (its fade included): its `lr_per_resolution` entry, else `lr`."""
    return config.schedule.lr_per_resolution.get(resolution, config.lr)


def compile_schedule(config: PGANConfig) -> list[ScaleSegment]:
    """The schedule as consecutive segments, one per scale, in steps (one D step + one G step each)."""
    sched = config.schedule
    scales = int(math.log2(config.resolution)) - 1
    for res in list(sched.batch_per_resolution) + list(sched.lr_per_resolution):
        if res not in [4 * 2**s for s in range(scales)]:
            raise ConfigError(f"model.schedule: resolution {res} in a per-resolution table is not one of the "
                              f"networks' resolutions {[4 * 2**s for s in range(scales)]}")
    for key, lr in [("model.lr", config.lr)] + [(f"model.schedule.lr_per_resolution.{res}", value)
                                                 for res, value in sched.lr_per_resolution.items()]:
        if not lr > 0:
            raise ConfigError(f"{key}: expected a positive learning rate, got {lr}")
    segments, start = [], 0
    if sched.unit == "iterations":
        if len(sched.max_iter_at_scale) != scales:
            raise ConfigError(f"model.schedule.max_iter_at_scale: {len(sched.max_iter_at_scale)} entries but "
                              f"resolution {config.resolution} has {scales} scales (4…{config.resolution})")
        jumps = _per_scale(sched.alpha_jumps, scales, "alpha_jumps")
        sizes = _per_scale(sched.alpha_jump_size, scales, "alpha_jump_size")
        for s in range(1, scales):  # saved runs' such pairs read as the no-fade pair they trained (migrated_...)
            if jumps[s] and not sizes[s]:
                raise ConfigError(f"model.schedule.alpha_jump_size[{s}]: 0 iterations per jump for alpha_jumps[{s}] "
                                  f"= {jumps[s]} jumps does nothing (the zoo would hold alpha at 1 all scale); give "
                                  f"the jumps a size, or alpha_jumps[{s}] = 0 for no fade")
            if sizes[s] and not jumps[s] and isinstance(sched.alpha_jump_size, list):
                raise ConfigError(f"model.schedule.alpha_jump_size[{s}]: {sizes[s]} does nothing, alpha_jumps[{s}] "
                                  "is 0 (no fade at that scale); set it to 0")
    else:
        stable_images, fade_images = round(sched.stable_kimg * 1000), round(sched.transition_kimg * 1000)
        if stable_images < 1 or fade_images < 0:
            raise ConfigError(f"model.schedule: stable_kimg must be positive and transition_kimg not negative, got "
                              f"{sched.stable_kimg:g} and {sched.transition_kimg:g}")
        used = 0
    for s in range(scales):
        res = 4 * 2**s
        batch = sched.batch_per_resolution.get(res, sched.batch_size)
        if batch < 1:
            raise ConfigError(f"model.schedule: batch size {batch} at resolution {res} must be positive")
        if sched.unit == "iterations":
            steps = sched.max_iter_at_scale[s]
            n_jumps = jumps[s] if s else 0
            fade = n_jumps * sizes[s]
            if steps < 1 or fade > steps:
                raise ConfigError(f"model.schedule: scale {s} has {steps} iterations but its fade needs {fade} "
                                  f"({n_jumps} alpha jumps × {sizes[s]} iterations)")
        else:  # TF's TrainingSchedule on the images shown before each step: stable while they are <= the phase's
            n_jumps = 0  # stable count (lod still whole), fading while below the next phase, the run while < total
            fade_end = s * (stable_images + fade_images)
            stable_end = fade_end + stable_images
            last = s == scales - 1
            if last and sched.total_kimg is not None:
                stable_end = round(sched.total_kimg * 1000)
                if stable_end <= fade_end:
                    raise ConfigError(f"model.schedule.total_kimg: {sched.total_kimg} kimg ends before the final "
                                      f"resolution {res} is reached ({fade_end / 1000:g} kimg)")
            fade = max(0, math.ceil((fade_end - used) / batch))
            stable_from = used + fade * batch
            stable = math.ceil((stable_end - stable_from) / batch) if last else (stable_end - stable_from) // batch + 1
            steps = fade + stable
            if steps < 1:
                raise ConfigError(f"model.schedule: resolution {res} gets no step: the earlier resolutions' batches "
                                  f"already pass its end at {stable_end / 1000:g} kimg (use longer phases)")
        segments.append(ScaleSegment(s, res, batch, start, steps, fade, n_jumps))
        start += steps
        if sched.unit == "kimg":
            used += steps * batch
    return segments


def _keeps(old: Any, new: Any) -> bool:
    """`new` holds `old` as it was: a per-scale list as its start, a per-resolution table's entries unchanged."""
    if isinstance(old, list) and isinstance(new, list):
        return new[: len(old)] == old
    if isinstance(old, dict) and isinstance(new, dict):
        return all(key in new and new[key] == value for key, value in old.items())
    return old == new


def _adds_scales(saved: dict[str, Any], requested: dict[str, Any]) -> bool:
    """Scales added above the saved run's resolution with everything it trained kept (pytorch_GAN_zoo #125: train a
    finished run on to a larger size): the same settings, its widths, per-scale lists and per-resolution entries as
    the start of the new ones, and its schedule's segments the first of the new schedule's. False where the
    resolution does not grow; a growth that would change what was trained is a ConfigError saying what."""
    old_res, new_res = saved.get("resolution", 0), requested.get("resolution")
    if not isinstance(new_res, int) or new_res <= old_res:
        return False
    grown = f"model.resolution {old_res} → {new_res} adds scales to the trained run, so"
    # micro_batches (how a step is sliced, any resume may change it) may name the new resolutions already
    others = {k for k in set(saved) | set(requested) if saved.get(k) != requested.get(k)} \
        - {"resolution", "widths", "schedule", "micro_batches"}
    if others:
        raise ConfigError(f"{grown} every other setting must stay as trained; changed: "
                          f"{', '.join(f'model.{key}' for key in sorted(others))}")
    old_schedule, new_schedule = saved.get("schedule") or {}, requested.get("schedule") or {}
    for key, old, new in [("widths", saved.get("widths"), requested.get("widths"))] + [
            (f"schedule.{key}", old_schedule.get(key), new_schedule.get(key)) for key in sorted(
                set(old_schedule) | set(new_schedule))]:
        # a setting the saved run left unset (e.g. batch_size where batch_per_resolution named every scale) may be
        # set for the new scales: what the trained ones ran is compared in their segments below
        if old is not None and not _keeps(old, new):
            raise ConfigError(f"{grown} model.{key} must keep the trained {json.dumps(old)} (as the start of a list, "
                              f"the entries of a table), got {json.dumps(new)}")
    if new_schedule.get("unit") == "kimg":
        raise ConfigError(f"{grown} the schedule must count iterations: in kimg the last resolution's phase ends "
                          "otherwise than a middle one's (schedule.unit: iterations, max_iter_at_scale)")
    old, new = (compile_schedule(from_dict(PGANConfig, {**model, "micro_batches": 1}, "model"))
                for model in (saved, requested))
    if new[: len(old)] != old:
        raise ConfigError(f"{grown} the trained scales' schedule must stay as it was")
    return True


class PGANFamily(Family):
    name = "pgan"
    normal_z = True
    penalised_nets = frozenset({"D"})  # WGAN-GP or R1
    config_class = PGANConfig

    def __init__(self, config: PGANConfig, dataset, device, dist) -> None:
        super().__init__(config, dataset, device, dist)
        widths = config.widths or pgan_widths(config.resolution, config.fmap_base, config.fmap_max)
        self.condition_columns, label_sizes = condition_columns(dataset, config.conditions or [])
        try:
            self.arch = PGANArch(resolution=config.resolution, widths=list(widths), latent_dim=config.latent_dim,
                                 variant=config.variant, channels=dataset.channels,
                                 mbstd_group_size=config.mbstd_group_size, styles=config.styles,
                                 mapping_layers=config.mapping_layers or 0, label_sizes=label_sizes)
        except ValueError as err:  # the architecture names its own fields; the user wrote them under `model.`
            raise ConfigError(str(err).replace("PGANArch.", "model.")) from None
        if dataset.resolution < config.resolution:
            raise ConfigError(f"model.resolution: {config.resolution} but the dataset {dataset.source} only goes "
                              f"up to {dataset.resolution}")
        self.segments = compile_schedule(config)
        self._starts = [seg.start for seg in self.segments]
        self.mirror = config.mirror if config.mirror is not None else config.variant == "paper"
        self.nets["G"] = PGANGenerator(self.arch).to(device)
        self.nets["D"] = PGANDiscriminator(self.arch).to(device)
        self.add_ema("G_ema", "G")
        for name in ("G", "D"):
            betas = tuple(float(beta) ** self.lazy_ratio(name) for beta in config.betas)
            self.optimizers[name] = adam(self.nets[name].parameters(), lr=config.lr * self.lazy_ratio(name),
                                         betas=betas, eps=config.adam_eps)

    def stddev_group(self, batch_size: int) -> int:
        """The minibatch-stddev group size D uses on a batch of `batch_size` (see nn.norm.minibatch_stddev)."""
        group = min(self.config.mbstd_group_size, batch_size)
        return group if self.config.variant == "paper" or batch_size % group == 0 else batch_size

    def micro_batches_at(self, resolution: int) -> int:
        """The slices of each phase's batch at `resolution` (`model.micro_batches`)."""
        counts = self.config.micro_batches
        return counts.get(resolution, 1) if isinstance(counts, dict) else counts

    def finer_micro_batches(self, plan: StepPlan) -> str | None:
        """The `--set` value that computes the plan's resolution in the next larger count of slices that keeps
        each one's minibatch-stddev groups whole (the other resolutions as they are), or None where none does."""
        local = self.local_batch(plan)
        group = self.stddev_group(local)
        count = self.micro_batches_at(plan.resolution)
        finer = next((k for k in range(count + 1, local + 1) if local % (k * group) == 0), None)
        if finer is None:
            return None
        counts = {seg.resolution: self.micro_batches_at(seg.resolution) for seg in self.segments}
        counts = {res: k for res, k in {**counts, plan.resolution: finer}.items() if k > 1}
        return "'model.micro_batches={" + ", ".join(f"{res}: {k}" for res, k in counts.items()) + "}'"

    def process_count_change(self, saved: int, now: int, step: int) -> str | None:
        """Each process groups D's minibatch stddev within its share: the same groups as one process's where every
        share holds whole groups of the size one process would use."""
        def groups(world_size: int, batch_size: int) -> tuple[int, bool]:
            local = batch_size // world_size
            return self.stddev_group(local), local % self.stddev_group(local) == 0

        for seg in self.segments:
            if seg.start + seg.steps > step and groups(saved, seg.batch_size) != groups(now, seg.batch_size):
                return (f"D's minibatch-stddev groups at {seg.resolution} px are formed within each process's share "
                        f"of the batch {seg.batch_size}, which another process count groups differently")
        return None

    def check_shares(self, world_size: int) -> None:
        """Each micro-batch of a process's share must hold whole minibatch-stddev groups of that share: D's
        statistics are then the unsliced step's. (The processes themselves group within their shares, as the
        official TF code's GPUs do: a share smaller than the group size groups fewer images.)"""
        for seg in self.segments:
            slices = self.micro_batches_at(seg.resolution)
            local = seg.batch_size // world_size
            group = self.stddev_group(local)
            if self.config.variant == "paper" and local % group:  # TF's reshape needs whole groups: said up front
                per = (f"each process's share ({seg.batch_size} over {world_size} processes: {local})"
                       if world_size > 1 else f"the batch ({local})")
                raise ConfigError(f"model.mbstd_group_size {self.config.mbstd_group_size}: the paper variant's "
                                  f"minibatch stddev at {seg.resolution} px needs {per} to be a multiple of its group "
                                  f"size {group} (the official code's assertion); use a batch size that is")
            if slices > 1 and (local % slices or (local // slices) % group):
                per = f" per process (batch {seg.batch_size} over {world_size} processes)" if world_size > 1 else ""
                key = "model.micro_batches" + (f".{seg.resolution}" if isinstance(self.config.micro_batches, dict)
                                               else "")
                raise ConfigError(
                    f"{key}: {slices} slices of the {local} images{per} at {seg.resolution} px would "
                    f"split D's minibatch-stddev groups of {group} (model.mbstd_group_size "
                    f"{self.config.mbstd_group_size}), so D would see other statistics than on the whole batch; use "
                    f"a count that leaves each slice a multiple of {group} images"
                    + ("" if isinstance(self.config.micro_batches, dict) else
                       ", or counts for some resolutions ({resolution: count})"))

    @classmethod
    def extends_schedule(cls, saved: dict[str, Any], requested: dict[str, Any]) -> bool:
        """Only the last scale may grow: more iterations (zoo style) or more kimg in total (official style); or the
        networks may grow by whole scales above the saved resolution (`_adds_scales`).

        Keys that did nothing in the saved run (e.g. the other unit's) do not count as a change.
        """
        saved = {**_ADDED_LATER, **_without_inert_keys(saved, only_old_defaults=False)}
        if _adds_scales(saved, requested):
            return True
        if {k for k in set(saved) | set(requested) if saved.get(k) != requested.get(k)} - {"schedule"}:
            return False
        old, new = saved["schedule"], requested["schedule"]
        changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
        if not changed:
            return True
        if changed == {"max_iter_at_scale"}:
            before, after = old["max_iter_at_scale"], new["max_iter_at_scale"]
            return len(before) == len(after) and before[:-1] == after[:-1] and after[-1] >= before[-1]
        if changed != {"total_kimg"} or new["total_kimg"] is None:
            return False
        scales = len(_resolutions(saved["resolution"]))  # no total_kimg: the last scale ran for stable_kimg
        end = old["total_kimg"] if old["total_kimg"] is not None else (
            (scales - 1) * (old["stable_kimg"] + old["transition_kimg"]) + old["stable_kimg"])
        return new["total_kimg"] >= end

    def kept_steps(self) -> set[int]:
        """Each scale's last step: that resolution's finished model, which the zoo keeps (every checkpoint) and
        evaluates per scale (`eval.py -s S`), and the TF original keeps as a snapshot."""
        return {seg.start + seg.steps for seg in self.segments}

    def grown_at(self, saved: dict[str, Any]) -> int | None:
        """The first step of the scales added above a saved run's resolution (`_adds_scales`), None if none were."""
        resolution = saved.get("resolution")
        if not isinstance(resolution, int) or resolution >= self.config.resolution:
            return None
        return next(seg.start for seg in self.segments if seg.resolution > resolution)

    def lengthening_override(self) -> str:
        """The last scale twice as long: its iterations (zoo style) or the kimg the run ends at (official style)."""
        sched = self.config.schedule
        if sched.unit == "iterations":
            longer = [*sched.max_iter_at_scale[:-1], 2 * sched.max_iter_at_scale[-1]]
            return f"model.schedule.max_iter_at_scale=[{','.join(map(str, longer))}]"
        last_from = (len(self.segments) - 1) * (sched.stable_kimg + sched.transition_kimg)  # its fade-in starts
        end = sched.total_kimg if sched.total_kimg is not None else last_from + sched.stable_kimg
        return f"model.schedule.total_kimg={round(2 * end - last_from, 6):g}"

    @classmethod
    def migrated_saved(cls, data: dict[str, Any]) -> dict[str, Any]:
        return without_idle_jumps(data)

    @classmethod
    def normalise_config(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Ours, a pytorch_GAN_zoo config JSON, or the zoo's train.py command in a shell script."""
        if COMMAND_LINE in data:
            from ganforge.families.pgan_zoo_config import zoo_command_to_ganforge

            return zoo_command_to_ganforge(data[COMMAND_LINE]["words"], data[COMMAND_LINE]["file"])
        if "family" not in data and "maxIterAtScale" in data and not ({"pathDB", "config"} & set(data)):
            raise ConfigError('a pytorch_GAN_zoo model config (the NAME_train_config.json train.py writes beside '
                              'its checkpoints): give it as train.py reads one, {"pathDB": STORE, "config": {...}}')
        if "family" in data or not ({"pathDB", "config"} & set(data)):
            if "model" in data:  # a run's saved config from before inert keys were refused loads as it did
                return {**data, "model": _without_inert_keys(data["model"], only_old_defaults=True)}
            return data
        from ganforge.families.pgan_zoo_config import zoo_config_to_ganforge

        return zoo_config_to_ganforge(data)

    # --- schedule ---------------------------------------------------------------------------------------------
    def total_steps(self) -> int:
        last = self.segments[-1]
        return last.start + last.steps

    def batch_sizes(self) -> dict[str, int]:
        table = self.config.schedule.batch_per_resolution
        return {f"model.schedule.batch_per_resolution.{seg.resolution}" if seg.resolution in table
                else "model.schedule.batch_size": seg.batch_size for seg in self.segments}

    def segment(self, step: int) -> ScaleSegment:
        return self.segments[bisect.bisect_right(self._starts, step) - 1]

    def position(self, step: int) -> tuple[int, float]:
        """(scale, alpha) at `step`, exact: what the networks and the real-image blend use."""
        seg = self.segment(step)
        return seg.scale, seg.alpha(step - seg.start)

    def plan(self, step: int) -> StepPlan:
        """The segment's batch and resolution; the reals are blended by the exact alpha (the weight of the old
        resolution during a fade), and `progress` shows it rounded."""
        seg = self.segment(step)
        alpha = seg.alpha(step - seg.start)
        return StepPlan(batch_size=seg.batch_size, resolution=seg.resolution, real_blend=alpha,
                        progress={"scale": seg.scale, "res": seg.resolution, "alpha": round(alpha, 6)})

    def data_options(self) -> DataOptions:
        return DataOptions(mirror=self.mirror)

    def begin_step(self, step: int, plan: StepPlan) -> None:
        seg = self.segment(step)
        lr = resolution_lr(self.config, seg.resolution)
        eps = self.adam_eps(seg.batch_size)
        for name, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                group["lr"], group["eps"] = lr * self.lazy_ratio(name), eps
        local = step - seg.start
        growth = local == 0 and seg.scale > 0
        if self.config.variant == "paper" and (growth or (seg.scale > 0 and local == seg.fade_steps)):
            self._reset_optimizers()
        elif self.config.variant == "zoo" and growth:
            self._reset_optimizers()
            copy_weights(self.nets["G_ema"], self.nets["G"])

    def _reset_optimizers(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.state.clear()

    def lazy_ratio(self, net: str) -> float:
        """StyleGAN2's Adam correction for lazy regularisation: D takes k + 1 optimiser steps in k iterations when
        R1 runs every k, so its lr and betas are raised to k / (k + 1) to keep its per-iteration dynamics."""
        interval = self.config.r1_interval
        return interval / (interval + 1) if net == "D" and interval is not None and interval > 1 else 1.0

    def base_ema_decay(self, step: int) -> float:
        return self.config.ema_decay

    def ema_images_seen(self, step: int) -> int:
        """The batch size changes with the resolution: every finished segment's images, then this one's so far."""
        seg = self.segment(step)
        return sum(s.steps * s.batch_size for s in self.segments[:seg.scale]) + (step - seg.start + 1) * seg.batch_size

    # --- phases -----------------------------------------------------------------------------------------------
    def phases(self, step: int, plan: StepPlan) -> list[Phase]:
        """D on the loader's reals (blended by the plan during a fade), then G; with GDPP, G's phase takes D's
        real batch (the same images) for the real features; with a lazy R1 (`r1_interval` k > 1) D's loss has no
        penalty and a D_r1 phase on the same reals follows it every k steps, as StyleGAN2's Dreg."""
        scale, alpha = self.position(step)
        G = self.nets["G"]
        config = self.config
        batch_size = plan.batch_size

        adversarial = nonsaturating_generator_loss if config.loss == "logistic-r1" else wgan_generator_loss
        lazy = config.loss == "logistic-r1" and config.r1_interval > 1

        draws: dict[tuple[int, str], torch.Tensor | None] = {}

        def drawn(batch: Batch | None, name: str, draw: Callable[[], torch.Tensor | None]) -> torch.Tensor | None:
            """A draw for the whole batch, made when its first micro-batch asks, and this micro-batch's share of
            it: the slices of a step compute the whole batch's (the same noise in the same order)."""
            if batch is None:
                return draw()
            key = (id(batch.whole or batch), name)
            if key not in draws:
                draws[key] = draw()
            value = draws[key]
            return None if value is None else batch.share(value)

        def D(images: torch.Tensor | tuple[torch.Tensor, ...], **kwargs: Any) -> Any:
            return self.discriminate(images, scale, alpha, **kwargs)

        def fakes_of(batch: Batch | None, labels: torch.Tensor | None, phase: str) -> torch.Tensor:
            z = drawn(batch, f"{phase}_z", lambda: self.randn(batch_size, config.latent_dim))
            return G(z, scale, alpha, labels)

        def scored(images: torch.Tensor, labels: torch.Tensor | None, **kwargs: Any
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
            """D's score, and with labels (AC-GAN) the classification loss of its class logits."""
            if labels is None:
                return D(images, **kwargs), None
            score, logits = D(images, return_label_logits=True, **kwargs)
            return score, self.classification_loss(logits, labels)

        def scored_pair(reals: torch.Tensor, real_labels: torch.Tensor | None, fakes: torch.Tensor,
                        fake_labels: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
            """`scored` of reals and of fakes from one D call that scores each batch as if alone (fewer, larger
            kernels than two calls): d_real, d_fake and their classification losses (None without labels)."""
            conditional = real_labels is not None
            output = D((reals, fakes), batch_parts=2, return_label_logits=conditional)
            score, logits = output if conditional else (output, None)
            d_real, d_fake = score.chunk(2)
            self.observe_real_logits(d_real)
            if logits is None:
                return d_real, d_fake, None, None
            real_logits, fake_logits = logits.chunk(2)
            return (d_real, d_fake, self.classification_loss(real_logits, real_labels),
                    None if fake_labels is None else self.classification_loss(fake_logits, fake_labels))

        def with_classification(loss: torch.Tensor, logs: dict[str, torch.Tensor], net: str,
                                classification: torch.Tensor | None, weight: float
                                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            """The adversarial loss plus the weighted classification loss; the log keeps the unweighted one."""
            if classification is None:
                return loss, logs
            loss = loss + self.zoo_term_weight(weight, batch_size) * classification
            return loss, {**logs, f"loss_{net}": loss.detach(), f"classification_{net}": classification.detach()}

        def r1_and_scores(reals: torch.Tensor, labels: torch.Tensor | None
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
            """R1 (as StyleGAN's process_reals sees it in the paper variant), D's logits on the reals, and with
            labels their classification loss, from one D call."""
            reals = reals.detach().requires_grad_(True)
            with penalised_convolutions(reals.device):
                d_real, classification = scored(reals, labels, real=True)
            return r1_penalty(d_real, reals) * self.gp_norm_scale(plan.resolution) ** 2, d_real, classification

        def d_r1_loss(batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            """StyleGAN2's lazy R1 phase: γ·R1 weighted by the interval, on the D phase's reals."""
            r1 = r1_and_scores(batch.images, None)[0]
            return config.r1_gamma * config.r1_interval * r1, {"r1": r1.detach()}

        def d_loss(batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            reals = batch.images
            real_labels = self.conditioning_labels(batch)
            # AC-GAN: the zoo draws the fakes' classes and scores the reals' only; the TF code gives the fakes the
            # reals' classes and scores both
            paper = config.variant == "paper"
            fake_labels = real_labels if paper else drawn(batch, "D_labels", lambda: self.random_labels(batch_size))
            with torch.no_grad():
                fakes = fakes_of(batch, fake_labels, "D")
            r1_here = config.loss == "logistic-r1" and not lazy  # R1 measured on this phase's own D call
            # the classes D's loss reads on the fakes: none in the zoo
            read_fake_labels = fake_labels if paper else None
            if r1_here:  # R1's gradient is taken through the reals' own D call
                r1, d_real, classification = r1_and_scores(reals, real_labels)
                d_fake, fake_classification = scored(fakes, read_fake_labels)
            else:
                d_real, d_fake, classification, fake_classification = scored_pair(reals, real_labels, fakes,
                                                                                  read_fake_labels)
            if config.loss == "logistic-r1":
                real_part, fake_part = logistic_discriminator_loss(d_real, d_fake)
                loss = real_part + fake_part
                logs = {}
                if r1_here:
                    loss = loss + config.r1_gamma * r1
                    logs["r1"] = r1.detach()
                logs["loss_D"] = loss.detach()
            else:
                mix = drawn(batch, "mix", lambda: self.rand(batch_size, 1, 1, 1))
                gp = gradient_penalty(D, reals, fakes, mix, norm_scale=self.gp_norm_scale(plan.resolution))
                drift = drift_penalty(d_real)
                real_part, fake_part = wgan_critic_loss(d_real, d_fake)
                wdist = fake_part + real_part
                loss = wdist + config.lambda_gp * gp + config.drift * drift
                logs = {"loss_D": loss.detach(), "wdist": -wdist.detach(), "gp": gp.detach(), "drift": drift.detach()}
            logs.update(loss_D_real=real_part.detach(), loss_D_fake=fake_part.detach())
            if fake_classification is not None:
                classification = classification + fake_classification
            return with_classification(loss, logs, "D", classification, config.condition_weight_d)

        def g_loss(d_batch: Batch | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            labels = drawn(d_batch, "G_labels", lambda: self.random_labels(batch_size))
            fakes = fakes_of(d_batch, labels, "G")
            if config.gdpp > 0:  # GDPP: the zoo reads the score, features and class logits from one D call
                d_fake, fake_features, *logits = D(fakes, return_features=True,
                                                   return_label_logits=labels is not None)
                with torch.no_grad():
                    real_features = D(d_batch.images, return_features=True)[1]
                gdpp = gdpp_loss(fake_features, real_features)
                loss = adversarial(d_fake) + self.zoo_term_weight(config.gdpp, batch_size) * gdpp
                logs = {"loss_G": loss.detach(), "gdpp": gdpp.detach()}
                classification = self.classification_loss(logits[0], labels) if logits else None
            else:
                d_fake, classification = scored(fakes, labels)
                loss = adversarial(d_fake)
                logs = {"loss_G": loss.detach()}
            # both references' G step: the classes G was asked for, as D reads them
            return with_classification(loss, logs, "G", classification, config.condition_weight_g)

        micro = self.micro_batches_at(plan.resolution)
        lazy_r1 = [Phase("D_r1", ("D",), d_r1_loss, data="previous", micro_batches=micro)
                   ] if lazy and step % config.r1_interval == 0 else []
        # G's phase takes D's batch for GDPP's real features, or to be sliced as it was (its reals unused)
        return [Phase("D", ("D",), d_loss, micro_batches=micro), *lazy_r1,
                Phase("G", ("G",), g_loss, data="previous" if config.gdpp > 0 or micro > 1 else "none",
                      micro_batches=micro)]

    def adam_eps(self, batch_size: int) -> float:
        """Adam's ε for ganforge's mean losses that takes the reference's steps.

        The zoo sums its losses over the batch, so its gradients are N times these and its ε weighs N times less
        against them: Adam's lr · m / (√v + ε) on the zoo's sums equals lr · m / (√v + ε / N) on means, so the zoo
        variant uses `adam_eps` / N (the zoo's own ε stays the config's number). The official TF code averages,
        as ganforge does: the paper variant uses `adam_eps` as it is.
        """
        return self.config.adam_eps / batch_size if self.config.variant == "zoo" else self.config.adam_eps

    def gp_norm_scale(self, resolution: int) -> float:
        """Factor on the gradient norm the penalty sees at `resolution` (see losses.gradient_penalty).

        The official TF code feeds D images nearest-upscaled to the final resolution, during a fade too (from the
        resolution being faded in, which is `resolution` here), and D box-downscales them first: the gradient it
        penalises is the native one spread over k² pixels, its norm divided by k = final / current resolution.
        The zoo penalises at the native resolution.
        """
        return resolution / self.config.resolution if self.config.variant == "paper" else 1.0

    def zoo_term_weight(self, weight: float, batch_size: int) -> float:
        """Weight on ganforge's mean losses of a term the zoo adds, with `weight`, to its WGAN-GP losses summed over
        the batch (GDPP; the AC-GAN classification loss, a batch mean): weight / N, which keeps the zoo's gradient
        direction (Adam ignores the overall factor N but for its eps). The paper variant (no official GDPP code;
        GDPP as its paper writes it) and `loss: logistic-r1` (a batch mean, as the zoo's own logistic loss) add
        the term with `weight` itself."""
        zoo_sum = self.config.variant == "zoo" and self.config.loss == "wgan-gp"
        return weight / batch_size if zoo_sum else weight

    @classmethod
    def unsigned_critic(cls, config: PGANConfig) -> str | None:
        if config.loss == "wgan-gp":
            return WASSERSTEIN_CRITIC + (" (the drift term only centres its outputs on reals at 0; "
                                         "model.loss logistic-r1 trains a logistic D)")
        return None

    @classmethod
    def contiguous_shards(cls, config: PGANConfig) -> bool:
        """The zoo's minibatch-stddev groups are consecutive samples (the paper's strided ones interleave)."""
        return config.variant == "zoo"

    # --- label conditioning (AC-GAN) -------------------------------------------------------------------------
    def random_labels(self, batch_size: int) -> torch.Tensor | None:
        """Classes for fakes: each column uniform as the zoo's buildRandomCriterionTensor draws them, or in the
        paper variant the classes of random training images as the TF code's get_random_labels_tf; drawn at
        global-batch size and sharded, as `randn`."""
        if not self.condition_columns:
            return None
        if self.config.variant == "paper":
            return self.training_image_labels(batch_size)
        labels = [torch.randint(size, (batch_size,), device=self.device) for size in self.arch.label_sizes]
        return self.dist.shard(torch.stack(labels, dim=1))

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sum over the conditioning columns of the cross-entropy of their class logits, each a batch mean (the
        zoo's ACGANCriterion). The zoo slices column k's logits from D's output starting at its score column, so
        its first column's logits include the score; here they are the logits after the score."""
        loss = logits.new_zeros(())
        start = 0
        for column, size in enumerate(self.arch.label_sizes):
            loss = loss + torch.nn.functional.cross_entropy(logits[:, start:start + size], labels[:, column].long())
            start += size
        return loss

    # --- sampling ---------------------------------------------------------------------------------------------
    def sample_latents(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """z, and for a conditional run uniformly drawn classes of each conditioning column ("labels")."""
        return {"z": torch.randn(n, self.config.latent_dim, generator=generator), **self.sample_labels(n, generator)}

    def generate(self, inputs: dict[str, torch.Tensor], net: str, plan: StepPlan) -> torch.Tensor:
        """At the plan's resolution and fade (its exact real-image blend is the networks' alpha)."""
        return self.nets[net](inputs["z"], int(math.log2(plan.resolution)) - 2, plan.real_blend, inputs.get("labels"))

    def critic_score(self, images: torch.Tensor, plan: StepPlan) -> torch.Tensor:
        """D's score at the plan's resolution and fade (unconditional runs: a conditional D also classifies), its
        minibatch stddev over consecutive groups of its group size (any count of images scores, in either
        variant's grouping)."""
        if self.condition_columns:
            return super().critic_score(images, plan)
        D, scale = self.nets["D"], int(math.log2(plan.resolution)) - 2
        return torch.cat([D(group, scale, plan.real_blend).view(-1) for group in images.split(D.arch.mbstd_group_size)])

    def describe(self) -> dict[str, Any]:
        styles = {"styles": f"on, {self.arch.mapping_layers} mapping layers"} if self.arch.styles else {}
        conditions = {"conditions": dict(zip(self.config.conditions, self.arch.label_sizes, strict=True))} \
            if self.condition_columns else {}
        return {"variant": self.config.variant, "widths": self.arch.widths, **styles, **conditions,
                "mirror": self.mirror,
                "total_steps": self.total_steps(),
                "schedule": [{"res": s.resolution, "batch": s.batch_size, "steps": s.steps,
                              "fade_steps": s.fade_steps} for s in self.segments]}
