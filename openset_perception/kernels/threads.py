"""Run a numba kernel (compiled with ``nogil=True``) over contiguous slices of its rows in parallel.

Python threads rather than numba's ``parallel=True``: numba's own thread pool must not be entered
from two threads at once (two cameras, or the node beside an evaluation), and it would run beside
PyTorch's OpenMP pool. The slices follow PyTorch's thread count, so one setting governs both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

MIN_ROWS_PER_SLICE = 16  # below this, a thread hand-off costs more than it saves


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openset-kernel")


def parallel_slices(kernel: Callable[[int, int], None], rows: int) -> None:
    """``kernel(start, stop)`` over [0, rows), one contiguous slice per thread; returns when all are done."""
    slices = max(1, min(torch.get_num_threads(), rows // MIN_ROWS_PER_SLICE))
    bounds = [rows * i // slices for i in range(slices + 1)]
    if slices == 1:
        kernel(0, rows)
        return
    pool = _pool(slices - 1)
    futures = [pool.submit(kernel, bounds[i], bounds[i + 1]) for i in range(1, slices)]
    kernel(bounds[0], bounds[1])  # this thread takes the first slice
    for future in futures:
        future.result()
