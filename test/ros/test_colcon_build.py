"""The ament layout ROS users get: ``colcon build`` installs the package into a temporary workspace, and
the installed ``segmenter_node``, started with that workspace's environment (its ``setup.sh``, nothing
else sourced) from a directory with no model in it, finds the shipped model through the ament index and
segments a frame. Skipped without rclpy or colcon; DDS stays on loopback (test/conftest.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("colcon_core")
pytest.importorskip("ament_package")

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from openset_perception.image_codec import numpy_to_image
from openset_perception.runtime.parameters import DEFAULT_MODEL

pytestmark = pytest.mark.ros

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "openset_perception"
NAMESPACE = "/colcon_test"
FRAME_TIMEOUT_S = 120.0


def colcon() -> str:
    found = shutil.which("colcon", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if found is None:
        pytest.skip("no colcon executable")
    return found


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("colcon_ws")
    command = [
        colcon(),
        "--log-base",
        "log",
        "build",
        "--base-paths",
        str(REPO_ROOT),
        "--build-base",
        "build",
        "--install-base",
        "install",
    ]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "install"


def test_colcon_installs_the_ament_layout(workspace: Path) -> None:
    prefix = workspace / PACKAGE
    share = prefix / "share" / PACKAGE
    for folder in ("launch", "config", "models"):
        assert any((share / folder).iterdir()), folder
    assert (share / "launch" / "segment.launch.py").is_file()
    assert (share / "config" / "segmenter.yaml").is_file()
    assert (share / "models" / DEFAULT_MODEL).is_file()
    assert (share / "package.xml").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    for executable in ("segmenter_node", "eval_live"):
        assert os.access(prefix / "lib" / PACKAGE / executable, os.X_OK), executable
    assert (workspace / "setup.sh").is_file()


def test_the_installed_node_finds_the_shipped_model_through_the_ament_index(
    workspace: Path, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH")}
    env["PYTHONUNBUFFERED"] = "1"
    node_arguments = [
        "--ros-args",
        "-r",
        f"__ns:={NAMESPACE}",
        *("-p", "device:=cpu", "-p", "use_depth:=false", "-p", "warmup_shape:=[0,0]"),
        *("-p", "max_input_age:=0.0"),
    ]
    script = '. "$0/setup.sh" && exec "$0/openset_perception/lib/openset_perception/segmenter_node" "$@"'
    log = tmp_path / "node.log"
    with log.open("wb") as output:  # started in an empty directory: the model can only come from share/
        process = subprocess.Popen(
            ["bash", "-c", script, str(workspace), *node_arguments],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("colcon_test_feeder", namespace=NAMESPACE, context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        publisher = node.create_publisher(Image, "camera/image", 10)
        overlays: list[Image] = []
        node.create_subscription(Image, "camera/overlay", overlays.append, 10)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        sent = set()
        pixels = np.random.default_rng(0).integers(0, 256, (128, 256, 3), dtype=np.uint8)
        deadline = time.monotonic() + FRAME_TIMEOUT_S
        while not overlays:
            assert process.poll() is None, f"the node exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no overlay in {FRAME_TIMEOUT_S} s:\n{log.read_text()}"
            header = Header(stamp=node.get_clock().now().to_msg(), frame_id="camera_optical")
            sent.add((header.stamp.sec, header.stamp.nanosec))
            publisher.publish(numpy_to_image(pixels, "rgb8", header, msg_factory=Image))
            time.sleep(0.5)
        overlay = overlays[0]
        assert (overlay.header.stamp.sec, overlay.header.stamp.nanosec) in sent
        assert (overlay.height, overlay.width, overlay.encoding) == (128, 256, "rgb8")
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
    text = log.read_text()
    shipped = workspace / PACKAGE / "share" / PACKAGE / "models" / DEFAULT_MODEL
    assert f"loaded {shipped} " in text, text
    assert code == 0 and "Traceback" not in text, text
