"""Per-depth-range statistics of an anomaly score map ("is there something unknown 12 m ahead?").

Depth comes in metres (0 / NaN / inf / negative = invalid) or as stereo disparity with baseline and
focal length. On a CPU one compiled pass over score and depth fills the table
(``kernels.depth_table``); on a GPU the same table comes from tensor operations.
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
    if scores.device.type == "cpu":
        from openset_perception.kernels.depth_table import depth_table

        flat = (scores.shape[0], -1)
        table = depth_table(
            scores.float().contiguous().reshape(flat).numpy(),
            depth.float().contiguous().reshape(flat).numpy(),
            bins.edges_m,
            bins.beyond_last,
            threshold,
        )
    else:
        table = depth_table_on_device(scores, depth, threshold, bins)
    ranges = bins.ranges
    return [[_bin_stats(ranges[b], row) for b, row in enumerate(frame[1:])] for frame in table]


def depth_table_on_device(
    scores: torch.Tensor, depth: torch.Tensor, threshold: float, bins: DepthBins = DepthBins()
) -> np.ndarray:
    """``kernels.depth_table.depth_table`` as tensor operations, for maps on a GPU.

    One slot per (frame, bin) plus a slot 0 per frame that takes every pixel outside all bins, so
    each statistic is one unmasked pass, and one small transfer to the host at the end.
    """
    batch = scores.shape[0]
    n_bins = len(bins.ranges)
    scores = scores.float().reshape(-1)
    depth = depth.float().reshape(batch, -1)
    # A pixel's bin is the number of edges at or below its depth, minus one (bucketize(right=True) - 1),
    # counted as byte-wide comparisons.
    narrow = len(bins.edges_m) <= torch.iinfo(torch.uint8).max
    in_bin = torch.zeros(depth.shape, dtype=torch.uint8 if narrow else torch.int32, device=depth.device)
    at_or_above = torch.empty(depth.shape, dtype=torch.bool, device=depth.device)
    for edge in bins.edges_m:
        torch.ge(depth, edge, out=at_or_above)
        in_bin.add_(at_or_above.view(torch.uint8) if narrow else at_or_above)
    # NaN compares false everywhere; 0, negative and infinite depth are invalid too.
    torch.le(depth, 0.0, out=at_or_above)
    at_or_above.logical_or_(depth == math.inf)
    in_bin.masked_fill_(at_or_above, 0)
    if not bins.beyond_last:
        in_bin.masked_fill_(in_bin == len(bins.edges_m), 0)
    slots_per_frame = n_bins + 1
    frame_offset = torch.arange(batch, device=depth.device).unsqueeze(1) * slots_per_frame
    slot = (in_bin.long() + frame_offset).reshape(-1)
    n_slots = batch * slots_per_frame

    valid_count = torch.bincount(slot, minlength=n_slots).float()
    score_sum = torch.zeros(n_slots, device=depth.device).scatter_add_(0, slot, scores)
    score_max = torch.full((n_slots,), -math.inf, device=depth.device).scatter_reduce_(
        0, slot, scores, reduce="amax"
    )
    # Anomalous pixels are few: gather them, then count them and find the nearest per slot.
    anomalous = (scores >= threshold) & (in_bin.reshape(-1) > 0)
    anomalous_slot = slot[anomalous]
    anomalous_count = torch.bincount(anomalous_slot, minlength=n_slots).float()
    nearest = torch.full((n_slots,), math.inf, device=depth.device).scatter_reduce_(
        0, anomalous_slot, depth.reshape(-1)[anomalous], reduce="amin"
    )
    table = torch.stack([valid_count, anomalous_count, score_sum, score_max, nearest], dim=1)
    return table.reshape(batch, slots_per_frame, 5).double().cpu().numpy()


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
