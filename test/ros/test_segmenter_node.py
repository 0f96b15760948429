"""The segmenter node against a real ROS 2: lifecycle, outputs and headers, bursts, bad input, parameters,
clean shutdown.

The node runs in its own process (``python -m openset_perception.ros.segmenter_node``) with a
random-weight checkpoint; a harness node in this process feeds two cameras with procedural street
frames, depth and (front only) camera_info. The steps run in file order against one node process
(module-scoped fixtures). ``node_parameters`` builds the node's parameter overrides: parametrise it to
run every step once per configuration. Skipped without rclpy. DDS stays on loopback and on a random
domain (test/conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rclpy")

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from conftest import TINY_CLASSES, make_tiny_card, make_tiny_model
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from openset_perception.checkpoint import save_checkpoint
from openset_perception.data.synthetic_streets import SyntheticStreets
from openset_perception.image_codec import image_to_numpy, numpy_to_image
from openset_perception.models import ArchitectureSpec
from openset_perception.runtime.outputs import (
    DEPTH_REPORT,
    IMAGE_OUTPUT_ENCODINGS,
    OUTPUT_NAMES,
    UNKNOWN_OBJECTS,
    UNKNOWN_POINTS,
)

pytestmark = pytest.mark.ros

MESSAGE_TYPES = {DEPTH_REPORT: DiagnosticArray, UNKNOWN_OBJECTS: MarkerArray, UNKNOWN_POINTS: PointCloud2}
# The unknown-object outputs depend on what the scene holds and on intrinsics (unknown_points needs a
# camera_info or focal_length_px): test/ros/test_unknown_objects.py checks them on a scene made for it.
PER_FRAME_OUTPUTS = tuple(o for o in OUTPUT_NAMES if o not in (UNKNOWN_OBJECTS, UNKNOWN_POINTS))

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "/openset_test"
NODE = f"{NAMESPACE}/segmenter"
CAMERAS = ("front", "rear")
HEIGHT, WIDTH = 240, 320
K = 8
DEPTH_BINS = 11  # the default edges 0, 5, ..., 50 m plus the bin beyond
SHUTDOWN_TIMEOUT_S = 30.0


@dataclass
class NodeProcess:
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def node_parameters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The node's parameter overrides (``-p name:=value``)."""
    # A full-width SwiftNet (random weights) at 240x320 takes several times 33 ms per camera pair on a
    # CPU, so the 30 Hz burst below must be thinned out by dropping.
    card = make_tiny_card(architecture=ArchitectureSpec("swiftnet_rn18", len(TINY_CLASSES), {"width": 1.0}))
    checkpoint = tmp_path_factory.mktemp("segmenter_node") / "swiftnet.safetensors"
    save_checkpoint(checkpoint, make_tiny_model(card), card)
    return {
        "model": str(checkpoint),
        "device": "cpu",
        "autostart": "false",
        "cameras": "[" + ",".join(CAMERAS) + "]",
        "warmup_shape": "[64,64]",
        "max_input_age": "30.0",  # on a busy CPU runner a frame may wait long; drops here mean overwritten
        "batch_window": "0.05",
        "diagnostics_period": "0.2",
    }


