"""What a family contributes to the engine: networks, optimisers, a schedule and the phases of one step.

The engine owns the loop (data, backward, gradient averaging across ranks, optimiser steps, EMA, checkpoints,
samples, logs). A family never loops: it says, for a given step, which batch size and resolution to use and which
phases to run, and each phase computes one loss.
"""

from __future__ import annotations

import contextlib
import copy
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn

from ganforge.data.loader import Batch, DataOptions
from ganforge.data.store import CLASS_COLUMN, ImageDataset
from ganforge.distributed import DistInfo
from ganforge.errors import ConfigError
from ganforge.losses import WASSERSTEIN_CRITIC
from ganforge.metrics._images import derived_seed
from ganforge.nn.ema import ramped_ema_decay
from ganforge.nn.latents import normal_draws

if TYPE_CHECKING:
    from ganforge.augment.augmenter import Augmenter


@dataclass
class StepPlan:
    """Where the schedule stands at one step: what the loader must deliver and what logs should show."""

    batch_size: int  # global batch size, across all ranks
    resolution: int
    progress: dict[str, float] = field(default_factory=dict)  # e.g. scale, alpha: for logs and the bar only
    real_blend: float = 0.0  # weight of each real image's half-resolution version (a resolution fade-in)


PhaseData = Literal["fresh", "previous", "none"]
PHASE_DATA: tuple[str, ...] = ("fresh", "previous", "none")
"""What a phase's loss receives: a fresh batch from the loader per micro-batch, the latest batch an earlier phase
of the same step drew (an explicit hand-over of the same real images), or None (no real images)."""


@dataclass
class Phase:
    """One optimisation phase of a step: a loss, the networks it trains, how often it repeats."""

    name: str
    trains: tuple[str, ...]  # names of nets whose optimisers step after this phase (optimiser key = net name)
    # the loss and its log values, detached device tensors: the engine reads them only at log points
    loss: Callable[[Batch | None], tuple[torch.Tensor, dict[str, torch.Tensor]]]
    repeats: int = 1
    accumulate: int = 1  # fresh batches whose gradients add up before one optimiser step (BigGAN's accumulations)
    # the phase's batch computed in this many equal slices, gradients added up before one optimiser step: the whole
    # batch's gradient (for losses that are means over independent samples) with a fraction of the activation memory;
    # the logged values are the slices' means
    micro_batches: int = 1
    data: PhaseData = "fresh"
    after_step: Callable[[], None] | None = None
    reuse_batch: bool = False  # True: the first repeat's real batch serves every repeat (the WGAN-GP tutorial)

    def __post_init__(self) -> None:
        if self.data not in PHASE_DATA:
            raise ValueError(f"phase {self.name}: data {self.data!r}, expected one of {PHASE_DATA}")
        if self.micro_batches < 1 or (self.micro_batches > 1 and self.data == "none"):
            raise ValueError(f"phase {self.name}: micro_batches {self.micro_batches} (a positive count, and a phase "
                             "with no real batch has none to split)")
        if self.reuse_batch and self.data != "fresh":
            raise ValueError(f"phase {self.name}: reuse_batch needs data='fresh' (it reuses the batches it draws)")


@dataclass(frozen=True)
class SamplingBN:
    """How a generator's batch norm normalises samples, chosen after training (BigGAN-PyTorch's sample.py flags):
    "running" statistics (eval mode, --G_eval_mode), each "batch"'s own (train mode), or "standing" statistics
    re-estimated over `batches` fresh batches (--accumulate_stats --num_standing_accumulations N)."""

    kind: Literal["running", "batch", "standing"]
    batches: int = 0

    @classmethod
    def parse(cls, text: str) -> SamplingBN:
        kind, separator, count = text.partition(":")
        if kind in ("running", "batch") and not separator:
            return cls(kind)  # type: ignore[arg-type]
        if kind == "standing" and count.isascii() and count.isdigit() and int(count) > 0:
            return cls("standing", int(count))
        raise ConfigError(f"--bn {text!r}: expected running, batch or standing:N (N fresh batches)")

    def __str__(self) -> str:
        return f"standing:{self.batches}" if self.kind == "standing" else self.kind


