"""Per-depth-bin anomaly statistics of one frame as diagnostic status records.

A bin is WARN when its nearest anomalous pixel lies inside the danger range and it holds at least
``min_pixels`` anomalous pixels (a few isolated pixels are noise, not an obstacle).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from openset_perception.depth import DepthBinStats
from openset_perception.runtime.status import Level, StatusRecord, format_number


@dataclass(frozen=True)
class DangerZone:
    near_m: float = 0.0
    far_m: float = 20.0
    min_pixels: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.near_m < self.far_m:
            raise ValueError(f"danger range must satisfy 0 <= near < far, got [{self.near_m}, {self.far_m}]")
        if self.min_pixels < 1:
            raise ValueError(f"danger min_pixels must be >= 1, got {self.min_pixels}")

    def contains(self, depth_m: float) -> bool:
        return self.near_m <= depth_m <= self.far_m


def bin_name(range_m: tuple[float, float]) -> str:
    near, far = range_m
    return f"{near:g}-{far:g} m" if math.isfinite(far) else f">= {near:g} m"


def depth_report_statuses(
    camera: str, stats: Sequence[DepthBinStats], danger: DangerZone
) -> list[StatusRecord]:
    """One status per depth bin, named ``<camera> depth <range>``, with the bin's statistics as values."""
    return [_bin_status(camera, bin_stats, danger) for bin_stats in stats]


def _bin_status(camera: str, stats: DepthBinStats, danger: DangerZone) -> StatusRecord:
    near = stats.nearest_anomaly_m
    in_danger = near is not None and stats.anomalous_pixels >= danger.min_pixels and danger.contains(near)
    if in_danger:
        level = Level.WARN
        message = (
            f"anomaly at {near:.1f} m ({stats.anomalous_pixels} px), "
            f"inside the danger range {danger.near_m:g}-{danger.far_m:g} m"
        )
    elif stats.valid_pixels == 0:
        level, message = Level.OK, "no valid depth"
    elif near is not None:
        level, message = Level.OK, f"anomaly at {near:.1f} m ({stats.anomalous_pixels} px)"
    else:
        level, message = Level.OK, "no anomaly"
    values = {
        "range_min_m": format_number(stats.range_m[0]),
        "range_max_m": format_number(stats.range_m[1]),
        "valid_pixels": str(stats.valid_pixels),
        "anomalous_pixels": str(stats.anomalous_pixels),
        "anomalous_fraction": format_number(stats.anomalous_fraction, 6),
        "mean_score": format_number(stats.mean_score, 4),
        "max_score": format_number(stats.max_score, 4),
        "nearest_anomaly_m": format_number(stats.nearest_anomaly_m),
    }
    return StatusRecord(
        name=f"{camera} depth {bin_name(stats.range_m)}",
        level=level,
        message=message,
        hardware_id=camera,
        values=values,
    )
