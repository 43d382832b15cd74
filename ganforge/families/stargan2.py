"""StarGAN v2 (Choi et al., CVPR 2020) as a family: four networks, two D phases and two G phases per step.

One step is one official iteration on one set of inputs: a source batch (x, y), a reference pair (x_ref, x_ref2)
from one target domain ỹ, and latents z1, z2.
1. ``D_latent``: non-saturating BCE on reals and on G(x, F(z1, ỹ)), plus λ_reg·R1 on the reals; steps D.
2. ``D_ref``: the same with the style E(x_ref, ỹ); steps D.
3. ``G_latent``: adversarial + λ_sty·style reconstruction − λ_ds·diversity + λ_cyc·cycle with styles from z1, z2;
   steps G, F and E (E learns only here).
4. ``G_ref``: the same with styles from x_ref, x_ref2; steps G only. λ_ds then decays by λ_ds⁰ / ds_iter.
EMA (0.999) of G, F and E after every step, starting from the He-initialised weights.

Data: domains are the classes of one label column of the store. Sources and references are drawn balanced over
domains (a uniform domain, then a uniform image of it, as the official class-weighted sampler does), with the
official augmentation (random resized crop with probability 0.5, scale 0.8–1, ratio 0.9–1.1; horizontal flip).
As officially, a crop is cut from an image larger than the output and downsampled (antialiased bilinear): from the
store's crop source (`ganforge prepare celeba-domains|domains` keep one at 5/4 of the size) or a pyramid level of
at least that size. A store without either (older ones) crops the training level itself and upsamples the crop,
with a warning. The engine's loader makes these draws in its domain-pair mode (data/loader.py, DomainPairSampler)
from a numpy generator seeded here and checkpointed with the loader's state, so a resume is exact.

Masks: with w_hpf > 0 the official code computes face masks with its landmark network (FAN, models/fan.py) on
the sources once per step (both D phases and the first generator pass of both G phases share them), on each
fake before its cycle reconstruction, and on the sources of samples, translations and evaluation; the generator
adds the masked high-pass source features. Here too: the FAN weights (`wing.ckpt`) come from model.wing_weights,
$GANFORGE_WING_WEIGHTS or the cache (downloaded there once), and a w_hpf > 0 run without them is refused.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ganforge.config import COMMAND_LINE, ConfigError
from ganforge.data.domains import CROP_SOURCE_FACTOR
from ganforge.data.loader import Batch, DataOptions, DomainPairSampler, to_float_images
from ganforge.data.store import DatasetError, ImageDataset
from ganforge.distributed import DistInfo
from ganforge.download import locate_weights
from ganforge.families.base import Family, Phase, StepPlan, check_adam
from ganforge.families.stargan2_flags import main_command_to_ganforge
from ganforge.losses import r1_penalty
from ganforge.metrics.inception import default_cache_dir
from ganforge.models.fan import FAN, WING_WEIGHTS, FanWeightsError, face_masks, load_fan
from ganforge.models.stargan2 import Encoding, StarGAN2Arch, he_init_
from ganforge.nn.double_backward import penalised_convolutions
from ganforge.nn.ema import check_ema_rampup
from ganforge.nn.optim import adam
from ganforge.settings import Settings

LOCATION_KEYS = ("wing_weights",)  # where a file is, not what is trained: may change on resume

log = logging.getLogger(__name__)
Masks = tuple[torch.Tensor, torch.Tensor]


@dataclass
class StarGAN2Config(Settings):
    """`model:` settings of `stargan2`; defaults are the official ones (main.py) except where noted."""

    resolution: int | None = None  # None: the dataset's resolution
    # label column whose classes are the domains; None (or a name absent from a one-column store): the first column
    domain_column: str | None = None
    num_domains: int | None = None  # None: the column's class count; set, the data must agree (or has no labels)
    latent_dim: int = 16
    style_dim: int = 64
    max_conv_dim: int = 512
    w_hpf: float = 1.0
    base_dim: int | None = None  # first width of G, E, D; None: official 2^14 / img_size
    mapping_dim: int = 512  # hidden width of F (hard-coded 512 officially)
    lambda_reg: float = 1.0
    lambda_sty: float = 1.0
    lambda_ds: float = 1.0
    lambda_cyc: float = 1.0
    ds_iter: int = 100000
    lr: float = 1e-4
    f_lr: float = 1e-6
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    weight_decay: float = 1e-4
    ema_decay: float = 0.999
    ema_rampup: float | None = None  # EMA warm-up of G, F, E (e.g. 0.05; nn.ema.ramped_ema_decay); None: off
    batch_size: int = 8
    # each phase's batch computed in this many equal slices, gradients added up: the same update (float rounding
    # apart) with a fraction of the activation memory, for GPUs where the batch does not fit (not in the official code)
    micro_batches: int = 1
    steps: int = 100000
    randcrop_prob: float = 0.5
    flip: bool = True
    wing_weights: str | None = None  # FAN weights for w_hpf > 0; None: $GANFORGE_WING_WEIGHTS, then the cache

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"img_size": "resolution"}  # old spelling, still read (config.py)

    def __post_init__(self) -> None:
        for key in ("latent_dim", "style_dim", "max_conv_dim", "mapping_dim", "ds_iter", "batch_size", "steps",
                    "micro_batches"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: expected a positive integer, got {getattr(self, key)}")
        if self.batch_size % self.micro_batches:
            raise ConfigError(f"model.micro_batches: {self.micro_batches} does not divide model.batch_size "
                              f"{self.batch_size} into equal slices")
        if self.num_domains is not None and self.num_domains < 2:
            raise ConfigError(f"model.num_domains: expected null (from the data) or at least 2, got {self.num_domains}")
        if self.base_dim is not None and self.base_dim < 1:
            raise ConfigError(f"model.base_dim: expected null (official width) or a positive integer, "
                              f"got {self.base_dim}")
        for key in ("lambda_reg", "lambda_sty", "lambda_ds", "lambda_cyc", "weight_decay", "w_hpf"):
            if not math.isfinite(getattr(self, key)) or getattr(self, key) < 0:
                raise ConfigError(f"model.{key}: expected a number ≥ 0, got {getattr(self, key)}")
        for key in ("lr", "f_lr"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"model.{key}: expected a positive learning rate, got {getattr(self, key)}")
        check_adam(self.betas)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"model.ema_decay: expected a number in [0, 1), got {self.ema_decay}")
        check_ema_rampup(self.ema_rampup, decay=self.ema_decay)
        if not 0.0 <= self.randcrop_prob <= 1.0:
            raise ConfigError(f"model.randcrop_prob: expected a probability in [0, 1], got {self.randcrop_prob}")
        if self.wing_weights is not None and self.w_hpf == 0:
            raise ConfigError(f"model.wing_weights: {self.wing_weights!r} is only used with w_hpf > 0 (face masks); "
                              "this model has w_hpf = 0")

    def arch(self, img_size: int, num_domains: int) -> StarGAN2Arch:
        """The networks' shapes at `img_size` for `num_domains` domains (both come from the dataset by default)."""
        return StarGAN2Arch(img_size=img_size, num_domains=num_domains, latent_dim=self.latent_dim,
                            style_dim=self.style_dim, max_conv_dim=self.max_conv_dim, w_hpf=self.w_hpf,
                            base_dim=self.base_dim, mapping_dim=self.mapping_dim)


