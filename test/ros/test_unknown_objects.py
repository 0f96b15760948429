"""unknown_objects (MarkerArray) and unknown_points (PointCloud2) from the node running as its own process.

A tiny random-weight checkpoint and a threshold below every score make the whole frame one unknown
object at the depth image's constant 6 m. First without camera_info: the node says once that the 3D
outputs are off and its marker arrays hold only the DELETEALL; then with camera_info: a box and the
text "unknown, 6.0 m" in the image's frame, and a cloud of the decimated pixels at z = 6 m. Every
message must carry the header of an image we sent. Skipped without rclpy; DDS stays on loopback
(test/conftest.py sets the environment the node process inherits).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

import rclpy
from builtin_interfaces.msg import Time
from conftest import make_tiny_card, make_tiny_model
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from openset_perception.checkpoint import save_checkpoint
from openset_perception.image_codec import numpy_to_image
from openset_perception.point_cloud_codec import pointcloud2_to_numpy

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "/objects_test"
HEIGHT, WIDTH = 48, 64
DEPTH_M = 6.0
FOCAL_PX = 50.0
DECIMATION = 4
FRAME_ID = "cam_optical_frame"
TIMEOUT_S = 120.0


class _Harness:
    def __init__(self) -> None:
        self.node = rclpy.create_node("objects_harness", namespace=NAMESPACE)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        sensor = QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.image = self.node.create_publisher(Image, "cam/image", sensor)
        self.depth = self.node.create_publisher(Image, "cam/depth", sensor)
        self.info = self.node.create_publisher(CameraInfo, "cam/camera_info", sensor)
        self.markers: list[MarkerArray] = []
        self.clouds: list[PointCloud2] = []
        self.node.create_subscription(MarkerArray, "cam/unknown_objects", self.markers.append, 10)
        self.node.create_subscription(PointCloud2, "cam/unknown_points", self.clouds.append, 10)
        self.sent_stamps: set[tuple[int, int]] = set()
        self._count = 0

    def publish_frame(self, with_info: bool) -> None:
        self._count += 1
        header = Header(stamp=Time(sec=1000 + self._count, nanosec=5000), frame_id=FRAME_ID)
        image = np.random.default_rng(self._count).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        depth = np.full((HEIGHT, WIDTH), DEPTH_M, np.float32)
        if with_info:
            info = CameraInfo(header=header, height=HEIGHT, width=WIDTH, distortion_model="plumb_bob")
            info.k = [FOCAL_PX, 0.0, (WIDTH - 1) / 2, 0.0, FOCAL_PX, (HEIGHT - 1) / 2, 0.0, 0.0, 1.0]
            self.info.publish(info)
        self.sent_stamps.add((header.stamp.sec, header.stamp.nanosec))
        self.image.publish(numpy_to_image(image, "rgb8", header, msg_factory=Image))
        self.depth.publish(numpy_to_image(depth, "32FC1", header, msg_factory=Image))

    @staticmethod
    def failed(log: list[str]) -> bool:
        return any("failed" in line for line in log)

    def spin_until(self, done, with_info: bool, process: subprocess.Popen, log: list[str]) -> bool:
        deadline = time.monotonic() + TIMEOUT_S
        next_frame = 0.0
        while time.monotonic() < deadline and process.poll() is None and not self.failed(log):
            if time.monotonic() >= next_frame:
                self.publish_frame(with_info)
                next_frame = time.monotonic() + 0.3
            self.executor.spin_once(timeout_sec=0.05)
            if done():
                return True
        return False


def _input_header(harness: _Harness, header: Header) -> bool:
    return header.frame_id == FRAME_ID and (header.stamp.sec, header.stamp.nanosec) in harness.sent_stamps


@pytest.fixture
def node_process(tmp_path: Path):
    card = make_tiny_card()
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, make_tiny_model(card), card)
    parameters = {
        "model": str(checkpoint),
        "device": "cpu",
        "cameras": "[cam]",
        "outputs": "[unknown_objects,unknown_points,depth_report]",
        "warmup_shape": "[0,0]",
        "max_input_age": "0.0",
        "threshold": "-1.0e+30",
        "object_min_pixels": "1",
        "cloud_decimation": str(DECIMATION),
    }
    arguments = ["--ros-args", "-r", "__node:=segmenter", "-r", f"__ns:={NAMESPACE}"]
    for name, value in parameters.items():
        arguments += ["-p", f"{name}:={value}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "openset_perception.ros.segmenter_node", *arguments],
        cwd=REPO_ROOT,
        # An empty ament index: the model path is absolute, but the node asks the index for its share dir.
        env={**os.environ, "PYTHONUNBUFFERED": "1", "AMENT_PREFIX_PATH": str(tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(iter(process.stdout.readline, "")), daemon=True)
    reader.start()
    yield process, log
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_objects_and_points_arrive_with_the_input_header(node_process) -> None:
    process, log = node_process
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    rclpy.init()
    try:
        harness = _Harness()
        # Without camera_info: marker arrays arrive, holding only the DELETEALL; no cloud.
        assert harness.spin_until(
            lambda: len(harness.markers) >= 2, with_info=False, process=process, log=log
        ), "".join(log)
        first = harness.markers[-1]
        assert [m.action for m in first.markers] == [Marker.DELETEALL]
        assert _input_header(harness, first.markers[0].header)
        assert harness.clouds == []
        notices = [line for line in log if "no camera_info" in line]
        assert len(notices) == 1 and "focal_length_px" in notices[0], "".join(log)

        # With camera_info: a box, its text and the cloud.
        harness.markers.clear()

        def boxes_and_cloud() -> bool:
            return any(len(a.markers) == 3 for a in harness.markers) and bool(harness.clouds)

        assert harness.spin_until(boxes_and_cloud, with_info=True, process=process, log=log), "".join(log)
        array = next(a for a in harness.markers if len(a.markers) == 3)
        delete_all, box, text = array.markers
        assert delete_all.action == Marker.DELETEALL
        assert all(_input_header(harness, m.header) for m in array.markers)
        assert (box.type, box.ns, text.type, text.ns) == (Marker.CUBE, "cam", Marker.TEXT_VIEW_FACING, "cam")
        assert box.id != text.id
        assert box.pose.position.z == pytest.approx(DEPTH_M, rel=1e-4)
        assert box.pose.position.x == pytest.approx(0.0, abs=1e-3)
        assert box.scale.x == pytest.approx(WIDTH * DEPTH_M / FOCAL_PX, rel=1e-3)
        assert text.text == f"unknown, {DEPTH_M:.1f} m"
        assert 0.0 <= box.color.a <= 1.0 and 0.0 <= box.color.r <= 1.0

        cloud = harness.clouds[-1]
        assert _input_header(harness, cloud.header)
        points = pointcloud2_to_numpy(cloud)
        assert points.shape == (-(-HEIGHT // DECIMATION) * -(-WIDTH // DECIMATION), 4)
        np.testing.assert_allclose(points[:, 2], DEPTH_M)
        assert np.all(np.isfinite(points)) and np.abs(points[:, 0]).max() <= WIDTH / 2 * DEPTH_M / FOCAL_PX
        harness.node.destroy_node()
    finally:
        rclpy.try_shutdown()
