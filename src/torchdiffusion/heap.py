"""Keep freed memory in the process: no page-fault storm per training step (glibc malloc only).

PyTorch's CPU tensors come from malloc. glibc serves blocks above its mmap threshold with a fresh ``mmap`` and
gives the top of its heap back to the OS once more than the trim threshold is free there, so a network whose
activations are a few MiB each gets new, zero-filled pages from the kernel for many of them on every step: ~9,600
page faults per training step of the demo preset (1.93 M over 200 steps, 4.2 s of system time; measured with
``/usr/bin/time -v``). :func:`keep_freed_memory` raises the mmap threshold to its maximum (32 MiB on 64-bit) and
stops trimming, so freed blocks are reused: 128 k faults over the same 200 steps, 0.9 s of system time, and 6.5 %
more images per second (docs/bench-train.md). The cost is that the process keeps its peak heap until it exits.

It changes nothing where the C library is not glibc, where another allocator is preloaded (tcmalloc, jemalloc:
glibc's settings then govern nothing), or when ``TORCHDIFFUSION_KEEP_HEAP=0``. The settings are those of
``mallopt(3)``; they are process-wide, set once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # mallopt(3) parameter numbers (malloc.h)
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
TOP_PAD = 64 * 1024 * 1024  # grow the heap in steps of this much (fewer brk calls)

_done: bool | None = None


def kept() -> bool:
    """Whether :func:`keep_freed_memory` has set glibc to keep freed memory in this process (changes nothing)."""
    return _done is True


def keep_freed_memory() -> bool:
    """Set glibc malloc to keep and reuse freed memory (once per process); True if the settings took effect."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("TORCHDIFFUSION_KEEP_HEAP", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to set
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    trim_off = 2**31 - 1  # the largest value the int parameter takes: the heap is never trimmed below ~2 GiB free
    _done = all(
        mallopt(param, value) == 1
        for param, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, trim_off), (M_TOP_PAD, TOP_PAD))
    )
    return _done
