"""Two processes over Fast DDS: a published ``sensor_msgs/Image`` arrives bit-for-bit intact."""

from __future__ import annotations

from collections.abc import Iterator
import subprocess
import sys

import numpy as np
import pytest
from rclpy.context import Context
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from qdr_ros.tools.probe import NodeProcess, Probe

pytestmark = pytest.mark.ros

WIDTH, HEIGHT, SEED = 64, 48, 7
STAMP_SEC, STAMP_NANOSEC, FRAME_ID = 1_700_000_000, 123_456_789, 'qdr_test_camera'
TOPIC = 'qdr_smoke/image'


@pytest.fixture
def publisher_process() -> Iterator[NodeProcess]:
    """Start ``qdr_ros.tools.smoke_node publish`` in another process; it republishes until stopped."""
    with NodeProcess.start('qdr_ros.tools.smoke_node', 'publish', '--width', str(WIDTH), '--height', str(HEIGHT),
                           '--seed', str(SEED), '--sec', str(STAMP_SEC), '--nanosec', str(STAMP_NANOSEC),
                           '--frame-id', FRAME_ID, '--duration', '90') as process:
        yield process


def _expected_pixels() -> bytes:
    """Rebuild the publisher's pattern independently: byte i is (31 * i + seed) mod 251."""
    index = np.arange(HEIGHT * WIDTH * 3, dtype=np.int64)
    return ((index * 31 + SEED) % 251).astype(np.uint8).tobytes()


def test_image_crosses_processes_intact(context: Context, publisher_process: NodeProcess) -> None:
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
    with Probe('qdr_smoke_test_listener', context=context, watch=[publisher_process]) as probe:
        received = probe.inbox(TOPIC, qos=qos)
        probe.wait(lambda: len(received) > 0, f'an Image on {TOPIC}', timeout_s=60)

    msg = received.values()[0]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (STAMP_SEC, STAMP_NANOSEC)
    assert msg.header.frame_id == FRAME_ID
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (HEIGHT, WIDTH, 'rgb8', 0)
    assert msg.step == WIDTH * 3
    assert bytes(msg.data) == _expected_pixels()

    publisher_process.process.terminate()
    assert publisher_process.process.wait(timeout=15) == 0, 'publisher did not treat SIGTERM as a normal exit'


@pytest.mark.slow
def test_demo_round_trip() -> None:
    """What ``make demo`` runs today: frames to an echo process and back, checked and timed."""
    result = subprocess.run([sys.executable, '-m', 'qdr_ros.tools.smoke_node', 'demo', '--frames', '10'],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '10/10 frames 640x480 rgb8' in result.stdout and 'came back intact' in result.stdout, result.stdout
