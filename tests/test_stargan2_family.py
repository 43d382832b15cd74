"""StarGAN v2 family: R1 and the loss terms against hand computations, λ_ds decay and its resume, which optimisers
step in which phase, balanced domain sampling, augmentation, presets, and a tiny run that resumes exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_same_update, shared_path
from PIL import Image
from stargan2_tiny_run import draw_step_inputs

import ganforge.api
from ganforge.cli import main
from ganforge.config import ConfigError, read_config_file
from ganforge.data.loader import Batch, to_float_images
from ganforge.data.prepare import prepare_folder
from ganforge.data.store import DatasetError, ImageDataset, open_dataset
from ganforge.distributed import DistInfo
from ganforge.families import get_family, resolve_run_config
from ganforge.families.stargan2 import StarGAN2Config, StarGAN2Family
from ganforge.losses import r1_penalty
from ganforge.training import checkpoint as ckpt
from ganforge.training.engine import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHAPES = "builtin:shapes?count=256&resolution=32"
TINY = {"resolution": 32, "domain_column": "shape", "base_dim": 4, "max_conv_dim": 8, "mapping_dim": 8,
        "latent_dim": 4, "style_dim": 8, "w_hpf": 0.0, "batch_size": 4}


@pytest.fixture(scope="module")
def shapes() -> ImageDataset:
    return open_dataset(SHAPES)


def build(dataset: ImageDataset, **model: Any) -> StarGAN2Family:
    config = resolve_run_config("stargan2", {"data": SHAPES, "model": {**TINY, **model}})
    torch.manual_seed(0)
    return StarGAN2Family(config.model, dataset, torch.device("cpu"), DistInfo())


def run_config(**model: Any):
    return resolve_run_config("stargan2", {"data": SHAPES, "progress": False, "tensorboard": False,
                                           "sample_every": 1000, "sample_count": 4,
                                           "model": {**TINY, "steps": 2, **model}})


def labelled(counts: list[int], resolution: int = 16) -> ImageDataset:
    """An in-memory dataset whose image i is filled with the value i, labelled with domain sizes `counts`."""
    total = sum(counts)
    images = np.broadcast_to(np.arange(total, dtype=np.uint8)[:, None, None, None], (total, 3, resolution,
                                                                                       resolution)).copy()
    labels = np.repeat(np.arange(len(counts)), counts)[:, None]
    manifest = {"resolution": resolution, "count": total, "channels": 3,
                "labels": [{"name": "kind", "classes": [f"d{k}" for k in range(len(counts))]}]}
    return ImageDataset({resolution: images}, labels=labels, manifest=manifest, fingerprint="test", source="memory")


# --- losses against hand computations ---------------------------------------------------------------------------

def test_r1_penalty_matches_a_hand_derivation() -> None:
    # D(x) = ½ Σ a·x², so ∇ₓD = a·x, R1 = ½ mean_i Σ_j (a_j x_ij)², ∂R1/∂a_j = mean_i a_j x_ij²
    a = torch.tensor([0.5, -2.0, 1.5], requires_grad=True)
    x = torch.tensor([[1.0, 2.0, -1.0], [0.0, -1.0, 3.0]], requires_grad=True)
    penalty = r1_penalty(0.5 * (a * x.square()).sum(1), x)
    expected = 0.5 * ((0.25 + 16 + 2.25) + (0 + 4 + 20.25)) / 2
    assert penalty.item() == pytest.approx(expected)
    penalty.backward()
    xs = x.detach().square()
    assert a.grad.tolist() == pytest.approx((a.detach() * xs).mean(0).tolist())


def test_r1_on_image_shaped_input() -> None:
    w = torch.randn(1, 3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    penalty = r1_penalty((w * x).flatten(1).sum(1), x)  # ∇ = w for every sample
    assert penalty.item() == pytest.approx(0.5 * w.square().sum().item(), rel=1e-6)


def test_d_loss_is_bce_on_real_and_fake_plus_weighted_r1(shapes) -> None:
    family = build(shapes, lambda_reg=3.0)
    inputs = draw_step_inputs(family, 4)
    G, F_, E, D = (family.nets[k] for k in "GFED")
    for mode in ("latent", "ref"):
        loss, logs = family.d_loss(inputs, mode)
        x = inputs.x_src.clone().requires_grad_(True)
        d_real = D(x, inputs.y_src)
        (grad,) = torch.autograd.grad(d_real.sum(), x)
        r1 = 0.5 * grad.square().sum(dim=(1, 2, 3)).mean()
        style = F_(inputs.z1, inputs.y_trg) if mode == "latent" else E(inputs.x_ref, inputs.y_trg)
        d_fake = D(G(inputs.x_src, style), inputs.y_trg)
        real, fake = F.softplus(-d_real).mean(), F.softplus(d_fake).mean()
        torch.testing.assert_close(logs[f"D_{mode}_reg"], r1.detach())
        torch.testing.assert_close(logs[f"D_{mode}_fake"], fake.detach())
        torch.testing.assert_close(loss, real + fake + 3.0 * r1)


def test_g_loss_terms_and_the_detached_second_fake(shapes) -> None:
    family = build(shapes, lambda_sty=2.0, lambda_cyc=3.0, lambda_ds=0.5)
    inputs = draw_step_inputs(family, 4)
    G, F_, E, D = (family.nets[k] for k in "GFED")
    x, y, y_trg = inputs.x_src, inputs.y_src, inputs.y_trg
    for mode in ("latent", "ref"):
        loss, logs = family.g_loss(inputs, mode)
        if mode == "latent":
            s1, s2 = F_(inputs.z1, y_trg), F_(inputs.z2, y_trg)
        else:
            s1, s2 = E(inputs.x_ref, y_trg), E(inputs.x_ref2, y_trg)
        fake, fake2 = G(x, s1), G(x, s2)
        adv = F.softplus(-D(fake, y_trg)).mean()
        sty = (E(fake, y_trg) - s1).abs().mean()
        cyc = (G(fake, E(x, y)) - x).abs().mean()
        for name, value in (("adv", adv), ("sty", sty), ("cyc", cyc), ("ds", (fake - fake2).abs().mean())):
            torch.testing.assert_close(logs[f"G_{mode}_{name}"], value.detach(), msg=name)
        expected = adv + 2.0 * sty - 0.5 * (fake - fake2.detach()).abs().mean() + 3.0 * cyc
        torch.testing.assert_close(loss, expected)
        params = list(G.parameters())
        ours = torch.autograd.grad(loss, params, allow_unused=True)
        reference = torch.autograd.grad(expected, params, allow_unused=True, retain_graph=True)
        both_branches = torch.autograd.grad(adv + 2.0 * sty - 0.5 * (G(x, s1) - G(x, s2)).abs().mean() + 3.0 * cyc,
                                            params[:1])
        torch.testing.assert_close(list(ours), list(reference))
        assert not torch.allclose(both_branches[0], ours[0])  # a live second fake would change G's gradient


# --- λ_ds --------------------------------------------------------------------------------------------------------

def test_lambda_ds_decays_linearly_to_zero(shapes) -> None:
    family = build(shapes, lambda_ds=2.0, ds_iter=4)
    values = []
    for _ in range(6):
        values.append(family.lambda_ds)
        family.decay_lambda_ds()
    assert values == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0, 0.0])


@pytest.mark.slow
def test_lambda_ds_is_checkpointed_and_restored_on_resume(tmp_path) -> None:
    config = run_config(steps=3, lambda_ds=2.0, ds_iter=8)
    trainer = Trainer(config, tmp_path / "run")
    trainer.train(until=2)
    assert trainer.family.lambda_ds == pytest.approx(1.5)
    saved = ckpt.latest_valid_checkpoint(tmp_path / "run")
    assert saved.meta["family_state"]["lambda_ds"] == pytest.approx(1.5)
    resumed = Trainer(config, tmp_path / "run")
    assert resumed.step == 2 and resumed.family.lambda_ds == pytest.approx(1.5)  # not the configured 2.0
    resumed.train()
    assert resumed.family.lambda_ds == pytest.approx(1.25)
    logged = [rec["lambda_ds"] for rec in map(json.loads, (tmp_path / "run" / "log.jsonl").open())
              if "lambda_ds" in rec]
    assert logged[-1] == pytest.approx(1.5)  # the value the last step's G losses used
    assert set(saved.meta["family_state"]) == {"lambda_ds"} and "rng" in saved.meta["loader"]["domain_pairs"]
    with pytest.raises(ConfigError, match="family state has no 'lambda_ds'"):
        resumed.family.load_family_state({"rng": 1.0})


# --- which optimisers step in which phase -------------------------------------------------------------------------

@pytest.mark.slow
def test_optimisers_step_per_phase_and_ema_follows(tmp_path) -> None:
    trainer = Trainer(run_config(steps=1, ema_decay=0.5), tmp_path / "run")
    family = trainer.family
    steps: list[tuple[str, str]] = []
    current = {"phase": ""}
    original_phases = family.phases

    def tracking_phases(step, plan):
        phases = original_phases(step, plan)
        for phase in phases:
            loss = phase.loss

            def wrapped(batch, name=phase.name, loss=loss):
                current["phase"] = name
                return loss(batch)

            phase.loss = wrapped
        return phases

    family.phases = tracking_phases
    for name, optimizer in family.optimizers.items():
        step = optimizer.step

        def counted(*args, name=name, step=step, **kwargs):
            steps.append((current["phase"], name))
            return step(*args, **kwargs)

        optimizer.step = counted
    before = {k: [p.detach().clone() for p in net.parameters()] for k, net in family.nets.items()}
    trainer.train()
    assert steps == [("D_latent", "D"), ("D_ref", "D"), ("G_latent", "G"), ("G_latent", "F"), ("G_latent", "E"),
                     ("G_ref", "G")]
    assert set(family.optimizers) == {"G", "F", "E", "D"}
    groups = {name: opt.param_groups[0] for name, opt in family.optimizers.items()}
    assert groups["F"]["lr"] == 1e-6 and groups["G"]["lr"] == groups["E"]["lr"] == groups["D"]["lr"] == 1e-4
    assert all(g["betas"] == (0.0, 0.99) and g["weight_decay"] == 1e-4 for g in groups.values())
    for role in "GFE":  # EMA ← 0.5·EMA + 0.5·net, from the initial weights
        for old, new, ema in zip(before[role], family.nets[role].parameters(), family.nets[f"{role}_ema"].parameters(),
                                 strict=True):
            torch.testing.assert_close(ema, 0.5 * old + 0.5 * new.detach())
    assert "D_ema" not in family.nets


def _first_steps(tmp_path: Path, micro_batches: int,
                 **model: Any) -> tuple[list[tuple[str, list[torch.Tensor]]], list[dict]]:
    """Two steps of a tiny run: the gradients each optimiser steps with, and the step's log values."""
    trainer = Trainer(run_config(micro_batches=micro_batches, **model), tmp_path / f"micro{micro_batches}")
    stepped: list[tuple[str, list[torch.Tensor]]] = []
    for name, optimizer in trainer.family.optimizers.items():
        def recording(*args, name=name, optimizer=optimizer, step=optimizer.step, **kwargs):
            # with w_hpf > 0 the decoder's learned shortcuts are unused (officially too): no gradient, zeros here
            stepped.append((name, [torch.zeros_like(p) if p.grad is None else p.grad.clone()
                                   for group in optimizer.param_groups for p in group["params"]]))
            return step(*args, **kwargs)

        optimizer.step = recording
    logs = []
    for step in range(2):
        trainer.step = step
        logs.append({key: float(value) for key, value in trainer.train_step(trainer.family.plan(step)).items()})
    return stepped, logs


