"""BigGAN family: hinge losses, accumulation = one big batch, EMA start, side-effect-free sampling, presets,
and a tiny class-conditional run on builtin shapes that resumes to identical weights (SN buffers included)."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch

import ganforge
from ganforge.config import ConfigError, read_config_file, to_dict
from ganforge.data.loader import Batch, to_float_images
from ganforge.data.store import open_dataset, write_store
from ganforge.distributed import DistInfo
from ganforge.families import resolve_run_config
from ganforge.families.base import StepPlan
from ganforge.families.biggan import BigGANConfig, BigGANFamily, run_generator
from ganforge.losses import hinge_discriminator_loss, hinge_generator_loss
from ganforge.models.biggan import Discriminator, Generator
from ganforge.nn.spectral_norm import SpectralNormMixin

SHAPES = "builtin:shapes?count=256&resolution=32"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny_model(**overrides: Any) -> dict[str, Any]:
    return {"g_ch": 4, "d_ch": 4, "latent_dim": 16, "shared_dim": 8, "g_attention": [16], "d_attention": [16],
            "batch_size": 4, "num_d_steps": 1, "num_d_accumulations": 1, "num_g_accumulations": 1, "steps": 4,
            "ema_start": 1, "ema_decay": 0.9, **overrides}


def make_family(**overrides: Any) -> BigGANFamily:
    torch.manual_seed(0)
    config = BigGANConfig(**tiny_model(**overrides))
    return BigGANFamily(config, open_dataset(SHAPES), torch.device("cpu"), DistInfo())


def test_hinge_losses():
    real, fake = hinge_discriminator_loss(torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0]))
    assert real.item() == pytest.approx(0.25) and fake.item() == pytest.approx(0.5)
    assert hinge_generator_loss(torch.tensor([1.0, -3.0])).item() == pytest.approx(1.0)


def test_phases_follow_the_config():
    family = make_family(num_d_steps=3, num_d_accumulations=2, num_g_accumulations=5, g_batch_size=6)
    d_phase, g_phase = family.phases(0, family.plan(0))
    assert (d_phase.name, d_phase.trains, d_phase.repeats, d_phase.accumulate) == ("D", ("D",), 3, 2)
    assert (g_phase.name, g_phase.trains, g_phase.accumulate, g_phase.data) == ("G", ("G",), 5, "none")
    optimizer = family.optimizers["G"]
    assert optimizer.defaults["betas"] == (0.0, 0.999) and optimizer.defaults["eps"] == 1e-6
    assert family.n_classes == 4 and family.describe()["label_column"] == "shape"


def _float64_with_converged_spectral_norms(family: BigGANFamily) -> None:
    """float64 (so summation order does not show) and every D u set to its top singular vector, the power
    iteration's fixed point, so the extra forwards of accumulation (u advances once per micro-batch, as
    officially) no longer move u."""
    for net in family.nets.values():
        net.double()
    with torch.no_grad():
        for layer in family.nets["D"].modules():
            if isinstance(layer, SpectralNormMixin):
                left, _, _ = torch.linalg.svd(layer.weight.reshape(layer.weight.shape[0], -1))
                layer.u0.copy_(left[:, 0][None])


def _accumulated_grads(family: BigGANFamily, net: str, chunks: int, loss_of) -> dict[str, torch.Tensor]:
    """Gradients after `chunks` micro-batches, each loss divided by the count (what the engine does)."""
    family.nets[net].zero_grad(set_to_none=True)
    for index in range(chunks):
        loss, _ = loss_of(index)
        (loss / chunks).backward()
    return {name: p.grad.clone() for name, p in family.nets[net].named_parameters()}


def _assert_accumulation_matches(family, net: str, loss_of, k: int, b: int) -> None:
    """k accumulated micro-batches of b give the gradient of one batch of k·b (float64, to 1e-10)."""
    big = _accumulated_grads(family, net, 1, loss_of(k * b))
    small = _accumulated_grads(family, net, k, loss_of(b))
    for name in big:
        torch.testing.assert_close(small[name], big[name], atol=1e-10, rtol=1e-10, msg=name)


@pytest.mark.parametrize("k", [2, 4])
def test_d_accumulation_equals_one_big_batch(k):
    # D has no BN; with converged SN vectors the k forwards do not change σ, so k·b and k × b must agree
    family, b = make_family(g_init="N02", d_init="N02"), 2  # ortho init: all σ equal, no unique top vector
    family.nets["G"].eval()  # fakes independent of how the batch is split
    _float64_with_converged_spectral_norms(family)
    dataset = family.dataset
    reals = to_float_images(np.array(dataset.images(32)[: k * b]), torch.device("cpu")).double()
    labels = torch.as_tensor(np.array(dataset.labels[: k * b]))
    z, y = torch.randn(k * b, family.arch.g_dim_z).double(), torch.randint(family.n_classes, (k * b,))

    def loss_of(size: int):
        def run(index: int):
            part = slice(index * size, (index + 1) * size)
            family.draw_latents = lambda n: (z[part], y[part])
            return family.discriminator_loss(Batch(reals[part], labels[part]), size)
        return run

    _assert_accumulation_matches(family, "D", loss_of, k, b)


def test_g_accumulation_equals_one_big_batch_with_bn_on_running_statistics():
    # with batch statistics G's BN would see micro-batches (BigGAN-PyTorch's documented difference); eval-mode BN
    # is a fixed affine map, so the accumulated G gradient must equal the big batch's exactly
    family, k, b = make_family(g_init="N02", d_init="N02"), 3, 2
    family.nets["G"].eval()
    _float64_with_converged_spectral_norms(family)
    z, y = torch.randn(k * b, family.arch.g_dim_z).double(), torch.randint(family.n_classes, (k * b,))

    def loss_of(size: int):
        def run(index: int):
            part = slice(index * size, (index + 1) * size)
            family.draw_latents = lambda n: (z[part], y[part])
            return family.generator_loss(size)
        return run

    _assert_accumulation_matches(family, "G", loss_of, k, b)


def test_ema_decay_schedule():
    family = make_family(ema_start=3, ema_decay=0.99)
    assert [family.ema_decay(step) for step in range(4)] == [0.0, 0.0, 0.99, 0.99]  # iterations 1, 2 copy G
    no_ema = make_family(ema=False, ema_start=None, ema_decay=None)
    assert no_ema.ema_decay(10) is None and "G_ema" not in no_ema.nets
    defaults = BigGANConfig(**tiny_model(ema_start=None, ema_decay=None))
    assert (defaults.ema_decay, defaults.ema_start) == (0.9999, 20000)  # unset: BigGAN-PyTorch's values


@pytest.mark.parametrize("key, value", [("ema_decay", 0.9999), ("ema_decay", 0.99), ("ema_start", 20000),
                                        ("ema_start", 0)])
def test_ema_settings_with_ema_off_are_refused_even_at_their_default(key, value):
    """They would do nothing; a value equal to the default is refused too (it was written, so it was meant)."""
    model = {**tiny_model(ema=False, ema_start=None, ema_decay=None), key: value}
    with pytest.raises(ConfigError, match=rf"^model\.{key}: {value} is set but model\.ema is false, so it would do "
                                          r"nothing; remove it or set model\.ema: true$"):
        resolve_run_config("biggan", {"data": SHAPES, "model": model})


def test_run_configs_saved_before_the_ema_check_still_load():
    """Saved configs list every key, so an old `ema: false` run holds ema_decay/ema_start (the importer wrote
    ema_start 0 for runs without --ema); they load, and the values that did nothing are dropped."""
    legacy = to_dict(BigGANConfig(**tiny_model()))
    del legacy["n_classes"]
    legacy["dim_z"] = legacy.pop("latent_dim")  # the spelling of that time
    legacy.update(ema=False, ema_decay=0.9999, ema_start=0)
    config = resolve_run_config(None, {"family": "biggan", "data": SHAPES, "model": legacy})
    assert config.model.ema is False and config.model.ema_decay is None and config.model.ema_start is None
    partial = {k: v for k, v in legacy.items() if k != "g_batch_size"}  # not a complete saved config: a user's
    with pytest.raises(ConfigError, match=r"^model\.ema_decay: 0\.9999 is set but model\.ema is false"):
        resolve_run_config(None, {"family": "biggan", "data": SHAPES, "model": partial})


def test_sampling_on_batch_statistics_leaves_no_trace():
    family = make_family()
    generator: Generator = family.nets["G"]
    z, y = torch.randn(4, family.arch.g_dim_z), torch.tensor([0, 1, 2, 3])
    before = copy.deepcopy(generator.state_dict())
    reference = copy.deepcopy(generator).train()(z, y).detach()
    images = run_generator(generator, z, y, eval_mode=False)
    torch.testing.assert_close(images, reference)
    assert generator.training
    for key, value in generator.state_dict().items():
        assert torch.equal(value, before[key]), key
    evaluated = run_generator(generator, z, y, eval_mode=True)
    torch.testing.assert_close(run_generator(generator, z[:1], y[:1], eval_mode=True), evaluated[:1])


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="model.num_d_accumulations"):
        BigGANConfig(num_d_accumulations=0)
    with pytest.raises(ConfigError, match="model.betas"):
        BigGANConfig(betas=[0.0, 1.0])
    with pytest.raises(ConfigError, match="model: BigGAN config 'g_attention'"):
        BigGANConfig(g_attention=[7]).arch(32, 10)
    store = write_store(tmp_path / "unlabelled", np.zeros((4, 3, 32, 32), np.uint8), resolution=32, source="zeros")
    with pytest.raises(ConfigError, match="no labels; .* or set model.n_classes: 1 to train it as one class"):
        BigGANFamily(BigGANConfig(**tiny_model()), open_dataset(store), torch.device("cpu"), DistInfo())


def test_an_unlabelled_store_trains_as_one_class(tmp_path):
    """BigGAN-PyTorch's answer to an unconditional BigGAN (its issue #33) is n_classes 1: every real image of the
    one class, G and D's projection conditioned on it alone; the samples carry no class captions."""
    images = np.random.default_rng(0).integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    store = write_store(tmp_path / "unlabelled", images, resolution=32, source="noise")
    config = {"family": "biggan", "data": str(store), "progress": False, "sample_every": 2, "checkpoint_every": 2,
              "model": {**tiny_model(), "n_classes": 1, "steps": 2}}
    ganforge.train(config, tmp_path / "run")
    model = ganforge.load(tmp_path / "run")
    assert model.family.n_classes == 1 and model.nets["G"].shared.weight.shape[0] == 1
    inputs = model.latents(3)
    assert inputs["y"].tolist() == [0, 0, 0] and model.family.sample_cell_labels(inputs) is None
    family = BigGANFamily(BigGANConfig(**{**tiny_model(), "n_classes": 1}), open_dataset(store), torch.device("cpu"),
                          DistInfo())
    batch = Batch(images=to_float_images(torch.from_numpy(images[:4]), torch.device("cpu")), labels=None)
    loss, logs = family.discriminator_loss(batch, 4)
    assert torch.isfinite(loss) and set(logs) >= {"loss_D_real", "loss_D_fake"}


