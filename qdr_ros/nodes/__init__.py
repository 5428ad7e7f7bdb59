"""The ROS 2 nodes, their parameters and diagnostics: the only modules that import rclpy at module level."""
