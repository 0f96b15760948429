"""Per-(frame, depth bin) statistics of a score map in one pass over score and depth, on a CPU.

What ``depth.depth_bin_statistics`` reports, without the dozen full-size temporaries (a comparison
per edge, the slot index, masks) that the tensor formulation needs: a 2 MP frame took 40-55 ms that
way and takes a few here. Each thread fills its own table over a slice of the pixels; the tables are
then merged (counts and sums added, maxima and minima taken).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from openset_perception.kernels.threads import parallel_slices

COLUMNS = ("valid_pixels", "anomalous_pixels", "score_sum", "score_max", "nearest_anomaly_m")
_CHUNK = 1024  # pixels binned at a time: the edge comparisons vectorise over a chunk


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _fill_table(scores, depth, start, stop, edges, beyond_last, threshold, table):
    """Accumulate pixels [start, stop) of the flattened (frames x pixels) maps into ``table``."""
    pixels = scores.shape[1]
    n_edges = edges.size
    bins = np.empty(_CHUNK, np.int32)
    position = start
    while position < stop:
        frame, first = position // pixels, position % pixels
        size = min(_CHUNK, stop - position, pixels - first)  # a chunk never spans two frames
        position += size
        d = depth[frame, first : first + size]
        s = scores[frame, first : first + size]
        for j in range(size):
            bins[j] = 0
        # The bin of a depth is the number of edges at or below it (0: below the first edge).
        for e in range(n_edges):
            edge = edges[e]
            for j in range(size):
                bins[j] = bins[j] + (np.int32(1) if d[j] >= edge else np.int32(0))
        for j in range(size):
            valid = (
                d[j] > np.float32(0.0) and d[j] < np.float32(math.inf) and (beyond_last or bins[j] < n_edges)
            )
            bins[j] = bins[j] if valid else np.int32(0)
        counts = table[frame, :, 0]
        sums = table[frame, :, 2]
        maxima = table[frame, :, 3]
        for j in range(size):
            slot = bins[j]
            value = np.float64(s[j])
            counts[slot] += 1.0
            sums[slot] += value
            maxima[slot] = max(maxima[slot], value)
            if value >= threshold and slot > 0:  # a few percent of the pixels: a well-predicted branch
                table[frame, slot, 1] += 1.0
                table[frame, slot, 4] = min(table[frame, slot, 4], np.float64(d[j]))


def depth_table(
    scores: np.ndarray, depth: np.ndarray, edges_m: tuple[float, ...], beyond_last: bool, threshold: float
) -> np.ndarray:
    """(B, bins + 1, 5) float64 table of ``COLUMNS`` for (B, P) float32 scores and depth in metres.

    Slot 0 of each frame takes every pixel outside all bins (invalid depth included); its anomalous
    count and nearest distance stay 0 and inf.
    """
    batch, pixels = scores.shape
    slots = len(edges_m) + (1 if beyond_last else 0)  # slot 0, then one per range
    edges = np.asarray(edges_m, dtype=np.float32)  # float32 comparisons, as PyTorch compares the depth map
    tables: list[np.ndarray] = []

    def fill(start: int, stop: int) -> None:
        table = np.zeros((batch, slots, 5))
        table[..., 3] = -math.inf
        table[..., 4] = math.inf
        _fill_table(scores, depth, start, stop, edges, beyond_last, float(threshold), table)
        tables.append(table)

    parallel_slices(fill, batch * pixels)
    # Merge the threads' tables: counts and sums add up, maxima and minima are taken.
    stacked = np.stack(tables)
    merged = stacked.sum(axis=0)
    merged[..., 3] = stacked[..., 3].max(axis=0)
    merged[..., 4] = stacked[..., 4].min(axis=0)
    return merged
