"""Unknown objects: 8-connected components of an open-set mask, measured in the image and in 3D.

One connected-components implementation (OpenCV's ``connectedComponentsWithStats``, 8-connectivity)
serves the node's object reports and the component-level metrics. Per-component statistics are
computed with one sort of the masked pixels and ``reduceat`` over the runs, never with a Python
loop over pixels: the cost grows with the number of masked pixels, not with the image size beyond the
labelling itself.

3D values are in the camera's optical frame (x right, y down, z forward; see ``geometry``): the
centroid is the mean of the component's back-projected pixels with valid depth, the extent the
axis-aligned size of their footprints (a pixel is depth / focal length wide), the bearing
``atan2(x, z)`` (positive to the right of the optical axis) and the lateral offset the centroid's x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from openset_perception.geometry import Intrinsics, backproject, valid_depth


@dataclass(frozen=True)
class Components:
    """Labelled components of a mask: ``labels`` 0 = background, 1..count; ``pixels[i]`` of label i + 1."""

    count: int
    labels: np.ndarray  # (H, W) int32
    pixels: np.ndarray  # (count,) int64
    boxes: np.ndarray  # (count, 4) int64: x, y, width, height


def label_components(mask: np.ndarray) -> Components:
    """8-connected components of a boolean (or 0/1 uint8) mask."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {mask.shape}")
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    stats = stats[1:].astype(np.int64)
    return Components(
        count=count - 1,
        labels=labels,
        pixels=stats[:, cv2.CC_STAT_AREA],
        boxes=stats[:, [cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT]],
    )