def sample_batches(n: int, largest: int = 64, *, equal: bool = False) -> list[slice]:
    """Slices of `n` samples into batches of at most `largest`: consecutive full batches, or with `equal` (a
    generator that samples on its batch's statistics) batches as equal as possible, so that the last few samples
    of a set (65 = 64 + 1) are not normalised in a batch of their own."""
    if not equal:
        return [slice(start, min(start + largest, n)) for start in range(0, n, largest)]
    count = -(-n // largest)
    bounds = [round(i * n / count) for i in range(count + 1)] if count else [0]
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


CLASS_STREAM = 1  # derived_seed stream of the classes `seeded_inputs` draws (column k: its third part)
MIN_BATCH_STATISTICS = 16  # below this, batch-normalised samples drift visibly from a training grid's
BATCH_DEPENDENT_NOTE = ("the generator samples on its batch's statistics (batch norm in training mode: DCGAN/WGAN's "
                        "sample_norm_stats: batch, the tutorial's choice; BigGAN's sample_eval_mode: false), so each "
                        "image depends on the others in its batch: a batch of 1 normalises one image by itself (flat "
                        "colours); use batches of 16 or more, or sample on running statistics")


def check_adam(betas: list[float] | None, eps: float | None = None) -> None:
    """Adam's settings as torch would refuse them mid-build, named by their config keys first."""
    if betas is not None and (len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas)):
        raise ConfigError(f"model.betas: expected two numbers in [0, 1), got {betas}")
    if eps is not None and not eps > 0:
        raise ConfigError(f"model.adam_eps: expected a positive number, got {eps}")


def check_conditions(conditions: Any) -> None:
    """`model.conditions`, where set, is a non-empty list of distinct label column names; one-line ConfigError."""
    if conditions is not None and (not isinstance(conditions, list) or not conditions
                                   or not all(isinstance(c, str) for c in conditions)
                                   or len(set(conditions)) != len(conditions)):
        raise ConfigError(f"model.conditions: expected a list of distinct label column names, got {conditions!r}")


def condition_columns(dataset: ImageDataset, names: list[str]) -> tuple[list[int], list[int]]:
    """(index among the store's label columns, class count) of each conditioning column, in `names`' order."""
    available = [column for column, _ in dataset.label_columns]
    if names and not available and not dataset.levels:  # a shape-only placeholder (`ganforge info` without data)
        raise ConfigError(f"model.conditions: the class counts of {names} come from the label columns of the "
                          f"store, and {dataset.source} is not at hand")
    indices, sizes = [], []
    for name in names:
        if name not in available:
            have = f"label columns {available}" if available else "no label columns"
            folders = f" (`ganforge prepare` names class folders' column {CLASS_COLUMN!r}; a zoo config's " \
                      "imagefolderDataset conditions on it)" if name == CLASS_COLUMN else ""
            raise ConfigError(f"model.conditions: no label column {name!r} in the dataset {dataset.source} (it has "
                              f"{have}){folders}")
        indices.append(available.index(name))
        sizes.append(len(dataset.label_columns[indices[-1]][1]))
        if sizes[-1] < 2:
            raise ConfigError(f"model.conditions: the label column {name!r} of {dataset.source} has "
                              f"{sizes[-1]} class; conditioning on it would do nothing")
    return indices, sizes


