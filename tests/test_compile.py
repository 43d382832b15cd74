"""`compile: true`: the same training as eager (losses within float tolerance), checkpoints that resume either way,
and a per-network eager fallback with one warning where torch.compile fails."""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from reliability_runs import FAMILIES, tiny_run

from ganforge.families import resolve_run_config
from ganforge.models.pgan import PGANArch, PGANDiscriminator, PGANGenerator, fade_weight
from ganforge.training import checkpoint as ckpt
from ganforge.training import speed
from ganforge.training.engine import Trainer

STEPS = 10


def build(family: str, run: Path, compiled: bool, **top: object) -> Trainer:
    config = tiny_run(family, length=2, compile=compiled, checkpoint_every=1000, **top)
    return Trainer(resolve_run_config(None, config), run)


def assert_close_losses(got: list[dict[str, float]], expected: list[dict[str, float]]) -> None:
    assert len(got) == len(expected)
    for step, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a.keys() == b.keys(), step
        for key in a:
            # compiled kernels sum in another order; over steps the rounding grows (StarGAN v2: 1.2e-4 at step 6)
            assert a[key] == pytest.approx(b[key], rel=1e-4 if step < 3 else 1e-3, abs=1e-6), (step, key)


# Adam divides each gradient by its running RMS, so where a gradient is rounding noise around zero the order in which
# compiled kernels sum decides the sign of a whole lr-sized step: BigGAN's tiny config has such gradients, and its
# losses part by 2.6e-4 at step 2 with the config's eps 1e-6 (eager with 1 or 2 threads: 1e-6 after 6 steps). With
# eps 1 the update is proportional to the gradient. Its self-attention max-pools keys and values, so rounding that
# flips a near tie in a 2×2 window hands that window's whole gradient to another element: eager runs of the tiny
# config whose convolutions round differently (ganforge.nn.resample's two routes) part by 4e-4 within one step, at
# step 4, and by 2e-3 at step 9, where without attention they stay within 4e-6 over 10 steps (as weights nudged by
# 1e-7 show, this is any rounding, not compiling). Ten steps compare without attention; the resume test below
# compiles it.
CHAOS_DAMPED = {"biggan": {"adam_eps": 1.0, "g_attention": [], "d_attention": []}}


# Inductor's C++ code generation for the tiny PGAN, StarGAN v2 and BigGAN runs took 3 to 6 minutes each from a cold
# cache on this 2-core CPU (every network compiles in several guard states), more than the whole suite can spend. On
# CPU those families therefore compile with the aot_eager backend: dynamo's capture, AOT autograd's joint graph and
# functionalization, the guards and recompiles, the eager fallback and the checkpoint keys, everything but inductor's
# kernels. WGAN-GP compiles with inductor here, and benchmarks/gpu_check.py compiles every family with inductor.
INDUCTOR_ON_CPU = {"wgan-gp"}
COMPILE_NETWORK = speed.compile_network