@pytest.fixture(scope="module")
def node_process(
    node_parameters: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    arguments = ["--ros-args", "-r", "__node:=segmenter", "-r", f"__ns:={NAMESPACE}"]
    for name, value in node_parameters.items():
        arguments += ["-p", f"{name}:={value}"]
    log = tmp_path_factory.mktemp("segmenter_node_log") / "node.log"
    command = [sys.executable, "-m", "openset_perception.ros.segmenter_node", *arguments]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    node = NodeProcess(process, log)
    yield node
    if process.poll() is None:
        process.kill()
        process.wait()
    print(f"segmenter node output:\n{node.output()}")  # shown when a step failed


@dataclass
class Received:
    msg: Any
    at: float  # monotonic arrival time


@dataclass
class Harness:
    """A test node: publishes camera frames, records every output and the node's health."""

    node: Node
    executor: SingleThreadedExecutor
    publishers: dict[tuple[str, str], Any]
    outputs: dict[tuple[str, str], list[Received]] = field(default_factory=dict)
    health: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, key: tuple[str, str], msg: Any) -> None:
        with self.lock:
            self.outputs.setdefault(key, []).append(Received(msg, time.monotonic()))

    def on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == f"{NODE}: health":
                with self.lock:
                    self.health.append({kv.key: kv.value for kv in status.values})

    def received(self, camera: str, output: str) -> list[Received]:
        with self.lock:
            return list(self.outputs.get((camera, output), []))

    def clear(self) -> None:
        with self.lock:
            self.outputs.clear()

    def latest_health(self, newer_than: int = 0, timeout_s: float = 10.0) -> dict[str, str]:
        """The newest health values once more than ``newer_than`` health messages have arrived."""
        wait_for(lambda: len(self.health) > newer_than, timeout_s, "a /diagnostics health status")
        with self.lock:
            return self.health[-1]

    def publish(self, camera: str, index: int, stamp: Time, malformed: dict | None = None) -> None:
        """Image, depth and, for the front camera, camera_info (all with one header) of frame ``index``."""
        image, depth = FRAMES[camera][index % len(FRAMES[camera])]
        header = Header(stamp=stamp, frame_id=f"{camera}_optical")
        image_msg = numpy_to_image(image, "rgb8", header, msg_factory=Image)
        if camera == "front":
            depth_msg = numpy_to_image(depth, "32FC1", header, msg_factory=Image)
        else:  # millimetres, 0 = invalid
            millimetres = np.nan_to_num(depth * 1000.0, nan=0.0).clip(0, 65535).astype(np.uint16)
            depth_msg = numpy_to_image(millimetres, "16UC1", header, msg_factory=Image)
        for name, value in (malformed or {}).items():
            target = depth_msg if name.startswith("depth_") else image_msg
            setattr(target, name.removeprefix("depth_"), value)
        self.publishers[(camera, "image")].publish(image_msg)
        self.publishers[(camera, "depth")].publish(depth_msg)
        if (camera, "camera_info") in self.publishers:  # after the image, as drivers do
            info = CameraInfo(header=header, height=HEIGHT, width=WIDTH, distortion_model="plumb_bob")
            info.k = [200.0, 0.0, WIDTH / 2, 0.0, 200.0, HEIGHT / 2, 0.0, 0.0, 1.0]
            self.publishers[(camera, "camera_info")].publish(info)

    def call(self, service_type: Any, name: str, request: Any, timeout_s: float = 60.0) -> Any:
        client = self.node.create_client(service_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout_s), f"service {name} not available"
            future = client.call_async(request)
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            assert done.wait(timeout_s), f"service {name} did not answer in {timeout_s} s"
            return future.result()
        finally:
            self.node.destroy_client(client)

    def stamp(self) -> Time:
        return self.node.get_clock().now().to_msg()


def _frames(stream: int) -> list[tuple[np.ndarray, np.ndarray]]:
    streets = SyntheticStreets(4, seed=3, height=HEIGHT, width=WIDTH, anomalies=True, stream=stream)
    return [(s.image, s.depth) for s in (streets[i] for i in range(len(streets)))]


FRAMES = {camera: _frames(stream) for stream, camera in enumerate(CAMERAS)}


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.02)


