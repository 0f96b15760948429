"""Unknown objects and their points as ROS messages: a MarkerArray for RViz and a PointCloud2 for Nav2.

Markers follow the input image's header (the camera's optical frame; no TF lookup in the node). Each
array starts with a DELETEALL marker, so objects of the previous frame disappear whatever their
number; then per object a translucent box (id 2 i) and a text "unknown, 12.4 m" above it (id 2 i + 1),
in the namespace of the camera. Ids depend only on the object's rank in the frame, so they are stable
for a frame. Objects without a 3D position (no depth or intrinsics) get no marker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from openset_perception.objects import UnknownObject
from openset_perception.point_cloud_codec import numpy_to_pointcloud2

BOX_COLOUR = ColorRGBA(r=1.0, g=0.45, b=0.0, a=0.5)  # RViz colours are in [0, 1]
TEXT_COLOUR = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
TEXT_HEIGHT_M = 0.4
MIN_BOX_SIDE_M = 0.05  # a flat object still shows as a thin box


def object_label(obj: UnknownObject) -> str:
    """The marker text: "unknown, 12.4 m" (nearest valid depth), or "unknown" without depth."""
    return "unknown" if obj.nearest_m is None else f"unknown, {obj.nearest_m:.1f} m"


def marker_array(objects: Sequence[UnknownObject], header: Any, namespace: str) -> MarkerArray:
    markers = [Marker(header=header, ns=namespace, id=0, action=Marker.DELETEALL)]
    for obj in objects:
        if obj.centroid_m is None or obj.extent_m is None:
            continue
        x, y, z = obj.centroid_m
        sides = [max(side, MIN_BOX_SIDE_M) for side in obj.extent_m]
        markers.append(
            Marker(
                header=header,
                ns=namespace,
                id=2 * obj.id,
                type=Marker.CUBE,
                action=Marker.ADD,
                pose=_pose(x, y, z),
                scale=Vector3(x=sides[0], y=sides[1], z=sides[2]),
                color=BOX_COLOUR,
            )
        )
        # Optical frame: y points down, so "above the box" is towards -y.
        markers.append(
            Marker(
                header=header,
                ns=namespace,
                id=2 * obj.id + 1,
                type=Marker.TEXT_VIEW_FACING,
                action=Marker.ADD,
                pose=_pose(x, y - sides[1] / 2 - TEXT_HEIGHT_M, z),
                scale=Vector3(x=0.0, y=0.0, z=TEXT_HEIGHT_M),
                color=TEXT_COLOUR,
                text=object_label(obj),
            )
        )
    return MarkerArray(markers=markers)


def point_cloud(points: np.ndarray, header: Any) -> PointCloud2:
    return numpy_to_pointcloud2(points, header, msg_factory=PointCloud2, field_factory=PointField)


def _pose(x: float, y: float, z: float) -> Pose:
    return Pose(position=Point(x=float(x), y=float(y), z=float(z)), orientation=Quaternion(w=1.0))