@pytest.fixture
def backend_for(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Sets the backend `compile: true` uses for `family` in this test."""
    def use(family: str) -> None:
        backend = "inductor" if family in INDUCTOR_ON_CPU else "aot_eager"
        monkeypatch.setattr(speed, "compile_network", functools.partial(COMPILE_NETWORK, backend=backend))
    return use


def _slow_unless_inductor(family: str) -> tuple[pytest.MarkDecorator, ...]:
    return () if family in INDUCTOR_ON_CPU else (pytest.mark.slow,)


COMPILED_FAMILIES = [pytest.param(f, marks=_slow_unless_inductor(f)) for f in FAMILIES]


# PGAN with model.styles (the quick start's generator) as a further case: its styles are per-sample scales and shifts
COMPILED_MODELS = [*(pytest.param(f, {}, marks=_slow_unless_inductor(f), id=f) for f in FAMILIES),
                   pytest.param("pgan", {"styles": True}, marks=_slow_unless_inductor("pgan"), id="pgan-styles")]


@pytest.mark.parametrize(("family", "model"), COMPILED_MODELS)
def test_compiled_training_matches_eager(tmp_path: Path, family: str, model: dict[str, object],
                                         backend_for: Callable[[str], None]) -> None:
    backend_for(family)

    def build_run(run: Path, compiled: bool) -> Trainer:
        config = tiny_run(family, length=2, compile=compiled, checkpoint_every=1000)
        config["model"].update(CHAOS_DAMPED.get(family, {}), **model)
        return Trainer(resolve_run_config(None, config), run)

    eager = build_run(tmp_path / "eager", False).stepped_losses(STEPS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would not test compiling
        compiled_trainer = build_run(tmp_path / "compiled", True)
        compiled = compiled_trainer.stepped_losses(STEPS)
    assert_close_losses(compiled, eager)
    for name, net in compiled_trainer.family.nets.items():
        assert net._compiled_call_impl is not None, name


@pytest.mark.parametrize("family", COMPILED_FAMILIES)
def test_compiled_run_checkpoints_keep_the_eager_keys_and_resume(tmp_path: Path, family: str,
                                                                 backend_for: Callable[[str], None]) -> None:
    backend_for(family)
    lookahead = {"every": 2, "alpha": 0.5}  # its slow weights are keyed by parameter name too
    eager_keys = set(build(family, tmp_path / "eager", False, lookahead=lookahead).state_tensors()[0])
    first = build(family, tmp_path / "run", True, lookahead=lookahead)
    first.train(until=3)
    saved = ckpt.latest_valid_checkpoint(tmp_path / "run")
    assert saved is not None and saved.step == 3
    for group in ("net/", "lookahead/"):  # no torch.compile prefixes
        assert {key for key in saved.tensors if key.startswith(group)} == {
            key for key in eager_keys if key.startswith(group)} != set(), group
    resumed = build(family, tmp_path / "run", True, lookahead=lookahead)
    assert resumed.step == 3
    for name, net in resumed.family.nets.items():
        for key, value in net.state_dict().items():
            assert torch.equal(value, saved.tensors[f"net/{name}/{key}"]), (name, key)
    compiled_losses = resumed.stepped_losses(2)  # before the next resume: both draw from torch's global generator
    eager_resumed = build(family, tmp_path / "run", False, lookahead=lookahead)  # resumed without compiling
    assert_close_losses(compiled_losses, eager_resumed.stepped_losses(2))


def no_compiler(fn: object, **options: object) -> object:
    """torch.compile where compiling fails at the first call, as without a working C++ compiler."""
    def fail(*args: object, **kwargs: object) -> None:
        raise torch._dynamo.exc.TorchDynamoException("no working C++ compiler")
    return fail


def test_a_network_that_fails_to_compile_runs_eagerly_with_one_warning(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    eager = build("wgan-gp", tmp_path / "eager", False)
    for net in eager.family.nets.values():  # the compiled run keeps torch's default layout
        net.to(memory_format=torch.contiguous_format)
    expected = eager.stepped_losses(3)
    monkeypatch.setattr(torch, "compile", no_compiler)
    trainer = build("wgan-gp", tmp_path / "compiled", True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = trainer.stepped_losses(3)
    messages = sorted(str(w.message) for w in caught if str(w.message).startswith("compile:"))
    assert messages == [f"compile: network {name} runs eagerly: TorchDynamoException: no working C++ compiler"
                        for name in ("D", "G")]  # once each, though each ran 3 steps; G_ema is not called in a step
    assert got == expected  # eager is eager: bit-identical
    assert all(net._compiled_call_impl is None for name, net in trainer.family.nets.items() if name in ("G", "D"))


def test_compiling_raises_dynamo_recompile_limit_so_growing_networks_stay_compiled() -> None:
    """PGAN's D ran in 8 guard states within one resolution on a GPU (frozen or trained, input with or without
    grad, no_grad sampling): dynamo's default limit of 8 then made it run eagerly, silently, for the rest of the run."""
    import torch._dynamo.config as dynamo_config

    from ganforge.training.speed import RECOMPILE_LIMIT, compile_networks

    before = dynamo_config.recompile_limit
    try:
        dynamo_config.recompile_limit = 8
        compile_networks({"G": torch.nn.Linear(2, 2)}, penalised=())
        assert dynamo_config.recompile_limit == RECOMPILE_LIMIT >= 6 * 2 * 2 * 2  # scales x grads x frozen x no_grad
        dynamo_config.recompile_limit = 1000  # a user's higher limit is kept
        compile_networks({"G": torch.nn.Linear(2, 2)}, penalised=())
        assert dynamo_config.recompile_limit == 1000
    finally:
        dynamo_config.recompile_limit = before


def _tiny_pgan() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    arch = PGANArch(resolution=8, widths=[8, 8], latent_dim=8, variant="zoo")
    return PGANGenerator(arch), PGANDiscriminator(arch)