def per_component_median(ids: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """Median of ``values`` per component id in 1..count (``np.median`` semantics); NaN where none."""
    median = np.full(count, np.nan)
    if ids.size == 0:
        return median
    order = np.lexsort((values, ids))
    ids, values = ids[order], values[order].astype(np.float64)
    present, starts, sizes = np.unique(ids, return_index=True, return_counts=True)
    low = values[starts + (sizes - 1) // 2]
    high = values[starts + sizes // 2]
    median[present - 1] = (low + high) / 2.0
    return median


@dataclass(frozen=True)
class ObjectFilters:
    """Which components count as objects.

    ``min_size_m`` (larger of the x and y extents) needs 3D; ``max_distance_m`` (nearest valid depth)
    needs depth; an object the data cannot test is kept, so a missing depth never hides an obstacle.
    """

    min_pixels: int = 1
    min_size_m: float = 0.0
    max_distance_m: float = math.inf

    def __post_init__(self) -> None:
        if self.min_pixels < 1:
            raise ValueError(f"min_pixels must be >= 1, got {self.min_pixels}")
        if not self.min_size_m >= 0:
            raise ValueError(f"min_size_m must be >= 0, got {self.min_size_m}")
        if not self.max_distance_m > 0:
            raise ValueError(f"max_distance_m must be > 0, got {self.max_distance_m}")


@dataclass(frozen=True)
class UnknownObject:
    """One unknown object of one frame; ``id`` numbers the frame's objects 0, 1, ... in raster order."""

    id: int
    pixels: int
    bbox: tuple[int, int, int, int]  # x, y, width, height in pixels
    mean_score: float
    max_score: float
    depth_pixels: int  # pixels with valid depth
    nearest_m: float | None  # None without valid depth
    median_m: float | None
    centroid_m: tuple[float, float, float] | None  # optical frame; None without intrinsics or depth
    extent_m: tuple[float, float, float] | None
    bearing_rad: float | None
    lateral_m: float | None

    @property
    def distance_m(self) -> float | None:
        """The distance a planner acts on: the nearest valid depth."""
        return self.nearest_m


def find_objects(
    mask: np.ndarray,
    scores: np.ndarray,
    depth_m: np.ndarray | None = None,
    intrinsics: Intrinsics | None = None,
    filters: ObjectFilters = ObjectFilters(),
) -> list[UnknownObject]:
    """The objects of one frame's open-set ``mask`` (HxW bool) with their ``scores`` and optional depth.

    ``intrinsics`` (for the depth map's size) adds the 3D values; without depth they stay None.
    """
    if mask.shape != scores.shape or (depth_m is not None and depth_m.shape != mask.shape):
        shapes = f"mask {mask.shape}, scores {scores.shape}" + (
            f", depth {depth_m.shape}" if depth_m is not None else ""
        )
        raise ValueError(f"object maps differ in shape: {shapes}")
    components = label_components(mask)
    # Components under min_pixels are dropped before any pixel is gathered: noise costs nothing more.
    chosen = np.flatnonzero(components.pixels >= filters.min_pixels)
    count = chosen.size
    if count == 0:
        return []
    pixels, boxes = components.pixels[chosen], components.boxes[chosen]
    compact = np.zeros(components.count + 1, np.int64)  # label -> 1..count, 0 = background or dropped
    compact[chosen + 1] = np.arange(1, count + 1)
    flat = np.flatnonzero(mask)  # a boolean mask is much faster to scan than the int32 labels
    ids = compact[components.labels.reshape(-1)[flat]]
    flat, ids = flat[ids > 0], ids[ids > 0]
    order = np.argsort(ids, kind="stable")
    flat, ids = flat[order], ids[order]
    starts = np.searchsorted(ids, np.arange(1, count + 1))
    pixel_scores = scores.reshape(-1)[flat].astype(np.float64)
    mean_score = np.add.reduceat(pixel_scores, starts) / pixels
    max_score = np.maximum.reduceat(pixel_scores, starts)

    depth_pixels = np.zeros(count, np.int64)
    nearest = np.full(count, np.nan)
    median = np.full(count, np.nan)
    centroid = np.full((count, 3), np.nan)
    extent = np.full((count, 3), np.nan)
    if depth_m is not None:
        pixel_depth = depth_m.reshape(-1)[flat]
        with_depth = valid_depth(pixel_depth)
        d_flat, d_ids, d_depth = flat[with_depth], ids[with_depth], pixel_depth[with_depth]
        depth_pixels = np.bincount(d_ids, minlength=count + 1)[1:]
        median = per_component_median(d_ids, d_depth, count)
        present = np.flatnonzero(depth_pixels)
        d_starts = np.searchsorted(d_ids, present + 1)
        if present.size:
            nearest[present] = np.minimum.reduceat(d_depth.astype(np.float64), d_starts)
        if intrinsics is not None and present.size:
            d_rows, d_cols = np.divmod(d_flat, mask.shape[1])
            points = backproject(depth_m, intrinsics, d_rows, d_cols).astype(np.float64)
            centroid[present] = np.add.reduceat(points, d_starts, axis=0) / depth_pixels[present, None]
            # A pixel covers its footprint around its centre's ray: x and y reach half of it further.
            half = np.zeros_like(points)
            half[:, 0] = points[:, 2] / (2 * intrinsics.fx)
            half[:, 1] = points[:, 2] / (2 * intrinsics.fy)
            extent[present] = np.maximum.reduceat(points + half, d_starts, axis=0) - np.minimum.reduceat(
                points - half, d_starts, axis=0
            )

    frontal = np.fmax(extent[:, 0], extent[:, 1])
    keep = ~(frontal < filters.min_size_m)  # NaN (no 3D) compares False: kept
    keep &= ~(nearest > filters.max_distance_m)
    objects = []
    for index in np.flatnonzero(keep):
        has_3d = not math.isnan(centroid[index, 0])
        x, _, z = centroid[index]
        objects.append(
            UnknownObject(
                id=len(objects),
                pixels=int(pixels[index]),
                bbox=tuple(int(v) for v in boxes[index]),  # type: ignore[arg-type]
                mean_score=float(mean_score[index]),
                max_score=float(max_score[index]),
                depth_pixels=int(depth_pixels[index]),
                nearest_m=_optional(nearest[index]),
                median_m=_optional(median[index]),
                centroid_m=tuple(float(v) for v in centroid[index]) if has_3d else None,  # type: ignore[arg-type]
                extent_m=tuple(float(v) for v in extent[index]) if has_3d else None,  # type: ignore[arg-type]
                bearing_rad=float(math.atan2(x, z)) if has_3d else None,
                lateral_m=float(x) if has_3d else None,
            )
        )
    return objects


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
