"""pet_core.memory: freed tensor memory goes back to the OS under glibc, and the user's own tuning wins."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from pet_core.memory import release_memory

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import torch
from pet_core.memory import configure_allocator

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024

changed = configure_allocator()
warm = torch.ones(300_000); del warm     # a freed large block: glibc's own threshold would now rise above it
base = rss_mb()
big, keep = [], []
for _ in range(300):                      # 1 MB activations interleaved with small long-lived tensors
    big.append(torch.ones(250_000))
    keep.append(torch.ones(16))
peak = rss_mb()
del big
print(changed, base, peak, rss_mb())
"""

glibc_only = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                                reason="the allocator tuning applies to glibc only")


def run_child(**env: str) -> tuple[bool, int, int, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "PETFLOW_MALLOC"))}
    proc = subprocess.run([sys.executable, "-c", CHILD], env={**clean, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=120, check=True)
    changed, *numbers = proc.stdout.split()
    base, peak, after = map(int, numbers)
    return changed == "True", base, peak, after


@glibc_only
def test_freed_activations_leave_the_process():
    changed, base, peak, after = run_child()
    assert changed
    assert peak - base > 250  # the 300 MB were resident
    assert after - base < 0.2 * (peak - base), (base, peak, after)


@glibc_only
@pytest.mark.parametrize("env", [{"PETFLOW_MALLOC_TUNING": "0"}, {"MALLOC_MMAP_THRESHOLD_": "4194304"}],
                         ids=["opt-out", "user-tuned"])
def test_the_users_choice_is_left_alone(env):
    changed, base, peak, after = run_child(**env)
    assert not changed
    if "PETFLOW_MALLOC_TUNING" in env:  # glibc's own dynamic threshold: the freed blocks stay in its heap
        assert after - base > 0.8 * (peak - base)


def test_release_memory_runs_anywhere():
    release_memory()
    release_memory()  # idempotent


ONEDNN_CHILD = """
import ctypes, os, torch
from pet_core.memory import configure_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
configure_allocator()
torch.manual_seed(0)
layer = torch.nn.Linear(64, 64)
with torch.autocast("cpu", dtype=torch.bfloat16):
    layer(torch.randn(3, 64)).sum().backward()
base = libc.mallinfo2().uordblks
for rows in range(1, 301):                # a new activation shape every step, as dynamic padding gives
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(torch.randn(rows, 64)).sum().backward()
print(os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"), (libc.mallinfo2().uordblks - base) / 2**20)
"""


def onednn_child(**env: str) -> tuple[str, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ONEDNN_", "PETFLOW_MALLOC"))}
    proc = subprocess.run([sys.executable, "-c", ONEDNN_CHILD], env={**clean, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=120, check=True)
    capacity, growth = proc.stdout.split()
    return capacity, float(growth)


@glibc_only
def test_bf16_kernel_cache_is_bounded_and_the_users_setting_wins():
    from pet_core.modeling import cpu_supports_bf16

    if not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16: oneDNN's bf16 primitives are not used")
    capacity, bounded = onednn_child()
    assert capacity == "16"
    user_capacity, unbounded = onednn_child(ONEDNN_PRIMITIVE_CACHE_CAPACITY="1024")
    assert user_capacity == "1024"
    assert bounded < 0.75 * unbounded, (bounded, unbounded)
