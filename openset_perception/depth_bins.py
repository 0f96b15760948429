"""Depth ranges in metres, in numpy only, so metrics can bin pixels by distance without importing torch."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

DEFAULT_EDGES_M = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0)


@dataclass(frozen=True)
class DepthBins:
    """Bin edges in metres; ``beyond_last`` adds a final [last edge, inf) bin."""

    edges_m: tuple[float, ...] = DEFAULT_EDGES_M
    beyond_last: bool = True

    def __post_init__(self) -> None:
        edges = np.asarray(self.edges_m, dtype=np.float64)
        if edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0) or edges[0] < 0:
            raise ValueError(f"depth bin edges must be >= 0, finite and increasing, got {self.edges_m}")

    @property
    def ranges(self) -> list[tuple[float, float]]:
        bounds = list(self.edges_m) + ([math.inf] if self.beyond_last else [])
        return list(itertools.pairwise(bounds))

    def assign(self, depth: np.ndarray) -> np.ndarray:
        """Bin index per pixel (numpy); -1 for invalid depth (NaN, inf, <= 0) and depth outside every bin."""
        depth = np.asarray(depth, dtype=np.float64)
        index = np.searchsorted(np.asarray(self.edges_m), depth, side="right") - 1
        binned = np.isfinite(depth) & (depth > 0) & (index >= 0) & (index < len(self.ranges))
        return np.where(binned, index, -1)
