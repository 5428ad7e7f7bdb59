"""qdr-bench, the benchmarks of the deployed pipeline.

``cli`` holds the dispatcher and ``restore``'s options; ``engines`` the engine-only timing (each ONNX
Runtime engine alone in its own process); ``rounds`` restore_node through ROS (via
``qdr_ros.tools.probe``); ``report`` the machine, targets, markdown, JSON and plot; ``settings``
what one run measures.
"""

from qdr_ros.tools.bench.cli import main

__all__ = ['main']
