"""sensor_msgs PointCloud2 <-> numpy for the unknown-object cloud (x, y, z, score as float32), without rclpy.

The cloud is unorganised (height 1) and holds only points with valid depth, so ``is_dense`` is true
(no NaN point). Little-endian, 16 bytes per point. The message is built by a factory as in
``image_codec`` (rclpy or rosbags classes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from openset_perception.image_codec import MessageFactory, _build_message

FLOAT32 = 7  # sensor_msgs/PointField.FLOAT32
CLOUD_FIELDS = ("x", "y", "z", "score")
POINT_STEP = 4 * len(CLOUD_FIELDS)


def numpy_to_pointcloud2(
    points: np.ndarray, header: Any, *, msg_factory: MessageFactory, field_factory: MessageFactory
) -> Any:
    """A PointCloud2 of (N, 4) float32 rows x, y, z, score."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != len(CLOUD_FIELDS):
        raise ValueError(f"points must be (N, {len(CLOUD_FIELDS)}), got shape {points.shape}")
    data = np.ascontiguousarray(points, dtype="<f4").tobytes()
    fields = [
        field_factory(name=name, offset=4 * index, datatype=FLOAT32, count=1)
        for index, name in enumerate(CLOUD_FIELDS)
    ]
    return _build_message(
        msg_factory,
        header,
        {
            "height": 1,
            "width": int(points.shape[0]),
            "fields": fields,
            "is_bigendian": False,
            "point_step": POINT_STEP,
            "row_step": POINT_STEP * int(points.shape[0]),
            "data": data,
            "is_dense": True,
        },
    )


def pointcloud2_to_numpy(message: Any) -> np.ndarray:
    """(N, 4) float32 x, y, z, score of a cloud written by :func:`numpy_to_pointcloud2`."""
    names = [field.name for field in message.fields]
    offsets = [field.offset for field in message.fields]
    if names != list(CLOUD_FIELDS) or offsets != [0, 4, 8, 12] or message.point_step != POINT_STEP:
        raise ValueError(f"expected float32 fields {CLOUD_FIELDS} at 0, 4, 8, 12; got {names} at {offsets}")
    if message.is_bigendian:
        raise ValueError("big-endian clouds are not supported")
    data = np.frombuffer(bytes(message.data), dtype="<f4")
    return data.reshape(-1, len(CLOUD_FIELDS)).astype(np.float32)
