"""What one ``qdr-bench restore`` run measures: sizes, rounds, where reports go, and its one error type."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qdr_ros.core import ros_env

PROG = 'qdr-bench restore'
SIZES = ((256, 256), (640, 480), (1280, 720), (1920, 1080))  # width x height
QUICK_SIZE = (160, 120)
REFERENCE_SIZE = (640, 480)
DEFAULT_MODELS = ros_env.REPO_ROOT / 'models'
SCRATCH_OUT = ros_env.REPO_ROOT / 'out' / 'bench'  # restore.md and the plot of a run without --json
SATURATE_S = 5.0
ROUNDS = 5  # node measurement rounds per size, each paired with a fresh engine-only timing (medians)


class BenchError(RuntimeError):
    """The benchmark cannot run as asked (no model at all, node failed to start); the message says why."""


@dataclass
class Settings:
    """What one benchmark run measures (the parsed command line)."""

    task: str
    models_dir: Path
    sizes: list[tuple[int, int]]
    runs: int
    warmup: int
    threads: int
    ros: bool
    quick: bool
    out: Path
    json_path: Path | None
    saturate_s: float = SATURATE_S
    rounds: int = ROUNDS
