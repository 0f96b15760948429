#!/usr/bin/env python3
"""The segmenter node's input and output rates over real DDS: a camera publisher at R Hz, the node, and
a subscriber to its overlay, each its own participant on this machine.

Starts ``python -m openset_perception.ros.segmenter_node`` (shipped model, CPU, one camera with depth),
waits until it is active and has answered a first frame, then publishes ``--frames`` procedural street
frames (rgb8 + 32FC1 depth, best effort, as camera drivers do) at each rate and prints one Markdown row
per rate: frames sent, frames paired at the node (image and depth both arrived: its /diagnostics
``frames_received``), overlays out, the rates in and out over the run, stamp-to-overlay-arrival
latency and the node's drop counters.

DDS stays on loopback: the Fast DDS profile of the tests (``test/fastdds_loopback.xml``: UDP on
127.0.0.1 only, 4 MiB socket buffers) is set before rclpy loads, with a random domain. ``--transport``
varies it: ``udp-default-buffers`` drops the buffer sizes (the operating system's defaults), ``shm``
adds Fast DDS's shared-memory transport with an 8 MiB segment beside the UDP one (discovery stays on
UDP). Run it inside a network namespace with only loopback::

    unshare -n bash -c 'ip link set lo up && .venv/bin/python scripts/bench_node_rates.py --rates 10 30'
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROFILE = REPO_ROOT / "test" / "fastdds_loopback.xml"
NAMESPACE = "/rate_bench"
TRANSPORTS = {
    "udp": "UDP, 4 MiB buffers",
    "udp-default-buffers": "UDP, OS default buffers",
    "shm": "SHM + UDP",
}
SHM_DESCRIPTOR = """
    <transport_descriptor>
      <transport_id>shared_memory</transport_id>
      <type>SHM</type>
      <segment_size>8388608</segment_size>
    </transport_descriptor>
  </transport_descriptors>"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 30.0], help="publish rates, Hz")
    parser.add_argument("--frames", type=int, default=300, help="frames published per rate")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--distinct", type=int, default=10, help="distinct frames rendered, then repeated")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the node")
    parser.add_argument("--transport", choices=sorted(TRANSPORTS), default="udp", help="Fast DDS transports")
    return parser.parse_args(argv)


