"""The segmenter node runs each engine runtime: one frame in, the engine's own maps out.

A plain pytest, one node process per runtime (``python -m openset_perception.ros.segmenter_node``
with ``runtime:=<name>``) and a tiny random-weight checkpoint; a harness node publishes one camera
frame until the outputs arrive and compares them with the engine run in this process under the same
runtime. Skipped without rclpy (and, for onnxruntime, without the package). DDS
stays on loopback (test/conftest.py) and on a random domain.
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

rclpy = pytest.importorskip("rclpy")

from conftest import make_tiny_card, make_tiny_model  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from openset_perception.checkpoint import save_checkpoint  # noqa: E402
from openset_perception.engine import RUNTIMES, Segmenter  # noqa: E402
from openset_perception.image_codec import image_to_numpy, numpy_to_image  # noqa: E402
from openset_perception.onnx_runtime import CACHE_ENV  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
HEIGHT, WIDTH = 96, 160
OUTPUTS = ("semantic", "anomaly_score")
TIMEOUT_S = 300.0  # onnxruntime exports the graph for the first size it meets (tens of s on a busy CPU)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_node_serves_a_frame_with_each_runtime(runtime: str, tmp_path: Path, monkeypatch) -> None:
    if runtime == "onnxruntime":
        pytest.importorskip("onnxruntime")
    card = make_tiny_card()
    checkpoint = tmp_path / "tiny.safetensors"
    save_checkpoint(checkpoint, make_tiny_model(card), card)
    image = np.random.default_rng(7).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # the node process inherits it
    expected = Segmenter.from_checkpoint(checkpoint, device="cpu", runtime=runtime).segment([image])

    namespace = f"/runtime_test_{runtime}_{random.randint(0, 99999)}"
    parameters = {
        "model": str(checkpoint),
        "device": "cpu",
        "runtime": runtime,
        "use_depth": "false",
        "warmup_shape": "[0,0]",
        "outputs": "[" + ",".join(OUTPUTS) + "]",
        "max_input_age": "600.0",
    }
    command = [sys.executable, "-m", "openset_perception.ros.segmenter_node", "--ros-args"]
    command += ["-r", "__node:=segmenter", "-r", f"__ns:={namespace}"]
    for name, value in parameters.items():
        command += ["-p", f"{name}:={value}"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    node_process = subprocess.Popen(command, cwd=REPO_ROOT, env=env)

    rclpy.init()
    harness = rclpy.create_node(f"runtime_harness_{runtime}")
    received: dict[str, Image] = {}
    lock = threading.Lock()

    def keep(name: str, msg: Image) -> None:
        with lock:
            received.setdefault(name, msg)

    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    for name in OUTPUTS:
        harness.create_subscription(Image, f"{namespace}/camera/{name}", lambda m, n=name: keep(n, m), qos)
    publisher = harness.create_publisher(Image, f"{namespace}/camera/image", qos)
    executor = SingleThreadedExecutor()
    executor.add_node(harness)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and len(received) < len(OUTPUTS):
            assert node_process.poll() is None, f"the node exited with {node_process.returncode}"
            stamp = harness.get_clock().now().to_msg()
            publisher.publish(
                numpy_to_image(image, "rgb8", Header(stamp=stamp, frame_id="cam"), msg_factory=Image)
            )
            executor.spin_once(timeout_sec=0.5)
        assert len(received) == len(OUTPUTS), f"no outputs from the {runtime} node within {TIMEOUT_S:.0f} s"
    finally:
        executor.shutdown()
        harness.destroy_node()
        rclpy.shutdown()
        node_process.terminate()
        node_process.wait(timeout=30)

    semantic = image_to_numpy(received["semantic"])
    score = image_to_numpy(received["anomaly_score"])
    assert received["semantic"].encoding == "mono8" and semantic.shape == (HEIGHT, WIDTH)
    assert received["anomaly_score"].encoding == "32FC1" and score.shape == (HEIGHT, WIDTH)
    np.testing.assert_array_equal(semantic, expected.semantic[0])
    np.testing.assert_allclose(score, expected.anomaly_score[0], rtol=0, atol=1e-5)
