"""ROS 2 adapters (the only place rclpy is imported): the segmenter lifecycle node and the eval-live node."""
