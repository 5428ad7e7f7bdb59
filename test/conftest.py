"""Session-wide setup shared by every test: the ROS/ultralytics environment knobs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qdr_ros import ros_env

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_TRANSPORTS = 'UDPv4'


@pytest.fixture(scope='session', autouse=True)
def ros_environment() -> dict[str, str]:
    """Apply ``qdr_ros.ros_env`` once, so every test and subprocess shares one fresh ROS domain.

    The suite talks over UDP only (unless ``FASTDDS_BUILTIN_TRANSPORTS`` is already set): it starts and
    kills about a hundred participants, and under LARGE_DATA (shared memory and TCP, state that
    outlives a process) fresh-clone and CI runs stalled in discovery (a node up, its peer never
    seeing it within 30-120 s). The tests check behaviour, not transport speed; ``make bench`` measures the
    default transports and ``test_ros_env`` checks that a participant starts with them.
    """
    os.environ.setdefault('FASTDDS_BUILTIN_TRANSPORTS', TEST_TRANSPORTS)
    return ros_env.apply()


@pytest.fixture(scope='session')
def repo_root() -> Path:
    """Return the repository root (the directory holding package.xml)."""
    return REPO_ROOT
