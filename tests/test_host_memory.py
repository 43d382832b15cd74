"""keep_freed_host_memory: a CPU step's tensors reuse the pages freed by the step before instead of faulting in fresh
ones, and the trainer sets it up on the CPU only."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from reliability_runs import tiny_run

from ganforge.families import resolve_run_config
from ganforge.training import engine

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# In a fresh process, kept or not: where a freed 24 MiB block goes (glibc's default maps it from the kernel and unmaps
# it when freed; kept, it returns to the top of the heap: `keepcost`), then how many pages a step-like pattern faults
# in (10 tensors of 4 MiB written and freed, 5 times over: 51,200 pages; glibc's default faults in most of them or
# none, as earlier blocks happen to lie).
ROUNDS = """
import ctypes, json, resource, sys, torch
from ganforge.training.speed import keep_freed_host_memory

libc = ctypes.CDLL(None)
class MallInfo(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = MallInfo
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def page_faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        blocks = [torch.ones(1024, 1024) for _ in range(10)]
        del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

kept = sys.argv[1] == "kept" and keep_freed_host_memory()
block = libc.malloc(24 << 20)
ctypes.memset(block, 1, 24 << 20)
libc.free(block)
top = libc.mallinfo2().keepcost
page_faults()
print(json.dumps({"kept": kept, "top": top, "faults": page_faults()}))
"""


def run_rounds(mode: str) -> dict:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True, cwd=root,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's: elsewhere keep_freed_host_memory does nothing")
def test_freed_blocks_stay_in_the_heap_and_fault_no_pages() -> None:
    default, kept = run_rounds("default"), run_rounds("kept")
    assert default["top"] < 4 << 20  # glibc's default: the block went back to the kernel
    assert kept["kept"] is True
    assert kept["top"] >= 24 << 20  # kept: it is the heap's free top, for the next step
    assert kept["faults"] < 512  # of 51,200 pages written: the heap's own pages again


def test_trainer_keeps_freed_memory_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[bool] = []
    monkeypatch.setattr(engine, "keep_freed_host_memory", lambda: seen.append(True) or True)
    engine.Trainer(resolve_run_config(None, tiny_run("wgan-gp", length=1, device="cpu")), tmp_path / "run")
    assert seen == [True]
