"""Unknown objects of one frame as diagnostic status records, beside the depth bins in ``depth_report``.

An object is WARN when its nearest valid depth lies inside the danger range (``danger_range``); its
size in pixels has already passed ``object_min_pixels``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from openset_perception.objects import UnknownObject
from openset_perception.runtime.depth_report import DangerZone
from openset_perception.runtime.status import Level, StatusRecord, format_number


def object_statuses(camera: str, objects: Sequence[UnknownObject], danger: DangerZone) -> list[StatusRecord]:
    """One status per object, named ``<camera> object <id>``."""
    return [_object_status(camera, obj, danger) for obj in objects]


def _object_status(camera: str, obj: UnknownObject, danger: DangerZone) -> StatusRecord:
    near = obj.nearest_m
    where = "no valid depth" if near is None else f"{near:.1f} m"
    if near is not None and danger.contains(near):
        level = Level.WARN
        message = f"unknown object at {where} ({obj.pixels} px), inside the danger range"
    else:
        level, message = Level.OK, f"unknown object at {where} ({obj.pixels} px)"
    x, y, width, height = obj.bbox
    values = {
        "pixels": str(obj.pixels),
        "bbox_xywh": f"{x} {y} {width} {height}",
        "mean_score": format_number(obj.mean_score, 4),
        "max_score": format_number(obj.max_score, 4),
        "nearest_m": format_number(obj.nearest_m),
        "median_m": format_number(obj.median_m),
    }
    if obj.centroid_m is not None and obj.extent_m is not None and obj.bearing_rad is not None:
        values["centroid_xyz_m"] = " ".join(format_number(v) for v in obj.centroid_m)
        values["extent_xyz_m"] = " ".join(format_number(v) for v in obj.extent_m)
        values["bearing_deg"] = format_number(math.degrees(obj.bearing_rad))
        values["lateral_m"] = format_number(obj.lateral_m)
    return StatusRecord(
        name=f"{camera} object {obj.id}", level=level, message=message, hardware_id=camera, values=values
    )
