"""How the family's networks run fast: their memory layout when eager, `compile: true`, and (on the CPU) a heap that
keeps what a step frees for the next.

Eager networks take channels_last, cuDNN's and oneDNN's native layout, except on the CPU those that normalise with
instance norm (eager_memory_format). `compile: true` compiles the networks in place with torch.compile, falling back
to eager per network.

Compiling in place (the module's own compiled call, as ``nn.Module.compile`` does) keeps each network the same object
with the same state_dict keys, so checkpoints, EMA updates and the optimisers see no difference. A network class may
name a method as its `compile_region`: that method is compiled instead of the whole call, so that a forward can check
its arguments and turn a Python float that changes every step (PGAN's alpha) into a tensor eagerly. torch.compile
compiles lazily, at a network's first call, so a failure (an unsupported op, no C++ compiler, a backend error) shows
up there: the network then runs eagerly from that call on, after one warning line naming it and the reason. The
calls of a penalised network (one whose input gradient a loss differentiates again: D under a gradient penalty) that
take gradients for both the input and the weights run eagerly: see _may_double_backward. Every other call is compiled,
including those of networks whose input and weights both train in a phase (StarGAN v2's G after F or E in the G step).
"""

from __future__ import annotations

import ctypes
import os
import platform
import warnings
from collections.abc import Collection, Mapping
from typing import Any

import torch


def eager_memory_format(net: torch.nn.Module, device: torch.device) -> torch.memory_format:
    """channels_last, except for a network with instance norm on the CPU: torch computes instance norm as batch norm
    over a [1, N·C, H, W] view, which needs NCHW memory, so in channels_last each norm transposes its input and its
    output back, and the convolutions around it transpose again (at full widths on 2 CPU cores, StarGAN v2's G in
    NCHW made a step 1.07x faster, WGAN-GP's instance-norm critic 1.13x: benchmarks/README.md). CUDA does the same
    reshape, but its convolutions gain more from channels_last; unmeasured there, so CUDA keeps channels_last."""
    instance_norms = (torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d, torch.nn.InstanceNorm3d)
    if device.type == "cpu" and any(isinstance(m, instance_norms) for m in net.modules()):
        return torch.contiguous_format
    return torch.channels_last


# glibc's mallopt parameters (malloc.h); the largest mmap threshold it accepts is DEFAULT_MMAP_THRESHOLD_MAX,
# 4 MiB per byte of a long (32 MiB on 64-bit systems)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 4 * 1024**2 * ctypes.sizeof(ctypes.c_long)
_TRIM_THRESHOLD_MAX = 2**31 - 1  # mallopt's value is a C int
# a heap policy the user set for the process (glibc reads these at start-up), which keep_freed_host_memory leaves alone
USER_HEAP_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def user_heap_policy(environ: Mapping[str, str]) -> str | None:
    """The environment variable by which the user chose glibc's heap policy themselves, if any."""
    for name in USER_HEAP_SETTINGS:
        if name in environ:
            return name
    return "GLIBC_TUNABLES" if "glibc.malloc." in environ.get("GLIBC_TUNABLES", "") else None


def keep_freed_host_memory() -> bool:
    """Have glibc's malloc serve blocks up to 32 MiB (64-bit) from a heap it never shrinks. False where there is no
    glibc, where mallopt refused, or where the user set glibc's heap policy (`user_heap_policy`: that is the opt-out).

    torch takes each CPU tensor from malloc. By default glibc maps every large block from the kernel (and returns the
    heap's free top once it exceeds twice the largest mapped block freed so far), so a training step's activations
    came back as fresh zeroed pages, faulted in one 4 KiB page at a time: for the zoo-config PGAN at widths / 8 on 2
    CPU cores, 5,000-17,000 page faults and 10-38 ms of system time per 0.32-0.37 s step (benchmarks/README.md). With
    the heap kept, each step reuses the pages of the one before. The price is that the process holds its peak heap
    until it exits; blocks from the threshold up (header included) are still mapped afresh."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or user_heap_policy(os.environ):
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own libc
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mapped = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    trimmed = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_MAX)
    return bool(mapped and trimmed)


def is_compile_failure(err: BaseException) -> bool:
    """An error raised by torch.compile's tracer or backend, not by the network's own code."""
    return type(err).__module__.startswith(("torch._dynamo", "torch._inductor"))


def _warn_eager(name: str, err: BaseException) -> None:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    warnings.warn(f"compile: network {name} runs eagerly: {type(err).__name__}: {reason}", RuntimeWarning,
                  stacklevel=3)


def _may_double_backward(net: torch.nn.Module, args: tuple, kwargs: dict) -> bool:
    """Gradients wanted for both the input and the weights: a gradient penalty (WGAN-GP, R1), whose input gradient
    is taken with create_graph and then backpropagated into the weights. aot_autograd (torch.compile's training
    path) cannot backpropagate twice, so such calls run eagerly; frozen nets (D in the G step) stay compiled."""
    if not torch.is_grad_enabled() or not any(p.requires_grad for p in net.parameters()):
        return False
    return any(isinstance(x, torch.Tensor) and x.requires_grad for x in (*args, *kwargs.values()))


def compile_network(name: str, net: torch.nn.Module, *, penalised: bool = True, **options: Any) -> None:
    """Compile `net` (or its `compile_region` method) in place; its first call that fails to compile warns and runs
    it (and later calls) eagerly. `penalised`: a loss may backpropagate through this network's input gradient, so
    its calls that may be differentiated twice run eagerly (for a network that is not, compiling every call is safe).

    Either way the compiled code hangs off `_compiled_call_impl`, which nn.Module drops when it is copied: a deepcopy
    (BigGAN's standing-statistics copy) is an eager network of its own, not a route into the original's weights."""
    region = getattr(type(net), "compile_region", None)
    eager = getattr(net, region) if region else net._call_impl
    try:
        compiled = torch.compile(eager, **options)
    except Exception as err:  # noqa: BLE001 - any failure to set up compiling means eager, with the reason
        _warn_eager(name, err)
        return

    def compiled_or_eager(*args: Any, **kwargs: Any) -> Any:
        if penalised and _may_double_backward(net, args, kwargs):
            return eager(*args, **kwargs)
        try:
            return compiled(*args, **kwargs)
        except Exception as err:
            if not is_compile_failure(err):
                raise
            net._compiled_call_impl = None  # nn.Module.__call__ goes back to the eager path
            _warn_eager(name, err)
            return eager(*args, **kwargs)

    def call_with_compiled_region(*args: Any, **kwargs: Any) -> Any:
        net.__dict__[region] = compiled_or_eager  # shadows the class's method during this call only
        try:
            return net._call_impl(*args, **kwargs)
        finally:
            del net.__dict__[region]

    # what nn.Module.compile sets: __call__ runs it in place of _call_impl
    net._compiled_call_impl = call_with_compiled_region if region else compiled_or_eager


# One network legitimately runs in many guard states: trained or frozen, its input with or without grad, under
# no_grad for sampling, and at every PGAN scale. Dynamo's default of 8 recompiles per function was reached by PGAN on
# a GPU within one resolution, after which it silently ran eagerly for the rest of the run.
RECOMPILE_LIMIT = 64


def compile_networks(nets: Mapping[str, torch.nn.Module], penalised: Collection[str]) -> None:
    """Compile every network of a family (EMA copies included: sampling and evaluation call them); `penalised`
    names those whose input gradient a loss differentiates again (compile_network)."""
    import torch._dynamo.config as dynamo_config  # here: slow to import, and only compiled runs need it

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    for name, net in nets.items():
        compile_network(name, net, penalised=name in penalised)
