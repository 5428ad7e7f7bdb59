"""qdr_ros: ROS 2 nodes that restore degraded camera frames with the INT8 EFM, folded by role.

``core`` (frames, model files, conditions; no ROS, no torch) <- ``inference`` (ONNX Runtime,
TensorRT) and ``detectors`` (no ROS) <- ``nodes`` (the only modules that import rclpy at module
level) <- ``tools`` (run, demo, soak, smoke check, benchmarks; may import anything). The arrows are
import-linter contracts (.importlinter), checked in ``make lint``.
"""

__version__ = '0.1.0'
