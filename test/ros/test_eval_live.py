"""eval-live against a real ROS 2: the executable scores published node outputs against ground truth.

Runs ``python -m openset_perception.ros.eval_live`` in its own process (so ``main``, its argument
parsing and the idle timeout are covered) while this test plays the role of both ``ros2 bag play``
(images, depth, ground truth) and the segmenter node (score, semantic and open-set maps; frame 2 is
"dropped"). It starts publishing only once discovery has finished both ways: its publishers have
matched eval-live's readers, and eval-live says that its readers have matched every publisher (a
volatile reader drops what was sent before). Skipped without rclpy. DDS stays on loopback and on a
random domain (test/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_CLASSES

pytest.importorskip("rclpy")

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from openset_perception.data.synthetic_streets import SyntheticStreets
from openset_perception.evaluation.accumulate import EvaluationAccumulator
from openset_perception.evaluation.report import jsonable
from openset_perception.image_codec import numpy_to_image
from openset_perception.ros.eval_live import CONNECTED_MESSAGE

pytestmark = pytest.mark.ros

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "/eval_live_test"
CAMERA = "front"
FRAMES, DROPPED, K = 5, 2, 8
# Inputs as the bag plays them, then the node's outputs.
STREAMS = ("image", "depth", "gt/anomaly", "gt/semantic", "anomaly_score", "semantic", "open_set")


def _frames() -> list[dict[str, np.ndarray]]:
    """Street frames with made-up node outputs (any maps do: eval-live only scores what it receives)."""
    streets = SyntheticStreets(FRAMES, seed=5, height=48, width=64, anomalies=True)
    rng = np.random.default_rng(0)
    frames = []
    for index in range(FRAMES):
        sample = streets[index]
        score = (rng.normal(0, 1, sample.anomaly.shape) + 2.0 * (sample.anomaly == 1)).astype(np.float32)
        frames.append(
            {
                "image": sample.image,
                "depth": sample.depth,
                "gt/anomaly": sample.anomaly,
                "gt/semantic": sample.semantic,
                "anomaly_score": score,
                "semantic": rng.integers(0, K, sample.anomaly.shape, dtype=np.uint8),
                "open_set": rng.integers(0, K + 1, sample.anomaly.shape, dtype=np.uint8),
            }
        )
    return frames


ENCODINGS = {
    "image": "rgb8",
    "depth": "32FC1",
    "gt/anomaly": "mono8",
    "gt/semantic": "mono8",
    "anomaly_score": "32FC1",
    "semantic": "mono8",
    "open_set": "mono8",
}


def _reference(frames: list[dict[str, np.ndarray]], class_names: list[str]) -> dict:
    accumulator = EvaluationAccumulator(class_names, mode="exact")
    for index, frame in enumerate(frames):
        if index != DROPPED:
            accumulator.update(
                frame["anomaly_score"],
                frame["semantic"],
                frame["open_set"],
                frame["gt/anomaly"],
                frame["gt/semantic"],
                frame["depth"],
            )
    return jsonable(accumulator.compute())


def test_eval_live_scores_node_outputs_against_ground_truth(tiny_checkpoint: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "live"
    command = [
        sys.executable,
        "-m",
        "openset_perception.ros.eval_live",
        "--checkpoint",
        str(tiny_checkpoint),
        "--camera",
        CAMERA,
        "--out",
        str(out),
        "--exact",
        "--idle-timeout",
        "2",
        "--ros-args",
        "-r",
        f"__ns:={NAMESPACE}",
    ]
    log = tmp_path / "eval_live.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    frames = _frames()
    rclpy.init()
    node = Node("eval_live_feeder", namespace=NAMESPACE)
    try:
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        publishers = {stream: node.create_publisher(Image, f"{CAMERA}/{stream}", qos) for stream in STREAMS}
        deadline = time.monotonic() + 60.0
        while any(
            p.get_subscription_count() == 0 for p in publishers.values()
        ) or CONNECTED_MESSAGE not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, f"no discovery both ways in 60 s:\n{log.read_text()}"
            assert process.poll() is None, f"eval_live exited early:\n{log.read_text()}"
            rclpy.spin_once(node, timeout_sec=0.1)
        for index, frame in enumerate(frames):
            header = Header(stamp=Time(sec=1000, nanosec=index * 100_000_000), frame_id="front_optical")
            for stream in STREAMS[:4] if index == DROPPED else STREAMS:
                message = numpy_to_image(frame[stream], ENCODINGS[stream], header, msg_factory=Image)
                publishers[stream].publish(message)
                if stream == "gt/semantic":
                    time.sleep(0.02)  # the node's outputs come after its inputs
            time.sleep(0.05)
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
        node.destroy_node()
        rclpy.try_shutdown()

    metrics = json.loads((out / "metrics.json").read_text())
    expected = _reference(frames, TINY_CLASSES)
    for section in ("anomaly", "segmentation", "per_distance"):
        assert metrics[section] == expected[section], section  # same arrays, lossless transport
    assert metrics["frames"]["evaluated"] == FRAMES - 1
    assert metrics["frames"]["skipped: ground truth without node output"] == 1
    # Input images are subscribed best effort, so a lost one only costs a latency sample.
    assert 1 <= metrics["latency_ms"]["node end-to-end"]["calls"] <= FRAMES - 1
    assert (out / "report.md").is_file()
