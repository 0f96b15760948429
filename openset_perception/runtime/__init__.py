"""ROS-agnostic runtime of the segmenter node: frame buffering, batching, outputs, reports, health.

Nothing here imports rclpy; ``openset_perception.ros.segmenter_node`` wires these parts to topics.
"""
