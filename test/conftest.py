"""Session-wide setup shared by every test: the ROS/ultralytics environment knobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdr_ros import ros_env

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session', autouse=True)
def ros_environment() -> dict[str, str]:
    """Apply ``qdr_ros.ros_env`` once, so every test and subprocess shares one fresh ROS domain."""
    return ros_env.apply()


@pytest.fixture(scope='session')
def repo_root() -> Path:
    """Return the repository root (the directory holding package.xml)."""
    return REPO_ROOT
