"""The one place that sets the environment knobs the nodes, tests and demo rely on.

Why each key:

- ``ROS_LOG_DIR``: rclpy.init() fails without HOME or ROS_LOG_DIR.
- ``ROS_DOMAIN_ID``: a domain claimed for this process (``domain_id``) keeps parallel runs' graphs apart.
- ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``: camera-sized frames several times faster than the
  default transports and without drops; ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` undoes that
  gain, so it is never set here. ``LARGE_DATA?max_msg_size=4MB`` costs less CPU per frame but
  broke discovery in some fresh-clone runs, so it is not the default (docs/reliability.md#transports).
- ``RMW_IMPLEMENTATION``: the PyPI ROS wheels ship Fast DDS only.
- ``YOLO_OFFLINE`` / ``YOLO_CONFIG_DIR``: ultralytics must not reach the network; it wants
  ``Arial.ttf`` in its config dir, so matplotlib's DejaVuSans.ttf is copied there.
- ``QDR_DATA``: the shared, read-only image data (``<repo>/../shared/data``).

Run ``python -m qdr_ros.core.ros_env`` to print ``export K=V`` lines for ``eval`` in a shell.
Keys already present in the environment are never changed.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
from pathlib import Path
import random
import shlex
import sys
import tempfile
from typing import IO, MutableMapping

from qdr_ros.core.atomic import atomic_write

REPO_ROOT = Path(__file__).resolve().parents[2]
DOMAIN_ID_MAX = 101  # highest domain id whose ports are valid on every platform
# Host-wide, whatever a run's TMPDIR says (the test suite gives itself a temp dir of its own).
CLAIM_DIR = Path('/tmp') if Path('/tmp').is_dir() else Path(tempfile.gettempdir())


def _writable_base(environ: MutableMapping[str, str]) -> Path:
    """Return a per-user writable directory: ``$HOME/.cache/qdr`` or one under the temp dir."""
    home = environ.get('HOME')
    if home and os.access(home, os.W_OK):
        return Path(home) / '.cache' / 'qdr'
    return Path(tempfile.gettempdir()) / f'qdr-{os.getuid()}'


_CLAIMS: list[IO[str]] = []  # lock files held open while this process lives: its domains stay claimed


def domain_id() -> str:
    """Claim a domain in 1..101 that no other process on this host holds, tried in random order.

    Each claim is an exclusive lock on a file in ``CLAIM_DIR``, released when the process ends,
    so two test suites or demos started side by side never share a graph. When all 101 are
    held (or locks are unsupported) it falls back to a random domain.
    """
    order = random.SystemRandom().sample(range(1, DOMAIN_ID_MAX + 1), DOMAIN_ID_MAX)
    for domain in order:
        try:
            claim = open(CLAIM_DIR / f'qdr-ros-domain-{domain}.lock', 'a')
        except OSError:  # another user's lock file, or no writable CLAIM_DIR
            continue
        try:
            fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            claim.close()
            continue
        _CLAIMS.append(claim)
        return str(domain)
    return str(order[0])


def _dejavu_font() -> Path | None:
    """Locate matplotlib's bundled DejaVuSans.ttf without importing matplotlib."""
    spec = importlib.util.find_spec('matplotlib')
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        font = Path(location) / 'mpl-data' / 'fonts' / 'ttf' / 'DejaVuSans.ttf'
        if font.is_file():
            return font
    return None


def _install_yolo_font(config_dir: Path) -> None:
    """Give ultralytics the font it would otherwise download; skipped when matplotlib is absent."""
    target = config_dir / 'Ultralytics' / 'Arial.ttf'
    font = _dejavu_font()
    if target.is_file() or font is None:
        return
    atomic_write(target, font.read_bytes())  # a parallel run never reads half a font


def defaults(environ: MutableMapping[str, str]) -> dict[str, str]:
    """Return the value each knob takes when it is not already set."""
    base = _writable_base(environ)
    home = environ.get('HOME')
    log_dir = Path(home) / '.ros' / 'log' if home and os.access(home, os.W_OK) else base / 'ros_log'
    return {
        'ROS_LOG_DIR': str(log_dir),
        'ROS_DOMAIN_ID': environ.get('ROS_DOMAIN_ID') or domain_id(),  # claim one only when it is needed
        'FASTDDS_BUILTIN_TRANSPORTS': 'LARGE_DATA',
        'RMW_IMPLEMENTATION': 'rmw_fastrtps_cpp',
        'YOLO_OFFLINE': '1',
        'YOLO_CONFIG_DIR': str(base / 'ultralytics'),
        'QDR_DATA': str((REPO_ROOT.parent / 'shared' / 'data').resolve()),
    }


def apply(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set every knob missing from ``environ`` and return only the keys this call set."""
    added = {key: value for key, value in defaults(environ).items() if key not in environ}
    environ.update(added)
    Path(environ['ROS_LOG_DIR']).mkdir(parents=True, exist_ok=True)
    config_dir = Path(environ['YOLO_CONFIG_DIR'])
    config_dir.mkdir(parents=True, exist_ok=True)
    _install_yolo_font(config_dir)
    return added


def main() -> int:
    """Print ``export K=V`` for each key that is not yet set in this process's environment."""
    for key, value in apply(dict(os.environ)).items():
        print(f'export {key}={shlex.quote(value)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
