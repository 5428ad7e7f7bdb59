"""qdr_ros: ROS 2 nodes that restore degraded camera frames with the INT8 EFM.

Only ``*_node.py`` modules import rclpy, so the rest (backends, conversions, benchmark)
stays importable and testable with plain Python.
"""

__version__ = '0.1.0'
