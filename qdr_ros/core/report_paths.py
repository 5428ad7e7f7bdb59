"""Paths as reports show them: without this machine's prefix, so committed results read the same anywhere."""

from __future__ import annotations

import os
from pathlib import Path

from qdr_ros.core.ros_env import REPO_ROOT


def shown_path(path: str | os.PathLike[str]) -> str:
    """Return ``path`` relative to the repository, or to site-packages for installed files, else as given."""
    parts = Path(path).parts
    if 'site-packages' in parts:
        return Path(*parts[parts.index('site-packages') + 1:]).as_posix()
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)
