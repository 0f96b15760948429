"""Launch the open-set segmenter node, optionally with RViz.

    ros2 launch openset_perception segment.launch.py [params_file:=...] [model:=...] [device:=cuda]
        [cameras:=front,rear] [namespace:=perception] [use_sim_time:=true] [rviz:=true]

Empty ``model``, ``device`` and ``cameras`` keep the values of ``params_file``.
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_context import LaunchContext
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "openset_perception"


def _segmenter(context: LaunchContext) -> list[Node]:
    overrides: dict[str, object] = {
        "use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1")
    }
    model = LaunchConfiguration("model").perform(context)
    device = LaunchConfiguration("device").perform(context)
    cameras = LaunchConfiguration("cameras").perform(context)
    if model:
        overrides["model"] = model
    if device:
        overrides["device"] = device
    if cameras:
        overrides["cameras"] = [c.strip() for c in cameras.split(",") if c.strip()]
    return [
        Node(
            package=PACKAGE,
            executable="segmenter_node",
            name="segmenter",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), overrides],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    arguments = [
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(share, "config", "segmenter.yaml"),
            description="Node parameter file",
        ),
        DeclareLaunchArgument(
            "model",
            default_value="",
            description="Checkpoint path (relative: share/models/); empty = params_file",
        ),
        DeclareLaunchArgument(
            "device", default_value="", description="auto, cpu, cuda or cuda:N; empty = params_file"
        ),
        DeclareLaunchArgument(
            "cameras", default_value="", description="Comma-separated camera names; empty = params_file"
        ),
        DeclareLaunchArgument(
            "namespace", default_value="", description="Namespace of the node and its topics"
        ),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", description="Follow /clock (bag replay)"
        ),
        DeclareLaunchArgument(
            "rviz", default_value="false", description="Start RViz with config/segment.rviz"
        ),
    ]
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", os.path.join(share, "config", "segment.rviz")],
        parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*arguments, OpaqueFunction(function=_segmenter), rviz])