class Family(ABC):
    """Base of every GAN family. Subclasses fill `nets`, `optimizers` and `ema_pairs` in `__init__`."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    # conditioning: the `model:` key of the class (or domain) count the networks are built for, None when the
    # family is unconditional, and its value when neither the config nor the data gives one (`ganforge info`)
    label_count_key: ClassVar[str | None] = None
    default_label_count: ClassVar[int | None] = None
    samples_by_class: ClassVar[bool] = False  # `generate` takes class indices "y" below `label_count`
    # inputs `generate` takes beyond those `sample_latents` draws (BigGAN's "condition", a blend of class embeddings)
    optional_inputs: ClassVar[frozenset[str]] = frozenset()
    # `sample_latents` draws "z" [n, width] as the generator's first standard normal draws, and any class inputs
    # (`input_classes`) uniformly: `seeded_inputs` may then draw them so that a seed's sample i is one sample
    normal_z: ClassVar[bool] = False
    # each sample depends on the others drawn with it (a generator normalised with its batch's statistics)
    batch_dependent_samples: bool = False
    # `generate` returns (source, translation) pairs: metrics of a generated image set do not apply (half the set
    # would be real images); such a family is evaluated by its own protocol (`ganforge evaluate RUN`, and during
    # training the `protocol_metrics` its config may list, ranked by the outputs in `protocol_rankings`, each
    # mapped to whether higher is better)
    translates: ClassVar[bool] = False
    protocol_metrics: ClassVar[tuple[str, ...]] = ()
    protocol_rankings: ClassVar[dict[str, bool]] = {}
    # networks whose input gradient a loss differentiates again (gradient penalties: R1, WGAN-GP); `compile: true`
    # runs their calls that may be so differentiated eagerly (torch.compile cannot backpropagate twice) and compiles
    # every call of the others. None: every network, the safe choice for a family that does not say
    penalised_nets: ClassVar[frozenset[str] | None] = None
    # D is a Wasserstein critic (its loss unchanged by a constant added to its output): see `unsigned_critic`
    wasserstein_critic: ClassVar[bool] = False

    @classmethod
    def extends_schedule(cls, saved: dict[str, Any], requested: dict[str, Any]) -> bool:
        """Whether `requested` (a `model:` mapping) only lengthens the run of `saved`: then a resume may use it.
        Families whose length is one `steps` key get this for free."""
        others = {k for k in set(saved) | set(requested) if saved.get(k) != requested.get(k)} - {"steps"}
        return not others and isinstance(saved.get("steps"), int) and requested.get("steps", 0) >= saved["steps"]

    def kept_steps(self) -> set[int]:
        """Steps checkpointed and kept beside the newest `keep_checkpoints`: each a model users come back to
        (PGAN: every scale's end); empty for a family whose schedule has no such points."""
        return set()

    def grown_at(self, saved: dict[str, Any]) -> int | None:
        """The step from which this family's networks hold layers that those of a run saved with `saved` (its
        `model:` mapping) lack, which `extends_schedule` accepted: a resume there loads the saved layers and starts
        the new ones from their initialisation. None: the same networks (every family whose networks do not grow)."""
        return None

    def lengthening_override(self) -> str:
        """A `--set KEY=VALUE` that `extends_schedule` accepts and that doubles this run's length: what the message
        on an already finished run suggests. Families whose length is one `steps` key get this for free."""
        steps = getattr(self.config, "steps", None)
        return f"model.steps={2 * steps}" if isinstance(steps, int) else "model.KEY=VALUE (the schedule's length)"

    @classmethod
    def unsigned_critic(cls, config: Any) -> str | None:
        """Why the sign of D's output on a real image says nothing about how real D finds it under `config` (a
        Wasserstein critic), or None. ADA's adaptive p steers by that sign (r_t = E[sign(D(real))] against a target),
        which assumes the logistic or hinge losses whose zero separates real from fake."""
        return WASSERSTEIN_CRITIC if cls.wasserstein_critic else None

    @classmethod
    def sampling_bn_settings(cls, mode: SamplingBN) -> dict[str, Any]:
        """The `model:` settings that make samples normalise as `mode` says (`ganforge generate/evaluate --bn`):
        a family with batch norm in its generator maps them; one without has nothing to choose."""
        raise ConfigError(f"--bn {mode}: a {cls.name} generator has no batch norm to choose statistics for")

    @classmethod
    def migrated_saved(cls, data: dict[str, Any]) -> dict[str, Any]:
        """A saved run config of this family with values earlier versions accepted, and today's checks refuse for
        new runs, replaced by what those runs computed (`migrated_saved_config`)."""
        return data

    @classmethod
    def normalise_config(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Translate a foreign config format (e.g. pytorch_GAN_zoo's JSON) into ours; ours passes through."""
        return data

    def __init__(self, config: Any, dataset: ImageDataset, device: torch.device, dist: DistInfo) -> None:
        self.config = config
        self.dataset = dataset
        self.device = device
        self.dist = dist
        self.nets: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.ema_pairs: dict[str, str] = {}  # EMA net name -> source net name
        self.augment: Augmenter | None = None  # set by the engine; see `discriminate`
        self.condition_columns: list[int] = []  # `model.conditions`: indices among the store's label columns
        self._dataset_labels: torch.Tensor | None = None  # their classes, read once by `training_image_labels`

    @property
    def label_count(self) -> int | None:
        """Classes (or domains) the networks are built for (from the config or the data); None for an
        unconditional family."""
        return None

    def data_options(self) -> DataOptions:
        """How the engine's loader serves this family's real images (mirroring, a sampling mode)."""
        return DataOptions()

    # --- schedule -------------------------------------------------------------------------------------------
    @abstractmethod
    def total_steps(self) -> int:
        """Length of the run in steps (one step = every phase once)."""

    @abstractmethod
    def plan(self, step: int) -> StepPlan:
        """Batch size, resolution and schedule position at `step`; a pure function of the step."""

    def begin_step(self, step: int, plan: StepPlan) -> None:  # noqa: B027 - optional hook
        """Schedule-driven changes that happen at a step boundary (learning rates, optimiser resets)."""

    @abstractmethod
    def phases(self, step: int, plan: StepPlan) -> list[Phase]:
        """The phases to run at this step, in order."""

    def ema_decay(self, step: int) -> float | None:
        """Decay of the EMA update after this step, or None for no update: the family's `base_ema_decay`, its
        averaging horizon capped by the warm-up `model.ema_rampup` when the config sets one (stylegan2-ada's ramp-up,
        nn.ema.ramped_ema_decay). Families override `base_ema_decay`, not this, so every EMA warms up alike."""
        decay = self.base_ema_decay(step)
        rampup = getattr(self.config, "ema_rampup", None)
        if decay is None or rampup is None:
            return decay
        return ramped_ema_decay(decay, self.plan(step).batch_size, self.ema_images_seen(step), rampup)

    def base_ema_decay(self, step: int) -> float | None:
        """The family's own EMA decay after this step (the paper's), or None for no update."""
        return None

    def ema_images_seen(self, step: int) -> int:
        """Images the warm-up counts as seen after this step: each step's (global) batch size, once per step, the
        unit in which `ramped_ema_decay` measures the half-life (one EMA update per step). Constant batch sizes
        give (step + 1) × batch; a family whose batch size changes with the schedule overrides this."""
        return (step + 1) * self.plan(step).batch_size

    # --- sampling -------------------------------------------------------------------------------------------
    def metric_batch(self, default: int) -> int:
        """Images per generator call in a metric pass: `default`, unless samples depend on their batch and the
        reference's metrics sample in batches of another size (each image's statistics are its batch's)."""
        return default

    @abstractmethod
    def sample_latents(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Inputs for `generate` drawn from `generator` on the CPU (so fixed grids are device independent)."""

    def seeded_inputs(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """Samples 0…n−1 of `seed` (`LoadedModel.latents`, what `generate` draws: a seed names its samples, its
        files are SEED-INDEX). A `normal_z` family's sample i is one sample whatever `n`: z from the seed's normal
        draws in whole blocks of torch's sampler (`normal_draws`: `randn` redraws a last partial block), class
        inputs from streams of their own per column (drawn after every latent, they depended on `n`). Training's
        fixed samples and metric ticks keep `sample_latents`, which saved runs' records were made with."""
        inputs = self.sample_latents(n, torch.Generator().manual_seed(seed))
        if not self.normal_z:
            return inputs
        inputs["z"] = normal_draws(n, inputs["z"].shape[1], torch.Generator().manual_seed(seed))
        for key, sizes in self.input_classes().items():
            if key in inputs:
                columns = [torch.randint(size, (n,), generator=torch.Generator().manual_seed(
                    derived_seed(seed, CLASS_STREAM, column))) for column, size in enumerate(sizes)]
                inputs[key] = torch.stack(columns, dim=1) if inputs[key].ndim == 2 else columns[0]
        return inputs

    @abstractmethod
    def generate(self, inputs: dict[str, torch.Tensor], net: str, plan: StepPlan) -> torch.Tensor:
        """Images in [-1, 1] from generator `net` (one of `sample_nets()`) at the schedule position `plan`;
        differentiable where a latent search needs it (callers that only sample run it under no_grad)."""

    @contextlib.contextmanager
    def weights_held(self) -> Iterator[None]:
        """A block in which the networks' weights do not change (a metric tick's or a command's batches of samples):
        what a family derives from them before sampling (BigGAN's standing statistics) is made once for the block,
        not once per batch. Nothing to keep by default."""
        yield

    def critic_score(self, images: torch.Tensor, plan: StepPlan) -> torch.Tensor:
        """D's score [N] of generated images at the schedule position `plan` (higher: more real): the realism term
        of `ganforge inspire`'s latent search. Conditional and translating families have none: their images
        depend on a class or source image as well as z."""
        raise ConfigError(f"{self.name}: latent search (ganforge inspire) is for unconditional generators (PGAN, "
                          "DCGAN, WGAN, WGAN-GP without model.conditions)")

    def sample_nets(self) -> list[str]:
        """The generators whose fixed-latent grids are written at sample ticks; the first (`sample_net`) also
        serves samples and metrics. By default the EMA generator when the run keeps one, then G."""
        return [net for net in ("G_ema", "G") if net in self.nets]

    @property
    def sample_net(self) -> str:
        """The generator behind samples, `generate` of a loaded model and metrics."""
        return self.sample_nets()[0]

    # --- the discriminator ------------------------------------------------------------------------------------
    def discriminate(self, images: torch.Tensor | Sequence[torch.Tensor], *args: Any, net: str = "D",
                     real: bool = False, **kwargs: Any) -> Any:
        """D's output on `images` (extra arguments go to D). Every image D sees, real, fake or a penalty's input,
        goes through here, so one augmentation set by the engine (`self.augment`) reaches every family.

        A sequence of batches (e.g. BigGAN's fakes and reals) is augmented batch by batch and then concatenated
        into one forward: each sample draws its augmentation as part of its own global batch, so W processes
        augment as one does. `real=True` marks the D-phase evaluation of real images whose logits feed ADA's
        overfitting statistic (stylegan2-ada collects the signs of its D-main real logits)."""
        parts = [images] if isinstance(images, torch.Tensor) else list(images)
        if self.augment is not None:
            parts = [self.augment(part) for part in parts]
        output = self.nets[net](parts[0] if len(parts) == 1 else torch.cat(parts), *args, **kwargs)
        if real:  # a D that also returns class logits (PGAN's AC-GAN) puts its score first
            self.observe_real_logits(output if isinstance(output, torch.Tensor) else output[0])
        return output

    def observe_real_logits(self, logits: torch.Tensor) -> None:
        """Hand D's logits on (augmented) reals of a D phase to the augmentation (ADA's r_t); for a family whose D
        sees reals and fakes in one call, with the real part only."""
        if self.augment is not None:
            self.augment.update(logits)

    # --- state beyond nets, optimisers and the loader -----------------------------------------------------------
    def family_state(self) -> dict[str, Any]:
        """JSON-serialisable state that a resume needs beyond nets, optimisers, step and the data stream
        (e.g. a loss weight that decays step by step); saved as the checkpoint's `family_state`."""
        return {}

    def load_family_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what `family_state` returned."""

    def describe(self) -> dict[str, Any]:
        """What `ganforge info` prints beyond parameter counts."""
        return {}

    @classmethod
    def contiguous_shards(cls, config: Any) -> bool:
        """Whether each process trains on a contiguous block of the global batch (DistInfo.contiguous) rather than
        an interleaved share: for networks whose batch statistics group consecutive samples, so that W processes
        group them as one does."""
        return False

    def conditioning(self) -> list[tuple[str, list[str]]]:
        """The label columns (name, class names) whose classes `generate` takes as "labels" [N, columns], one
        class index per column (`model.conditions`: PGAN's AC-GAN, the conditional DCGAN/WGAN/WGAN-GP); empty for
        families that take no such labels."""
        columns = self.dataset.label_columns
        return [(columns[index][0], [str(name) for name in columns[index][1]]) for index in self.condition_columns]

    def conditioning_labels(self, batch: Batch) -> torch.Tensor | None:
        """The real batch's classes of the conditioning columns [N, columns], None for an unconditional run."""
        if not self.condition_columns:
            return None
        return batch.labels[:, self.condition_columns]

    def training_image_labels(self, batch_size: int) -> torch.Tensor:
        """Classes for fakes as the data has them: those of random training images (the official PGAN code's
        get_random_labels_tf), drawn at global-batch size and sharded, as `randn`."""
        if self._dataset_labels is None:
            self._dataset_labels = torch.as_tensor(self.dataset.labels[:, self.condition_columns], device=self.device)
        rows = torch.randint(len(self._dataset_labels), (batch_size,), device=self.device)
        return self.dist.shard(self._dataset_labels[rows])

    def generator_label_columns(self) -> list[int]:
        """The store's label columns whose classes the generator takes, in the order it takes them: those of
        `model.conditions` (BigGAN: the first column); empty for a generator without classes."""
        return list(self.condition_columns)

    def with_store_labels(self, latents: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """`latents` with their classes those of these rows of the store's labels [n, store columns]: samples
        conditioned like given training images (a class's real set, for per-class metrics)."""
        return {**latents, "labels": labels[:, self.condition_columns]}

    def input_classes(self) -> dict[str, list[int]]:
        """The class counts of the integer inputs `generate` takes, by key and column: "labels" [N, columns] of a
        label-conditioned run here; a class or domain index "y" [N] in BigGAN and StarGAN v2."""
        return {"labels": [len(names) for _, names in self.conditioning()]} if self.condition_columns else {}

    def sample_labels(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """{"labels": uniformly drawn classes of each conditioning column [n, columns]} for samples, {} for an
        unconditional run; drawn from `generator` on the CPU, as the latents."""
        if not self.condition_columns:
            return {}
        sizes = [len(names) for _, names in self.conditioning()]
        return {"labels": torch.stack([torch.randint(size, (n,), generator=generator) for size in sizes], dim=1)}

    def sample_cell_labels(self, inputs: dict[str, torch.Tensor]) -> list[str] | None:
        """What each sample of `inputs` was asked to show, written under its cell of the training grids: the
        classes of a label-conditioned generator, one line per column ("square\ndark"); None when nothing was
        asked."""
        columns = self.conditioning()
        if not columns or "labels" not in inputs:
            return None
        return ["\n".join(names[k] for (_, names), k in zip(columns, row, strict=True))
                for row in inputs["labels"].tolist()]

    # --- helpers for subclasses -----------------------------------------------------------------------------
    def add_ema(self, ema_name: str, source: str) -> None:
        """Create an EMA copy of `source` (frozen, eval mode) starting from its current weights."""
        ema = copy.deepcopy(self.nets[source]).eval().requires_grad_(False)
        self.nets[ema_name] = ema
        self.ema_pairs[ema_name] = source

    def randn(self, *shape: int) -> torch.Tensor:
        """Normal noise drawn at global-batch size on every rank, then this rank's share.

        Drawing the whole global batch everywhere (same seed on all ranks) makes a multi-process run equal a
        single-process run of the same global batch.
        """
        return self.dist.shard(torch.randn(*shape, device=self.device))

    def rand(self, *shape: int) -> torch.Tensor:
        """Uniform noise with the same global-draw-then-shard rule as `randn`."""
        return self.dist.shard(torch.rand(*shape, device=self.device))

    def batch_sizes(self) -> dict[str, int]:
        """Every global batch size the schedule uses, by the config key that sets it (checked at startup to split
        evenly over the processes). Families with more than one override this."""
        return {"model.batch_size": self.plan(0).batch_size}

    def check_shares(self, world_size: int) -> None:
        """With `model.micro_batches` k (the families that have it), every process's share of each batch must split
        into k equal slices; called once every batch divides by the process count. PGAN also keeps its
        minibatch-stddev groups whole."""
        slices = getattr(self.config, "micro_batches", 1)
        for key, size in self.batch_sizes().items():
            if (size // world_size) % slices:
                raise ConfigError(f"model.micro_batches: {slices} does not divide the {size // world_size} images "
                                  f"per process ({key} {size} over {world_size} processes)")

    def process_count_change(self, saved: int, now: int, step: int) -> str | None:
        """Why the steps after `step` would compute something else in `now` processes than in the `saved` count
        the run trained in (statistics taken over each process's share), or None where they compute the same."""
        return None

    def finer_micro_batches(self, plan: StepPlan) -> str | None:
        """For a family with `model.micro_batches` (a count): the `--set` value that computes the plan's batch in
        the next larger count of equal slices per process, which a run out of memory may resume with; None where
        there is none (or the family has no micro-batches)."""
        count = getattr(self.config, "micro_batches", None)
        if count is None:
            return None
        local = self.local_batch(plan)
        finer = next((k for k in range(count + 1, local + 1) if local % k == 0), None)
        return None if finer is None else f"model.micro_batches={finer}"

    def local_batch(self, plan: StepPlan) -> int:
        return self.dist.local_size(plan.batch_size)
