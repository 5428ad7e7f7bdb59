"""The environment knobs: a participant really starts with the Fast DDS transports they choose."""

from __future__ import annotations

import os
import subprocess
import sys

from qdr_ros.core import ros_env


def test_a_participant_starts_with_the_chosen_transports() -> None:
    env = dict(os.environ, FASTDDS_BUILTIN_TRANSPORTS=ros_env.defaults(os.environ)['FASTDDS_BUILTIN_TRANSPORTS'])
    code = 'import rclpy; rclpy.init(); rclpy.create_node("qdr_env_check").destroy_node(); rclpy.shutdown()'
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_each_domain_is_claimed_by_one_process_at_a_time() -> None:
    """Two runs on one host never share a ROS graph: a claimed domain is skipped by every other process."""
    mine = {ros_env.domain_id() for _ in range(5)}
    assert len(mine) == 5
    code = 'from qdr_ros.core import ros_env; print(",".join(ros_env.domain_id() for _ in range(60)))'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    theirs = set(result.stdout.strip().split(','))
    assert len(theirs) == 60 and not theirs & mine, result.stderr
