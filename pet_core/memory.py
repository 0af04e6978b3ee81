"""Process memory: stop glibc's heap from hoarding freed tensor memory, and hand memory back between stages.

PyTorch on CPU allocates every tensor with ``malloc``. glibc serves blocks of 128 KiB and more with
``mmap`` (returned to the OS on ``free``) until the first such block is freed; then it raises that
threshold to the freed size (up to 32 MiB) and serves later blocks of that size from its heap, whose
free space it returns only from the top. Training with dynamic padding allocates activations of a new
size every step, so the heap fills with free holes that stay resident: in ``benchmarks/rss_trace.py``
(MiniLM, max_seq_length 256) 545 MB of free-but-resident heap after one PVP model's 30 steps, and
every further stage adds its own. Pinning the threshold (``configure_allocator``) keeps large blocks
on ``mmap``; ``release_memory`` returns what the heap still holds after a stage.

Both are no-ops where the C library is not glibc (macOS, Windows, musl). ``configure_allocator`` also
leaves the allocator alone when the user chose its tuning (``MALLOC_MMAP_THRESHOLD_`` and friends, a
preloaded jemalloc/tcmalloc) or set ``PETFLOW_MALLOC_TUNING=0``. Its price: blocks
served by ``mmap`` start as fresh pages, so each step takes more page faults. The threshold trades the
two; the README demo (``petflow run data/configs/demo.yaml``, 2 idle cores, ``/usr/bin/time -v``,
2026-12-02) measured wall / peak RSS: glibc's dynamic threshold 4:00 / 1.69 GB; pinned at 128 KiB
(glibc's initial value) 5:32 / 1.47 GB with 154 s system time; pinned at 512 KiB (the default here)
3:43 / 1.46 GB; 1 MiB 4:10 / 1.53 GB. jemalloc (``LD_PRELOAD``) is the alternative for users who want it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import platform
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
DEFAULT_MMAP_THRESHOLD = 512 * 1024  # measured best of 128 KiB / 512 KiB / 1 MiB / dynamic (module docstring)
USER_TUNING = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
OPT_OUT = "PETFLOW_MALLOC_TUNING"  # "0": leave glibc's allocator as it is
ONEDNN_CACHE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
# oneDNN (bf16 autocast on CPU) caches a compiled primitive per op and shape, 1024 by default; dynamic
# padding and a varying number of MLM targets give new shapes every step, so the cache grew the heap by
# ~6 MB per step and kept it after the model was gone: 2 PVP models x 40 steps (AG's News, max_seq_length
# 128, bf16, 2 threads) peaked at 1,633 MB with 477 MB of live heap left; with 16 entries 1,421 MB and
# 308 MB at the same speed (15.4 / 17.1 vs 16.1 / 17.2 s per model). fp32 has no such growth but trains
# 35 % slower here.
ONEDNN_CACHE_ENTRIES = 16

_configured = False


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The process's glibc, or None (another C library, or none found)."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("mallopt", "malloc_trim")):
        return None
    return libc


def _user_tuned() -> bool:
    """True when the environment already tunes or replaces malloc (then petflow leaves it alone)."""
    preload = os.environ.get("LD_PRELOAD", "")
    return (os.environ.get(OPT_OUT, "1").strip().lower() in ("0", "false", "no", "off")
            or any(name in os.environ for name in USER_TUNING) or "jemalloc" in preload or "tcmalloc" in preload
            or "GLIBC_TUNABLES" in os.environ and "malloc" in os.environ["GLIBC_TUNABLES"])


def configure_allocator(mmap_threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Pin glibc's mmap threshold (and its trim threshold) so freed tensor memory goes back to the OS.

    Idempotent and cheap; call it before a stage allocates tensors. Returns True when it changed the
    allocator (glibc, no user tuning in the environment, first call).
    """
    global _configured
    if _configured:
        return False
    _configured = True
    if os.environ.get(OPT_OUT, "1").strip().lower() not in ("0", "false", "no", "off"):
        os.environ.setdefault(ONEDNN_CACHE, str(ONEDNN_CACHE_ENTRIES))  # read by oneDNN at its first primitive
    libc = _glibc()
    if libc is None or _user_tuned():
        return False
    # Setting either parameter also turns off glibc's dynamic raising of the mmap threshold.
    ok = libc.mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    ok = libc.mallopt(M_TRIM_THRESHOLD, int(mmap_threshold)) == 1 and ok
    return ok


def malloc_trim() -> bool:
    """Return the free pages of every glibc arena to the OS; False where there is no glibc."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def release_memory() -> None:
    """After a stage: collect garbage (cycles holding tensors), return free heap to the OS, empty CUDA's cache."""
    gc.collect()
    malloc_trim()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


__all__ = ["configure_allocator", "malloc_trim", "release_memory"]