def test_the_steps_of_a_pgan_fade_do_not_recompile() -> None:
    """alpha changes every few steps of a fade; as a Python float into torch.compile it was a guarded input, and on
    a cold inductor cache every value recompiled G and D (seconds each: 1 img/s through a 16 px fade on this CPU)."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    G, D = _tiny_pgan()
    for name, net in (("G", G), ("D", D)):
        speed.compile_network(name, net, backend=counter)
    frames_after_first_step = None
    for alpha in (1.0, 0.75, 0.5, 0.25, 0.125):
        with torch.no_grad():  # as in D's phase; D on fakes that carry G's graph would run eagerly (a penalty)
            fakes = G(torch.randn(4, 8), 1, alpha)
        D(fakes, 1, alpha).mean().backward()
        frames_after_first_step = frames_after_first_step or counter.frame_count
    assert counter.frame_count == frames_after_first_step == 2  # G's and D's compiled regions, once each


class Scaled(torch.nn.Module):
    """A network of ganforge's kind to dynamo (torch's own modules are not traced as a frame of their own)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ self.weight)


@pytest.mark.parametrize("penalised", [True, False])
def test_only_a_penalised_network_runs_calls_with_input_and_weight_gradients_eagerly(penalised: bool) -> None:
    """torch.compile cannot backpropagate twice, so a call that a gradient penalty may differentiate again runs
    eagerly; a network no penalty reaches (StarGAN v2's G fed a style that trains) stays compiled in that call."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    counter = CompileCounter()
    net = Scaled()
    speed.compile_network("N", net, penalised=penalised, backend=counter)
    x = torch.randn(4, 3, requires_grad=True)
    out = net(x)
    (grad,) = torch.autograd.grad(out.square().sum(), x, create_graph=penalised)
    assert counter.frame_count == (0 if penalised else 1)
    if penalised:
        grad.square().sum().backward()  # the penalty's second backward, through the eager call
        assert net.weight.grad is not None
        with torch.no_grad():
            net(x)
        assert counter.frame_count == 1  # a call that cannot be differentiated twice is compiled


def test_the_engine_tells_compile_which_networks_a_penalty_reaches(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, bool] = {}
    monkeypatch.setattr(speed, "compile_network",
                        lambda name, net, *, penalised=True, **options: seen.__setitem__(name, penalised))
    build("stargan2", tmp_path / "run", True)
    assert seen == {"G": False, "F": False, "E": False, "D": True, "G_ema": False, "F_ema": False, "E_ema": False}
    seen.clear()
    build("biggan", tmp_path / "biggan", True)  # hinge loss: no penalty, every call compiles
    assert seen == {"G": False, "D": False, "G_ema": False}
    # a family that does not name its penalised networks gets the safe choice: all of them
    monkeypatch.setattr(type(build("pgan", tmp_path / "pgan", False).family), "penalised_nets", None)
    seen.clear()
    build("pgan", tmp_path / "pgan-compiled", True)
    assert seen == {"G": True, "D": True, "G_ema": True}


def test_a_compile_region_that_fails_runs_its_method_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    G, _ = _tiny_pgan()
    z = torch.randn(4, 8)
    expected = G(z, 1, 0.5)
    monkeypatch.setattr(torch, "compile", no_compiler)
    speed.compile_network("G", G)
    assert G._compiled_call_impl is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert torch.equal(G(z, 1, 0.5), expected)
        assert torch.equal(G(z, 1, 0.5), expected)
    assert [str(w.message) for w in caught] == [
        "compile: network G runs eagerly: TorchDynamoException: no working C++ compiler"]
    assert G._compiled_call_impl is None and "synthesize" not in vars(G)  # the class's method, uncompiled


def test_a_copy_of_a_network_with_a_compiled_region_computes_with_its_own_weights() -> None:
    """BigGAN's standing statistics sample from a deepcopy of G_ema; nn.Module drops `_compiled_call_impl` when
    copied, so a compiled region must hang off it too, or the copy would run the original's weights."""
    G, _ = _tiny_pgan()
    speed.compile_network("G", G, backend="eager")
    copied = copy.deepcopy(G)
    with torch.no_grad():
        for param in copied.parameters():
            param.add_(0.1)
    z = torch.randn(4, 8)
    assert copied._compiled_call_impl is None
    assert not torch.allclose(copied(z, 1, 0.5), G(z, 1, 0.5))
    torch.testing.assert_close(copied(z, 1, 0.5), copied.synthesize(z, 1, fade_weight(0.5)))
