"""The node-under-test probe: ROS arguments, stamps of raw frames, logs, and waits that fail with a reason."""

from __future__ import annotations

from pathlib import Path
import sys

import pytest
from rclpy.context import Context
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image

from qdr_ros.tools.probe import NodeProcess, Probe, ProbeError, ros_arguments, stamp_of

pytestmark = pytest.mark.ros


def test_ros_arguments_as_an_operator_types_them() -> None:
    assert ros_arguments() == []
    assert ros_arguments('/ns', {'model': Path('/m.onnx'), 'bypass': True, 'threads': 2}, {'image': 'raw'}) == [
        '--ros-args', '-r', '__ns:=/ns', '-p', 'model:=/m.onnx', '-p', 'bypass:=true', '-p', 'threads:=2',
        '-r', 'image:=raw']


def test_stamp_of_a_serialized_frame() -> None:
    msg = Image(height=2, width=3, encoding='rgb8', step=9, data=bytes(18))
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_123, 987_654_321
    assert stamp_of(serialize_message(msg)) == (1_700_000_123, 987_654_321)


def test_the_log_is_readable_while_running_and_after_stop(context: Context) -> None:
    code = 'import time; print("hello", flush=True); time.sleep(60)'
    with NodeProcess('sleeper', [sys.executable, '-c', code]) as process, \
            Probe('probe_log_check', context=context, watch=[process]) as probe:
        probe.wait(lambda: 'hello' in process.log(), 'the greeting', timeout_s=30)
        process.stop()
        assert 'hello' in process.log() and not process.alive
        with pytest.raises(ProbeError, match='sleeper exited'):
            probe.wait(lambda: False, 'anything')


def test_a_node_that_cannot_start_fails_the_wait_with_its_log(context: Context, tmp_path: Path) -> None:
    with NodeProcess.start('qdr_ros.nodes.restore_node', namespace='/probe_missing',
                           params={'model': tmp_path / 'missing.onnx'}) as node, \
            Probe('probe_start_check', context=context, watch=[node]) as probe:
        with pytest.raises(ProbeError, match='restore_node exited with 1') as info:
            probe.wait_for_graph(publishers=['/probe_missing/image_restored'], timeout_s=120)
        assert 'does not exist' in str(info.value)


def test_a_wait_that_runs_out_says_what_it_waited_for(context: Context) -> None:
    with Probe('probe_timeout_check', context=context) as probe:
        with pytest.raises(ProbeError, match='timed out after 0.2 s waiting for nothing at all'):
            probe.wait(lambda: False, 'nothing at all', timeout_s=0.2)
        assert not probe.spin_until(lambda: False, 0.1)
