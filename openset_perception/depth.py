"""Per-depth-range statistics of an anomaly score map ("is there something unknown 12 m ahead?").

Depth comes in metres (0 / NaN / inf / negative = invalid) or as stereo disparity with baseline and
focal length. Everything is vectorised on the scores' device: one scatter per statistic, no Python
loop over pixels, and one small transfer to the host at the end.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

# Re-exported: the engine and runtime parameters import the bin definitions from here.
from openset_perception.depth_bins import DEFAULT_EDGES_M, DepthBins  # noqa: F401


@dataclass(frozen=True)
class DepthBinStats:
    """Statistics of one depth range in one frame; score fields are None when the range is empty."""

    range_m: tuple[float, float]
    valid_pixels: int
    anomalous_pixels: int
    anomalous_fraction: float
    mean_score: float | None
    max_score: float | None
    nearest_anomaly_m: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def depth_from_disparity(disparity: np.ndarray, baseline_m: float, focal_px: float) -> np.ndarray:
    """depth = baseline * focal / disparity; non-positive or non-finite disparity -> NaN."""
    disparity = np.asarray(disparity, dtype=np.float32)
    valid = np.isfinite(disparity) & (disparity > 0)
    depth = np.full(disparity.shape, np.nan, dtype=np.float32)
    depth[valid] = baseline_m * focal_px / disparity[valid]
    return depth


def depth_bin_statistics(
    scores: torch.Tensor, depth: torch.Tensor, threshold: float, bins: DepthBins = DepthBins()
) -> list[list[DepthBinStats]]:
    """Per-frame, per-bin statistics for (B,H,W) scores and depth in metres on the same device."""
    if scores.shape != depth.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and depth {tuple(depth.shape)} differ in shape")
    batch = scores.shape[0]
    ranges = bins.ranges
    n_bins = len(ranges)
    scores = scores.float().reshape(batch, -1)
    depth = depth.float().reshape(batch, -1)

    edges = torch.tensor(bins.edges_m, device=depth.device, dtype=depth.dtype)
    # bucketize(right=True) - 1 maps [e_i, e_{i+1}) to bin i; below the first edge gives -1.
    bin_index = torch.bucketize(depth, edges, right=True) - 1
    in_range = torch.isfinite(depth) & (depth > 0) & (bin_index >= 0)
    if not bins.beyond_last:
        in_range &= bin_index < n_bins
    anomalous = in_range & (scores >= threshold)

    frame_offset = torch.arange(batch, device=depth.device).unsqueeze(1) * n_bins
    slot = (frame_offset + bin_index.clamp(0, n_bins - 1)).reshape(-1)
    n_slots = batch * n_bins
    valid_flat = in_range.reshape(-1)
    anomalous_flat = anomalous.reshape(-1)
    scores_flat = scores.reshape(-1)
    depth_flat = depth.reshape(-1)

    def scatter(values: torch.Tensor, reduce: str, fill: float) -> torch.Tensor:
        out = torch.full((n_slots,), fill, device=depth.device, dtype=torch.float32)
        return out.scatter_reduce(0, slot, values.float(), reduce=reduce, include_self=True)

    valid_count = scatter(valid_flat, "sum", 0.0)
    anomalous_count = scatter(anomalous_flat, "sum", 0.0)
    score_sum = scatter(torch.where(valid_flat, scores_flat, 0.0), "sum", 0.0)
    score_max = scatter(torch.where(valid_flat, scores_flat, -math.inf), "amax", -math.inf)
    nearest = scatter(torch.where(anomalous_flat, depth_flat, math.inf), "amin", math.inf)

    table = torch.stack([valid_count, anomalous_count, score_sum, score_max, nearest], dim=1)
    table = table.reshape(batch, n_bins, 5).double().cpu().numpy()
    return [[_bin_stats(ranges[b], row) for b, row in enumerate(frame)] for frame in table]


def _bin_stats(range_m: tuple[float, float], row: np.ndarray) -> DepthBinStats:
    valid, anomalous, score_sum, score_max, nearest = row
    valid_pixels = int(valid)
    anomalous_pixels = int(anomalous)
    return DepthBinStats(
        range_m=range_m,
        valid_pixels=valid_pixels,
        anomalous_pixels=anomalous_pixels,
        anomalous_fraction=anomalous_pixels / valid_pixels if valid_pixels else 0.0,
        mean_score=float(score_sum / valid_pixels) if valid_pixels else None,
        max_score=float(score_max) if valid_pixels else None,
        nearest_anomaly_m=float(nearest) if anomalous_pixels else None,
    )


def nearest_anomaly(report: list[DepthBinStats]) -> float | None:
    """Closest anomalous depth over all bins of one frame's report."""
    distances = [s.nearest_anomaly_m for s in report if s.nearest_anomaly_m is not None]
    return min(distances) if distances else None
