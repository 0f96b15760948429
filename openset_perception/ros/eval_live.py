"""eval-live as an rclpy node: the segmenter node's outputs and the bag's ground truth, scored live.

Run beside the segmenter node while ``ros2 bag play`` replays a bag made by make-bag (see the README
recipe). All the evaluation happens in ``openset_perception.bags.live``; this module only subscribes.
Entry points: ``openset-perception eval-live`` (via ``run``) and ``ros2 run openset_perception
eval_live`` (``main``).
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from openset_perception.bags import topics
from openset_perception.bags.live import DEPTH, GROUND_TRUTH, INPUT_IMAGE, NODE_OUTPUTS, LiveEvaluation
from openset_perception.checkpoint import read_model_card
from openset_perception.component_metrics import parse_component_options

DEFAULT_CAMERAS = ("camera",)
IDLE_CHECK_PERIOD_S = 0.5
CONNECTED_CHECK_PERIOD_S = 0.1
CONNECTED_MESSAGE = "connected: every stream has a publisher"


class EvalLiveNode(Node):
    def __init__(
        self,
        evaluation: LiveEvaluation,
        cameras: tuple[str, ...],
        compressed: bool,
        idle_timeout_s: float,
    ) -> None:
        super().__init__("eval_live")
        self.evaluation = evaluation
        self.idle_timeout_s = idle_timeout_s
        self.last_message_s: float | None = None
        self.done = False
        reliable = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=50,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.VOLATILE,
        )
        # Only the arrival time of input images is used: best effort matches any publisher.
        best_effort = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT
        )
        self._readers = []
        for camera in cameras:
            streams = [(output, topics.output_topic(camera, output)) for output in NODE_OUTPUTS]
            streams += [(kind, topics.camera_topic(camera, kind)) for kind in (DEPTH, *GROUND_TRUTH)]
            for stream, topic in streams:
                callback = partial(self._on_message, camera, stream)
                self._readers.append(self.create_subscription(Image, topic, callback, reliable))
            image_kind = topics.COLOR_COMPRESSED if compressed else topics.COLOR
            self._readers.append(
                self.create_subscription(
                    CompressedImage if compressed else Image,
                    topics.camera_topic(camera, image_kind),
                    partial(self._on_message, camera, INPUT_IMAGE),
                    best_effort,
                )
            )
        # Says when this side has discovered every publisher: messages sent before that are lost to a
        # volatile reader, so whoever starts a bag after eval-live can wait for this line.
        self._connected_timer = self.create_timer(CONNECTED_CHECK_PERIOD_S, self._check_connected)
        if idle_timeout_s > 0:
            self.create_timer(IDLE_CHECK_PERIOD_S, self._check_idle)
        self.get_logger().info(f"evaluating cameras {', '.join(cameras)}; waiting for messages")

    def _on_message(self, camera: str, stream: str, message: Any) -> None:
        self.last_message_s = time.monotonic()
        self.evaluation.add(camera, stream, message, self.last_message_s)

    def _check_connected(self) -> None:
        if all(s.get_publisher_count() > 0 for s in self._readers):
            self.get_logger().info(CONNECTED_MESSAGE)
            self.destroy_timer(self._connected_timer)

    def _check_idle(self) -> None:
        if self.last_message_s is not None and time.monotonic() - self.last_message_s > self.idle_timeout_s:
            self.get_logger().info(f"no message for {self.idle_timeout_s:g} s: writing the report")
            self.done = True


def run(args: argparse.Namespace, ros_args: list[str]) -> dict:
    """Spin until idle or Ctrl-C, then write the report to ``args.out``; returns the metrics."""
    from openset_perception.cli.main import accumulator_mode

    card = read_model_card(args.checkpoint)
    evaluation = LiveEvaluation(
        card.class_names,
        args.slop,
        args.queue_size,
        mode=accumulator_mode(args),
        protocol=args.protocol,
        two_fold=args.two_fold,
        components=parse_component_options(args.threshold, args.component_track, card.threshold),
    )
    cameras = tuple(args.cameras or DEFAULT_CAMERAS)
    rclpy.init(args=["eval_live", *ros_args])
    node = EvalLiveNode(evaluation, cameras, args.compressed, args.idle_timeout)
    try:
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    title = f"Live evaluation: {Path(args.checkpoint).name} ({', '.join(cameras)})"
    return evaluation.finish(args.out, title)


def main(argv: list[str] | None = None) -> None:
    from rclpy.utilities import remove_ros_args

    from openset_perception.cli.eval_live import add_arguments, check_arguments
    from openset_perception.evaluation.evaluate import summary_line

    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(prog="eval_live", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(remove_ros_args(argv)[1:])
    try:
        check_arguments(args)
    except Exception as error:  # bad arguments or checkpoint: one line, like the CLI
        sys.exit(f"eval_live: error: {error}")
    metrics = run(args, argv[1:])
    print(summary_line(metrics, args.out))


if __name__ == "__main__":
    main()