def test_micro_batches_give_the_whole_batch_update(tmp_path) -> None:
    """Each phase's batch of 4 in 2 slices: every optimiser steps with the whole batch's gradient (to float
    rounding: relative to the network's largest gradient; biases before instance norm have a true gradient of 0 and
    hold rounding noise alone) and the logs are the whole batch's means."""
    whole, whole_logs = _first_steps(tmp_path, 1)
    sliced, sliced_logs = _first_steps(tmp_path, 2)
    assert [name for name, _ in whole] == ["D", "D", "G", "F", "E", "G"] * 2
    assert_same_update(whole, sliced, whole_logs, sliced_logs, rel=1e-5, abs_=1e-7)


@pytest.mark.parametrize(("micro_batches", "faces"), [
    (1, {}), (2, {}),
    # w_hpf > 0: the encoding also holds the features the masks select (stand-in FAN weights)
    pytest.param(1, {"w_hpf": 1.0, "wing_weights": "wing_standin.ckpt"}, marks=pytest.mark.slow, id="w_hpf")])
def test_the_sources_are_encoded_once_per_d_pair_and_per_g_phase(tmp_path, monkeypatch, micro_batches,
                                                                 faces) -> None:
    """The official step encodes x 4 times more than it needs (the D phases' two fakes under the same G, each G
    phase's second fake): reusing the encoding gives the same gradients bit for bit, with 5 encodings per step
    (the D pair's, each G phase's fake and cycle) instead of 8."""
    if faces:
        faces = {**faces, "wing_weights": str(shared_path("fixtures", "official", "stargan_v2", "wing",
                                                          faces["wing_weights"]))}
    generator = type(build(open_dataset(SHAPES)).nets["G"])
    encode = generator.encode_sources
    calls = []

    def counted(self, *args, **kwargs):
        calls.append(len(args[0]))
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(generator, "encode_sources", counted)
    reused, reused_logs = _first_steps(tmp_path / "reused", micro_batches, **faces)
    assert calls == [4 // micro_batches] * 5 * micro_batches * 2  # 2 steps
    forward = generator.forward
    monkeypatch.setattr(generator, "forward", lambda self, *args, encoding=None, **kwargs: forward(
        self, *args, **kwargs))  # every call encodes its sources again, as the official code does
    calls.clear()
    full, full_logs = _first_steps(tmp_path / "full", micro_batches, **faces)
    assert len(calls) == 8 * micro_batches * 2
    assert full_logs == reused_logs
    for (name, expected), (_, got) in zip(full, reused, strict=True):
        for g, e in zip(got, expected, strict=True):
            assert torch.equal(g, e), name


def test_micro_batches_must_split_the_batch_evenly(shapes) -> None:
    with pytest.raises(ConfigError, match=r"model\.micro_batches: 3 does not divide model\.batch_size 4"):
        resolve_run_config("stargan2", {"model": {**TINY, "micro_batches": 3}})
    with pytest.raises(ConfigError, match=r"model\.micro_batches: expected a positive integer, got 0"):
        resolve_run_config("stargan2", {"model": {**TINY, "micro_batches": 0}})
    config = resolve_run_config("stargan2", {"data": SHAPES, "model": {**TINY, "micro_batches": 4}})
    with pytest.raises(ConfigError, match=r"does not divide the 2 images per process \(model\.batch_size 4 over 2"):
        StarGAN2Family(config.model, shapes, torch.device("cpu"), DistInfo(rank=0, world_size=2)).check_shares(2)


def test_phase_plan(shapes) -> None:
    """The first phase takes the loader's batch and hands it to the other three (one set of inputs per step)."""
    family = build(shapes)
    phases = family.phases(0, family.plan(0))
    assert [(p.name, p.trains, p.data) for p in phases] == [
        ("D_latent", ("D",), "fresh"), ("D_ref", ("D",), "previous"), ("G_latent", ("G", "F", "E"), "previous"),
        ("G_ref", ("G",), "previous")]
    assert phases[-1].after_step == family.decay_lambda_ds
    with pytest.raises(RuntimeError, match="domain-pair batches"):
        phases[0].loss(Batch(torch.zeros(4, 3, 32, 32), None))


# --- data ---------------------------------------------------------------------------------------------------------

def test_balanced_domains_and_reference_pairs_from_the_target_domain() -> None:
    dataset = labelled([90, 10])  # 9:1 imbalance; balanced sampling still draws each domain half the time
    config = resolve_run_config("stargan2", {"data": SHAPES, "model": {
        **TINY, "resolution": 16, "domain_column": None, "randcrop_prob": 0.0, "flip": False, "batch_size": 400}})
    torch.manual_seed(0)
    family = StarGAN2Family(config.model, dataset, torch.device("cpu"), DistInfo())
    assert family.domain_names == ["d0", "d1"] and family.domain_column == "kind"
    inputs = draw_step_inputs(family, 400)
    index = {name: t[:, 0, 0, 0].add(1).mul(127.5).round().long() for name, t in
             (("src", inputs.x_src), ("ref", inputs.x_ref), ("ref2", inputs.x_ref2))}
    labels = torch.as_tensor(dataset.labels[:, 0])
    assert torch.equal(labels[index["src"]], inputs.y_src)
    assert torch.equal(labels[index["ref"]], inputs.y_trg) and torch.equal(labels[index["ref2"]], inputs.y_trg)
    assert 160 < int(inputs.y_src.sum()) < 240 and 160 < int(inputs.y_trg.sum()) < 240
    assert (inputs.y_src == inputs.y_trg).any()  # the target may equal the source domain
    assert inputs.z1.shape == (400, 4) and not torch.equal(inputs.z1, inputs.z2)


def test_augmentation(shapes) -> None:
    indices = np.arange(6)
    images = to_float_images(shapes.images(32)[indices], torch.device("cpu"))
    family = build(shapes, randcrop_prob=0.0, flip=False)
    assert torch.equal(family.sampler.transform(indices), images)
    family = build(shapes, randcrop_prob=0.0, flip=True)
    out = family.sampler.transform(indices)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    assert all(f or torch.equal(o, i) for f, o, i in zip(flipped, out, images, strict=True)) and any(flipped)
    family = build(shapes, randcrop_prob=1.0, flip=False)
    for _ in range(200):
        top, left, height, width = family.sampler.crop_box(32)
        assert 0 <= top <= 32 - height and 0 <= left <= 32 - width
        assert 0.8 * 1024 * 0.85 <= height * width <= 1024 and 0.85 <= width / height <= 1.18
    assert not torch.equal(family.sampler.transform(indices), images)


def with_crop_source(resolution: int, source: int, *, pyramid: bool) -> ImageDataset:
    """Random images at `resolution` and `source` px: a pyramid level above (pyramid) or a store's crop source."""
    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (4, 3, source, source), dtype=np.uint8)
    small = rng.integers(0, 256, (4, 3, resolution, resolution), dtype=np.uint8)
    manifest = {"resolution": source if pyramid else resolution, "count": 4, "channels": 3,
                "labels": [{"name": "kind", "classes": ["d0", "d1"]}]}
    levels = {resolution: small, source: big} if pyramid else {resolution: small}
    return ImageDataset(levels, labels=np.array([[0], [1], [0], [1]]), manifest=manifest, fingerprint="test",
                        source="memory", crop_source=None if pyramid else big)


