"""Depth report records: levels against the danger range, names and key/values, from real bin statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from openset_perception.depth import DepthBins, DepthBinStats, depth_bin_statistics
from openset_perception.runtime.depth_report import DangerZone, bin_name, depth_report_statuses
from openset_perception.runtime.status import Level


def stats(near: float, far: float, valid: int, anomalous: int, nearest: float | None) -> DepthBinStats:
    return DepthBinStats(
        range_m=(near, far),
        valid_pixels=valid,
        anomalous_pixels=anomalous,
        anomalous_fraction=anomalous / valid if valid else 0.0,
        mean_score=0.25 if valid else None,
        max_score=1.5 if valid else None,
        nearest_anomaly_m=nearest,
    )


def test_levels_follow_the_danger_range_and_pixel_minimum() -> None:
    report = [
        stats(0, 5, 100, 0, None),  # no anomaly
        stats(5, 10, 100, 30, 7.0),  # inside [0, 20] with enough pixels
        stats(10, 15, 100, 5, 12.0),  # inside, but too few pixels to count
        stats(20, 25, 100, 50, 22.0),  # enough pixels, outside the range
        stats(25, 30, 0, 0, None),  # nothing measured
        stats(50, math.inf, 10, 10, 60.0),
    ]
    statuses = depth_report_statuses("front", report, DangerZone(0.0, 20.0, min_pixels=20))
    assert [s.level for s in statuses] == [Level.OK, Level.WARN, Level.OK, Level.OK, Level.OK, Level.OK]
    assert [s.name for s in statuses] == [
        "front depth 0-5 m",
        "front depth 5-10 m",
        "front depth 10-15 m",
        "front depth 20-25 m",
        "front depth 25-30 m",
        "front depth >= 50 m",
    ]
    assert statuses[1].message == "anomaly at 7.0 m (30 px), inside the danger range 0-20 m"
    assert statuses[0].message == "no anomaly"
    assert statuses[4].message == "no valid depth"
    assert statuses[3].message == "anomaly at 22.0 m (50 px)"
    assert all(s.hardware_id == "front" for s in statuses)


def test_danger_range_bounds_are_inclusive() -> None:
    zone = DangerZone(5.0, 10.0)
    for nearest, level in ((4.99, Level.OK), (5.0, Level.WARN), (10.0, Level.WARN), (10.01, Level.OK)):
        (status,) = depth_report_statuses("cam", [stats(0, 50, 10, 10, nearest)], zone)
        assert status.level == level, nearest


def test_key_values_carry_the_bin_statistics() -> None:
    (status,) = depth_report_statuses("cam", [stats(5, 10, 200, 30, 7.5)], DangerZone())
    assert status.values == {
        "range_min_m": "5.000",
        "range_max_m": "10.000",
        "valid_pixels": "200",
        "anomalous_pixels": "30",
        "anomalous_fraction": "0.150000",
        "mean_score": "0.2500",
        "max_score": "1.5000",
        "nearest_anomaly_m": "7.500",
    }
    (empty,) = depth_report_statuses("cam", [stats(50, math.inf, 0, 0, None)], DangerZone())
    assert empty.values["range_max_m"] == "inf"
    assert math.isnan(float(empty.values["nearest_anomaly_m"])) and math.isnan(
        float(empty.values["mean_score"])
    )


def test_report_of_real_statistics_warns_in_the_bin_of_a_near_anomaly() -> None:
    depth = np.full((20, 30), 30.0, dtype=np.float32)
    depth[10:, :] = 12.0
    depth[:, :3] = np.nan
    scores = np.zeros((20, 30), dtype=np.float32)
    scores[15:18, 10:20] = 5.0  # 30 anomalous pixels at 12 m
    scores[2:4, 20:22] = 5.0  # 4 at 30 m
    bins = DepthBins((0.0, 10.0, 20.0, 40.0), beyond_last=False)
    (frame_stats,) = depth_bin_statistics(
        torch.from_numpy(scores[None]), torch.from_numpy(depth[None]), 1.0, bins
    )
    statuses = depth_report_statuses("front", frame_stats, DangerZone(0.0, 15.0, min_pixels=10))
    assert [s.name for s in statuses] == ["front depth 0-10 m", "front depth 10-20 m", "front depth 20-40 m"]
    assert [s.level for s in statuses] == [Level.OK, Level.WARN, Level.OK]
    valid_12m = int(np.sum(depth == 12.0))
    assert statuses[1].values["valid_pixels"] == str(valid_12m)
    assert statuses[1].values["anomalous_pixels"] == "30"
    assert statuses[1].values["nearest_anomaly_m"] == "12.000"
    assert statuses[2].values["anomalous_pixels"] == "4"
    assert statuses[0].message == "no valid depth"


@pytest.mark.parametrize(
    ("near", "far", "min_pixels"), [(5.0, 5.0, 1), (-1.0, 5.0, 1), (0.0, math.nan, 1), (0, 5, 0)]
)
def test_invalid_danger_zones_are_refused(near: float, far: float, min_pixels: int) -> None:
    with pytest.raises(ValueError, match="danger"):
        DangerZone(near, far, min_pixels)


def test_bin_names() -> None:
    assert bin_name((0.0, 5.0)) == "0-5 m"
    assert bin_name((2.5, 7.5)) == "2.5-7.5 m"
    assert bin_name((50.0, math.inf)) == ">= 50 m"
