"""Keep freed memory inside the process, so large CPU tensors stop page-faulting every step.

glibc's malloc serves every allocation above its mmap threshold (adaptive, at most 32 MiB) with
fresh pages from the kernel and unmaps them again on free. A training step allocates the same
large tensors every time (a batch's logits over the vocabulary are far above that threshold), so
each step pays the kernel to zero-fill all of them again. Raising the mmap threshold and the trim
threshold makes malloc reuse its own freed memory instead. The cost: the process keeps its peak
heap until it exits. Speed-up and memory cost as measured: docs/benchmarks.md.

Other allocators (macOS, musl, jemalloc/tcmalloc preloaded) are left alone: the call reports False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks above 1 GiB still come straight from the kernel
TRIM_THRESHOLD = (1 << 31) - 1  # never hand the top of the heap back (mallopt takes an int)

_applied = False


def retain_freed_memory() -> bool:
    """Make glibc malloc reuse freed memory for large blocks; True when the settings took effect.

    Process-wide and idempotent; call it once in each process that trains or decodes on the CPU
    (Lightning's DDP workers included: `callbacks.RetainFreedMemory` does so in `setup`).
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # only glibc has it: another libc's mallopt means something else
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; older glibc versions refuse an mmap threshold above 32 MiB
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not _applied:
        log.info("glibc refused the malloc thresholds; large CPU tensors keep coming from fresh pages")
    return _applied