@pytest.mark.parametrize(("source", "pyramid"), [(32, True), (20, False)])
def test_crops_are_cut_from_a_larger_source_and_only_downsampled(source: int, pyramid: bool) -> None:
    """As the official loader (RandomResizedCrop on the original image): every crop box is at least the output
    size, and the whole source resized to the output equals PIL's bilinear resize (torchvision's) of it."""
    dataset = with_crop_source(16, source, pyramid=pyramid)
    config = resolve_run_config("stargan2", {"data": SHAPES, "model": {
        **TINY, "resolution": 16, "domain_column": None, "randcrop_prob": 1.0, "flip": False}})
    torch.manual_seed(0)
    family = StarGAN2Family(config.model, dataset, torch.device("cpu"), DistInfo())
    assert family.sampler.crop_size == source
    boxes = []
    draw = family.sampler.crop_box
    family.sampler.crop_box = lambda size: boxes.append(draw(size)) or boxes[-1]
    family.sampler.transform(np.arange(4).repeat(50))
    assert len(boxes) == 200 and min(min(height, width) for _, _, height, width in boxes) >= 16  # no upsampling
    family.sampler.crop_box = lambda size: (0, 0, size, size)
    out = family.sampler.transform(np.arange(4))
    for image, big in zip(out, dataset.images(source), strict=True):
        pil = Image.fromarray(big.transpose(1, 2, 0)).resize((16, 16), Image.BILINEAR)
        expected = torch.from_numpy(np.asarray(pil).transpose(2, 0, 1).copy()).float() / 127.5 - 1
        assert (image - expected).abs().max() <= 2.01 / 255  # PIL rounds to uint8: within one level


