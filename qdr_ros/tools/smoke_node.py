"""Two-process rclpy smoke check: Fast DDS carries ``sensor_msgs/Image`` intact between processes.

``python -m qdr_ros.tools.smoke_node`` checks a machine's DDS before anything of qdr runs on it. Modes:

- ``demo`` (default): start an ``echo`` process, send frames to it, check that every frame
  comes back unchanged and print the round-trip latency.
- ``publish``: publish one known frame repeatedly until stopped (used by test/nodes/test_ros_smoke.py).
- ``echo``: republish every frame from ``qdr_smoke/image`` on ``qdr_smoke/image_echo``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Sequence

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from qdr_ros.core import ros_env
from qdr_ros.tools.probe import NodeProcess, Probe, ProbeError, stamp_key

IMAGE_TOPIC = 'qdr_smoke/image'
ECHO_TOPIC = 'qdr_smoke/image_echo'
# Reliable on purpose: the check is that nothing is lost or altered, not sensor-data behaviour.
QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


def pattern(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Return a deterministic HxWx3 uint8 frame whose every byte differs from its neighbours."""
    flat = (np.arange(height * width * 3, dtype=np.int64) * 31 + seed) % 251
    return flat.astype(np.uint8).reshape(height, width, 3)


def make_image(pixels: np.ndarray, sec: int, nanosec: int, frame_id: str) -> Image:
    """Wrap an HxWx3 uint8 array as an unpadded rgb8 Image."""
    msg = Image()
    msg.header.stamp.sec = sec
    msg.header.stamp.nanosec = nanosec
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = 'rgb8'
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return msg


def spin_until(node: Node, done: Callable[[], bool], timeout_s: float) -> bool:
    """Spin ``node`` until ``done()`` or ``timeout_s``; bounded so a lost peer cannot hang us."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline or not rclpy.ok():
            return False
        rclpy.spin_once(node, timeout_sec=0.02)
    return True


def run_publish(args: argparse.Namespace) -> int:
    """Publish the known frame at ``args.rate`` Hz whenever a subscriber is matched."""
    node = Node('qdr_smoke_publisher')
    publisher = node.create_publisher(Image, IMAGE_TOPIC, QOS)
    msg = make_image(pattern(args.height, args.width, args.seed), args.sec, args.nanosec, args.frame_id)
    deadline = time.monotonic() + args.duration
    while rclpy.ok() and time.monotonic() < deadline:
        if publisher.get_subscription_count() > 0:
            publisher.publish(msg)
        time.sleep(1.0 / args.rate)
    node.destroy_node()
    return 0


def run_echo(args: argparse.Namespace) -> int:
    """Send every received frame straight back, untouched."""
    node = Node('qdr_smoke_echo')
    publisher = node.create_publisher(Image, ECHO_TOPIC, QOS)
    node.create_subscription(Image, IMAGE_TOPIC, publisher.publish, QOS)
    spin_until(node, lambda: False, args.duration)
    node.destroy_node()
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """Round-trip ``args.frames`` frames through an echo process and report integrity and latency."""
    with NodeProcess.start('qdr_ros.tools.smoke_node', 'echo', '--duration', '120') as echo, \
            Probe('qdr_smoke_demo', watch=[echo]) as probe:
        return _round_trips(probe, args)


def _round_trips(probe: Probe, args: argparse.Namespace) -> int:
    """Send frames one at a time and wait for each to come back; republish if one is lost."""
    probe.publisher(IMAGE_TOPIC, Image, QOS)
    echoed = probe.inbox(ECHO_TOPIC, Image, QOS)
    try:
        probe.wait_for_graph(publishers=[ECHO_TOPIC], subscribers=[IMAGE_TOPIC], timeout_s=30.0)
    except ProbeError as exc:
        print(f'qdr smoke: FAILED, the echo process was not discovered: {exc}', file=sys.stderr)
        return 1
    round_trips_ms = []
    intact = 0
    for index in range(args.frames):
        pixels = pattern(args.height, args.width, seed=index)
        sent = make_image(pixels, sec=index, nanosec=index, frame_id='qdr_smoke')
        start = time.perf_counter()
        try:
            back = probe.exchange(IMAGE_TOPIC, sent, echoed, timeout_s=12.0, period_s=2.0)  # busy CPUs: slow repairs
        except ProbeError:
            continue
        round_trips_ms.append((echoed.arrivals[stamp_key(sent)] - start) * 1e3)
        intact += (back.header.frame_id == sent.header.frame_id and back.encoding == 'rgb8'
                   and back.step == sent.step and bytes(back.data) == bytes(sent.data))
    domain = os.environ.get('ROS_DOMAIN_ID', '0')
    if intact != args.frames:
        print(f'qdr smoke: FAILED, {intact}/{args.frames} frames came back intact (domain {domain})',
              file=sys.stderr)
        return 1
    print(f'qdr smoke: {intact}/{args.frames} frames {args.width}x{args.height} rgb8 made a round trip '
          f'to another process over Fast DDS (domain {domain}) and came back intact; round trip '
          f'median {statistics.median(round_trips_ms):.1f} ms, max {max(round_trips_ms):.1f} ms')
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the mode and its options; ROS arguments are stripped first."""
    parser = argparse.ArgumentParser(prog='python -m qdr_ros.tools.smoke_node', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('mode', nargs='?', default='demo', choices=['demo', 'publish', 'echo'])
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--frames', type=int, default=20, help='demo: frames to round-trip')
    parser.add_argument('--seed', type=int, default=0, help='publish: pattern seed')
    parser.add_argument('--sec', type=int, default=0, help='publish: header.stamp.sec')
    parser.add_argument('--nanosec', type=int, default=0, help='publish: header.stamp.nanosec')
    parser.add_argument('--frame-id', default='qdr_smoke', help='publish: header.frame_id')
    parser.add_argument('--rate', type=float, default=20.0, help='publish: Hz')
    parser.add_argument('--duration', type=float, default=60.0, help='publish/echo: seconds before exiting')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one mode; Ctrl-C and external shutdown are a normal exit."""
    ros_env.apply()
    args_with_ros = list(sys.argv if argv is None else ['smoke_node', *argv])
    args = parse_args(rclpy.utilities.remove_ros_args(args_with_ros)[1:])
    rclpy.init(args=args_with_ros)
    try:
        return {'demo': run_demo, 'publish': run_publish, 'echo': run_echo}[args.mode](args)
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
