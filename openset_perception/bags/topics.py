"""Topic names and message types of the bags, shared by make-bag, eval-bag, eval-live and the node.

Per camera ``<cam>`` (a ROS name such as ``front`` or ``front/left``)::

    <cam>/image                     sensor_msgs/Image, rgb8
    <cam>/image/compressed          sensor_msgs/CompressedImage (JPEG/PNG), instead of or beside image
    <cam>/depth                     sensor_msgs/Image, 32FC1 metres, NaN invalid
    <cam>/depth/compressedDepth     sensor_msgs/CompressedImage, read but never written
    <cam>/camera_info               sensor_msgs/CameraInfo
    <cam>/gt/anomaly                sensor_msgs/Image, mono8: 0 inlier, 1 anomaly, 255 ignore
    <cam>/gt/semantic               sensor_msgs/Image, mono8 train ids, K = unknown, 255 ignore
    <cam>/<output>                  the segmenter node's outputs (``runtime.parameters.output_topic``)

The node and the inputs resolve these relative names in one namespace; bags store them absolute.
"""

from __future__ import annotations

from typing import NamedTuple

from openset_perception.runtime.parameters import output_topic as output_topic  # one naming for all

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
DIAGNOSTIC_ARRAY = "diagnostic_msgs/msg/DiagnosticArray"

# Stream kinds: what a topic carries for its camera.
COLOR = "image"
COLOR_COMPRESSED = "image/compressed"
DEPTH = "depth"
DEPTH_COMPRESSED = "depth/compressedDepth"
CAMERA_INFO_KIND = "camera_info"
GT_ANOMALY = "gt/anomaly"
GT_SEMANTIC = "gt/semantic"

_KIND_TYPES = {
    COLOR: IMAGE,
    COLOR_COMPRESSED: COMPRESSED_IMAGE,
    DEPTH: IMAGE,
    DEPTH_COMPRESSED: COMPRESSED_IMAGE,
    CAMERA_INFO_KIND: CAMERA_INFO,
    GT_ANOMALY: IMAGE,
    GT_SEMANTIC: IMAGE,
}
# Longest suffix first, so "front/image/compressed" is not read as camera "front/image".
_KINDS_BY_LENGTH = sorted(_KIND_TYPES, key=len, reverse=True)


class CameraTopic(NamedTuple):
    camera: str
    kind: str  # one of the stream kinds above


def camera_topic(camera: str, kind: str) -> str:
    """Relative topic name of stream ``kind`` of ``camera``."""
    if kind not in _KIND_TYPES:
        raise ValueError(f"unknown stream kind '{kind}'; choose one of {', '.join(_KIND_TYPES)}")
    return f"{camera.strip('/')}/{kind}"


def message_type(kind: str) -> str:
    return _KIND_TYPES[kind]


def parse_camera_topic(topic: str, msgtype: str) -> CameraTopic | None:
    """The camera and stream kind of a bag topic, or None for topics that are none of ours.

    A topic counts only when its message type is the one its kind carries, so e.g. a node output
    ``front/depth_report`` or a std_msgs topic named ``x/image`` is never mistaken for an input.
    """
    name = topic.strip("/")
    for kind in _KINDS_BY_LENGTH:
        camera, separator, suffix = name.rpartition("/" + kind)
        if separator and not suffix and camera and _KIND_TYPES[kind] == msgtype:
            return CameraTopic(camera, kind)
    return None