@pytest.mark.parametrize(("name", "classes", "g_params", "d_params", "checks"), [
    ("biggan_imagenet128_bs256x8.yaml", 1000, 70_433_988, 87_982_370,
     {"batch_size": 256, "num_d_accumulations": 8, "num_g_accumulations": 8, "num_d_steps": 1, "g_lr": 1e-4,
      "d_lr": 4e-4, "adam_eps": 1e-6, "ema_start": 20000, "sample_eval_mode": True, "g_init": "ortho"}),
    ("biggan_cifar10.yaml", 10, 4_304_387, 4_207_361,
     {"batch_size": 50, "num_d_steps": 4, "g_lr": 2e-4, "d_lr": 2e-4, "ema_start": 1000, "g_init": "N02",
      "sample_eval_mode": False}),
])
def test_presets_are_the_launch_scripts(name, classes, g_params, d_params, checks):
    config = resolve_run_config(None, read_config_file(CONFIGS / name))
    model: BigGANConfig = config.model
    assert {key: getattr(model, key) for key in checks} == checks
    assert model.betas == [0.0, 0.999] and model.ema_decay == 0.9999
    with torch.device("meta"):
        arch = model.arch(model.resolution, classes)
        assert sum(p.numel() for p in Generator(arch).parameters()) == g_params
        assert sum(p.numel() for p in Discriminator(arch).parameters()) == d_params