def stamp_key(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def start_harness() -> Harness:
    rclpy.init()
    node = rclpy.create_node("segmenter_test_harness")
    publishers = {}
    for camera in CAMERAS:
        for stream in ("image", "depth"):
            publishers[(camera, stream)] = node.create_publisher(Image, f"{NAMESPACE}/{camera}/{stream}", 10)
    front_info = f"{NAMESPACE}/front/camera_info"
    publishers[("front", "camera_info")] = node.create_publisher(CameraInfo, front_info, 10)
    harness = Harness(node, SingleThreadedExecutor(), publishers)
    for camera in CAMERAS:
        for output in OUTPUT_NAMES:
            msg_type = MESSAGE_TYPES.get(output, Image)
            node.create_subscription(
                msg_type,
                f"{NAMESPACE}/{camera}/{output}",
                lambda m, k=(camera, output): harness.record(k, m),
                10,
            )
    node.create_subscription(DiagnosticArray, "/diagnostics", harness.on_diagnostics, 10)
    harness.executor.add_node(node)
    threading.Thread(target=harness.executor.spin, daemon=True).start()
    return harness


def stop_harness(harness: Harness) -> None:
    harness.executor.shutdown()
    harness.node.destroy_node()
    rclpy.try_shutdown()


def change_state(harness: Harness, transition: int) -> None:
    request = ChangeState.Request()
    request.transition.id = transition
    assert harness.call(ChangeState, f"{NODE}/change_state", request).success


def state_of(harness: Harness, timeout_s: float = 60.0) -> int:
    return harness.call(GetState, f"{NODE}/get_state", GetState.Request(), timeout_s).current_state.id


def set_parameters(harness: Harness, **values: Any) -> list[Any]:
    request = SetParameters.Request(
        parameters=[Parameter(n, value=v).to_parameter_msg() for n, v in values.items()]
    )
    return harness.call(SetParameters, f"{NODE}/set_parameters", request).results


def feed_until(
    harness: Harness, done: Callable[[], bool], timeout_s: float, rate_hz: float = 4.0
) -> list[int]:
    """Publish frames on both cameras until ``done()``; return the stamps sent."""
    sent = []
    deadline = time.monotonic() + timeout_s
    index = 0
    while not done():
        assert time.monotonic() < deadline, f"outputs incomplete after {timeout_s} s of frames"
        stamp = harness.stamp()
        for camera in CAMERAS:
            harness.publish(camera, index, stamp)
        sent.append(stamp_key(stamp))
        index += 1
        time.sleep(1.0 / rate_hz)
    return sent


MALFORMED = [
    {"encoding": "yuv422"},
    {"encoding": ""},
    {"data": bytes(10)},  # shorter than step * height
    {"data": bytes(HEIGHT * WIDTH * 3 + 7)},  # longer
    {"height": 0, "width": 0, "step": 0, "data": b""},
    {"step": WIDTH},  # rows narrower than the pixels
    {"height": 16, "width": 16, "step": 48, "data": bytes(16 * 48)},  # smaller than the network takes
    {"encoding": "32FC1", "step": WIDTH * 4, "data": bytes(HEIGHT * WIDTH * 4)},  # depth where colour belongs
    {"depth_height": HEIGHT // 2},  # depth of another size (data fixed per camera below)
    {"depth_encoding": "rgb8"},
]


@pytest.fixture(scope="module")
def harness(node_process: NodeProcess) -> Iterator[Harness]:
    harness = start_harness()
    yield harness
    stop_harness(harness)


def test_1_lifecycle_configure_and_activate(harness: Harness) -> None:
    h = harness
    assert state_of(h) == State.PRIMARY_STATE_UNCONFIGURED  # autostart is off
    change_state(h, Transition.TRANSITION_CONFIGURE)
    assert state_of(h) == State.PRIMARY_STATE_INACTIVE
    change_state(h, Transition.TRANSITION_ACTIVATE)
    assert state_of(h) == State.PRIMARY_STATE_ACTIVE


def test_2_every_output_arrives_with_the_input_header_encoding_and_size(harness: Harness) -> None:
    h = harness
    h.clear()
    keys = [(camera, output) for camera in CAMERAS for output in PER_FRAME_OUTPUTS]
    sent = set(feed_until(h, lambda: all(h.received(*k) for k in keys), timeout_s=60.0))
    for camera, output in keys:
        for item in h.received(camera, output):
            header = item.msg.header
            assert header.frame_id == f"{camera}_optical", (camera, output)
            assert stamp_key(header.stamp) in sent, (camera, output)
            if output == DEPTH_REPORT:
                assert len(item.msg.status) == DEPTH_BINS
                assert all(s.name.startswith(f"{camera} depth ") for s in item.msg.status)
                assert {s.level for s in item.msg.status} <= {b"\x00", b"\x01"}
                continue
            msg = item.msg
            expected = (IMAGE_OUTPUT_ENCODINGS[output], HEIGHT, WIDTH)
            assert (msg.encoding, msg.height, msg.width) == expected, (camera, output)
            if output == "anomaly_score":
                assert np.isfinite(image_to_numpy(msg)).all()

    for camera in CAMERAS:  # the maps of one frame agree with each other
        by_stamp: dict[int, dict[str, np.ndarray]] = {}
        for output in ("semantic", "open_set", "anomaly_mask"):
            for item in h.received(camera, output):
                maps = by_stamp.setdefault(stamp_key(item.msg.header.stamp), {})
                maps[output] = image_to_numpy(item.msg)
        complete = [maps for maps in by_stamp.values() if len(maps) == 3]
        assert complete, camera
        for maps in complete:
            assert maps["semantic"].max() < K
            np.testing.assert_array_equal(maps["anomaly_mask"], (maps["open_set"] == K) * 255)
            known = maps["open_set"] < K
            np.testing.assert_array_equal(maps["open_set"][known], maps["semantic"][known])


def test_3_health_is_published_on_diagnostics(harness: Harness) -> None:
    health = harness.latest_health(newer_than=len(harness.health))
    assert (health["device"], health["precision"], health["active"]) == ("cpu", "fp32", "true")
    assert int(health["frames_received"]) > 0 and int(health["frames_processed"]) > 0
    assert 0 < float(health["latency_p50_ms"]) <= float(health["latency_p95_ms"])
    for key in ("input_rate_hz", "output_rate_hz", "frames_dropped", "bad_inputs", "frames_unpaired"):
        assert key in health


def test_4_a_burst_is_dropped_not_queued_and_the_node_stays_responsive(harness: Harness) -> None:
    h = harness
    time.sleep(1.0)  # let earlier frames drain; one still in flight is not counted below either
    before = h.latest_health(newer_than=len(h.health))
    h.clear()
    sent: list[int] = []
    for index in range(100):
        stamp = h.stamp()
        for camera in CAMERAS:
            h.publish(camera, index, stamp)
        sent.append(stamp_key(stamp))
        time.sleep(1.0 / 30.0)
    burst_end = time.monotonic()
    assert state_of(h, timeout_s=5.0) == State.PRIMARY_STATE_ACTIVE  # services still answer
    assert time.monotonic() - burst_end < 5.0

    def last_frame_out() -> bool:
        return all(
            any(stamp_key(r.msg.header.stamp) == sent[-1] for r in h.received(c, "overlay")) for c in CAMERAS
        )

    wait_for(last_frame_out, 30.0, "the burst's last frame to come out")
    time.sleep(1.0)  # nothing more may come: there is no queue behind the last frame
    after = h.latest_health(newer_than=len(h.health))

    burst = set(sent)
    outputs = 0
    for camera in CAMERAS:
        received = [r for r in h.received(camera, "overlay") if stamp_key(r.msg.header.stamp) in burst]
        stamps = [stamp_key(r.msg.header.stamp) for r in received]
        assert stamps == sorted(stamps) and stamps[-1] == sent[-1], camera  # never an older frame
        assert sum(r.at > burst_end for r in received) <= 3, "frames were queued behind the burst"
        outputs += len(stamps)

    def delta(key: str) -> int:
        return int(after[key]) - int(before[key])

    # Every frame that reached the node was either processed or counted as dropped.
    assert delta("frames_processed") == outputs
    assert delta("frames_received") == delta("frames_processed") + delta("frames_dropped")
    assert outputs < 2 * len(sent) and delta("frames_dropped") > 0


def test_5_malformed_messages_are_skipped_and_the_node_carries_on(harness: Harness) -> None:
    h = harness
    before = h.latest_health(newer_than=len(h.health))
    for index, malformed in enumerate(MALFORMED):  # 10 kinds x 2 cameras = 20 malformed messages
        stamp = h.stamp()
        for camera in CAMERAS:
            fields = dict(malformed)
            if "depth_height" in fields:  # a consistent depth image, just smaller than the colour one
                bytes_per_pixel = 4 if camera == "front" else 2
                fields["depth_data"] = bytes(HEIGHT // 2 * WIDTH * bytes_per_pixel)
            h.publish(camera, index, stamp, fields)
        time.sleep(0.1)
    h.clear()
    feed_until(h, lambda: all(h.received(c, "overlay") for c in CAMERAS), timeout_s=30.0)
    after = h.latest_health(newer_than=len(h.health))
    assert int(after["bad_inputs"]) - int(before["bad_inputs"]) >= 15
    assert int(after["failed_batches"]) == int(before["failed_batches"])


def test_6_run_time_parameters_are_validated_and_applied(harness: Harness) -> None:
    h = harness
    (accepted,) = set_parameters(h, threshold=-1e9)
    assert accepted.successful
    h.clear()

    def all_unknown() -> bool:
        masks = [image_to_numpy(r.msg) for r in h.received("front", "anomaly_mask")]
        return any((mask == 255).all() for mask in masks)

    feed_until(h, all_unknown, timeout_s=30.0)
    assert set_parameters(h, threshold=float("nan"))[0].successful

    (refused,) = set_parameters(h, danger_range=[20.0, 5.0])
    assert not refused.successful and "danger_range" in refused.reason
    (read_only,) = set_parameters(h, model="other.safetensors")
    assert not read_only.successful
    (wrong_type,) = set_parameters(h, max_input_age="soon")
    assert not wrong_type.successful


def test_7_deactivate_stops_outputs_and_cleanup_unconfigures(harness: Harness) -> None:
    h = harness
    change_state(h, Transition.TRANSITION_DEACTIVATE)
    assert state_of(h) == State.PRIMARY_STATE_INACTIVE
    time.sleep(0.5)
    h.clear()
    for index in range(5):
        stamp = h.stamp()
        for camera in CAMERAS:
            h.publish(camera, index, stamp)
        time.sleep(0.2)
    time.sleep(1.0)
    assert all(not h.received(c, o) for c in CAMERAS for o in OUTPUT_NAMES)
    change_state(h, Transition.TRANSITION_CLEANUP)
    assert state_of(h) == State.PRIMARY_STATE_UNCONFIGURED


def test_8_the_node_exits_cleanly_on_sigint(node_process: NodeProcess) -> None:
    node_process.process.send_signal(signal.SIGINT)
    try:
        code = node_process.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the node did not exit within {SHUTDOWN_TIMEOUT_S} s of SIGINT")
    text = node_process.output()
    assert code == 0, text
    assert "Traceback" not in text, text
