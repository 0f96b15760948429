"""Keep freed host memory in the process, so that each frame's large buffers are not fresh pages.

glibc hands blocks above its mmap threshold (128 KiB, raised on the fly to at most 32 MiB) back to
the OS when they are freed, so the next frame's activations and maps arrive as new pages, each one
page-faulted on first touch: 26,600 page faults per 2 MP frame for the shipped model on the PyTorch
runtime, 200 ms a frame instead of 135 ms (``scripts/bench_cpu_kernels.py``, docs/benchmarks.md).
Raising the thresholds makes glibc keep and reuse those blocks; the price is that the resident
memory stays at its peak instead of shrinking between frames, which a node that runs the same frame
size forever wants anyway. onnxruntime's own arena does the same for its network.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import sys

LOGGER = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap and stay there when freed
_TRIM_THRESHOLD = (1 << 31) - 1  # never give the heap's free top back


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's thresholds once per process; False where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    done = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
    LOGGER.debug("glibc keeps freed memory for reuse: %s", done)
    return done
