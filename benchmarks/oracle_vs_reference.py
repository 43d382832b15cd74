"""ganforge's training steps against the official code's own, from the same weights, batches and noise.

    python benchmarks/oracle_vs_reference.py --refs DIR                       # PGAN zoo, 16 px, fading
    python benchmarks/oracle_vs_reference.py --refs DIR --scale 3 --alpha 0 --steps 8
    python benchmarks/oracle_vs_reference.py --refs DIR --family stargan2     # needs munch (pip install munch)
    python benchmarks/oracle_vs_reference.py --refs DIR --family biggan

DIR holds checkouts of facebookresearch/pytorch_GAN_zoo, clovaai/stargan-v2 and ajbrock/BigGAN-PyTorch
(bench_vs_reference.py gives the clone commands and commits). Their code is imported and run as it is, never
copied. Everything runs in float64, so that rounding (1e-16) cannot grow into a difference over a few steps (in
float32 Adam's division by the running gradient RMS turns 1e-7 into 1e-2 within a few steps: the chaos control in
benchmarks/README.md). Per step the
losses of both sides are printed, and at the end the largest difference of every weight, relative to the largest
weight of its tensor; the exit status is 1 when anything differs by more than `--tolerance` (relative).

PGAN (`model.variant: zoo`): the zoo's ProgressiveGAN (its pgan_config.py defaults: WGAN-GP, λ 10, ε-drift 0.001,
Adam lr 0.001 β (0, 0.99), EMA 0.999), grown with its own `addScale` to `--scale`, alpha set on G, D and the EMA G
(the zoo's `updateAlpha` reaches the EMA G only under DataParallel), written with its own `save` and read by
ganforge's importer into a Trainer at the same config. Both run the zoo's `optimizeParameters` / `Trainer.train_step`
on the same real batches (built-in shapes, blended as the zoo's trainer blends them in a fade), ganforge replaying
the noise the zoo drew (latents and the penalty's mixing weights, recorded by wrapping torch.randn and torch.rand).
Losses are shown on the zoo's scale (it sums over the batch, ganforge logs means: × N). During the 4→8 fade
(`--scale 1` with alpha > 0) they must differ: the zoo's D ignores alpha there, a zoo bug ganforge fixes.
`--condition-weights WD WG` adds the zoo's AC-GAN on the shape column (an attribute dict of its 4 classes,
`weightConditionD/G`) against `model.conditions: [shape]`: the reals' classes go to both, the classes the zoo draws
with numpy for its fakes are replayed, and the zoo's criterion reads the class logits after D's score, as ganforge does
(the zoo slices them from column 0, its WGAN score: a bug ganforge fixes, so left as it is the step differs).

StarGAN v2: the official `Solver.train` loop and its loss functions, optimisers, EMA and λ_ds decay (see `stargan2`).
BigGAN: BigGAN-PyTorch's training function, networks and EMA at small widths (see `biggan`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import io
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_reference import (  # noqa: E402 - the same import shims as the timing comparison
    BIGGAN_CIFAR_ARGS,
    UNUSED_BY_A_STEP,
    SteppedLoop,
    _Iterable,
    find_repo,
    float_adam_betas,
    stub_missing_modules,
)
from gpu_check import build  # noqa: E402

from ganforge.data.builtin import make_shapes  # noqa: E402
from ganforge.data.loader import Batch  # noqa: E402
from ganforge.interop.biggan import convert_network_state, load_biggan_pytorch  # noqa: E402
from ganforge.interop.pgan_zoo import convert_zoo_state, read_zoo_checkpoint  # noqa: E402
from ganforge.interop.stargan2 import OFFICIAL_TO_ROLE  # noqa: E402
from ganforge.nn import resample  # noqa: E402
from ganforge.nn.spectral_norm import SpectralNormMixin  # noqa: E402
from ganforge.training.engine import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# BigGAN-PyTorch's launch scripts (data and machine flags left out) beside the ganforge config of the same preset;
# the ImageNet one at 32 px: attention at 16, hierarchical z of 20 over 4 slots, accumulations 2, ortho 1e-4 in G and D
BIGGAN_PRESETS = {
    "cifar": (BIGGAN_CIFAR_ARGS, "biggan_cifar10.yaml"),
    "imagenet": (["--shuffle", "--num_G_accumulations", "2", "--num_D_accumulations", "2", "--num_D_steps", "1",
                  "--G_lr", "1e-4", "--D_lr", "4e-4", "--D_B2", "0.999", "--G_B2", "0.999", "--G_attn", "16",
                  "--D_attn", "16", "--G_nl", "inplace_relu", "--D_nl", "inplace_relu", "--SN_eps", "1e-6",
                  "--BN_eps", "1e-5", "--adam_eps", "1e-6", "--G_ortho", "1e-4", "--D_ortho", "1e-4", "--G_shared",
                  "--G_init", "ortho", "--D_init", "ortho", "--hier", "--dim_z", "20", "--shared_dim", "16",
                  "--G_eval_mode", "--ema", "--use_ema"], "biggan_imagenet128_bs256x8.yaml"),
    # launch_BigGAN_deep.sh at 32 px: BigGANdeep.py's networks, 2 blocks per stage, the whole z (20) joined to the
    # embedding (16), attention at 16, accumulations cut to 2
    "deep": (["--model", "BigGANdeep", "--shuffle", "--num_G_accumulations", "2", "--num_D_accumulations", "2",
              "--num_D_steps", "1", "--G_lr", "1e-4", "--D_lr", "4e-4", "--D_B2", "0.999", "--G_B2", "0.999",
              "--G_attn", "16", "--D_attn", "16", "--G_depth", "2", "--D_depth", "2", "--G_nl", "inplace_relu",
              "--D_nl", "inplace_relu", "--SN_eps", "1e-6", "--BN_eps", "1e-5", "--adam_eps", "1e-6", "--G_ortho",
              "0.0", "--G_shared", "--G_init", "ortho", "--D_init", "ortho", "--hier", "--dim_z", "20",
              "--shared_dim", "16", "--G_eval_mode", "--ema", "--use_ema"], "biggan_deep_imagenet128.yaml"),
}
FADE_JUMP = 1000  # ganforge's schedule: alpha 1 - k/4 for k·FADE_JUMP <= local step < (k+1)·FADE_JUMP


@contextlib.contextmanager
def recorded_noise() -> Iterator[list[torch.Tensor]]:
    """Every tensor torch.randn and torch.rand return inside the context, in order (copies)."""
    drawn: list[torch.Tensor] = []
    originals = torch.randn, torch.rand

    def recording(function: Any) -> Any:
        def draw(*args: Any, **kwargs: Any) -> torch.Tensor:
            out = function(*args, **kwargs)
            drawn.append(out.detach().clone())
            return out
        return draw

    torch.randn, torch.rand = recording(originals[0]), recording(originals[1])
    try:
        yield drawn
    finally:
        torch.randn, torch.rand = originals


def replay_noise(trainer: Trainer, drawn: list[torch.Tensor]) -> None:
    """The family's noise draws take the recorded tensors in order, reshaped to what each call asks for (the zoo
    draws the penalty's mixing weights as [N, 1], ganforge as [N, 1, 1, 1])."""
    family = trainer.family

    def take(*shape: int) -> torch.Tensor:
        if not drawn:
            raise RuntimeError(f"ganforge drew noise of shape {shape} that the reference step never drew")
        tensor = drawn.pop(0)
        if tensor.numel() != torch.Size(shape).numel():
            raise RuntimeError(f"ganforge drew noise of shape {shape}, the reference {tuple(tensor.shape)}")
        return tensor.reshape(shape).to(trainer.device)

    family.randn = family.rand = take