def loopback_environment(transport: str, folder: Path) -> dict[str, str]:
    text = PROFILE.read_text()
    if transport == "udp-default-buffers":
        text = re.sub(r"\s*<(send|receive)BufferSize>\d+</\1BufferSize>", "", text)
    elif transport == "shm":
        text = text.replace("\n  </transport_descriptors>", SHM_DESCRIPTOR, 1)
        udp = "<transport_id>loopback_udp</transport_id>"
        text = text.replace(
            f"{udp}\n      </userTransports>",
            f"{udp}\n        <transport_id>shared_memory</transport_id>\n      </userTransports>",
            1,
        )
        if "shared_memory</transport_id>\n      </userTransports>" not in text:
            raise SystemExit("could not add the SHM transport to the profile")
    profile = folder / f"fastdds_{transport}.xml"
    profile.write_text(text)
    return {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "FASTRTPS_DEFAULT_PROFILES_FILE": str(profile),
        "FASTDDS_DEFAULT_PROFILES_FILE": str(profile),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
        "ROS_DOMAIN_ID": str(random.randint(1, 100)),
    }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench_node_rates_"))
    os.environ.update(loopback_environment(args.transport, folder))
    for name in (
        "ROS_STATIC_PEERS",
        "ROS_LOCALHOST_ONLY",
        "ROS_DISCOVERY_SERVER",
        "FASTDDS_BUILTIN_TRANSPORTS",
    ):
        os.environ.pop(name, None)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from openset_perception.data.synthetic_streets import SyntheticStreets
    from openset_perception.image_codec import numpy_to_image

    streets = SyntheticStreets(args.distinct, seed=1, height=args.height, width=args.width, anomalies=True)
    frames = [(s.image, s.depth) for s in (streets[i] for i in range(args.distinct))]

    log = folder / "node.log"
    node_command = [
        sys.executable,
        "-m",
        "openset_perception.ros.segmenter_node",
        "--ros-args",
        "-r",
        f"__ns:={NAMESPACE}",
        *("-p", "device:=cpu", "-p", f"warmup_shape:=[{args.height},{args.width}]"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as output:
        process = subprocess.Popen(
            node_command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )

    rclpy.init()
    node = rclpy.create_node("rate_bench", namespace=NAMESPACE)
    image_pub = node.create_publisher(Image, "camera/image", qos_profile_sensor_data)
    depth_pub = node.create_publisher(Image, "camera/depth", qos_profile_sensor_data)
    lock = threading.Lock()
    arrivals: list[tuple[float, float]] = []  # (arrival wall time, stamp) per overlay
    health: list[dict[str, str]] = []

    def on_overlay(msg: Image) -> None:
        with lock:
            arrivals.append((time.time(), msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(": health"):
                with lock:
                    health.append({kv.key: kv.value for kv in status.values})

    node.create_subscription(
        Image, "camera/overlay", on_overlay, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    def publish(index: int) -> None:
        image, depth = frames[index % len(frames)]
        header = Header(stamp=node.get_clock().now().to_msg(), frame_id="camera_optical")
        image_pub.publish(numpy_to_image(image, "rgb8", header, msg_factory=Image))
        depth_pub.publish(numpy_to_image(depth, "32FC1", header, msg_factory=Image))

    def counters() -> dict[str, str]:
        count = len(health)
        deadline = time.monotonic() + 10.0
        while len(health) == count:  # a status published after this call
            if time.monotonic() > deadline:
                raise SystemExit(f"no /diagnostics from the node:\n{log.read_text()}")
            time.sleep(0.05)
        with lock:
            return health[-1]

    rows = []
    try:
        deadline = time.monotonic() + 300.0
        index = 0
        while not arrivals:  # active, subscribed both ways and through its first frame
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the node did not answer a frame:\n{log.read_text()}")
            publish(index)
            index += 1
            time.sleep(0.5)
        for rate in args.rates:
            time.sleep(2.0)  # the frames in flight come out
            before = counters()
            with lock:
                arrivals.clear()
            start = time.time()
            for frame in range(args.frames):
                publish(frame)
                time.sleep(max(0.0, start + (frame + 1) / rate - time.time()))
            sent_s = time.time() - start
            time.sleep(2.0)
            after = counters()
            with lock:
                run = list(arrivals)
            latencies_ms = [(arrival - stamp) * 1e3 for arrival, stamp in run]

            delta = {
                key: int(after[key]) - int(before[key])
                for key in ("frames_received", "frames_dropped", "frames_unpaired")
            }
            rows.append(
                {
                    "rate_hz": rate,
                    "sent": args.frames,
                    "publish_hz": round(args.frames / sent_s, 2),
                    "paired_at_node": delta["frames_received"],
                    "out": len(run),
                    "in_hz": round(delta["frames_received"] / sent_s, 2),
                    "out_hz": round(len(run) / sent_s, 2),
                    "latency_p50_ms": percentile(latencies_ms, 50),
                    "latency_p95_ms": percentile(latencies_ms, 95),
                    "dropped": delta["frames_dropped"],
                    "unpaired": delta["frames_unpaired"],
                }
            )
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        process.terminate()
        process.wait(timeout=30)

    buffers = TRANSPORTS[args.transport]
    print(
        "| rate | Fast DDS transport | sent | paired at the node | overlays out | in Hz | out Hz | "
        "stamp-to-overlay p50 / p95 ms | dropped by the node | unpaired |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        latency = (
            "-" if r["latency_p50_ms"] is None else f"{r['latency_p50_ms']:.0f} / {r['latency_p95_ms']:.0f}"
        )
        cells = [f"{r['rate_hz']:g} Hz", buffers, r["sent"], r["paired_at_node"], r["out"], r["in_hz"]]
        cells += [r["out_hz"], latency, r["dropped"], r["unpaired"]]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(json.dumps({"args": vars(args), "rows": rows}))


if __name__ == "__main__":
    main()
