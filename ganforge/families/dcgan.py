"""DCGAN, WGAN and WGAN-GP: one DCGAN-style network pair trained with one of three objectives.

The objective is the family name (`dcgan`, `wgan`, `wgan-gp`), so a run's saved config always rebuilds the same
objective. Each name has its own config class whose defaults are that objective's paper/tutorial settings, and
keys that only make sense for one objective (`clip`, `lambda_gp`) exist only there, so a misplaced key is an error.

One step = `critic_steps` critic updates, then one generator update. `critic_batches: fresh` (default, the WGAN and
WGAN-GP papers' Algorithm 1): every critic update draws a fresh real batch and fresh z, and the generator update
fresh z. `reuse` (the tutorials and the PyTorch DCGAN example): one real batch serves every critic update of the step
(fresh z each), and the generator trains on the last critic update's fake, the same tensor, through the updated
critic, so G runs `critic_steps` forward passes per step instead of `critic_steps + 1`.

Sampling and BatchNorm: the generator always trains on batch statistics, so by default samples use batch
statistics too (`sample_norm_stats: batch`, the DCGAN and WGAN-GP tutorials' choice); its running averages lag the
fast-changing generator and give washed-out images early in a run. `running` uses the running averages instead (the
WGAN tutorial's eval mode), which makes each image independent of the others in its batch. Either way sampling never
updates the running statistics and draws no random numbers, so writing grids between steps cannot change training: a
resumed run equals an uninterrupted one.

Several processes: noise is drawn at global batch size and sharded, and BatchNorm's training statistics are summed
over the processes (`CrossReplicaBatchNorm2d`), so every network normalises as a single process does on the global
batch: a W-process run equals a single-process one up to float rounding. Samples are drawn on one process, with its
own batch's statistics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ganforge.config import ConfigError
from ganforge.data.loader import Batch
from ganforge.data.store import ImageDataset
from ganforge.distributed import DistInfo
from ganforge.families.base import (
    Family,
    Phase,
    SamplingBN,
    StepPlan,
    check_adam,
    check_conditions,
    condition_columns,
)
from ganforge.losses import (
    gradient_penalty,
    logistic_discriminator_loss,
    nonsaturating_generator_loss,
    wgan_critic_loss,
    wgan_generator_loss,
)
from ganforge.models.dcgan import CriticNorm, DCGANCritic, DCGANGenerator, check_resolution
from ganforge.nn.cross_replica import one_rank_batch_norm, use_cross_replica_batch_norm
from ganforge.nn.ema import check_ema_rampup
from ganforge.nn.optim import adam
from ganforge.settings import Settings


@dataclass
class DCGANConfig(Settings):
    """`model:` settings of `dcgan`; defaults are the tutorial's DCGAN (Adam 2e-4, β = (0.5, 0.999), 1 D step)."""

    resolution: int | None = None  # None: the dataset's resolution
    latent_dim: int = 100
    features_g: int = 64
    features_d: int = 64
    critic_norm: CriticNorm = "batch"
    optimizer: Literal["adam", "rmsprop"] = "adam"
    lr: float = 2e-4
    betas: list[float] | None = None  # Adam only; None: the objective's preset, ADAM_BETAS
    critic_steps: int = 1
    critic_batches: Literal["fresh", "reuse"] = "fresh"  # see the module docstring
    batch_size: int = 64
    steps: int = 10000
    ema_decay: float | None = None  # None: no EMA generator (the tutorial has none)
    ema_rampup: float | None = None  # EMA warm-up (e.g. 0.05; nn.ema.ramped_ema_decay); None: off; needs ema_decay
    sample_norm_stats: Literal["batch", "running"] = "batch"
    # class-conditional, as the tutorial's conditional WGAN-GP (models/dcgan.py): the store's label columns it
    # conditions on, and the width of G's class embedding (the tutorial's 100 when conditions are set)
    conditions: list[str] | None = None
    label_embedding: int | None = None

    ADAM_BETAS: ClassVar[tuple[float, float]] = (0.5, 0.999)
    RENAMED_KEYS: ClassVar[dict[str, str]] = {"z_dim": "latent_dim"}  # old spelling, still read (config.py)

    def __post_init__(self) -> None:
        for key in ("latent_dim", "features_g", "features_d", "critic_steps", "batch_size", "steps"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: expected a positive integer, got {getattr(self, key)}")
        if self.resolution is not None:
            try:
                check_resolution(self.resolution)
            except ValueError as err:
                raise ConfigError(f"model.resolution: {err}") from None
        if self.lr <= 0:
            raise ConfigError(f"model.lr: expected a positive learning rate, got {self.lr}")
        if self.optimizer == "rmsprop" and self.betas is not None:
            raise ConfigError(f"model.betas: {self.betas} would do nothing: RMSprop (model.optimizer) has no betas; "
                              "remove the key, or set model.optimizer: adam")
        if self.optimizer == "adam" and self.betas is None:
            self.betas = list(self.ADAM_BETAS)
        check_adam(self.betas)
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay: expected null (off) or a number in [0, 1), got {self.ema_decay}")
        check_ema_rampup(self.ema_rampup, None if self.ema_decay is not None else
                         "model.ema_decay is null (no EMA generator)", self.ema_decay)
        check_conditions(self.conditions)
        if self.conditions is None and self.label_embedding is not None:
            raise ConfigError("model.label_embedding: does nothing without model.conditions (the label columns to "
                              "condition on)")
        if self.conditions is not None and self.label_embedding is None:
            self.label_embedding = 100
        if self.label_embedding is not None and (isinstance(self.label_embedding, bool)
                                                 or not isinstance(self.label_embedding, int)
                                                 or self.label_embedding < 1):
            raise ConfigError(f"model.label_embedding: expected a positive integer, got {self.label_embedding!r}")


@dataclass
class WGANConfig(DCGANConfig):
    """`model:` settings of `wgan`: no critic norm, RMSProp 5e-5, 5 critic steps, weights clipped to ±0.01."""

    critic_norm: CriticNorm = "none"
    optimizer: Literal["adam", "rmsprop"] = "rmsprop"
    lr: float = 5e-5
    critic_steps: int = 5
    clip: float = 0.01
    # "fixed": critic_steps at every step (the paper's Algorithm 1); "official": martinarjovsky/WassersteinGAN's
    # main.py, 100 critic steps for the first 25 generator steps and at every 500th, critic_steps otherwise
    critic_schedule: Literal["fixed", "official"] = "fixed"

    OFFICIAL_CRITIC_STEPS: ClassVar[int] = 100
    OFFICIAL_FIRST_STEPS: ClassVar[int] = 25
    OFFICIAL_EVERY: ClassVar[int] = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.clip <= 0:
            raise ConfigError(f"model.clip: expected a positive clipping bound, got {self.clip}")
        if self.critic_schedule == "official" and self.critic_steps >= self.OFFICIAL_CRITIC_STEPS:
            raise ConfigError(f"model.critic_schedule: 'official' raises the critic steps to "
                              f"{self.OFFICIAL_CRITIC_STEPS} at the start and every {self.OFFICIAL_EVERY}th step, "
                              f"which model.critic_steps {self.critic_steps} already reaches: it would do nothing")


@dataclass
class WGANGPConfig(DCGANConfig):
    """`model:` settings of `wgan-gp`: InstanceNorm critic, Adam 1e-4, β = (0, 0.9), 5 critic steps, λ = 10."""

    critic_norm: CriticNorm = "instance"
    lr: float = 1e-4
    critic_steps: int = 5
    lambda_gp: float = 10.0

    ADAM_BETAS: ClassVar[tuple[float, float]] = (0.0, 0.9)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critic_norm == "batch":
            raise ConfigError("model.critic_norm: 'batch' mixes the samples of a batch, so the gradient penalty's "
                              "per-sample gradients would be wrong; use 'instance' (default) or 'none'")
        if self.lambda_gp < 0:
            raise ConfigError(f"model.lambda_gp: expected a number ≥ 0, got {self.lambda_gp}")


@contextlib.contextmanager
def norm_stats_for_sampling(net: nn.Module, stats: Literal["batch", "running"]) -> Iterator[None]:
    """Run `net` with BatchNorm on batch or running statistics, leaving its buffers and train/eval flags as found."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(m, m.training, m.track_running_stats) for m in norms]
    try:
        for m in norms:
            m.train(stats == "batch")
            m.track_running_stats = stats == "running"  # in train mode, False = use and update no buffers
        with one_rank_batch_norm(net):  # each rank's samples are its own batch (no collectives)
            yield
    finally:
        for m, training, tracking in saved:
            m.train(training)
            m.track_running_stats = tracking


class DCGANFamily(Family):
    """The non-saturating DCGAN objective; WGAN and WGAN-GP below change only the losses and their settings."""

    name: ClassVar[str] = "dcgan"
    penalised_nets: ClassVar[frozenset[str] | None] = frozenset()
    config_class: ClassVar[type] = DCGANConfig
    # BatchNorm weights start at N(this, 0.02): 1 in PyTorch's DCGAN example, WassersteinGAN and the tutorial's
    # DCGAN (since its 2022-12 revision, "to prevent the discriminator from converging to 0"); 0 in its WGAN and
    # WGAN-GP tutorials, which the wgan and wgan-gp families follow
    batch_norm_weight_mean: ClassVar[float] = 1.0
    normal_z = True

    @classmethod
    def sampling_bn_settings(cls, mode: SamplingBN) -> dict[str, Any]:
        if mode.kind == "standing":
            raise ConfigError(f"--bn {mode}: a {cls.name} generator samples on running or batch statistics "
                              "(model.sample_norm_stats)")
        return {"sample_norm_stats": mode.kind}

    def __init__(self, config: DCGANConfig, dataset: ImageDataset, device: torch.device, dist: DistInfo) -> None:
        super().__init__(config, dataset, device, dist)
        self.batch_dependent_samples = config.sample_norm_stats == "batch"
        self.resolution = config.resolution or dataset.resolution
        if self.resolution > dataset.resolution:
            raise ConfigError(f"model.resolution: {self.resolution} but the dataset {dataset.source} only goes up "
                              f"to {dataset.resolution}")
        try:
            check_resolution(self.resolution)
        except ValueError as err:
            raise ConfigError(f"model.resolution (from the dataset {dataset.source}): {err}") from None
        self.condition_columns, label_sizes = condition_columns(dataset, config.conditions or [])
        self.nets["G"] = DCGANGenerator(config.latent_dim, dataset.channels, config.features_g, self.resolution,
                                        label_sizes, config.label_embedding or 0,
                                        batch_norm_mean=self.batch_norm_weight_mean).to(device)
        self.nets["D"] = DCGANCritic(dataset.channels, config.features_d, self.resolution, config.critic_norm,
                                     label_sizes, batch_norm_mean=self.batch_norm_weight_mean).to(device)
        if dist.enabled:  # BatchNorm over the global batch: W processes train as one does
            for name in ("G", "D"):
                use_cross_replica_batch_norm(self.nets[name])
        if config.ema_decay is not None:
            self.add_ema("G_ema", "G")
        for name in ("G", "D"):
            params = self.nets[name].parameters()
            if config.optimizer == "adam":
                self.optimizers[name] = adam(params, lr=config.lr, betas=tuple(config.betas))
            else:
                self.optimizers[name] = torch.optim.RMSprop(params, lr=config.lr)

    # --- schedule ---------------------------------------------------------------------------------------------
    def total_steps(self) -> int:
        return self.config.steps

    def plan(self, step: int) -> StepPlan:
        return StepPlan(batch_size=self.config.batch_size, resolution=self.resolution)

    def base_ema_decay(self, step: int) -> float | None:
        return self.config.ema_decay

    # --- losses -----------------------------------------------------------------------------------------------
    def real_and_fake_scores(self, reals: torch.Tensor, fakes: torch.Tensor,
                             labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """D's scores of the reals and of the fakes (a conditional critic's of both in the reals' classes, as the
        tutorial's conditional WGAN-GP). A critic with batch norm sees each batch alone, as in the references (its
        statistics are per batch); with per-sample norms or none, one call (fewer, larger kernels) gives the same
        scores as two."""
        if self.config.critic_norm == "batch":
            return self.discriminate(reals, labels, real=True), self.discriminate(fakes, labels)
        both = None if labels is None else torch.cat([labels, labels])
        d_real, d_fake = self.discriminate((reals, fakes), both).split([reals.shape[0], fakes.shape[0]])
        self.observe_real_logits(d_real)
        return d_real, d_fake

    def critic_objective(self, reals: torch.Tensor, fakes: torch.Tensor,
                         labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Non-saturating GAN, discriminator side: BCE on logits, real → 1, fake → 0, halved as in the tutorial."""
        d_real, d_fake = self.real_and_fake_scores(reals, fakes, labels)
        real_part, fake_part = logistic_discriminator_loss(d_real, d_fake)
        loss = (real_part + fake_part) / 2
        # D(x) and D(G(z)), the probabilities PyTorch's DCGAN example prints beside its losses
        return loss, {"loss_D": loss.detach(), "loss_D_real": real_part.detach(), "loss_D_fake": fake_part.detach(),
                      "D_x": torch.sigmoid(d_real.detach()).mean(), "D_G_z": torch.sigmoid(d_fake.detach()).mean()}

    def generator_objective(self, d_fake: torch.Tensor) -> torch.Tensor:
        """Non-saturating generator loss: BCE of the fakes' logits against the 'real' label."""
        return nonsaturating_generator_loss(d_fake)

    def after_critic_step(self) -> None:  # noqa: B027 - WGAN clips here; the others do nothing
        """Hook run after each critic optimiser step."""

    def critic_steps_at(self, step: int) -> int:
        """The critic updates of step `step` (WGAN's official schedule varies them)."""
        return self.config.critic_steps

    def phases(self, step: int, plan: StepPlan) -> list[Phase]:
        G, D = self.nets["G"], self.discriminate
        latent_dim = self.config.latent_dim
        reuse = self.config.critic_batches == "reuse"
        last_fakes: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # reuse: the last critic fake and classes

        def critic_loss(batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
            z, labels = self.randn(plan.batch_size, latent_dim), self.conditioning_labels(batch)
            if not reuse:
                with torch.no_grad():
                    fakes = G(z, labels)
                return self.critic_objective(batch.images, fakes, labels)
            G.requires_grad_(True)  # the engine froze G for this phase; the generator step will backpropagate here
            try:
                fakes = G(z, labels)
            finally:
                G.requires_grad_(False)
            last_fakes[:] = [(fakes, labels)]
            return self.critic_objective(batch.images, fakes.detach(), labels)

        def generator_loss(_: Batch | None) -> tuple[torch.Tensor, dict[str, Any]]:
            if reuse:
                fakes, labels = last_fakes.pop()
            else:  # fresh classes as the data has them (the reals' classes in the critic's step)
                labels = self.training_image_labels(plan.batch_size) if self.condition_columns else None
                fakes = G(self.randn(plan.batch_size, latent_dim), labels)
            loss = self.generator_objective(D(fakes, labels))
            return loss, {"loss_G": loss.detach()}

        return [Phase("D", ("D",), critic_loss, repeats=self.critic_steps_at(step), after_step=self.after_critic_step,
                      reuse_batch=reuse),
                Phase("G", ("G",), generator_loss, data="none")]

    # --- sampling ---------------------------------------------------------------------------------------------
    def sample_latents(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """z, and for a conditional run uniformly drawn classes of each conditioning column ("labels")."""
        return {"z": torch.randn(n, self.config.latent_dim, generator=generator), **self.sample_labels(n, generator)}

    def generate(self, inputs: dict[str, torch.Tensor], net: str, plan: StepPlan) -> torch.Tensor:
        generator = self.nets[net]
        with norm_stats_for_sampling(generator, self.config.sample_norm_stats):
            return generator(inputs["z"], inputs.get("labels"))

    def critic_score(self, images: torch.Tensor, plan: StepPlan) -> torch.Tensor:
        if self.condition_columns:  # its score depends on a class as well as the image
            return super().critic_score(images, plan)
        return self.nets["D"](images).view(-1)

    def describe(self) -> dict[str, Any]:
        return {"objective": self.name, "resolution": self.resolution, "critic_norm": self.config.critic_norm,
                "critic_steps": self.config.critic_steps, "critic_batches": self.config.critic_batches,
                **({"critic_schedule": self.config.critic_schedule} if self.name == "wgan" else {}),
                **({"conditions": {name: len(classes) for name, classes in self.conditioning()}}
                   if self.condition_columns else {}),
                "optimizer": self.config.optimizer, "ema": self.config.ema_decay is not None}


_WGAN_KEYS_BEFORE_CRITIC_BATCHES = frozenset({
    "resolution", "z_dim", "features_g", "features_d", "critic_norm", "optimizer", "lr", "betas", "critic_steps",
    "batch_size", "steps", "ema_decay", "sample_norm_stats", "clip"})


class WGANFamily(DCGANFamily):
    """WGAN (Arjovsky et al. 2017): Wasserstein critic kept Lipschitz by clipping every weight to [−c, c]."""

    name = "wgan"
    config_class = WGANConfig
    batch_norm_weight_mean = 0.0

    generator_objective = staticmethod(wgan_generator_loss)

    wasserstein_critic = True

    @classmethod
    def normalise_config(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Runs saved before `betas` became optional wrote DCGAN's Adam betas into every wgan config, where RMSprop
        never used them; such a saved config (exactly the keys of that time) still loads, without them."""
        model = data.get("model")
        if (isinstance(model, dict) and set(model) == _WGAN_KEYS_BEFORE_CRITIC_BATCHES
                and model["optimizer"] == "rmsprop" and model["betas"] == [0.5, 0.999]):
            data = {**data, "model": {k: v for k, v in model.items() if k != "betas"}}
        return data

    def critic_objective(self, reals: torch.Tensor, fakes: torch.Tensor,
                         labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, Any]]:
        real_part, fake_part = wgan_critic_loss(*self.real_and_fake_scores(reals, fakes, labels))
        loss = fake_part + real_part
        return loss, {"loss_D": loss.detach(), "wdist": -loss.detach(), "loss_D_real": real_part.detach(),
                      "loss_D_fake": fake_part.detach()}

    def critic_steps_at(self, step: int) -> int:
        """`critic_schedule: official` counts `step` (0-based) as the official code counts gen_iterations."""
        config = self.config
        if config.critic_schedule == "official" and (step < config.OFFICIAL_FIRST_STEPS
                                                     or step % config.OFFICIAL_EVERY == 0):
            return config.OFFICIAL_CRITIC_STEPS
        return config.critic_steps

    @torch.no_grad()
    def after_critic_step(self) -> None:
        """Clip the critic's layers. A conditional critic's class maps are inputs beside the image, not weights
        that set how steeply it scores images: clipped to ±c they would leave its class channel a hundredth of
        the pixels' scale, and a conditional run would hardly condition."""
        clip = self.config.clip
        for param in self.nets["D"].net.parameters():
            param.clamp_(-clip, clip)


class WGANGPFamily(DCGANFamily):
    """WGAN-GP (Gulrajani et al. 2017): Wasserstein critic with the shared gradient penalty, no clipping."""

    name = "wgan-gp"
    penalised_nets = frozenset({"D"})
    config_class = WGANGPConfig
    batch_norm_weight_mean = 0.0

    generator_objective = staticmethod(wgan_generator_loss)

    wasserstein_critic = True

    def critic_objective(self, reals: torch.Tensor, fakes: torch.Tensor,
                         labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, Any]]:
        real_part, fake_part = wgan_critic_loss(*self.real_and_fake_scores(reals, fakes, labels))
        wdist_loss = fake_part + real_part
        mix = self.rand(self.config.batch_size, 1, 1, 1)  # u ~ U(0, 1) per sample, drawn at global batch size
        gp = gradient_penalty(lambda mixed: self.discriminate(mixed, labels), reals, fakes, mix)
        loss = wdist_loss + self.config.lambda_gp * gp
        return loss, {"loss_D": loss.detach(), "wdist": -wdist_loss.detach(), "gp": gp.detach(),
                      "loss_D_real": real_part.detach(), "loss_D_fake": fake_part.detach()}