def zoo_blend(real: torch.Tensor, alpha: float) -> torch.Tensor:
    """The zoo trainer's real-image blend during a fade (`inScaleUpdate`): alpha · up(avgpool(x)) + (1 - alpha) · x."""
    if alpha == 0:
        return real
    low = F.interpolate(F.avg_pool2d(real, (2, 2)), scale_factor=2, mode="nearest")
    return alpha * low + (1 - alpha) * real


def pgan_zoo(repo: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The zoo's `optimizeParameters` on its own networks against the zoo variant's `Trainer.train_step` (see the
    module docstring); ganforge's schedule is laid out so that its step has the zoo's alpha."""
    sys.path.insert(0, str(repo))
    stub_missing_modules(UNUSED_BY_A_STEP)
    from models.progressive_gan import ProgressiveGAN

    widths = args.widths[:args.scale + 1]
    resolution, batch = 4 * 2**args.scale, args.batch
    conditional = {}
    if args.condition_weights:
        conditional = {"attribKeysOrder": {"shape": {"order": 0, "values": ["circle", "square", "triangle", "ring"]}},
                       "weightConditionD": args.condition_weights[0], "weightConditionG": args.condition_weights[1]}
    torch.manual_seed(args.seed)
    with float_adam_betas():
        zoo = ProgressiveGAN(dimLatentVector=args.latent, depthScale0=widths[0], miniBatchStdDev=True,
                             lambdaGP=10.0, epsilonD=0.001, baseLearningRate=0.001, useGPU=False, **conditional)
        for width in widths[1:]:
            zoo.addScale(width)
    drawn_classes: list[torch.Tensor] = []
    if conditional:
        criterion = zoo.ClassificationCriterion
        draw_classes, read_classes = criterion.buildRandomCriterionTensor, criterion.getCriterion

        def recorded_classes(size: int) -> tuple[torch.Tensor, torch.Tensor]:
            target, one_hot = draw_classes(size)
            drawn_classes.append(target.long())
            return target, one_hot.to(torch.get_default_dtype())

        criterion.buildRandomCriterionTensor = recorded_classes
        criterion.getCriterion = lambda output, target: read_classes(output[:, 1:], target)
    for net in (zoo.getOriginalG(), zoo.getOriginalD(), zoo.getOriginalAvgG()):
        net.setNewAlpha(args.alpha)
    zoo.config.alpha = args.alpha

    local = FADE_JUMP * round(4 * (1 - args.alpha)) + 1  # a step of ganforge's schedule with this alpha
    config = {"family": "pgan", "data": f"builtin:shapes?count=64&resolution={resolution}", "seed": args.seed,
              "model": {"variant": "zoo", "resolution": resolution, "widths": widths, "latent_dim": args.latent,
                        "lr": 0.001, "adam_eps": 1e-8, "ema_decay": 0.999, "micro_batches": args.micro_batches,
                        "schedule": {
                            "max_iter_at_scale": [1] * args.scale + [4 * FADE_JUMP + args.steps + 1],
                            "alpha_jumps": [0] * args.scale + [4],
                            "alpha_jump_size": [0] * args.scale + [FADE_JUMP], "batch_size": batch}}}
    if conditional:
        config["model"].update(conditions=["shape"], condition_weight_d=args.condition_weights[0],
                               condition_weight_g=args.condition_weights[1])
    with tempfile.TemporaryDirectory() as scratch:
        zoo.save(Path(scratch) / "zoo.pt")
        states = convert_zoo_state(read_zoo_checkpoint(Path(scratch) / "zoo.pt"))
        trainer = build(config, "fp32", torch.device("cpu"), Path(scratch) / "run")
    for name, state in states.items():
        trainer.family.nets[name].load_state_dict(state)
    trainer.family.random_labels = lambda size: drawn_classes.pop(0) if conditional else None
    start = trainer.family.segments[-1].start + local
    assert trainer.family.position(start) == (args.scale, args.alpha), trainer.family.position(start)

    shapes, labels, _ = make_shapes(batch * args.steps, resolution, seed=args.seed)
    images = torch.from_numpy(shapes).to(torch.get_default_dtype()) / 127.5 - 1
    labels = torch.from_numpy(labels)
    rows = []
    for step in range(args.steps):
        real = zoo_blend(images[step * batch:(step + 1) * batch], args.alpha)
        real_labels = labels[step * batch:(step + 1) * batch]
        with recorded_noise() as drawn:
            reference = zoo.optimizeParameters(real.clone(), real_labels[:, :1] if conditional else None)
        replay_noise(trainer, drawn)
        trainer.loader.next = lambda *_, real=real, real_labels=real_labels, **__: Batch(
            images=real.clone(), labels=real_labels)
        trainer.step = start + step
        logs = {k: float(v) for k, v in trainer.train_step(trainer.family.plan(trainer.step)).items()}
        if drawn or drawn_classes:
            raise RuntimeError(f"the reference drew {len(drawn)} noise tensors and {len(drawn_classes)} class "
                               "draws that ganforge did not use")
        rows.append({"step": step + 1,
                     "lossD": (reference["lossD"], batch * logs["loss_D"]),
                     "lossD_Grad": (reference["lossD_Grad"], batch * 10.0 * logs["gp"]),
                     "lossD_real+fake": (reference["lossD_real"] + reference["lossD_fake"], -batch * logs["wdist"]),
                     "lossG": (reference["lossG"], batch * logs["loss_G"])})
        if conditional:
            rows[-1]["lossD_classif"] = (reference["lossD_classif"],
                                         args.condition_weights[0] * logs["classification_D"])
            rows[-1]["lossG_classif"] = (reference["lossG_classif"],
                                         args.condition_weights[1] * logs["classification_G"])

    with tempfile.TemporaryDirectory() as scratch:
        zoo.save(Path(scratch) / "zoo.pt")
        trained = convert_zoo_state(read_zoo_checkpoint(Path(scratch) / "zoo.pt"))
    ours = {name: net.state_dict() for name, net in trainer.family.nets.items()}
    return {"rows": rows, "weights": largest_differences(ours, trained),
            "title": f"PGAN zoo at {resolution} px, alpha {args.alpha}, batch {batch}"
                     f"{f' (ganforge in {args.micro_batches} micro-batches)' if args.micro_batches > 1 else ''}, "
                     f"widths {widths}: losses on the zoo's scale (summed over the batch), zoo | ganforge"}


def largest_differences(ours: dict[str, dict[str, torch.Tensor]], theirs: dict[str, dict[str, torch.Tensor]],
                        left_out: dict[str, set[str]] | None = None) -> dict[str, float]:
    """Per network, the largest |ours - theirs| of any tensor relative to that tensor's largest |value|, over the
    tensors not `left_out` (by network); a network whose every tensor is left out is absent."""
    left_out = left_out or {}
    differences = {name: [float((ours[name][key] - tensor).abs().max() / tensor.abs().max().clamp_min(1e-12))
                          for key, tensor in state.items()
                          if tensor.is_floating_point() and key not in left_out.get(name, set())]
                   for name, state in theirs.items()}
    return {name: max(values) for name, values in differences.items() if values}


def cancelled_biases(net: torch.nn.Module, forward: Callable[[torch.nn.Module], torch.Tensor]) -> set[str]:
    """The biases a normalisation right after them cancels (batch norm on batch statistics, instance norm):
    shifting one moves `forward(net)` by rounding only. Their float64 gradients are rounding noise, which Adam
    turns into full-size steps of either sign that each implementation's summation order decides: bit-identical
    on one CPU (session 7's AMD), opposite on another (the AVX-512 Xeon). The weight check reports them apart."""
    probe = copy.deepcopy(net).train()
    for module in probe.modules():
        if isinstance(module, SpectralNormMixin):
            module.eval()  # no power-iteration update between the probe's forwards
    found = set()
    with torch.no_grad():
        base = forward(probe)
        for name, param in probe.named_parameters():
            if not name.endswith("bias"):
                continue
            param.add_(1.0)
            moved = float((forward(probe) - base).abs().max())
            param.sub_(1.0)
            if moved <= 1e-9 * float(base.abs().max()):
                found.add(name)
    return found


def weight_check(ours: dict[str, dict[str, torch.Tensor]], theirs: dict[str, dict[str, torch.Tensor]],
                 cancelled: dict[str, set[str]]) -> dict[str, Any]:
    """`largest_differences` of everything but the cancelled biases (the check), and of those alone (reported)."""
    kept = {name: set(state) - cancelled.get(name, set()) for name, state in theirs.items()}
    return {"weights": largest_differences(ours, theirs, cancelled),
            "cancelled": largest_differences(ours, theirs, kept) if any(cancelled.values()) else {},
            "cancelled_count": {name: len(keys) for name, keys in cancelled.items() if keys}}


def stargan2(repo: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The official `Solver.train` loop itself (stepped from a thread, as bench_vs_reference times it), with its
    losses, optimisers, EMA and λ_ds decay, against `Trainer.train_step`; the official InputFetcher's latents are
    recorded and replayed, and λ_ds decays over `--ds-iter` steps on both sides.

    The official networks are fixed at 2^14 / img_size channels at the top resolution (tens of GFLOP per image, too
    slow in float64 on a CPU), so the official Solver trains ganforge's networks at small widths instead: its
    `build_model` is replaced by one returning them, built and wrapped as the official one does (DataParallel, EMA
    copies taken before the Solver's He init). That the networks compute what the official ones do is what the
    import tests show on official checkpoints; this check is about the training step around them."""
    sys.path.insert(0, str(repo))
    stub_missing_modules(UNUSED_BY_A_STEP)
    import core.solver as official
    from munch import Munch

    resolution, batch, domains = args.resolution, args.batch, 4  # builtin:shapes' shape column
    model = {"resolution": resolution, "domain_column": "shape", "base_dim": 8, "max_conv_dim": 16,
             "mapping_dim": 16, "latent_dim": 4, "style_dim": 8, "w_hpf": 0.0, "lambda_reg": 1.0, "lambda_sty": 1.0,
             "lambda_ds": 2.0, "lambda_cyc": 1.0, "ds_iter": args.ds_iter, "lr": 1e-4, "f_lr": 1e-6,
             "betas": [0.0, 0.99], "weight_decay": 1e-4, "ema_decay": 0.999, "batch_size": batch,
             "micro_batches": args.micro_batches, "steps": args.steps}
    config = {"family": "stargan2", "data": f"builtin:shapes?count=64&resolution={resolution}", "seed": args.seed,
              "model": model}
    never = 10**9
    with tempfile.TemporaryDirectory() as scratch:
        trainer = build(config, "fp32", torch.device("cpu"), Path(scratch) / "run")
        arch = trainer.family.arch

        def build_model(_: Any) -> tuple[Munch, Munch]:
            nets = Munch(generator=torch.nn.DataParallel(arch.generator()),
                         mapping_network=torch.nn.DataParallel(arch.mapping_network()),
                         style_encoder=torch.nn.DataParallel(arch.style_encoder()),
                         discriminator=torch.nn.DataParallel(arch.discriminator()))
            ema = Munch({name: copy.deepcopy(nets[name]) for name in ("generator", "mapping_network",
                                                                      "style_encoder")})
            return nets, ema

        official.build_model = build_model
        solver_args = Munch(
            img_size=resolution, num_domains=domains, latent_dim=model["latent_dim"], hidden_dim=16,
            style_dim=model["style_dim"], w_hpf=0.0, lambda_reg=1.0, lambda_cyc=1.0, lambda_sty=1.0,
            lambda_ds=model["lambda_ds"], ds_iter=args.ds_iter, randcrop_prob=0.5, total_iters=never, resume_iter=0,
            batch_size=batch, val_batch_size=batch, lr=1e-4, f_lr=1e-6, beta1=0.0, beta2=0.99, weight_decay=1e-4,
            mode="train", seed=args.seed, checkpoint_dir=scratch, sample_dir=scratch, eval_dir=scratch,
            print_every=never, sample_every=never, save_every=never, eval_every=never)
        torch.manual_seed(args.seed)
        with contextlib.redirect_stdout(io.StringIO()):  # its network summaries
            solver = official.Solver(solver_args)

    def official_states() -> dict[str, dict[str, torch.Tensor]]:
        nets = {OFFICIAL_TO_ROLE[name]: net.module.state_dict() for name, net in solver.nets.items()}
        return {**nets, **{OFFICIAL_TO_ROLE[name] + "_ema": net.module.state_dict()
                           for name, net in solver.nets_ema.items()}}

    for role, state in official_states().items():
        trainer.family.nets[role].load_state_dict(state, strict=True)

    shapes, labels, _ = make_shapes(4 * batch * args.steps, resolution, seed=args.seed)
    images = torch.from_numpy(shapes).to(torch.get_default_dtype()) / 127.5 - 1
    domain = torch.from_numpy(labels[:, 0])
    by_domain = [torch.nonzero(domain == d)[:, 0] for d in range(domains)]
    current: dict[str, Any] = {}

    def draw(step: int) -> None:
        generator = torch.Generator().manual_seed(args.seed + step)
        sources = torch.randperm(len(images), generator=generator)[:batch]
        y_ref = torch.randint(0, domains, (batch,), generator=generator)
        picks = [by_domain[int(d)][torch.randperm(len(by_domain[int(d)]), generator=generator)[:2]] for d in y_ref]
        current.update(x=images[sources], y=domain[sources], x_ref=images[torch.stack([p[0] for p in picks])],
                       x_ref2=images[torch.stack([p[1] for p in picks])], y_ref=y_ref)

    losses: list[Any] = []

    def recording(function: Any) -> Any:
        def call(*a: Any, **kw: Any) -> Any:
            loss, parts = function(*a, **kw)
            losses.append(dict(parts))
            return loss, parts
        return call

    official.compute_d_loss, official.compute_g_loss = (recording(official.compute_d_loss),
                                                        recording(official.compute_g_loss))
    draw(0)

    def loop(sources: Iterator[Any]) -> None:
        references = _Iterable(lambda: iter(lambda: (current["x_ref"], current["x_ref2"], current["y_ref"]), None))
        validation = _Iterable(lambda: iter(lambda: (current["x"], current["y"]), None))
        solver.train(Munch(src=_Iterable(lambda: sources), ref=references, val=validation))

    stepped = SteppedLoop(loop, lambda: (current["x"], current["y"]))
    rows = []
    for step in range(args.steps):
        draw(step)
        losses.clear()
        with recorded_noise() as drawn:
            stepped.step()
        replay_noise(trainer, drawn)
        trainer.loader.next = lambda *_, c=dict(current), **__: Batch(
            images=c["x"].clone(), labels=c["y"][:, None], references=(c["x_ref"].clone(), c["x_ref2"].clone()),
            reference_labels=c["y_ref"])
        trainer.step = step
        logs = {k: float(v) for k, v in trainer.train_step(trainer.family.plan(step)).items()}
        if drawn:
            raise RuntimeError(f"the reference drew {len(drawn)} noise tensors that ganforge did not use")
        row: dict[str, Any] = {"step": step + 1}
        for parts, prefix in zip(losses, ["D_latent_", "D_ref_", "G_latent_", "G_ref_"], strict=True):
            row.update({prefix + key: (value, logs[prefix + key]) for key, value in parts.items()})
        row["lambda_ds"] = (solver.args.lambda_ds, trainer.family.lambda_ds)
        rows.append(row)

    ours = {role: net.state_dict() for role, net in trainer.family.nets.items()}
    probe_x = torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(1))
    probe_s = torch.randn(batch, trainer.family.arch.style_dim, generator=torch.Generator().manual_seed(2))
    in_g = cancelled_biases(trainer.family.nets["G"], lambda g: g(probe_x, probe_s))
    return {"rows": rows, **weight_check(ours, official_states(), {"G": in_g, "G_ema": in_g}),
            "title": f"StarGAN v2 at {resolution} px, batch {batch}"
                     f"{f' (ganforge in {args.micro_batches} micro-batches)' if args.micro_batches > 1 else ''}, "
                     f"{domains} domains, λ_ds decaying over {args.ds_iter} steps: losses, official | ganforge"}


def biggan(repo: Path, args: argparse.Namespace) -> dict[str, Any]:
    """BigGAN-PyTorch's `train_fns.GAN_training_function` (num_D_steps D steps of hinge loss on [fakes; reals] in one
    D forward, a G step, `utils.ema`), built as train.py builds it from launch_cifar_ema.sh at `--ch` channels, the
    EMA starting at `--ema-start`, against `Trainer.train_step` at configs/biggan_cifar10.yaml's settings. The
    official z_ / y_ draws (`Distribution.sample_`) are recorded and replayed as ganforge's `draw_latents`."""
    sys.path.insert(0, str(repo))
    stub_missing_modules(UNUSED_BY_A_STEP)
    import train_fns
    import utils

    batch, classes = args.batch, 4  # builtin:shapes' shape column
    preset_args, preset_config = BIGGAN_PRESETS[args.preset]
    model = importlib.import_module("BigGANdeep" if args.preset == "deep" else "BigGAN")  # train.py's --model
    flags = vars(utils.prepare_parser().parse_args([
        *preset_args, "--G_ch", str(args.ch), "--D_ch", str(args.ch), "--batch_size", str(batch),
        "--ema_start", str(args.ema_start)]))
    flags.update(resolution=32, n_classes=classes, G_activation=utils.activation_dict[flags["G_nl"]],
                 D_activation=utils.activation_dict[flags["D_nl"]])
    utils.seed_rng(args.seed)
    G, D = model.Generator(**flags), model.Discriminator(**flags)
    G_ema = model.Generator(**{**flags, "skip_init": True, "no_optim": True})
    ema = utils.ema(G, G_ema, flags["ema_decay"], flags["ema_start"])
    state = {"itr": 0}
    z_, y_ = utils.prepare_z_y(batch, G.dim_z, classes, device="cpu")
    z_ = z_.to("cpu", torch.get_default_dtype())
    train = train_fns.GAN_training_function(G, D, model.G_D(G, D), z_, y_, ema, state, flags)
    drawn: list[tuple[torch.Tensor, torch.Tensor]] = []  # (z, y) of each G forward: train() samples z_, then y_
    sample_z, sample_y = z_.sample_, y_.sample_
    pending: dict[str, torch.Tensor] = {}

    def record_z() -> None:
        sample_z()
        pending["z"] = z_.detach().clone()

    def record_y() -> None:
        sample_y()
        drawn.append((pending.pop("z"), y_.detach().clone()))

    z_.sample_, y_.sample_ = record_z, record_y

    config = yaml.safe_load((ROOT / "configs" / preset_config).read_text())
    for key in ("metrics", "metrics_every", "metrics_n", "best_metric", "keep_best"):
        config.pop(key)
    config.update(data="builtin:shapes?count=256&resolution=32", seed=args.seed)
    config["model"].update(n_classes=classes, g_ch=args.ch, d_ch=args.ch, batch_size=batch,
                           ema_start=args.ema_start, steps=args.steps, resolution=32)
    if args.preset in ("imagenet", "deep"):  # the launch script's structure at 32 px, its accumulations cut to 2
        config["model"].update(latent_dim=20, shared_dim=16, g_attention=[16], d_attention=[16],
                               num_d_accumulations=2, num_g_accumulations=2)
    if args.preset == "imagenet":  # ortho on, as the paper (the script: 0)
        config["model"].update(g_ortho=1e-4, d_ortho=1e-4)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = build(config, "fp32", torch.device("cpu"), Path(scratch) / "run")
    nets = trainer.family.nets

    def official_states() -> dict[str, dict[str, torch.Tensor]]:
        return {name: convert_network_state(net.state_dict(), nets[name], f"official {name}")
                for name, net in (("G", G), ("D", D), ("G_ema", G_ema))}

    for name, weights in official_states().items():
        nets[name].load_state_dict(weights, strict=True)

    micro = batch * flags["num_D_steps"] * flags["num_D_accumulations"]
    shapes, labels, _ = make_shapes(micro * args.steps, 32, seed=args.seed)
    images = torch.from_numpy(shapes).to(torch.get_default_dtype()) / 127.5 - 1
    targets = torch.from_numpy(labels[:, 0])
    rows = []
    for step in range(args.steps):
        x, y = images[step * micro:(step + 1) * micro], targets[step * micro:(step + 1) * micro]
        drawn.clear()
        state["itr"] += 1  # train.py counts the iteration before it trains
        G.train()
        D.train()
        reference = train(x.clone(), y.clone())
        pairs = list(drawn)
        reals = iter([Batch(images=xs.clone(), labels=ys[:, None]) for xs, ys in zip(x.split(batch), y.split(batch),
                                                                                            strict=True)])
        trainer.family.draw_latents = lambda n, pairs=pairs: tuple(t[:n] for t in pairs.pop(0))
        trainer.loader.next = lambda *_, reals=reals, **__: next(reals)
        trainer.step = step
        logs = {k: float(v) for k, v in trainer.train_step(trainer.family.plan(step)).items()}
        if pairs:
            raise RuntimeError(f"the reference drew {len(pairs)} latent batches that ganforge did not use")
        rows.append({"step": step + 1, "D_loss_real": (reference["D_loss_real"], logs["loss_D_real"]),
                     "D_loss_fake": (reference["D_loss_fake"], logs["loss_D_fake"]),
                     # the official G_loss is logged divided by the accumulations (its backward's scaling)
                     "G_loss": (reference["G_loss"], logs["loss_G"] / flags["num_G_accumulations"])})
    ours = {name: nets[name].state_dict() for name in ("G", "D", "G_ema")}
    probe_z = torch.randn(batch, trainer.family.arch.g_dim_z, generator=torch.Generator().manual_seed(1))
    in_g = cancelled_biases(nets["G"], lambda g: g(probe_z, torch.arange(batch) % classes))
    imported = read_back_as_saved(utils, {"G": G, "D": D, "G_ema": G_ema}, {**state, "config": flags},
                                  probe_z, torch.arange(batch) % classes, images[:batch])
    return {"rows": rows, **weight_check(ours, official_states(), {"G": in_g, "G_ema": in_g}), "imported": imported,
            "title": f"BigGAN ({args.preset} preset) at 32 px, ch {args.ch}, batch {batch}, {flags['num_D_steps']} D "
                     f"steps, EMA from step {args.ema_start}: losses (last D micro-batch; G on the official scale, "
                     f"divided by {flags['num_G_accumulations']} accumulations), official | ganforge"}


def read_back_as_saved(utils: Any, official: dict[str, torch.nn.Module], state: dict[str, Any], z: torch.Tensor,
                       y: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    """The official networks saved as train.py saves them (`utils.save_weights`: the weights folder an official run
    leaves, its config with the activation modules pickled) and read back by ganforge's importer: each imported
    network's eval-mode output against the official one's, max |difference| / max |official|."""
    with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(io.StringIO()):
        utils.save_weights(official["G"], official["D"], state, folder, "run", None, official["G_ema"])
        imported = load_biggan_pytorch(Path(folder) / "run")
    differences = {}
    with torch.no_grad():
        for name in ("G", "G_ema", "D"):
            theirs, ours = official[name].eval(), getattr(imported, name).eval()
            if name == "D":
                reference, output = theirs(x, y), ours(x, y)
            else:
                reference, output = theirs(z, theirs.shared(y)), ours(z, y)
            differences[name] = float((output - reference).abs().max() / reference.abs().max())
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refs", type=Path, required=True, help="folder holding the official checkouts")
    parser.add_argument("--family", choices=["pgan", "stargan2", "biggan"], default="pgan")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=None, help="default: 16 (PGAN), 4 (StarGAN v2, BigGAN)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-9)
    parser.add_argument("--micro-batches", type=int, default=1, help="PGAN, StarGAN v2: ganforge computes each "
                        "phase's batch in this many slices (the official code: whole)")
    parser.add_argument("--resampling", choices=["by-size", "fused", "separate"], default="by-size",
                        help="ganforge's convolutions beside a resampling: by size (as in training), or all as one "
                             "strided convolution, or all as the official code's two steps (ganforge.nn.resample)")
    pgan = parser.add_argument_group("PGAN (zoo variant)")
    pgan.add_argument("--scale", type=int, default=2, help="the zoo's scale to grow to (0: 4 px, 2: 16 px)")
    pgan.add_argument("--alpha", type=float, default=0.5, choices=[0.0, 0.25, 0.5, 0.75, 1.0],
                      help="fade weight of the old path (the zoo's alpha); 0: the stable phase")
    pgan.add_argument("--widths", type=int, nargs="+", default=[32, 32, 32, 16, 16])
    pgan.add_argument("--latent", type=int, default=32)
    pgan.add_argument("--condition-weights", type=float, nargs=2, metavar=("WD", "WG"),
                      help="the zoo's AC-GAN on the shape column with these weightConditionD/G (default: off)")
    stargan = parser.add_argument_group("StarGAN v2")
    stargan.add_argument("--resolution", type=int, default=32)
    stargan.add_argument("--ds-iter", type=int, default=4, help="steps over which λ_ds decays to 0 (official: 100k)")
    big = parser.add_argument_group("BigGAN")
    big.add_argument("--preset", choices=list(BIGGAN_PRESETS), default="cifar",
                     help="launch_cifar_ema.sh, or launch_BigGAN_bs256x8.sh's or launch_BigGAN_deep.sh's structure "
                          "at 32 px")
    big.add_argument("--ch", type=int, default=8, help="G_ch and D_ch (the presets: 64, 96)")
    big.add_argument("--ema-start", type=int, default=3, help="the step the EMA starts at (the preset: 1000)")
    args = parser.parse_args(argv)
    if args.family == "pgan" and not 1 <= args.scale < len(args.widths):
        parser.error(f"--scale {args.scale}: expected 1 to {len(args.widths) - 1} (one width per scale)")
    args.batch = args.batch or {"pgan": 16, "stargan2": 4, "biggan": 4}[args.family]
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # rounding at 1e-16: a few steps cannot amplify it into a difference
    if args.resampling != "by-size":
        resample.FUSED_MIN_BATCH_PIXELS_CPU = 0 if args.resampling == "fused" else 2**62
    check = {"pgan": pgan_zoo, "stargan2": stargan2, "biggan": biggan}[args.family]
    result = check(find_repo(args.refs, args.family), args)
    print(result["title"])
    worst = 0.0
    for row in result["rows"]:
        cells = []
        for key, (ref, ours) in ((k, v) for k, v in row.items() if k != "step"):
            worst = max(worst, abs(ours - ref) / max(abs(ref), 1e-6))
            cells.append(f"{key} {ref:+.6g} | {ours:+.6g}")
        print(f"step {row['step']}: " + ";  ".join(cells))
    print("weights after the last step, max |ganforge - official| / max |official| per tensor: "
          + ", ".join(f"{name} {value:.1e}" for name, value in result["weights"].items()))
    if result.get("cancelled"):
        print("left out of that: biases a normalisation cancels (rounding-noise gradients, which Adam turns into "
              "steps whose sign the summation order decides): "
              + ", ".join(f"{name} {result['cancelled_count'][name]} tensors, {value:.1e}"
                          for name, value in result["cancelled"].items()))
    if result.get("imported"):
        print("the official networks saved as its train.py saves them, read back by `ganforge import biggan-pytorch`: "
              "eval outputs, max |ganforge - official| / max |official|: "
              + ", ".join(f"{name} {value:.1e}" for name, value in result["imported"].items()))
    worst = max(worst, *result["weights"].values(), *result.get("imported", {}).values())
    print(f"largest relative difference {worst:.1e} (tolerance {args.tolerance:g}): "
          + ("the same training step" if worst <= args.tolerance else "DIFFERENT"))
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
