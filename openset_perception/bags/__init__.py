"""rosbag2 bags via the pure-Python ``rosbags`` library: make-bag, eval-bag and the eval-live core.

Nothing here imports rclpy, so bags are written and evaluated without a ROS installation.
"""
