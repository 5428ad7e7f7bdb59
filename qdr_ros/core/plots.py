"""Report figures: one backend, one style and one way to save, for the tools and the trainer's reports.

matplotlib is imported on first use only: it belongs to the training install, and the nodes (which
import ``qdr_ros.core``) never plot. Agg because reports are written headless (CI, robots, ssh).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from qdr_ros.core.atomic import atomic_open

STYLE = {'figure.dpi': 100, 'savefig.dpi': 120, 'legend.fontsize': 8, 'axes.titlesize': 9,
         'axes.grid': True, 'grid.alpha': 0.3}


def pyplot() -> Any:
    """Return ``matplotlib.pyplot`` on the Agg backend with the report style; ImportError without matplotlib."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


def missing() -> str | None:
    """Why no figure can be made here (matplotlib absent), or None; tools then write their reports without one."""
    try:
        pyplot()
    except ImportError as exc:
        return f'matplotlib is not installed ({exc}); pip install matplotlib'
    return None


def save(fig: Any, path: str | os.PathLike[str], dpi: float | None = None) -> Path:
    """Lay out ``fig``, write it atomically to ``path`` (format from its suffix) and free it."""
    plt = pyplot()
    path = Path(path)
    try:
        fig.tight_layout()
        with atomic_open(path, 'wb') as f:
            fig.savefig(f, format=path.suffix.lstrip('.') or 'png', **({'dpi': dpi} if dpi else {}))
    finally:
        plt.close(fig)
    return path
