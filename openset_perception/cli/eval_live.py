"""``openset-perception eval-live``: score the running segmenter node end to end during ``ros2 bag play``.

The ROS part lives in ``openset_perception.ros.eval_live`` and is imported only when the command
runs, so the rest of the tool works without ROS; without rclpy this command says so in one line.
"""

from __future__ import annotations

import argparse

from openset_perception.cli.component_options import add_component_arguments

ROS_MODULES = ("rclpy", "sensor_msgs", "builtin_interfaces", "rosidl_runtime_py")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by this subcommand and the ``eval_live`` ROS executable."""
    parser.add_argument(
        "--checkpoint", required=True, help="the node's checkpoint (for its class names; no weights are run)"
    )
    parser.add_argument(
        "--camera",
        dest="cameras",
        action="append",
        metavar="NAME",
        help="camera to evaluate (repeatable); default: camera (the node's default)",
    )
    parser.add_argument("--out", default="eval/live", help="output folder; default eval/live")
    parser.add_argument("--slop", type=float, default=0.05, metavar="S", help="pairing tolerance in seconds")
    parser.add_argument(
        "--queue-size", type=int, default=50, help="frames held per camera while their messages arrive"
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="finish this many seconds after the last message (once one came); 0: run until Ctrl-C",
    )
    parser.add_argument(
        "--compressed",
        action="store_true",
        help="the input images are on <cam>/image/compressed (for the end-to-end latency)",
    )
    from openset_perception.cli.main import add_metric_arguments

    add_metric_arguments(parser, "the run")
    add_component_arguments(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-live",
        help="evaluate the running segmenter node during 'ros2 bag play' (needs ROS 2)",
        description="Subscribes to the node's <cam>/anomaly_score, <cam>/semantic and <cam>/open_set "
        "outputs and to the bag's <cam>/depth, <cam>/gt/anomaly and <cam>/gt/semantic, pairs them by "
        "header stamp and writes the eval-bag report (metrics.json, report.md, plots) when the bag has "
        "finished (see --idle-timeout) or on Ctrl-C. Ground truth of frames the node dropped is "
        "reported as skipped. ROS arguments go after --ros-args.",
    )
    add_arguments(parser)
    parser.add_argument(
        "--ros-args",
        dest="ros_args",
        nargs=argparse.REMAINDER,
        default=[],
        help="everything after this goes to ROS, e.g. --ros-args -r __ns:=/robot",
    )
    parser.set_defaults(func=run)


def check_arguments(args: argparse.Namespace) -> None:
    from openset_perception.checkpoint import read_model_card
    from openset_perception.cli.component_options import component_options
    from openset_perception.cli.main import UserError

    if args.queue_size < 1:
        raise UserError(f"--queue-size must be at least 1, got {args.queue_size}")
    if not 0 <= args.slop <= 10:
        raise UserError(f"--slop must be in [0, 10] seconds, got {args.slop}")
    if args.idle_timeout < 0:
        raise UserError(f"--idle-timeout must be >= 0, got {args.idle_timeout}")
    component_options(args, read_model_card(args.checkpoint).threshold)


def run(args: argparse.Namespace) -> int:
    from openset_perception.cli.main import UserError
    from openset_perception.evaluation.evaluate import summary_line

    check_arguments(args)
    try:
        from openset_perception.ros import eval_live
    except ImportError as error:
        if (error.name or "").split(".")[0] not in ROS_MODULES:
            raise
        raise UserError(
            f"eval-live needs ROS 2 ({error.name} is missing): source /opt/ros/<distro>/setup.bash first. "
            "eval-bag evaluates a bag without ROS."
        ) from error
    metrics = eval_live.run(args, ["--ros-args", *args.ros_args] if args.ros_args else [])
    print(summary_line(metrics, args.out))
    return 0
