"""The node's subscriptions hand each image to the runtime with the depth image and camera_info of its
stamp, whatever order they arrive in; an image without depth is held back, one without camera_info is
not. The node runs in this process (its own rclpy context) so that the frames it hands on can be read.
Skipped without rclpy; DDS stays on loopback (test/conftest.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from openset_perception.image_codec import numpy_to_image
from openset_perception.ros.segmenter_node import SegmenterNode
from openset_perception.runtime.frame_buffer import CameraFrame

pytestmark = pytest.mark.ros

NAMESPACE = "/pairing_test"
BASE_NS = 1_000 * 10**9
PERIOD_NS = 33_333_333


class Running:
    def __init__(self, checkpoint: Path) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        overrides = [
            Parameter("model", value=str(checkpoint)),
            Parameter("device", value="cpu"),
            Parameter("autostart", value=False),
            Parameter("warmup_shape", value=[0, 0]),
            Parameter("max_input_age", value=0.0),
        ]
        self.node = SegmenterNode(context=self.context, namespace=NAMESPACE, parameter_overrides=overrides)
        self.feeder = rclpy.create_node("pairing_feeder", namespace=NAMESPACE, context=self.context)
        self.publishers = {
            stream: self.feeder.create_publisher(msg_type, f"camera/{stream}", 10)
            for stream, msg_type in (("image", Image), ("depth", Image), ("camera_info", CameraInfo))
        }
        self.frames: list[CameraFrame] = []
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.feeder)
        assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        buffer = self.node._runtime.buffer  # what the subscriptions hand to the worker is recorded here
        put = buffer.put
        buffer.put = lambda frame: (self.frames.append(frame), put(frame))
        assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        wait_for(lambda: all(p.get_subscription_count() > 0 for p in self.publishers.values()))

    def stop(self) -> None:
        self.node.release()
        self.executor.shutdown()
        self.node.destroy_node()
        self.feeder.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def send(self, stream: str, index: int) -> None:
        """Frame ``index`` of a 30 Hz camera; camera_info carries the index in its focal length."""
        stamp_ns = BASE_NS + index * PERIOD_NS
        header = Header(
            stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id="camera_optical"
        )
        if stream == "camera_info":
            message = CameraInfo(header=header, height=48, width=64)
            message.k = [float(index), 0.0, 32.0, 0.0, float(index), 24.0, 0.0, 0.0, 1.0]
        elif stream == "image":
            message = numpy_to_image(np.full((48, 64, 3), index, np.uint8), "rgb8", header, msg_factory=Image)
        else:
            message = numpy_to_image(np.full((48, 64), 5.0, np.float32), "32FC1", header, msg_factory=Image)
        self.publishers[stream].publish(message)

    def indices(self) -> list[tuple]:
        """(image, depth, camera_info) frame index of each frame handed to the runtime."""
        return [
            (
                index_of(frame.header),
                index_of(frame.depth_msg.header),
                None
                if frame.camera_info is None
                else (index_of(frame.camera_info.header), frame.camera_info.k[0]),
            )
            for frame in self.frames
        ]


def index_of(header: Header) -> int:
    return round((header.stamp.sec * 10**9 + header.stamp.nanosec - BASE_NS) / PERIOD_NS)


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s"
        time.sleep(0.02)


@pytest.fixture
def running(tiny_checkpoint: Path) -> Iterator[Running]:
    running = Running(tiny_checkpoint)
    yield running
    running.stop()


def send_in_order(running: Running, index: int, order: tuple[str, ...]) -> None:
    for stream in order:
        running.send(stream, index)
        time.sleep(0.05)  # so they arrive in this order
    wait_for(lambda: any(index_of(f.header) == index for f in running.frames))


def test_image_depth_and_camera_info_of_one_stamp_reach_the_runtime_together(running: Running) -> None:
    orders = [
        ("image", "depth", "camera_info"),  # 0: camera_info never seen yet: not waited for
        ("image", "depth", "camera_info"),  # 1: camera_info has been seen: waited for from now on
        ("camera_info", "depth", "image"),
        ("depth", "image", "camera_info"),
        ("camera_info", "image", "depth"),
    ]
    for index, order in enumerate(orders):
        send_in_order(running, index, order)
    assert running.indices() == [(0, 0, None)] + [(i, i, (i, float(i))) for i in range(1, 5)]


def test_an_image_waits_for_its_depth_but_not_for_a_camera_info_that_never_comes(running: Running) -> None:
    running.send("image", 0)
    time.sleep(0.5)
    assert running.frames == []  # held back: depth is required
    running.send("depth", 0)
    wait_for(lambda: len(running.frames) == 1)
    assert running.indices() == [(0, 0, None)]
