"""How the process's memory allocator treats freed memory. No torch here: the CLI sets it at start-up, every job
as it starts (workers are spawned: nothing is inherited), the detector and the pixel classifier when used alone."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
KEEP_BLOCKS_BELOW = 32 * 2**20  # glibc's largest mmap threshold: blocks below it come from the reusable heap
KEEP_FREED = 512 * 2**20  # freed memory kept by the process before glibc trims its heap


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc keep freed memory in the process for the next allocation (once per process; True when set).

    By default every block above 128 KiB (a layer's activations) is mapped afresh and handed back when freed, so each
    forward pass pays a page fault per 4 KiB it writes. Keeping it, on the 2-core benchmark VM: a detector
    prediction in 0.65x the time (benchmarks/detector_inference.py --folded), a training step in 0.80-0.92x, a live
    pixel-classifier retrain in 0.88x. Afterwards the process keeps up to KEEP_FREED of freed memory for reuse. Not
    glibc (macOS, Windows, musl): nothing is changed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = all(mallopt(option, value) == 1 for option, value in (
        (_M_MMAP_THRESHOLD, KEEP_BLOCKS_BELOW), (_M_TRIM_THRESHOLD, KEEP_FREED), (_M_TOP_PAD, 64 * 2**20)))
    log.debug("glibc keeps freed memory for reuse: %s", done)
    return done
