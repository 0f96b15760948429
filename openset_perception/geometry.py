"""Pinhole camera geometry: intrinsics and back-projection of depth pixels into the camera's optical frame.

Optical frame as in REP-103 / REP-105 camera conventions: x to the right, y down, z forward (along the
optical axis), metres. A pixel (u, v) at depth z (distance along z, as depth images store it, REP-118)
lies at x = (u - cx) z / fx, y = (v - cy) z / fy. Pixel centres are at integer coordinates, as in
``sensor_msgs/CameraInfo``'s K matrix. Lens distortion is not modelled: the node's inputs are
rectified images (``image_rect``), or the error is accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Intrinsics:
    """Focal lengths and principal point in pixels for an image of ``width`` x ``height``."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values) or self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"intrinsics need finite, positive focal lengths, got {values}")
        if self.width < 1 or self.height < 1:
            raise ValueError(f"intrinsics need a positive image size, got {self.width}x{self.height}")

    @classmethod
    def from_focal_length(cls, focal_px: float, width: int, height: int) -> Intrinsics:
        """Square pixels, principal point in the image centre (as ``make-bag`` writes CameraInfo)."""
        return cls(focal_px, focal_px, (width - 1) / 2.0, (height - 1) / 2.0, width, height)

    @classmethod
    def from_camera_info(cls, info: Any) -> Intrinsics | None:
        """From a ``sensor_msgs/CameraInfo`` (rclpy or rosbags; only ``k``, ``width``, ``height`` are read).

        None for an uncalibrated camera: K all zero (the ROS convention), or a non-positive focal length.
        """
        k = np.asarray(info.k, dtype=np.float64).reshape(-1)
        if k.size != 9 or not np.all(np.isfinite(k)) or k[0] <= 0 or k[4] <= 0:
            return None
        width, height = int(info.width), int(info.height)
        if width < 1 or height < 1:
            return None
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), width, height)

    def scaled_to(self, width: int, height: int) -> Intrinsics:
        """The same camera for an image resized to ``width`` x ``height`` (info at full size)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        # Pixel centres sit at integers, so the principal point scales about the corner at -0.5.
        return Intrinsics(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5, width, height
        )

    def pixel_footprint_m(self, depth_m: float) -> tuple[float, float]:
        """Width and height in metres that one pixel covers at ``depth_m``."""
        return depth_m / self.fx, depth_m / self.fy


def valid_depth(depth: np.ndarray) -> np.ndarray:
    """Boolean map of usable depth: finite and > 0 (0, NaN and inf mark missing depth in ROS)."""
    return np.isfinite(depth) & (depth > 0)


def backproject(
    depth_m: np.ndarray, intrinsics: Intrinsics, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """(N, 3) float32 points in the optical frame of the pixels (rows[i], cols[i]) with their depth."""
    if depth_m.shape != (intrinsics.height, intrinsics.width):
        raise ValueError(
            f"depth {depth_m.shape[1]}x{depth_m.shape[0]} does not match the intrinsics' "
            f"{intrinsics.width}x{intrinsics.height}"
        )
    z = depth_m[rows, cols].astype(np.float32)
    x = (cols.astype(np.float32) - np.float32(intrinsics.cx)) * z / np.float32(intrinsics.fx)
    y = (rows.astype(np.float32) - np.float32(intrinsics.cy)) * z / np.float32(intrinsics.fy)
    return np.stack([x, y, z], axis=1)


def anomaly_points(
    depth_m: np.ndarray,
    scores: np.ndarray,
    mask: np.ndarray,
    intrinsics: Intrinsics,
    decimation: int = 1,
) -> np.ndarray:
    """(N, 4) float32 rows x, y, z, score of the masked pixels with valid depth, on a ``decimation`` grid.

    Decimation keeps every ``decimation``-th row and column (a regular subsample: the cloud's density
    stays even for a costmap), and only pixels with valid depth are kept, so no point is NaN.
    """
    if decimation < 1:
        raise ValueError(f"decimation must be >= 1, got {decimation}")
    if not depth_m.shape == scores.shape == mask.shape:
        raise ValueError(f"depth {depth_m.shape}, scores {scores.shape} and mask {mask.shape} differ")
    grid = (slice(None, None, decimation), slice(None, None, decimation))
    keep = mask[grid] & valid_depth(depth_m[grid])
    rows, cols = np.nonzero(keep)
    rows, cols = rows * decimation, cols * decimation
    points = np.empty((rows.size, 4), dtype=np.float32)
    points[:, :3] = backproject(depth_m, intrinsics, rows, cols)
    points[:, 3] = scores[rows, cols]
    return points
