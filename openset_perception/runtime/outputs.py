"""Per-camera output images from the engine's maps, computing only the outputs someone asked for."""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np

from openset_perception.runtime.camera_batch import FrameMaps
from openset_perception.visualize import heatmap, overlay

IMAGE_OUTPUT_ENCODINGS = {
    "semantic": "mono8",  # train ids
    "anomaly_score": "32FC1",  # higher = more anomalous, finite
    "open_set": "mono8",  # train ids, K = unknown
    "anomaly_mask": "mono8",  # 255 = anomalous, 0 = not
    "overlay": "rgb8",  # palette over the image, unknown pixels highlighted
    "anomaly_heatmap": "rgb8",  # score over a fixed colour range
}
DEPTH_REPORT = "depth_report"
UNKNOWN_OBJECTS = "unknown_objects"  # visualization_msgs/MarkerArray
UNKNOWN_POINTS = "unknown_points"  # sensor_msgs/PointCloud2
OUTPUT_NAMES = (*IMAGE_OUTPUT_ENCODINGS, DEPTH_REPORT, UNKNOWN_OBJECTS, UNKNOWN_POINTS)
# Outputs made from the depth image: advertised only with use_depth.
DEPTH_OUTPUTS = (DEPTH_REPORT, UNKNOWN_OBJECTS, UNKNOWN_POINTS)

# Engine maps each output is made from; the mask and overlay reuse the open-set map (uint8, cheap to copy).
_ENGINE_MAPS = {
    "semantic": ("semantic",),
    "anomaly_score": ("anomaly_score",),
    "open_set": ("open_set",),
    "anomaly_mask": ("open_set",),
    "overlay": ("open_set",),
    "anomaly_heatmap": ("anomaly_score",),
    DEPTH_REPORT: ("depth_report", "anomaly_score", "open_set"),  # the report lists the objects too
    UNKNOWN_OBJECTS: ("anomaly_score", "open_set"),
    UNKNOWN_POINTS: ("anomaly_score", "open_set"),
}


@dataclass(frozen=True)
class RenderStyle:
    palette: np.ndarray  # (K, 3) uint8
    overlay_alpha: float = 0.5
    heatmap_range: tuple[float, float] = (-5.0, 5.0)

    @property
    def num_classes(self) -> int:
        return len(self.palette)


def engine_outputs(requested: Iterable[str]) -> tuple[str, ...]:
    """The engine outputs needed for ``requested`` node outputs, in the engine's order."""
    requested = set(requested)
    unknown = requested - set(OUTPUT_NAMES)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}; choose from {OUTPUT_NAMES}")
    needed = {name for output in requested for name in _ENGINE_MAPS[output]}
    return tuple(name for name in ("semantic", "anomaly_score", "open_set", "depth_report") if name in needed)


def heatmap_range(threshold: float, span: float) -> tuple[float, float]:
    """Colour range of the heat map: ``span`` wide, centred on the threshold (on 0 if it is not finite).

    Fixed for a given threshold, so a colour means the same score in every frame and the decision
    boundary sits in the middle of the colour map.
    """
    if not span > 0:
        raise ValueError(f"heat map span must be > 0, got {span}")
    centre = threshold if math.isfinite(threshold) else 0.0
    return centre - span / 2, centre + span / 2


def render_image_outputs(
    image: np.ndarray, maps: FrameMaps, requested: Collection[str], style: RenderStyle
) -> dict[str, np.ndarray]:
    """Arrays for the requested image outputs (dtype and channels match IMAGE_OUTPUT_ENCODINGS)."""
    rendered: dict[str, np.ndarray] = {}
    for name in IMAGE_OUTPUT_ENCODINGS:
        if name in requested:
            rendered[name] = _render(name, image, maps, style)
    return rendered


def _render(name: str, image: np.ndarray, maps: FrameMaps, style: RenderStyle) -> np.ndarray:
    if name == "semantic":
        return _required(maps.semantic, name)
    if name == "anomaly_score":
        return _required(maps.anomaly_score, name).astype(np.float32, copy=False)
    if name == "open_set":
        return _required(maps.open_set, name)
    if name == "anomaly_mask":
        unknown = _required(maps.open_set, name) == style.num_classes
        return unknown.view(np.uint8) * np.uint8(255)
    if name == "overlay":
        return overlay(image, _required(maps.open_set, name), style.palette, alpha=style.overlay_alpha)
    vmin, vmax = style.heatmap_range
    return heatmap(_required(maps.anomaly_score, name), vmin, vmax)


def _required(array: np.ndarray | None, output: str) -> np.ndarray:
    if array is None:
        raise ValueError(f"output '{output}' needs an engine map that was not computed")
    return array
