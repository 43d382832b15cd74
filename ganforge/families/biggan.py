"""BigGAN on the shared engine: hinge loss, D steps per G step, gradient accumulation, EMA with a start iteration.

One engine step is one BigGAN-PyTorch iteration: ``num_d_steps`` D updates, each over ``num_d_accumulations``
micro-batches of ``batch_size`` real images (fresh z and y per micro-batch; real and fake go through D in one
concatenated forward, as officially), then one G update over ``num_g_accumulations`` micro-batches of
``g_batch_size`` fresh samples, then the EMA update. Losses are means over the micro-batch and the engine divides
them by the accumulation count, so k micro-batches of b give the gradient of one batch of k·b for D (no BN). Two
documented differences remain, exactly as in BigGAN-PyTorch: G's batch norms see micro-batch statistics, and every
spectral-norm vector advances once per forward, i.e. once per micro-batch.

G stays in training mode during D steps (its BN running statistics follow, as officially). Samples use eval mode
(running statistics, ``sample_eval_mode``, the ImageNet setting) or batch statistics with every buffer restored
afterwards, so writing grids never changes training.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ganforge.config import COMMAND_LINE, ConfigError
from ganforge.data.loader import Batch
from ganforge.data.store import ImageDataset
from ganforge.distributed import DistInfo
from ganforge.families.base import Family, Phase, SamplingBN, StepPlan, check_adam
from ganforge.families.biggan_flags import launch_command_to_ganforge
from ganforge.losses import hinge_discriminator_loss, hinge_generator_loss, orthogonal_regularization
from ganforge.models.biggan import BigGANArch, Discriminator, Generator, sample_classes, sample_latents
from ganforge.nn.biggan_layers import standing_statistics, use_batch_norm_groups
from ganforge.nn.cross_replica import one_rank_batch_norm, use_cross_replica_batch_norm
from ganforge.nn.ema import check_ema_rampup
from ganforge.nn.optim import adam
from ganforge.nn.spectral_norm import SNSettings
from ganforge.settings import Settings

STANDING_STATS_SEED = 20190218  # fixed stream for standing-statistics draws, apart from training
EMA_DECAY, EMA_START = 0.9999, 20000  # BigGAN-PyTorch's ema_decay default and the ImageNet scripts' ema_start
STEPS = 150000  # G iterations of a run that sets neither steps nor epochs (the official README's ImageNet runs)


@dataclass
class BigGANConfig(Settings):
    """`model:` settings of `biggan`; defaults are `launch_BigGAN_bs256x8.sh` (ImageNet 128, batch 256 × 8)."""

    resolution: int | None = None  # None: the dataset's resolution
    n_classes: int | None = None  # None: the dataset's class count; set, the data must agree
    g_ch: int = 96
    d_ch: int = 96
    latent_dim: int = 120  # BigGAN-PyTorch's dim_z
    g_shared: bool = True
    shared_dim: int = 128  # 0: latent_dim
    hier: bool = True
    g_attention: list[int] = field(default_factory=lambda: [64])
    d_attention: list[int] = field(default_factory=lambda: [64])
    g_init: Literal["ortho", "N02", "xavier"] = "ortho"
    d_init: Literal["ortho", "N02", "xavier"] = "ortho"
    num_svs: int = 1
    num_sv_itrs: int = 1
    sn_eps: float = 1e-6
    bn_eps: float = 1e-5
    batch_size: int = 256
    g_batch_size: int | None = None  # None: batch_size
    num_d_steps: int = 1
    num_d_accumulations: int = 8
    num_g_accumulations: int = 8
    g_lr: float = 1e-4
    d_lr: float = 4e-4
    betas: list[float] = field(default_factory=lambda: [0.0, 0.999])
    adam_eps: float = 1e-6
    g_ortho: float = 0.0  # orthogonal regularisation strength β (paper 1e-4; every launch script uses 0)
    d_ortho: float = 0.0
    ema: bool = True
    ema_decay: float | None = None  # None: 0.9999 with ema; must stay unset with ema false (it would do nothing)
    ema_start: int | None = None  # iterations (1-based, as officially) before which the EMA copies G; None: 20000
    ema_rampup: float | None = None  # EMA warm-up after ema_start (e.g. 0.05; nn.ema.ramped_ema_decay); None: off
    sample_eval_mode: bool = True
    standing_stats: int = 0  # > 0: re-estimate BN statistics over this many fresh batches before sampling
    sync_bn: bool = False  # under torchrun: batch-norm statistics over the global batch (cross-replica BN)
    # G's training batch norm per block of bn_groups equal blocks of each batch, the first block's statistics kept:
    # DataParallel's batch norm over that many GPUs (the launch scripts' --parallel) in one process; 1: whole batch
    bn_groups: int = 1
    d_wide: bool = True  # false: BigGAN-PyTorch's --D_thin, D blocks' hidden width is their input width (SNGAN)
    steps: int | None = None  # G iterations; None: from `epochs`, else 150000 (the official README's runs)
    epochs: int | None = None  # train.py's num_epochs: epochs × ⌊images / (batch × D steps × D accumulations)⌋ steps
    deep: bool = False  # BigGAN-deep (BigGANdeep.py): bottleneck blocks, the whole z with the embedding
    g_depth: int | None = None  # BigGAN-deep's blocks per stage; None: 2, as launch_BigGAN_deep.sh
    d_depth: int | None = None

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"dim_z": "latent_dim"}  # old spelling, still read (config.py)

    def __post_init__(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise ConfigError(f"model.steps ({self.steps}) and model.epochs ({self.epochs}) both set the run's "
                              "length: give one")
        if self.steps is None and self.epochs is None:
            self.steps = STEPS
        for key in ("g_ch", "d_ch", "latent_dim", "num_svs", "num_sv_itrs", "batch_size", "num_d_steps",
                    "num_d_accumulations", "num_g_accumulations", "steps", "epochs"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: expected a positive integer, got {getattr(self, key)}")
        for key in ("g_depth", "d_depth"):
            value = getattr(self, key)
            if value is not None and not self.deep:
                raise ConfigError(f"model.{key}: {value} counts BigGAN-deep's blocks per stage; without model.deep: "
                                  "true it would do nothing")
            if value is not None and value < 1:
                raise ConfigError(f"model.{key}: expected a positive integer, got {value}")
        if self.g_batch_size is not None and self.g_batch_size < 1:
            raise ConfigError(f"model.g_batch_size: expected null or a positive integer, got {self.g_batch_size}")
        for key in ("g_ortho", "d_ortho"):
            if getattr(self, key) < 0:
                raise ConfigError(f"model.{key}: expected a strength >= 0, got {getattr(self, key)}")
        for key in ("g_lr", "d_lr", "sn_eps", "bn_eps"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"model.{key}: expected a positive number, got {getattr(self, key)}")
        check_adam(self.betas, self.adam_eps)
        if self.n_classes is not None and self.n_classes < 1:
            raise ConfigError(f"model.n_classes: expected null (from the data) or a positive integer, got "
                              f"{self.n_classes}")
        if self.bn_groups < 1:
            raise ConfigError(f"model.bn_groups: expected a positive integer, got {self.bn_groups}")
        if self.bn_groups > 1 and self.sync_bn:
            raise ConfigError(f"model.bn_groups: {self.bn_groups} blocks normalised apart and model.sync_bn (the "
                              "whole batch over every rank) contradict each other: choose one")
        for key in ("batch_size", "g_batch_size"):
            if (getattr(self, key) or self.bn_groups) % self.bn_groups:
                raise ConfigError(f"model.{key}: {getattr(self, key)} does not split into model.bn_groups = "
                                  f"{self.bn_groups} equal blocks")
        if self.standing_stats < 0 or (self.standing_stats and not self.sample_eval_mode):
            raise ConfigError(f"model.standing_stats: expected 0 (off) or, with sample_eval_mode true (they replace "
                              f"the running statistics eval mode uses), a batch count; got {self.standing_stats}")
        self._check_ema()

    def _check_ema(self) -> None:
        """Unset EMA settings take the defaults when the EMA is on; set ones are refused when it is off."""
        if not self.ema:
            for key in ("ema_decay", "ema_start", "ema_rampup"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"model.{key}: {getattr(self, key)} is set but model.ema is false, so it would "
                                      "do nothing; remove it or set model.ema: true")
            return
        self.ema_decay = EMA_DECAY if self.ema_decay is None else self.ema_decay
        self.ema_start = EMA_START if self.ema_start is None else self.ema_start
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay: expected a number in [0, 1), got {self.ema_decay}")
        if self.ema_start < 0:
            raise ConfigError(f"model.ema_start: expected an iteration >= 0, got {self.ema_start}")
        check_ema_rampup(self.ema_rampup, decay=self.ema_decay)

    def arch(self, resolution: int, n_classes: int) -> BigGANArch:
        """The network settings for a dataset of this resolution and class count."""
        sn = SNSettings(self.num_svs, self.num_sv_itrs, self.sn_eps)
        try:
            return BigGANArch(resolution=resolution, n_classes=n_classes, g_ch=self.g_ch, d_ch=self.d_ch,
                              dim_z=self.latent_dim, g_shared=self.g_shared, shared_dim=self.shared_dim,
                              hier=self.hier, g_attention=tuple(self.g_attention),
                              d_attention=tuple(self.d_attention), g_init=self.g_init, d_init=self.d_init, g_sn=sn,
                              d_sn=sn, bn_eps=self.bn_eps, deep=self.deep, g_depth=self.g_depth or 2,
                              d_depth=self.d_depth or 2, d_wide=self.d_wide)
        except ValueError as error:
            raise ConfigError(f"model: {error}") from None


# every key a run config saved by ganforge's first BigGAN release holds (saved configs list every key)
_KEYS_SAVED_SINCE_FIRST_RELEASE = frozenset((
    "resolution", "g_ch", "d_ch", "dim_z", "g_shared", "shared_dim", "hier", "g_attention", "d_attention", "g_init",
    "d_init", "num_svs", "num_sv_itrs", "sn_eps", "bn_eps", "batch_size", "g_batch_size", "num_d_steps",
    "num_d_accumulations", "num_g_accumulations", "g_lr", "d_lr", "betas", "adam_eps", "ema", "ema_decay",
    "ema_start", "sample_eval_mode", "steps"))


def without_legacy_ema_settings(model: dict[str, Any]) -> dict[str, Any]:
    """A run config saved before `n_classes` existed holds ema_decay/ema_start even with `ema: false` (written as
    defaults, or by the importer; they did nothing). Such a saved config is recognised by holding every key saved
    configs hold but no `n_classes`; its EMA settings are dropped so the run still loads. A user's config with
    `ema: false` and an EMA setting is still refused."""
    if model.get("ema") is False and "n_classes" not in model and model.keys() >= _KEYS_SAVED_SINCE_FIRST_RELEASE:
        return {k: v for k, v in model.items() if k not in ("ema_decay", "ema_start")}
    return model


def class_count(dataset: ImageDataset, expected: int | None = None) -> int:
    """Classes of the store's first label column (BigGAN's conditioning); `expected` (model.n_classes) must agree.
    A shape-only placeholder without images or labels (`ganforge info` without data) takes `expected`; a store
    without labels trains with `model.n_classes: 1`, every image of the one class (BigGAN-PyTorch's answer to an
    unconditional BigGAN, its issue #33)."""
    if not dataset.label_columns and expected is not None and (not dataset.levels or expected == 1):
        return expected
    if not dataset.label_columns:
        raise ConfigError(f"data: BigGAN is class-conditional, but the dataset {dataset.source} has no labels; "
                          "prepare it from class folders, use a labelled builtin, or set model.n_classes: 1 to "
                          "train it as one class (unconditionally)")
    column, classes = dataset.label_columns[0]
    if expected is not None and expected != len(classes):
        raise ConfigError(f"model.n_classes: {expected} but the label column {column!r} of {dataset.source} has "
                          f"{len(classes)} classes")
    return len(classes)


class BigGANFamily(Family):
    """Class-conditional BigGAN with a hinge loss, trained at a mega-batch through accumulation."""

    name: ClassVar[str] = "biggan"
    penalised_nets: ClassVar[frozenset[str] | None] = frozenset()  # hinge loss, no gradient penalty
    config_class: ClassVar[type] = BigGANConfig
    label_count_key: ClassVar[str] = "n_classes"
    default_label_count: ClassVar[int] = 1000  # BigGAN-PyTorch's n_classes default (ImageNet)
    samples_by_class: ClassVar[bool] = True
    optional_inputs = frozenset({"condition"})
    normal_z = True

    @classmethod
    def normalise_config(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Ours, or a BigGAN-PyTorch launch script's `train.py` command (read by `read_config_file`)."""
        if COMMAND_LINE in data:
            return launch_command_to_ganforge(data[COMMAND_LINE]["words"], data[COMMAND_LINE]["file"])
        model = data.get("model")
        return {**data, "model": without_legacy_ema_settings(model)} if isinstance(model, dict) else data

    @classmethod
    def sampling_bn_settings(cls, mode: SamplingBN) -> dict[str, Any]:
        return {"sample_eval_mode": mode.kind != "batch", "standing_stats": mode.batches}

    def __init__(self, config: BigGANConfig, dataset: ImageDataset, device: torch.device,
                 dist: DistInfo) -> None:
        super().__init__(config, dataset, device, dist)
        self.batch_dependent_samples = not config.sample_eval_mode  # batch norm in training mode when sampling
        self._standing: dict[str, nn.Module] | None = None  # generators with standing statistics, in weights_held
        self.resolution = config.resolution or dataset.resolution
        if self.resolution > dataset.resolution:
            raise ConfigError(f"model.resolution: {self.resolution} but the dataset {dataset.source} only goes up "
                              f"to {dataset.resolution}")
        if dataset.channels != 3:
            raise ConfigError(f"data: BigGAN generates RGB images; {dataset.source} has {dataset.channels} channel(s)")
        self.n_classes = class_count(dataset, config.n_classes)
        self.arch = config.arch(self.resolution, self.n_classes)
        self.nets["G"] = Generator(self.arch).to(device)
        if config.sync_bn:
            use_cross_replica_batch_norm(self.nets["G"])
        for key in ("batch_size", "g_batch_size"):  # under torchrun: each rank's share splits into the blocks
            share = (getattr(config, key) or config.batch_size) // dist.world_size
            if share % config.bn_groups:
                raise ConfigError(f"model.bn_groups: each of the {dist.world_size} processes' {share} samples of "
                                  f"model.{key} do not split into {config.bn_groups} equal blocks")
        use_batch_norm_groups(self.nets["G"], config.bn_groups)
        self.nets["D"] = Discriminator(self.arch).to(device)
        if config.ema:
            self.add_ema("G_ema", "G")
        # ortho reg acts on raw (pre-SN) weight matrices; G's shared embedding is excluded, as officially
        self.ortho_weights = {name: [p for key, p in self.nets[name].named_parameters()
                                     if p.ndim >= 2 and not key.startswith("shared.")] for name in ("G", "D")}
        for name, lr in (("G", config.g_lr), ("D", config.d_lr)):
            self.optimizers[name] = adam(self.nets[name].parameters(), lr=lr, betas=tuple(config.betas),
                                         eps=config.adam_eps)

    @property
    def label_count(self) -> int:
        return self.n_classes

    # --- schedule ---------------------------------------------------------------------------------------------
    def total_steps(self) -> int:
        """`steps`, or `epochs` counted as train.py counts them: its loader serves one iteration's real images
        (batch × D steps × D accumulations) at a time and drops each epoch's last partial load."""
        config = self.config
        if config.epochs is None:
            return config.steps
        per_iteration = config.batch_size * config.num_d_steps * config.num_d_accumulations
        per_epoch = len(self.dataset) // per_iteration
        if per_epoch < 1:
            raise ConfigError(f"model.epochs: an iteration reads {per_iteration} real images (batch_size × "
                              f"num_d_steps × num_d_accumulations) but {self.dataset.source} holds "
                              f"{len(self.dataset)}: set model.steps instead")
        return config.epochs * per_epoch

    @classmethod
    def extends_schedule(cls, saved: dict[str, Any], requested: dict[str, Any]) -> bool:
        """A longer run in the unit it was set in (`steps`, or `epochs`) and nothing else changed."""
        for unit, other in (("steps", "epochs"), ("epochs", "steps")):
            if isinstance(saved.get(unit), int) and saved.get(other) is None and requested.get(other) is None:
                changed = {k for k in set(saved) | set(requested) if saved.get(k) != requested.get(k)} - {unit}
                return not changed and requested.get(unit, 0) >= saved[unit]
        return False

    def lengthening_override(self) -> str:
        if self.config.epochs is not None:
            return f"model.epochs={2 * self.config.epochs}"
        return super().lengthening_override()

    def plan(self, step: int) -> StepPlan:
        return StepPlan(batch_size=self.config.batch_size, resolution=self.resolution)

    def process_count_change(self, saved: int, now: int, step: int) -> str | None:
        if self.config.sync_bn:
            return None
        return ("G's batch norm normalises each process's share of the batch (model.sync_bn: false), so another "
                "process count normalises over other samples")

    def batch_sizes(self) -> dict[str, int]:
        g_batch = {} if self.config.g_batch_size is None else {"model.g_batch_size": self.config.g_batch_size}
        return {"model.batch_size": self.config.batch_size, **g_batch}

    def base_ema_decay(self, step: int) -> float | None:
        """0 (copy G) until iteration `ema_start`, then `ema_decay`; iterations count from 1 as officially.

        With `ema_rampup` the warm-up caps this decay (Family.ema_decay): before `ema_start` the EMA still copies G,
        after it the horizon is at most `ema_rampup` × the images seen since the run began. Both are caps on the
        same horizon, so they compose as the smaller decay of the two; counting from the run's start, not from
        `ema_start`, keeps `ema_rampup` meaning what it means in every other family (stylegan2-ada's cur_nimg)."""
        if not self.config.ema:
            return None
        return 0.0 if step + 1 < self.config.ema_start else self.config.ema_decay

    # --- losses -----------------------------------------------------------------------------------------------
    def draw_latents(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fresh z and uniformly drawn classes for `n` samples (global batch; this rank's share)."""
        z = self.randn(n, self.arch.g_dim_z)
        y = self.dist.shard(sample_classes(n, self.n_classes, device=self.device))
        return z, y

    def discriminator_loss(self, batch: Batch, n_fake: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Hinge loss of D on this real micro-batch and `n_fake` fresh fakes, in one concatenated forward."""
        G, D = self.nets["G"], self.discriminate
        if batch.labels is None and self.n_classes != 1:
            raise ConfigError("data: BigGAN needs class labels, the batch has none")
        y_real = (batch.labels[:, 0] if batch.labels is not None  # an unlabelled store's images: the one class
                  else torch.zeros(batch.images.shape[0], dtype=torch.long, device=batch.images.device))
        z, y_fake = self.draw_latents(n_fake)
        with torch.no_grad():
            fakes = G(z, y_fake)
        logits = D((fakes, batch.images), torch.cat([y_fake, y_real]))  # one forward, as officially
        d_fake, d_real = logits.split([fakes.shape[0], batch.images.shape[0]])
        self.observe_real_logits(d_real)
        loss_real, loss_fake = hinge_discriminator_loss(d_real, d_fake)
        logs = {"loss_D_real": loss_real.detach(), "loss_D_fake": loss_fake.detach()}
        return self._with_ortho("D", loss_real + loss_fake, logs), logs

    def generator_loss(self, n: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Hinge (−mean D) loss of `n` fresh samples."""
        z, y = self.draw_latents(n)
        loss = hinge_generator_loss(self.discriminate(self.nets["G"](z, y), y))
        logs = {"loss_G": loss.detach()}
        return self._with_ortho("G", loss, logs), logs

    def _with_ortho(self, net: str, loss: torch.Tensor, logs: dict[str, Any]) -> torch.Tensor:
        """Adds β·ortho(W) when enabled; per micro-batch, so after the engine's 1/k scaling it counts once per
        optimiser step, like the official gradient update after accumulation."""
        strength = self.config.g_ortho if net == "G" else self.config.d_ortho
        if strength == 0:
            return loss
        penalty = orthogonal_regularization(self.ortho_weights[net])
        logs[f"ortho_{net}"] = penalty.detach()
        return loss + strength * penalty

    def phases(self, step: int, plan: StepPlan) -> list[Phase]:
        config = self.config
        g_batch = config.g_batch_size or plan.batch_size
        return [
            Phase("D", ("D",), lambda batch: self.discriminator_loss(batch, plan.batch_size),
                  repeats=config.num_d_steps, accumulate=config.num_d_accumulations),
            Phase("G", ("G",), lambda _: self.generator_loss(g_batch), accumulate=config.num_g_accumulations,
                  data="none"),
        ]

    # --- sampling ---------------------------------------------------------------------------------------------
    def sample_latents(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """z ~ N(0, I) and uniformly drawn classes, as BigGAN-PyTorch draws its fixed samples and the samples of
        its metrics: IS/FID see every class, not the first `n` (per-class sheets order classes themselves)."""
        return {"z": sample_latents(n, self.arch.g_dim_z, generator=generator),
                "y": sample_classes(n, self.n_classes, generator=generator)}

    def generator_label_columns(self) -> list[int]:
        return [0] if self.dataset.label_columns else []

    def input_classes(self) -> dict[str, list[int]]:
        return {"y": [self.label_count]}

    def with_store_labels(self, latents: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        return {**latents, "y": labels[:, 0]}

    def class_names(self) -> list[str]:
        """The class names from the store's first label column (the one BigGAN conditions on), or "class K" for each
        class when the store does not name them (a run whose data is not at hand)."""
        columns = self.dataset.label_columns
        names = [str(name) for name in columns[0][1]] if columns else []
        return names if len(names) == self.n_classes else [f"class {k}" for k in range(self.n_classes)]

    def sample_cell_labels(self, inputs: dict[str, torch.Tensor]) -> list[str] | None:
        if not self.dataset.label_columns and self.n_classes == 1:
            return None  # one class, unnamed: nothing to write under each cell
        names = self.class_names()
        return [names[k] for k in inputs["y"].tolist()] if "y" in inputs else None

    @torch.no_grad()
    def generate(self, inputs: dict[str, torch.Tensor], net: str, plan: StepPlan) -> torch.Tensor:
        """From z and class indices y (default: cycling), or z and a `condition` from G.embed: blends of shared
        embeddings are how classes are interpolated."""
        z = inputs["z"]
        y = inputs.get("y")
        if y is None:
            y = torch.arange(z.shape[0], device=z.device) % self.n_classes
        network = self.nets[net]
        with one_rank_batch_norm(network):
            generator = self._standing_generator(net, network) if self.config.standing_stats else network
            if "condition" in inputs:
                return run_generator(generator, z, inputs["condition"], eval_mode=self.config.sample_eval_mode,
                                     embedded=True)
            return run_generator(generator, z, y, eval_mode=self.config.sample_eval_mode)

    @contextlib.contextmanager
    def weights_held(self) -> Iterator[None]:
        """Standing statistics are estimated once per generator for the block (BigGAN-PyTorch estimates them once
        per evaluation), not for every batch of a metric tick's 50,000 samples."""
        outermost = self._standing is None
        if outermost:
            self._standing = {}
        try:
            yield
        finally:
            if outermost:
                self._standing = None

    def _standing_generator(self, net: str, network: nn.Module) -> nn.Module:
        if self._standing is None:
            return self.with_standing_statistics(network)
        if net not in self._standing:
            self._standing[net] = self.with_standing_statistics(network)
        return self._standing[net]

    def metric_batch(self, default: int) -> int:
        """On batch statistics (`sample_eval_mode: false`, the CIFAR preset) G's batch, which train.py's metrics
        sample in (`utils.sample` draws G_batch_size: 50 for CIFAR, not 64)."""
        return default if self.config.sample_eval_mode else self.config.g_batch_size or self.config.batch_size

    def with_standing_statistics(self, generator: nn.Module) -> nn.Module:
        """A copy of `generator` whose BN statistics average `standing_stats` batches of fresh samples.

        The draws come from their own fixed-seed stream, so sampling changes neither the network nor the
        training RNG, and equal weights always give equal samples.
        """
        copied = copy.deepcopy(generator)
        draws = torch.Generator().manual_seed(STANDING_STATS_SEED)
        batch = self.config.g_batch_size or self.config.batch_size

        def forward() -> torch.Tensor:
            z = sample_latents(batch, self.arch.g_dim_z, generator=draws).to(self.device)
            return copied(z, sample_classes(batch, self.n_classes, generator=draws).to(self.device))

        standing_statistics(copied, forward, self.config.standing_stats)
        return copied

    def describe(self) -> dict[str, Any]:
        return {"resolution": self.resolution, "classes": self.n_classes,
                "label_column": self.dataset.label_columns[0][0] if self.dataset.label_columns else None,
                "effective_batch": self.config.batch_size * self.config.num_d_accumulations,
                "attention": {"G": list(self.arch.g_attention), "D": list(self.arch.d_attention)},
                **({"deep": f"{self.arch.g_depth} G / {self.arch.d_depth} D blocks per stage"} if self.arch.deep
                   else {})}


@torch.no_grad()
def run_generator(generator: nn.Module, z: torch.Tensor, y: torch.Tensor, *, eval_mode: bool,
                  embedded: bool = False) -> torch.Tensor:
    """G(z, y) in eval mode or on batch statistics, leaving every buffer and the train/eval flag as found.

    With `embedded`, y is already the class condition (G.synthesize's input) instead of class indices.
    """
    was_training = generator.training
    saved = None if eval_mode else {name: buffer.clone() for name, buffer in generator.named_buffers()}
    try:
        generator.train(not eval_mode)
        return generator.synthesize(z, y) if embedded else generator(z, y)
    finally:
        generator.train(was_training)
        if saved is not None:
            for name, buffer in generator.named_buffers():
                buffer.copy_(saved[name])
