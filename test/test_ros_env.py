"""The environment knobs: Fast DDS message size within the kernel's socket limits, and a participant really starts."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import pytest

from qdr_ros import ros_env


@pytest.mark.parametrize('rmem, wmem, expected', [
    (4194304, 4194304, 'LARGE_DATA?max_msg_size=4MB'),
    (2500000, 8388608, 'LARGE_DATA?max_msg_size=2MB'),
    (212992, 212992, 'LARGE_DATA'),  # stock Linux limits: fragments, but the participant starts
    (67108864, 67108864, 'LARGE_DATA?max_msg_size=4MB'),
])
def test_message_size_stays_within_socket_limits(tmp_path: Path, rmem: int, wmem: int, expected: str) -> None:
    (tmp_path / 'rmem_max').write_text(f'{rmem}\n')
    (tmp_path / 'wmem_max').write_text(f'{wmem}\n')
    assert ros_env.large_data_transports(tmp_path) == expected


def test_unreadable_limits_fall_back_to_plain_large_data(tmp_path: Path) -> None:
    assert ros_env.large_data_transports(tmp_path / 'missing') == 'LARGE_DATA'


def test_a_participant_starts_with_the_chosen_transports() -> None:
    env = dict(os.environ, FASTDDS_BUILTIN_TRANSPORTS=ros_env.defaults(os.environ)['FASTDDS_BUILTIN_TRANSPORTS'])
    code = 'import rclpy; rclpy.init(); rclpy.create_node("qdr_env_check").destroy_node(); rclpy.shutdown()'
    result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