def _tensors(run: Path, step: int) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(run / "checkpoints" / f"{step:08d}.safetensors"))


@pytest.mark.slow
def test_tiny_conditional_run_resumes_to_identical_weights(tmp_path):
    config = read_config_file(CONFIGS / "biggan_tiny.yaml")
    config["model"]["ema_start"] = 3  # iterations 1, 2 copy G; 3, 4 average
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    assert not ganforge.train(config, straight).interrupted
    assert ganforge.train(config, pieces, until=3).step == 3
    ganforge.train(config, pieces)
    a, b = _tensors(straight, 4), _tensors(pieces, 4)
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    assert {"net/D/blocks.0.1.theta.u0", "net/G_ema/linear.sv0", "net/G/blocks.0.0.bn1.running_var"} <= set(a)
    assert not torch.equal(a["net/D/blocks.0.1.theta.u0"], _tensors(straight, 2)["net/D/blocks.0.1.theta.u0"])

    # EMA: a copy of G through iteration 2, then ema ← ema + 0.1·(G − ema)
    at_2 = _tensors(straight, 2)
    g_keys = [k[len("net/G/"):] for k in at_2 if k.startswith("net/G/")]
    assert all(torch.equal(at_2[f"net/G_ema/{k}"], at_2[f"net/G/{k}"]) for k in g_keys)
    assert not torch.equal(a["net/G_ema/linear.weight"], a["net/G/linear.weight"])

    log = [json.loads(line) for line in (straight / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    assert [r["kimg"] for r in log] == [0.032, 0.064]  # 2 D steps × 2 accumulations × batch 4 per iteration
    assert all({"loss_D_real", "loss_D_fake", "loss_G"} <= set(r) and np.isfinite(r["loss_G"]) for r in log)
    assert sorted(p.name for p in (straight / "samples").glob("*.png")) == [
        "00000002-G.png", "00000002.png", "00000004-G.png", "00000004.png"]

    model = ganforge.load(straight)
    z = torch.randn(4, 16)
    per_class = [model.generate({"z": z, "y": torch.full((4,), c)}) for c in range(4)]
    assert all(images.shape == (4, 3, 32, 32) and images.abs().max() <= 1 for images in per_class)
    assert not torch.allclose(per_class[0], per_class[1])  # the class changes the image
    torch.testing.assert_close(model.generate(z), model.generate({"z": z, "y": torch.arange(4)}))
    for y, message in ((torch.tensor([0, 1, 2, 4]), r"y: classes must be in 0\.\.3, got values from 0 to 4"),
                       (torch.arange(4.0), r"y: expected integer values \[N\], got torch.float32 \(4,\)")):
        with pytest.raises(ValueError, match=message):  # past the class embedding: an IndexError deep inside
            model.generate({"z": z, "y": y})


def test_ema_average_after_start(tmp_path):
    config = read_config_file(CONFIGS / "biggan_tiny.yaml")
    config["model"].update(ema_start=2, steps=2, ema_rampup=None)  # the official EMA: decay 0.9 from iteration 2
    config.update(checkpoint_every=1, sample_every=100)
    ganforge.train(config, tmp_path / "run")
    before, after = _tensors(tmp_path / "run", 1), _tensors(tmp_path / "run", 2)
    for key in ("linear.weight", "blocks.0.0.bn1.running_mean", "blocks.0.0.conv1.u0"):
        expected = before[f"net/G_ema/{key}"].lerp(after[f"net/G/{key}"], 0.1)
        torch.testing.assert_close(after[f"net/G_ema/{key}"], expected, msg=key)


def test_tiny_preset_is_runnable_as_is():
    config = resolve_run_config(None, read_config_file(CONFIGS / "biggan_tiny.yaml"))
    family = BigGANFamily(config.model, open_dataset(config.data), torch.device("cpu"), DistInfo())
    latents = family.sample_latents(6, torch.Generator().manual_seed(0))
    expected = torch.Generator().manual_seed(0)
    torch.randn(6, 16, generator=expected)  # z first, then uniformly drawn classes from the same stream
    assert latents["z"].shape == (6, 16)
    assert latents["y"].tolist() == torch.randint(4, (6,), generator=expected).tolist()
    images = family.generate(latents, "G_ema", StepPlan(4, 32))
    assert images.shape == (6, 3, 32, 32)
    assert list(itertools.islice(family.phases(0, family.plan(0)), 1))[0].accumulate == 2


def test_orthogonal_regularization_adds_the_official_gradient():
    family, beta = make_family(g_ortho=0.0), 1e-2
    family.nets["G"].eval()  # BN and SN fixed: every pass sees the same networks
    family.nets["D"].eval()
    z, y = torch.randn(4, family.arch.g_dim_z), torch.randint(family.n_classes, (4,))
    family.draw_latents = lambda n: (z, y)
    plain = _accumulated_grads(family, "G", 1, lambda _: family.generator_loss(4))
    family.config.g_ortho = beta
    loss, logs = family.generator_loss(4)
    assert logs["ortho_G"] > 0
    regularised = _accumulated_grads(family, "G", 1, lambda _: family.generator_loss(4))
    for name, param in family.nets["G"].named_parameters():
        if param.ndim < 2 or name.startswith("shared."):  # biases, gains and the shared embedding are exempt
            torch.testing.assert_close(regularised[name], plain[name], msg=name)
            continue
        w = param.detach().reshape(param.shape[0], -1)
        off_diagonal = (w @ w.t()) * (1 - torch.eye(w.shape[0]))
        expected = plain[name] + beta * (2 * off_diagonal @ w).reshape(param.shape)
        torch.testing.assert_close(regularised[name], expected, atol=1e-6, rtol=1e-4, msg=name)
    with pytest.raises(ConfigError, match="model.d_ortho"):
        BigGANConfig(d_ortho=-1.0)


def test_sampling_with_standing_statistics_is_repeatable_and_side_effect_free():
    family = make_family(standing_stats=3)
    z, y = torch.randn(4, family.arch.g_dim_z), torch.arange(4)
    before = copy.deepcopy(family.nets["G_ema"].state_dict())
    rng = torch.get_rng_state()
    first = family.generate({"z": z, "y": y}, "G_ema", family.plan(0))
    assert torch.equal(torch.get_rng_state(), rng)  # the training stream is untouched
    assert all(torch.equal(v, before[k]) for k, v in family.nets["G_ema"].state_dict().items())
    torch.testing.assert_close(family.generate({"z": z, "y": y}, "G_ema", family.plan(0)), first)
    plain = run_generator(family.nets["G_ema"], z, y, eval_mode=True)
    assert not torch.allclose(plain, first)  # fresh-sample statistics replace the initial running ones
    with pytest.raises(ConfigError, match="model.standing_stats"):
        BigGANConfig(standing_stats=4, sample_eval_mode=False)


def test_standing_statistics_are_estimated_once_per_block_of_held_weights(monkeypatch):
    """A metric tick draws 50,000 samples in batches: BigGAN-PyTorch estimates the statistics once per evaluation,
    and so does a block of held weights (outside one, each call estimates them afresh, as the weights may move)."""
    from ganforge.evaluation.run_metrics import generated_batches

    family = make_family(standing_stats=2)
    estimates = []
    estimate = family.with_standing_statistics
    monkeypatch.setattr(family, "with_standing_statistics", lambda net: estimates.append(net) or estimate(net))
    with family.weights_held():  # as a metric tick holds them around its pass
        held = torch.cat(list(generated_batches(family, family.plan(0), 12, seed=3, batch_size=4)))
    assert len(estimates) == 1 and family._standing is None  # let go after the block
    estimates.clear()
    unheld = []
    generator = torch.Generator().manual_seed(3 + 2**20)
    for _ in range(3):
        inputs = family.sample_latents(4, generator)
        unheld.append(family.generate(inputs, family.sample_net, family.plan(0)))
    assert len(estimates) == 3
    torch.testing.assert_close(held, torch.cat(unheld), rtol=0, atol=0)
    with family.weights_held(), family.weights_held():  # nested: the outer block keeps them
        family.generate(inputs, "G_ema", family.plan(0))
        family.generate(inputs, "G", family.plan(0))
        family.generate(inputs, "G_ema", family.plan(0))
    assert len(estimates) == 5


@pytest.mark.parametrize(("overrides", "sizes"), [
    ({"batch_size": 5, "sample_eval_mode": False}, [5, 5, 5, 5]),  # utils.sample draws G_batch_size at a time
    ({"batch_size": 4, "g_batch_size": 10, "sample_eval_mode": False}, [10, 10]),
    ({"batch_size": 5, "sample_eval_mode": True}, [20]),  # running statistics: any batch gives the same images
])
def test_metrics_on_batch_statistics_sample_in_gs_batch(overrides, sizes):
    """train.py's metrics on batch statistics (the CIFAR script: no --G_eval_mode) normalise each image with the
    others of its G_batch_size (50 there): so do ganforge's, whatever batch the metric pass reads in."""
    from ganforge.evaluation.run_metrics import generated_batches

    family = make_family(**overrides)
    batches = list(generated_batches(family, family.plan(0), 20, seed=0, batch_size=64))
    assert [len(batch) for batch in batches] == sizes


def test_bn_groups_is_dataparallels_batch_norm_in_one_process():
    """BigGAN-PyTorch's --parallel: DataParallel scatters each batch into one consecutive block per GPU, every
    replica normalises its block on its own statistics, and only the first replica's buffers are the module's. Two
    copies of G, each fed its block, are that computation: bn_groups 2 equals them in outputs, gradients and the
    running statistics (the first copy's)."""
    family = make_family(batch_size=8, bn_groups=2, sample_eval_mode=False)
    grouped: Generator = family.nets["G"]
    replicas = []
    for _ in range(2):
        replica = copy.deepcopy(grouped)
        for layer in replica.modules():
            if hasattr(layer, "bn_groups"):
                layer.bn_groups = 1
        replicas.append(replica.train())
    z, y = torch.randn(8, family.arch.g_dim_z), torch.arange(8) % 4
    out = grouped.train()(z, y)
    expected = torch.cat([replica(z[4 * i : 4 * i + 4], y[4 * i : 4 * i + 4]) for i, replica in enumerate(replicas)])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    whole = copy.deepcopy(replicas[0])(z, y)
    assert (out - whole).abs().max() > 1e-3  # one process on the whole batch normalises otherwise
    out.square().mean().backward()
    expected.square().mean().backward()
    for (name, param), one, two in zip(grouped.named_parameters(), replicas[0].parameters(), replicas[1].parameters(),
                                       strict=True):
        if param.grad is not None:  # DataParallel sums the replicas' gradients
            torch.testing.assert_close(param.grad, one.grad + two.grad, rtol=1e-4, atol=1e-6, msg=name)
    for (name, buffer), first in zip(grouped.named_buffers(), replicas[0].buffers(), strict=True):
        if name.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(buffer, first, msg=name)
    # samples (grids, metrics) on batch statistics normalise their whole batch, as G called directly does
    images = family.generate({"z": z[:3], "y": y[:3]}, "G", family.plan(0))
    torch.testing.assert_close(images, copy.deepcopy(replicas[0])(z[:3], y[:3]))
    layers = [layer for layer in grouped.modules() if hasattr(layer, "bn_groups")]
    assert layers and all(layer.bn_groups == 2 for layer in layers)  # training's again


def test_bn_groups_must_split_every_batch():
    with pytest.raises(ConfigError, match="model.batch_size: 6 does not split into model.bn_groups = 4"):
        BigGANConfig(**tiny_model(batch_size=6, bn_groups=4))
    with pytest.raises(ConfigError, match="model.g_batch_size: 6 does not split"):
        BigGANConfig(**tiny_model(batch_size=8, g_batch_size=6, bn_groups=4))
    with pytest.raises(ConfigError, match="contradict each other"):
        BigGANConfig(**tiny_model(bn_groups=2, sync_bn=True))
    with pytest.raises(ConfigError, match="each of the 2 processes' 4 samples of model.batch_size do not split"):
        BigGANFamily(BigGANConfig(**tiny_model(batch_size=8, bn_groups=8)), open_dataset(SHAPES),
                     torch.device("cpu"), DistInfo(rank=0, world_size=2))


def test_samples_on_chosen_batch_norm_statistics(tmp_path, capsys):
    """BigGAN-PyTorch's sample.py picks the statistics its samples use (--G_eval_mode, --accumulate_stats
    --num_standing_accumulations N); `--bn` does the same for a trained run without changing it."""
    from ganforge.cli import main
    from ganforge.families import get_family
    from ganforge.families.base import SamplingBN

    config = {"family": "biggan", "data": SHAPES, "progress": False, "sample_every": 2, "checkpoint_every": 2,
              "model": {**tiny_model(), "steps": 2}}
    run = tmp_path / "run"
    ganforge.train(config, run)
    own = ganforge.load(run)
    batch, standing = ganforge.load(run, bn="batch"), ganforge.load(run, bn=SamplingBN.parse("standing:2"))
    assert (own.family.config.sample_eval_mode, own.family.config.standing_stats) == (True, 0)
    assert (batch.family.config.sample_eval_mode, batch.family.batch_dependent_samples) == (False, True)
    assert (standing.family.config.sample_eval_mode, standing.family.config.standing_stats) == (True, 2)
    inputs = own.latents(4)
    running_images = own.generate(inputs, raw=True)
    torch.testing.assert_close(batch.generate(inputs, raw=True),
                               run_generator(batch.nets["G_ema"], inputs["z"], inputs["y"], eval_mode=False))
    for other in (batch, standing):
        assert (other.generate(inputs, raw=True) - running_images).abs().max() > 1e-4
    assert main(["evaluate", str(run), "--metrics", "swd", "--n", "16", "--bn", "standing:2"]) == 0
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["bn"] == "standing:2" and row["n"] == 16
    assert not (run / "swd.json").exists()  # the zoo-style file holds the run's own SWD per step, not this one
    assert main(["generate", str(run), "--n", "2", "-o", str(tmp_path / "out"), "--bn", "batch"]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 2
    capsys.readouterr()
    for bad in ("standing", "running:", "standing:²"):  # refused by the parser, before anything is loaded
        with pytest.raises(SystemExit):
            main(["generate", str(run), "-o", str(tmp_path / "x"), "--bn", bad])
        assert f"--bn {bad!r}: expected running, batch or standing:N" in capsys.readouterr().err
    pgan = tmp_path / "pgan"  # a run's config is enough: refused before its checkpoint or any weights are read
    pgan.mkdir()
    (pgan / "config.json").write_text(json.dumps({"family": "pgan", "data": SHAPES}))
    assert main(["evaluate", str(pgan), "--metrics", "fid", "--bn", "batch"]) == 2
    assert "--bn batch: a pgan generator has no batch norm" in capsys.readouterr().err
    assert main(["evaluate", "--fake", str(tmp_path / "out"), "--real", SHAPES, "--bn", "batch"]) == 2
    assert f"--bn batch: {tmp_path / 'out'} is an image set, not a run" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="a pgan generator has no batch norm"):
        get_family("pgan").sampling_bn_settings(SamplingBN("running"))
    with pytest.raises(ConfigError, match="samples on running or batch statistics"):
        get_family("dcgan").sampling_bn_settings(SamplingBN("standing", 4))
    assert get_family("wgan-gp").sampling_bn_settings(SamplingBN("running")) == {"sample_norm_stats": "running"}