@dataclass
class StepInputs:
    """What all four phases of one step share (this rank's share of the global batch)."""

    x_src: torch.Tensor
    y_src: torch.Tensor
    x_ref: torch.Tensor
    x_ref2: torch.Tensor
    y_trg: torch.Tensor
    z1: torch.Tensor
    z2: torch.Tensor
    masks: Masks | None = None  # face masks of x_src (w_hpf > 0)
    # G's encoding of x_src without gradients, made by the first D phase and taken by the second: G is not
    # stepped between them, so it is the same tensor the official code computes twice (only for the D phases)
    d_phase_encoding: Encoding | None = None

    def share(self, batch: Batch) -> StepInputs:
        """A micro-batch's share of the whole batch's inputs, taken as its images were (`Batch.share`)."""
        if batch.part == (0, 1):
            return self
        tensors = {f.name: batch.share(getattr(self, f.name)) for f in fields(self)
                   if f.name not in ("masks", "d_phase_encoding")}
        masks = None if self.masks is None else (batch.share(self.masks[0]), batch.share(self.masks[1]))
        return StepInputs(**tensors, masks=masks)


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class StarGAN2Family(Family):
    """G, F, E, D with EMA copies of G, F, E; the step's inputs are drawn in `begin_step` and shared by its phases."""

    name: ClassVar[str] = "stargan2"
    penalised_nets: ClassVar[frozenset[str] | None] = frozenset({"D"})  # R1 on the reals
    config_class: ClassVar[type] = StarGAN2Config
    label_count_key: ClassVar[str] = "num_domains"  # `ganforge info` without data
    default_label_count: ClassVar[int] = 2  # the official --num_domains default
    translates: ClassVar[bool] = True
    # the paper's evaluation (official eval_every): FID and LPIPS diversity per domain task, latent- and
    # reference-guided, with their means over tasks
    protocol_metrics: ClassVar[tuple[str, ...]] = ("fid", "lpips")
    protocol_rankings: ClassVar[dict[str, bool]] = {"FID_latent/mean": False, "FID_reference/mean": False,
                                                    "LPIPS_latent/mean": True, "LPIPS_reference/mean": True}

    def __init__(self, config: StarGAN2Config, dataset: ImageDataset, device: torch.device, dist: DistInfo) -> None:
        super().__init__(config, dataset, device, dist)
        if dataset.channels != 3:
            raise ConfigError(f"data: StarGAN v2 translates RGB images; {dataset.source} has {dataset.channels} "
                              "channel(s)")
        self.domain_column, self.domain_names = self._domains(config, dataset, announce=dist.is_main)
        self.img_size = config.resolution or dataset.resolution
        if dataset.levels and self.img_size not in dataset.levels:
            raise ConfigError(f"model.resolution: {self.img_size} but the dataset {dataset.source} holds the sizes "
                              f"{', '.join(map(str, dataset.levels))}")
        if dataset.levels and self.img_size < dataset.resolution and dist.is_main:
            print(f"model.resolution: {self.img_size} below the store's {dataset.resolution}: its images are the "
                  "store's box-averaged level, not the official loaders' bilinear resize of the originals (prepare "
                  f"the store at {self.img_size} px for those)")
        try:
            self.arch = config.arch(self.img_size, len(self.domain_names))
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None
        self.members = self._members(dataset) if dataset.labels is not None else None
        for role, build in (("G", self.arch.generator), ("F", self.arch.mapping_network),
                            ("E", self.arch.style_encoder), ("D", self.arch.discriminator)):
            self.nets[role] = he_init_(build()).to(device)
        for role in ("G", "F", "E"):
            self.add_ema(f"{role}_ema", role)
        betas = (float(config.betas[0]), float(config.betas[1]))
        for role, net in self.nets.items():
            if role not in self.ema_pairs:
                lr = config.f_lr if role == "F" else config.lr
                self.optimizers[role] = adam(net.parameters(), lr=lr, betas=betas, weight_decay=config.weight_decay)
        # the data stream's own generator, seeded from the run seed through torch's (seeded) stream
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), device="cpu").item()))
        self.lambda_ds = config.lambda_ds
        self.sampler = None if self.members is None else DomainPairSampler(
            dataset, self.members, resolution=self.img_size, crop_size=self._crop_source_size(dataset),
            randcrop_prob=config.randcrop_prob, flip=config.flip, rng=rng)
        self.fan: FAN | None = None
        if self.members is not None and device.type != "meta":
            self.load_fan()  # training needs the masks (w_hpf > 0): refuse now, not at the first step

    @classmethod
    def normalise_config(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Ours, or StarGAN v2's `main.py --mode train` command in a shell script (read by `read_config_file`)."""
        if COMMAND_LINE in data:
            return main_command_to_ganforge(data[COMMAND_LINE]["words"], data[COMMAND_LINE]["file"])
        return data

    @classmethod
    def extends_schedule(cls, saved: dict[str, Any], requested: dict[str, Any]) -> bool:
        """A longer run, or the FAN weights found elsewhere (a location, not a setting of the training)."""
        def strip(model: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in model.items() if k not in LOCATION_KEYS}
        return super().extends_schedule(strip(saved), strip(requested))

    def load_fan(self, weights: str | Path | None = None) -> None:
        """The face-mask network for w_hpf > 0 (nothing for w_hpf = 0): `weights` (e.g. --wing-weights), else
        model.wing_weights, else $GANFORGE_WING_WEIGHTS, else the cache (the official file downloaded there once);
        without it a one-line error says which file, its URL and where to put it."""
        if self.arch.w_hpf <= 0:
            return
        try:
            path = locate_weights(WING_WEIGHTS, weights or self.config.wing_weights, default_cache_dir() / "weights",
                                  FanWeightsError)
            self.fan = load_fan(path, self.device)
        except FanWeightsError as err:
            raise ConfigError(f"model.w_hpf = {self.arch.w_hpf:g} (the official default, for aligned faces: "
                              "CelebA-HQ) needs the official face masks, nothing trains or translates without them "
                              f"(other data: set model.w_hpf=0, as configs/stargan2_afhq.yaml does): {err}") from None

    def face_masks(self, x: torch.Tensor) -> Masks | None:
        """(coarse, fine) masks of images x for the generator when w_hpf > 0, else None."""
        if self.arch.w_hpf <= 0:
            return None
        if self.fan is None:
            raise ConfigError(f"model.w_hpf = {self.arch.w_hpf:g} needs face masks but the FAN weights were not "
                              "loaded; pass --wing-weights PATH (or set $GANFORGE_WING_WEIGHTS)")
        return face_masks(self.fan, x)

    @staticmethod
    def _domains(config: StarGAN2Config, dataset: ImageDataset, *, announce: bool = True
                 ) -> tuple[str | None, list[str]]:
        """(column, domain names) from the data's label columns; a dataset without any (e.g. the shape-only
        placeholder of `ganforge info`) takes `num_domains` numbered domains and cannot train. `announce`: say which
        column stands in for a missing one (the main process only)."""
        if not dataset.label_columns:
            if config.num_domains is None:
                raise ConfigError(f"data: StarGAN v2 needs domain labels but {dataset.source} has none; prepare it "
                                  "from one sub-folder per domain (`ganforge prepare folder`), or set "
                                  "model.num_domains to only build the networks")
            return None, [str(k) for k in range(config.num_domains)]
        names = [name for name, _ in dataset.label_columns]
        column = config.domain_column or names[0]
        if column not in names and len(names) == 1:  # e.g. a preset's "shape" on a `prepare domains` store
            if announce and dataset.labels is not None:  # said where images are used, not when a run is loaded
                print(f"model.domain_column: {column!r} is not a label column of {dataset.source}; using its only "
                      f"column {names[0]!r}", file=sys.stderr)
            column = names[0]
        if column not in names:
            raise ConfigError(f"model.domain_column: {column!r} is not a label column of {dataset.source} "
                              f"(it has {', '.join(names)})")
        classes = list(dataset.label_columns[names.index(column)][1])
        if len(classes) < 2:
            raise ConfigError(f"model.domain_column: column {column!r} has {len(classes)} class; translation needs "
                              "at least 2 domains")
        if config.num_domains is not None and config.num_domains != len(classes):
            raise ConfigError(f"model.num_domains: {config.num_domains} but column {column!r} of {dataset.source} "
                              f"has {len(classes)} classes ({', '.join(classes)})")
        return column, classes

    def _members(self, dataset: ImageDataset) -> list[np.ndarray]:
        """Image indices of each domain; every domain needs at least one image to be sampled."""
        names = [name for name, _ in dataset.label_columns]
        labels = np.asarray(dataset.labels[:, names.index(self.domain_column)])
        members = [np.flatnonzero(labels == k) for k in range(len(self.domain_names))]
        for name, indices in zip(self.domain_names, members, strict=True):
            if len(indices) == 0:
                raise ConfigError(f"model.domain_column: domain {name!r} of column {self.domain_column!r} has no "
                                  f"images in {dataset.source}")
        return members

    @property
    def label_count(self) -> int:
        return len(self.domain_names)

    # --- schedule ---------------------------------------------------------------------------------------------
    def total_steps(self) -> int:
        return self.config.steps

    def plan(self, step: int) -> StepPlan:
        return StepPlan(batch_size=self.config.batch_size, resolution=self.img_size)

    def base_ema_decay(self, step: int) -> float:
        return self.config.ema_decay

    # --- data -------------------------------------------------------------------------------------------------
    def _crop_source_size(self, dataset: ImageDataset) -> int | None:
        """The smallest stored size (the store's crop source or a pyramid level) from which every crop is only
        downsampled to img_size; None when there is none (crops then upsample, as before stores kept one)."""
        sizes = [*dataset.levels, *([dataset.crop_source] if dataset.crop_source else [])]
        fitting = [size for size in sizes if size >= CROP_SOURCE_FACTOR * self.img_size]
        if not fitting and self.config.randcrop_prob > 0:
            log.warning("%s holds no images larger than %d px to crop from: random resized crops are cut from the "
                        "%d px images and upsampled (the official loader only downsamples); re-create the store "
                        "with `ganforge prepare celeba-domains|domains` to keep a crop source", dataset.source,
                        self.img_size, self.img_size)
        return min(fitting) if fitting else None

    def _require_images(self, purpose: str) -> None:
        if self.sampler is None or self.dataset.count == 0:
            raise DatasetError(f"{purpose} needs the training images, but this run was loaded from the shape of "
                               f"{self.dataset.source or 'its dataset'} only; StarGAN v2 translates images: use "
                               "`ganforge translate RUN --src DIR --ref DIR -o OUT`")

    def data_options(self) -> DataOptions:
        """The loader's domain-pair mode: balanced sources with reference pairs, officially augmented."""
        self._require_images("training")
        return DataOptions(domain_pairs=self.sampler)

    def step_inputs(self, batch: Batch, batch_size: int) -> StepInputs:
        """What the step's four phases share: the loader's domain-pair batch, fresh latents z1, z2 (drawn at the
        global `batch_size`, this rank's share) and the sources' face masks."""
        if batch.references is None or batch.labels is None or batch.reference_labels is None:
            raise RuntimeError("StarGAN v2 needs the loader's domain-pair batches (sources, references, domains)")
        z1 = self.randn(batch_size, self.config.latent_dim)
        z2 = self.randn(batch_size, self.config.latent_dim)
        return StepInputs(batch.images, batch.labels[:, 0], *batch.references, batch.reference_labels, z1, z2,
                          masks=self.face_masks(batch.images))

    # --- losses -----------------------------------------------------------------------------------------------
    def _target_style(self, inputs: StepInputs, mode: str, *, second: bool = False) -> torch.Tensor:
        """A target style of a phase: from z1 (z2) through F, or from x_ref (x_ref2) through E."""
        if mode == "latent":
            return self.nets["F"](inputs.z2 if second else inputs.z1, inputs.y_trg)
        return self.nets["E"](inputs.x_ref2 if second else inputs.x_ref, inputs.y_trg)

    def d_loss(self, inputs: StepInputs, mode: str) -> tuple[torch.Tensor, dict[str, Any]]:
        """BCE(D(x), 1) + λ_reg·R1(x) + BCE(D(G(x, s̃)), 0); the fake is made without gradients."""
        G, D = self.nets["G"], self.discriminate
        x_real = inputs.x_src.detach().requires_grad_(True)
        with penalised_convolutions(x_real.device):
            d_real = D(x_real, inputs.y_src, real=True)
        loss_real = _bce(d_real, 1.0)
        loss_reg = r1_penalty(d_real, x_real)
        with torch.no_grad():
            style = self._target_style(inputs, mode)
            if inputs.d_phase_encoding is None:
                x_fake, inputs.d_phase_encoding = G(inputs.x_src, style, inputs.masks, return_encoding=True)
            else:  # the second D phase takes it, and it is gone before G is stepped
                x_fake = G(inputs.x_src, style, inputs.masks, encoding=inputs.d_phase_encoding)
                inputs.d_phase_encoding = None
        loss_fake = _bce(D(x_fake, inputs.y_trg), 0.0)
        loss = loss_real + loss_fake + self.config.lambda_reg * loss_reg
        return loss, {f"D_{mode}_real": loss_real.detach(), f"D_{mode}_fake": loss_fake.detach(),
                      f"D_{mode}_reg": loss_reg.detach()}

    def g_loss(self, inputs: StepInputs, mode: str) -> tuple[torch.Tensor, dict[str, Any]]:
        """adv + λ_sty·|E(G(x, s̃1)) − s̃1| − λ_ds·|G(x, s̃1) − G(x, s̃2)| + λ_cyc·|G(G(x, s̃1), E(x, y)) − x|.

        The second fake carries no gradient (as officially), so it is made under no_grad, from the first fake's
        encoding of x (the same values: the official code encodes x twice). The reconstruction uses the masks of
        the fake (no gradient flows through the mask network).
        """
        G, D, E = self.nets["G"], self.discriminate, self.nets["E"]
        config = self.config
        x, y, y_trg = inputs.x_src, inputs.y_src, inputs.y_trg
        s_trg = self._target_style(inputs, mode)
        x_fake, encoding = G(x, s_trg, inputs.masks, return_encoding=True)
        loss_adv = _bce(D(x_fake, y_trg), 1.0)
        loss_sty = (E(x_fake, y_trg) - s_trg).abs().mean()
        with torch.no_grad():
            x_fake2 = G(x, self._target_style(inputs, mode, second=True), inputs.masks, encoding=encoding)
        loss_ds = (x_fake - x_fake2).abs().mean()
        x_rec = G(x_fake, E(x, y), self.face_masks(x_fake))
        loss_cyc = (x_rec - x).abs().mean()
        loss = loss_adv + config.lambda_sty * loss_sty - self.lambda_ds * loss_ds + config.lambda_cyc * loss_cyc
        return loss, {f"G_{mode}_adv": loss_adv.detach(), f"G_{mode}_sty": loss_sty.detach(),
                      f"G_{mode}_ds": loss_ds.detach(), f"G_{mode}_cyc": loss_cyc.detach(),
                      "lambda_ds": self.lambda_ds}

    def decay_lambda_ds(self) -> None:
        """Linear decay to 0 over ds_iter steps, once per step (after the last phase), as officially."""
        self.lambda_ds = max(0.0, self.lambda_ds - self.config.lambda_ds / self.config.ds_iter)

    def phases(self, step: int, plan: StepPlan) -> list[Phase]:
        """The first phase takes the loader's batch; the other three are handed the same one, and all four share
        the inputs made from it once (latents, masks), of which a micro-batch takes its slice."""
        made: dict[tuple[int, tuple[int, int]], StepInputs] = {}  # (batch, slice) → the same object in every phase

        def shared(batch: Batch) -> StepInputs:
            whole = batch.whole or batch
            if (id(whole), (0, 1)) not in made:
                made[id(whole), (0, 1)] = self.step_inputs(whole, plan.batch_size)
            if (id(whole), batch.part) not in made:
                made[id(whole), batch.part] = made[id(whole), (0, 1)].share(batch)
            return made[id(whole), batch.part]

        micro = self.config.micro_batches
        return [
            Phase("D_latent", ("D",), lambda batch: self.d_loss(shared(batch), "latent"), micro_batches=micro),
            Phase("D_ref", ("D",), lambda batch: self.d_loss(shared(batch), "ref"), data="previous",
                  micro_batches=micro),
            Phase("G_latent", ("G", "F", "E"), lambda batch: self.g_loss(shared(batch), "latent"), data="previous",
                  micro_batches=micro),
            Phase("G_ref", ("G",), lambda batch: self.g_loss(shared(batch), "ref"), data="previous",
                  after_step=self.decay_lambda_ds, micro_batches=micro),
        ]

    # --- sampling ---------------------------------------------------------------------------------------------
    def sample_latents(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """⌈n/2⌉ fixed sources with target domains cycling through all domains, and their latents."""
        self._require_images("choosing fixed sample sources")
        count = max(1, (n + 1) // 2)
        indices = torch.randint(self.dataset.count, (count,), generator=generator).numpy()
        images = to_float_images(self.dataset.images(self.img_size)[indices], torch.device("cpu"))
        return {"x": images, "y": torch.arange(count) % len(self.domain_names),
                "z": torch.randn(count, self.config.latent_dim, generator=generator)}

    def input_classes(self) -> dict[str, list[int]]:
        return {"y": [self.label_count]}

    @torch.no_grad()
    def generate(self, inputs: dict[str, torch.Tensor], net: str, plan: StepPlan) -> torch.Tensor:
        """Latent-guided translations, each after its source: (source, output) pairs, clamped to [-1, 1]."""
        suffix = net[1:]  # "G_ema" → "_ema": use the matching mapping network
        style = self.nets["F" + suffix](inputs["z"], inputs["y"])
        out = self.nets[net](inputs["x"], style, self.face_masks(inputs["x"])).clamp(-1, 1)
        return torch.stack([inputs["x"], out], dim=1).flatten(0, 1)

    # --- state --------------------------------------------------------------------------------------------------
    def family_state(self) -> dict[str, Any]:
        return {"lambda_ds": self.lambda_ds}

    def load_family_state(self, state: dict[str, Any]) -> None:
        """λ_ds; checkpoints written before the loader drew StarGAN v2's images also hold the draws' generator
        state here ("rng"), which then goes to the loader's sampler."""
        if "lambda_ds" not in state:
            raise ConfigError(f"checkpoint family state has no 'lambda_ds' (found {sorted(state)}); it was not "
                              "written by the stargan2 family")
        self.lambda_ds = float(state["lambda_ds"])
        if "rng" in state and self.sampler is not None:
            self.sampler.load_state_dict({"rng": state["rng"]})

    def describe(self) -> dict[str, Any]:
        described = {"img_size": self.img_size, "domain_column": self.domain_column, "domains": self.domain_names,
                     "w_hpf": self.arch.w_hpf, "first_width": self.arch.first_dim, "total_steps": self.total_steps()}
        if self.arch.w_hpf > 0:
            described["face_masks"] = "FAN (wing.ckpt), 6,333,603 frozen parameters, not counted above"
        return described
