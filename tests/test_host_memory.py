"""keep_freed_host_memory: a CPU step's tensors reuse the pages freed by the step before instead of faulting in fresh
ones, the trainer sets it up on the CPU, and a heap policy the user chose stays theirs."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_runs import tiny_run

from ganforge.families import resolve_run_config
from ganforge.training import engine
from ganforge.training.speed import keep_freed_host_memory, user_heap_policy

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# In a fresh process, glibc's default heap or the kept one: a step's pattern in malloc's own calls (what torch's CPU
# allocator makes), 10 blocks of 4 MiB written and then all freed, and the page faults of 4 more steps after the first
# (40,960 pages written). By default the first step's frees raise the mmap threshold to 4 MiB, the next step's blocks
# come from the heap top, and their frees hand that top back to the kernel (it exceeds twice the threshold): every
# later step faults its pages in afresh.
STEPS = """
import ctypes, json, resource, sys
from ganforge.training.speed import keep_freed_host_memory

libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
BLOCK = 4 << 20

def step():
    blocks = [libc.malloc(BLOCK) for _ in range(10)]
    for block in blocks:
        ctypes.memset(block, 1, BLOCK)
    for block in blocks:
        libc.free(block)

kept = sys.argv[1] == "kept" and keep_freed_host_memory()
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(json.dumps({"kept": kept, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""
PAGES = 4 * 10 * 1024


def run_steps(heap: str) -> dict:
    """STEPS in a child whose heap policy is glibc's default (no preloaded allocator, no user malloc settings)."""
    root = Path(__file__).resolve().parents[1]
    env = {name: value for name, value in os.environ.items()
           if name not in ("LD_PRELOAD", "GLIBC_TUNABLES") and not name.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", STEPS, heap], capture_output=True, text=True, cwd=root,
                         env={**env, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's: elsewhere keep_freed_host_memory does nothing")
def test_kept_heap_reuses_freed_pages_where_the_default_faults_them_in_again() -> None:
    default, kept = run_steps("default"), run_steps("kept")
    assert default["faults"] > PAGES * 9 // 10  # glibc's default: nearly every page fresh at every step
    assert kept["kept"] is True
    assert kept["faults"] < PAGES // 100  # kept: the heap's own pages again


def test_a_heap_policy_the_user_set_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    assert user_heap_policy({"PATH": "/usr/bin"}) is None
    assert user_heap_policy({"MALLOC_TRIM_THRESHOLD_": "131072"}) == "MALLOC_TRIM_THRESHOLD_"
    assert user_heap_policy({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}) == "GLIBC_TUNABLES"
    assert user_heap_policy({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX2"}) is None  # not the heap's
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert keep_freed_host_memory() is False


def test_trainer_keeps_freed_memory_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    monkeypatch.setattr(engine, "keep_freed_host_memory", lambda: seen.append(True) or True)
    engine.Trainer(resolve_run_config(None, tiny_run("wgan-gp", length=1, device="cpu")), tmp_path / "run")
    assert seen == [True]