def test_stores_without_a_crop_source_still_train_cropping_the_stored_size(caplog) -> None:
    dataset = labelled([3, 3], resolution=16)
    config = resolve_run_config("stargan2", {"data": SHAPES, "model": {
        **TINY, "resolution": 16, "domain_column": None, "randcrop_prob": 1.0}})
    torch.manual_seed(0)
    with caplog.at_level("WARNING"):
        family = StarGAN2Family(config.model, dataset, torch.device("cpu"), DistInfo())
    assert family.sampler.crop_size == 16  # the stored training size itself
    assert "no images larger than 16 px to crop from" in caplog.text and "ganforge prepare" in caplog.text
    assert draw_step_inputs(family, 4).x_src.shape == (4, 3, 16, 16)


# --- configs ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "message"), [
    ({"domain_column": "colour"}, r"model\.domain_column: 'colour' is not a label column .* shape, background"),
    ({"resolution": 64}, r"model\.resolution: 64 but the dataset .* holds the sizes 4, 8, 16, 32"),
    ({"resolution": 24}, r"model\.resolution: 24 but"),
    ({"resolution": 8}, "img_size must be a power of two >= 16"),
    ({"num_domains": 3}, r"model\.num_domains: 3 but column 'shape' of .* has 4 classes \(circle, square"),
])
def test_bad_data_settings(shapes, model: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(shapes, **model)


def test_unlabelled_or_empty_domains_are_errors() -> None:
    config = resolve_run_config("stargan2", {"model": {**TINY, "domain_column": None, "resolution": 16}})
    dataset = labelled([3, 0])
    with pytest.raises(ConfigError, match="domain 'd1' of column 'kind' has no images"):
        StarGAN2Family(config.model, dataset, torch.device("cpu"), DistInfo())
    with pytest.raises(ConfigError, match="column 'kind' has 1 class; translation needs at least 2 domains"):
        StarGAN2Family(config.model, labelled([3]), torch.device("cpu"), DistInfo())
    dataset.labels, dataset.label_columns = None, []
    with pytest.raises(ConfigError, match="needs domain labels but memory has none"):
        StarGAN2Family(config.model, dataset, torch.device("cpu"), DistInfo())


@pytest.mark.parametrize(("model", "message"), [
    ({"lr": 0.0}, r"model\.lr: expected a positive"), ({"lambda_ds": -1.0}, r"model\.lambda_ds"),
    ({"betas": [0.0]}, r"model\.betas"), ({"ds_iter": 0}, r"model\.ds_iter"), ({"ema_decay": 1.0}, "ema_decay"),
    ({"randcrop_prob": 2.0}, "randcrop_prob"), ({"base_dim": 0}, "base_dim"), ({"lambda_dss": 1}, "lambda_ds"),
    ({"num_domains": 1}, r"model\.num_domains: expected null \(from the data\) or at least 2, got 1"),
])
def test_bad_settings_name_key_and_value(model: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_run_config("stargan2", {"model": model})


def test_defaults_are_official() -> None:
    config = StarGAN2Config()
    assert (config.lr, config.f_lr, config.betas, config.weight_decay, config.ema_decay) == (
        1e-4, 1e-6, [0.0, 0.99], 1e-4, 0.999)
    assert (config.lambda_reg, config.lambda_sty, config.lambda_ds, config.lambda_cyc, config.ds_iter) == (
        1.0, 1.0, 1.0, 1.0, 100000)
    assert (config.batch_size, config.steps, config.latent_dim, config.style_dim, config.randcrop_prob) == (
        8, 100000, 16, 64, 0.5)
    assert get_family("stargan2") is StarGAN2Family


@pytest.mark.parametrize(("file", "domains", "w_hpf", "lambda_ds", "generator_params"), [
    ("stargan2_celeba_hq.yaml", 2, 1.0, 1.0, 43_467_395), ("stargan2_afhq.yaml", 3, 0.0, 2.0, 33_892_995)])
def test_presets(file: str, domains: int, w_hpf: float, lambda_ds: float, generator_params: int) -> None:
    config = resolve_run_config(None, read_config_file(CONFIGS / file))
    model = config.model
    assert (model.resolution, model.w_hpf, model.lambda_ds, model.batch_size, model.steps) == (
        256, w_hpf, lambda_ds, 8, 100000)
    assert model.lr == 1e-4 and model.f_lr == 1e-6 and model.weight_decay == 1e-4 and config.amp == "off"
    with torch.device("meta"):
        generator = model.arch(model.resolution, domains).generator()
    assert sum(p.numel() for p in generator.parameters()) == generator_params  # the official networks


# --- sampling and the end-to-end run ---------------------------------------------------------------------------

def test_fixed_samples_pair_each_source_with_its_translation(shapes) -> None:
    family = build(shapes)
    inputs = family.sample_latents(7, torch.Generator().manual_seed(0))
    assert inputs["x"].shape == (4, 3, 32, 32) and inputs["y"].tolist() == [0, 1, 2, 3]
    for net in ("G", "G_ema"):
        images = family.generate(inputs, net, family.plan(0))
        assert images.shape == (8, 3, 32, 32) and images.abs().max() <= 1
        assert torch.equal(images[0::2], inputs["x"])
        mapping = family.nets["F" + net[1:]]
        expected = family.nets[net](inputs["x"], mapping(inputs["z"], inputs["y"])).clamp(-1, 1)
        torch.testing.assert_close(images[1::2], expected)


@pytest.mark.slow
def test_tiny_preset_trains_and_resumes_to_identical_weights(tmp_path) -> None:
    raw = read_config_file(CONFIGS / "stargan2_tiny.yaml")
    raw.update(progress=False, tensorboard=False, sample_every=2, checkpoint_every=2, log_every=1)
    raw["model"].update(steps=4, domain_column="background", base_dim=4, max_conv_dim=8, mapping_dim=8)
    config = resolve_run_config(None, raw)
    straight = Trainer(config, tmp_path / "straight")
    straight.train()
    interrupted = Trainer(config, tmp_path / "resumed")
    interrupted.train(until=2)
    resumed = Trainer(config, tmp_path / "resumed")
    assert resumed.step == 2
    resumed.train()
    for name, net in straight.family.nets.items():
        for key, value in net.state_dict().items():
            assert torch.equal(value, resumed.family.nets[name].state_dict()[key]), f"{name}.{key}"
    assert straight.family.family_state() == resumed.family.family_state()
    assert straight.loader.state_dict() == resumed.loader.state_dict()
    assert resumed.family.domain_names == ["dark", "light", "gradient", "stripes"]
    assert (tmp_path / "resumed" / "samples" / "00000004.png").is_file()
    meta = ckpt.latest_valid_checkpoint(tmp_path / "resumed").meta
    assert meta["family"] == "stargan2" and meta["family_state"]["lambda_ds"] == pytest.approx(1.0 - 4 / 500)
    loaded = ganforge.api.load(tmp_path / "resumed", device="cpu")  # rebuilt from the recorded data shape
    assert loaded.family.domain_names == ["dark", "light", "gradient", "stripes"]
    assert all(torch.equal(v, straight.family.nets["G_ema"].state_dict()[k])
               for k, v in loaded.nets["G_ema"].state_dict().items())
    with pytest.raises(DatasetError, match="choosing fixed sample sources needs the training images"):
        loaded.latents(4)


@pytest.mark.slow
def test_real_data_smoke_on_celeba_male_female(tmp_path) -> None:
    """A few iterations on real faces split by the official `Male` attribute (w_hpf = 1 as the CelebA-HQ preset,
    face masks from the stand-in FAN weights)."""
    celeba = shared_path("data", "celeba-10k-89x109")
    lines = (celeba / "list_attr_celeba.txt").read_text().splitlines()
    male = lines[1].split().index("Male")
    split = tmp_path / "split"
    chosen = {"female": [], "male": []}
    for row in lines[2:]:
        name, *values = row.split()
        domain = "male" if values[male] == "1" else "female"
        if len(chosen[domain]) < 6:
            chosen[domain].append(name)
        if all(len(files) == 6 for files in chosen.values()):
            break
    for domain, files in chosen.items():
        (split / domain).mkdir(parents=True)
        for name in files:
            (split / domain / name).symlink_to(celeba / "img_align_celeba_89x109" / name)
    store = prepare_folder(split, tmp_path / "store", resolution=32, workers=1)
    config = resolve_run_config("stargan2", {
        "data": str(store), "progress": False, "tensorboard": False, "sample_every": 2, "sample_count": 4,
        "model": {**TINY, "domain_column": "class", "w_hpf": 1.0, "steps": 2, "batch_size": 2,
                  "wing_weights": str(shared_path("fixtures", "official", "stargan_v2", "wing", "wing_standin.ckpt"))}})
    trainer = Trainer(config, tmp_path / "run")
    result = trainer.train()
    assert result.step == 2 and trainer.family.domain_names == ["female", "male"]
    assert trainer.family.arch.w_hpf == 1.0 and len(trainer.family.nets["G"].encode) == 4  # 1 + 1 (hpf) + 2
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert all(np.isfinite(record[key]) for key in ("D_latent_real", "D_ref_reg", "G_latent_cyc", "G_ref_sty"))
    assert (tmp_path / "run" / "samples" / "00000002.png").is_file()


@pytest.mark.slow
def test_networks_build_from_the_data_shape_alone(capsys) -> None:
    """`ganforge info` and loading a run elsewhere build the family from a manifest, without images or labels."""
    assert main(["info", "stargan2", "-c", str(CONFIGS / "stargan2_celeba_hq.yaml"), "--set", "model.num_domains=2",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["parameters"] == {"G": 43_467_395, "F": 2_438_272, "E": 20_916_928, "D": 20_852_290,
                                    "G_ema": 43_467_395, "F_ema": 2_438_272, "E_ema": 20_916_928}
    assert main(["info", "stargan2", "-c", str(CONFIGS / "stargan2_celeba_hq.yaml")]) == 0  # the default, said
    assert "note: model.num_domains: 2 (a default" in capsys.readouterr().out


def test_each_rank_takes_its_interleaved_share_of_the_global_draw(shapes) -> None:
    """All ranks draw the same global batch (same seeded streams) and keep samples rank, rank + W, …"""
    config = resolve_run_config("stargan2", {"data": SHAPES, "model": TINY}).model
    draws = {}
    for rank, world in ((0, 1), (1, 2)):
        torch.manual_seed(0)
        family = StarGAN2Family(config, shapes, torch.device("cpu"), DistInfo(rank=rank, world_size=world))
        draws[world] = draw_step_inputs(family, 4)
    single, share = draws[1], draws[2]
    for name in ("x_src", "y_src", "x_ref", "x_ref2", "y_trg", "z1", "z2"):
        assert torch.equal(getattr(share, name), getattr(single, name)[1::2]), name


@pytest.mark.slow
@pytest.mark.parametrize(("family", "batch"), [("stargan2", "4"), ("pgan", "8")])
def test_micro_batch_benchmark_prints_a_row_per_count(family, batch) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_micro_batches.py"
    done = subprocess.run([sys.executable, str(script), "--family", family, "--resolution", "16", "--batch", batch,
                           "--width-div", "64", "--micro-batches", "1", "2", "--steps", "1", "--warmup", "0"],
                          capture_output=True, text=True, timeout=300, check=True)
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == ["1", "2"], done.stdout
    assert all(float(row[1]) > 0 and float(row[2]) > 0 for row in rows), done.stdout


def test_a_model_below_its_stores_resolution_says_its_images_are_not_the_official_resize(shapes, capsys):
    build(shapes, resolution=16)
    assert "model.resolution: 16 below the store's 32: its images are the store's box-averaged level" in (
        capsys.readouterr().out)
    build(shapes)
    assert "below the store's" not in capsys.readouterr().out
