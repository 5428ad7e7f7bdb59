"""Frame counters, timing windows and the health verdict the qdr nodes publish on /diagnostics.

Plain Python (no rclpy) so the verdict rules are testable on their own; ``base_node.DiagnosticsPublisher``
turns a ``Report`` into a ``diagnostic_msgs/DiagnosticStatus``. Thread-safe: the subscription callback
and the inference worker update one ``FrameStats`` concurrently.

Dropping frames is how the nodes keep up (the newest frame wins), so a drop alone is no fault:
``Health`` judges the share of frames dropped over the last ``DROP_WINDOW_S`` seconds against the
node's ``drop_warn_ratio`` parameter.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
import threading
import time
from typing import Callable

from qdr_ros.core.stats import percentiles as _percentiles

OK, WARN, ERROR = 0, 1, 2
WINDOW = 100  # timing samples kept for the percentiles (the last ~100 frames)
DROP_WINDOW_S = 5.0  # the drop ratio is judged over at least this many seconds (or one diagnostics period)


@dataclass(frozen=True)
class Snapshot:
    """Counters since start plus timing percentiles over the last ``WINDOW`` frames."""

    time: float
    frames_in: int
    frames_out: int
    offered: int
    dropped: int
    skipped: int
    rejected: dict[str, int]
    backend_errors: int
    last_backend_error: str
    backend_failing: bool
    last_input: float | None
    started: float
    inference_ms: tuple[float, float] | None
    delay_ms: tuple[float, float] | None

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def drop_ratio(self, since: Snapshot) -> float:
        """Share of the frames offered since ``since`` that were dropped (0 when none were offered)."""
        offered = self.offered - since.offered
        return (self.dropped - since.dropped) / offered if offered > 0 else 0.0


@dataclass(frozen=True)
class Wording:
    """What a node does, in its diagnostics messages (restoring, detecting, publishing)."""

    working: str
    failing: str
    idle_hint: str
    drop_cause: str


RESTORE = Wording('restoring', 'inference failing', 'check the camera and the image remapping',
                  'inference slower than the camera; lower the camera rate or resolution')
DETECT = Wording('detecting', 'detection failing', 'check the restored image topic and its remapping',
                 'detector slower than the camera; lower the camera rate or imgsz')
CAMERA = Wording('publishing', 'cannot read frames', 'check the source',
                 'timer ticks missed: reading or degrading a frame takes longer than 1/rate; lower rate or size')


@dataclass(frozen=True)
class Report:
    """One diagnostics verdict: level, a one-line message, and the key/value pairs."""

    level: int
    message: str
    values: list[tuple[str, str]] = field(default_factory=list)


class FrameStats:
    """What happened to every frame: received, published, dropped (overwritten), skipped, rejected by reason."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._frames_in = self._frames_out = self._offered = self._dropped = self._skipped = self._backend_errors = 0
        self._rejected: Counter[str] = Counter()
        self._last_input: float | None = None
        self._last_error = ''
        self._failing = False
        self._inference: deque[float] = deque(maxlen=WINDOW)
        self._delay: deque[float] = deque(maxlen=WINDOW)

    def frame_in(self) -> None:
        with self._lock:
            self._frames_in += 1
            self._last_input = self._clock()

    def frame_out(self, inference_ms: float | None = None, delay_ms: float | None = None) -> None:
        """Count a frame delivered; it ends a failing state, whether inference ran (or bypass passed it on)."""
        with self._lock:
            self._frames_out += 1
            self._failing = False
            if inference_ms is not None:
                self._inference.append(inference_ms)
            if delay_ms is not None:
                self._delay.append(delay_ms)

    def offered(self, count: int = 1, dropped: int = 0) -> None:
        """Count ``count`` frames handed on (to the worker, or due on the camera's timer), ``dropped`` of them lost."""
        with self._lock:
            self._offered += count
            self._dropped += dropped

    def skipped(self) -> None:
        with self._lock:
            self._skipped += 1

    def rejected(self, reason_code: str) -> None:
        with self._lock:
            self._rejected[reason_code] += 1

    def backend_error(self, message: str) -> None:
        with self._lock:
            self._backend_errors += 1
            self._last_error = message
            self._failing = True

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(self._clock(), self._frames_in, self._frames_out, self._offered, self._dropped,
                            self._skipped, dict(self._rejected), self._backend_errors, self._last_error, self._failing,
                            self._last_input, self._started, _percentiles(self._inference),
                            _percentiles(self._delay))


def _fmt(pair: tuple[float, float] | None, index: int) -> str:
    return 'n/a' if pair is None else f'{pair[index]:.1f}'


def assess(now: Snapshot, previous: Snapshot | None, input_timeout: float, facts: dict[str, object],
           drop_warn_ratio: float, window: Snapshot | None = None, wording: Wording = RESTORE) -> Report:
    """Judge a snapshot against the previous one and the start of the drop window (default: ``previous``).

    ERROR while the work fails; WARN on no input for ``input_timeout`` seconds, on new rejects since
    ``previous``, or when more than ``drop_warn_ratio`` of the frames offered since ``window`` were
    dropped; else OK. ``facts`` (backend, model, ...) are appended as they are.
    """
    before = previous or Snapshot(now.started, 0, 0, 0, 0, 0, {}, 0, '', False, None, now.started, None, None)
    window = window or before
    elapsed = max(now.time - before.time, 1e-6)
    idle = now.time - (now.last_input if now.last_input is not None else now.started)
    drop_ratio = now.drop_ratio(window)
    new_rejected = {k: v - before.rejected.get(k, 0) for k, v in now.rejected.items()
                    if v > before.rejected.get(k, 0)}
    if now.backend_failing:
        level, message = ERROR, f'{wording.failing}: {now.last_backend_error}'
    elif idle > input_timeout:
        level, message = WARN, f'no input frame for {idle:.1f} s; {wording.idle_hint}'
    elif new_rejected:
        reasons = ', '.join(f'{k} x{v}' for k, v in sorted(new_rejected.items()))
        level, message = WARN, f'rejecting frames ({reasons}); see the node log for what to fix'
    elif drop_ratio > drop_warn_ratio:
        level, message = WARN, (f'{drop_ratio:.0%} of frames dropped in the last {now.time - window.time:.0f} s '
                                f'(above drop_warn_ratio {drop_warn_ratio:g}): {wording.drop_cause}')
    else:
        working = now.frames_out > before.frames_out
        level, message = OK, wording.working if working else 'ok, idle'
        if working and drop_ratio > 0:
            message += f' ({drop_ratio:.0%} of frames dropped, newest frame wins)'
    values = [
        ('input_rate_hz', f'{(now.frames_in - before.frames_in) / elapsed:.2f}'),
        ('output_rate_hz', f'{(now.frames_out - before.frames_out) / elapsed:.2f}'),
        ('inference_ms_p50', _fmt(now.inference_ms, 0)),
        ('inference_ms_p95', _fmt(now.inference_ms, 1)),
        ('delay_ms_p50', _fmt(now.delay_ms, 0)),
        ('delay_ms_p95', _fmt(now.delay_ms, 1)),
        ('frames_in', str(now.frames_in)),
        ('frames_out', str(now.frames_out)),
        ('dropped', str(now.dropped)),
        ('drop_ratio', f'{drop_ratio:.3f}'),
        ('drop_window_s', f'{now.time - window.time:.1f}'),
        ('skipped', str(now.skipped)),
        ('rejected', str(now.rejected_total)),
        *((f'rejected.{k}', str(v)) for k, v in sorted(now.rejected.items())),
        ('backend_errors', str(now.backend_errors)),
        *((str(k), str(v)) for k, v in facts.items()),
    ]
    return Report(level, message, values)


class Health:
    """A node's verdict over time: keeps the recent snapshots so drops are judged as a rate, not one by one."""

    def __init__(self, stats: FrameStats, wording: Wording, window_s: float = DROP_WINDOW_S) -> None:
        self.stats, self._wording, self._window_s = stats, wording, window_s
        self._history: deque[Snapshot] = deque([stats.snapshot()])  # the start: young nodes judge all they saw

    def report(self, input_timeout: float, drop_warn_ratio: float, facts: dict[str, object]) -> Report:
        """Assess the current counters; the drop window starts at the newest snapshot ``window_s`` old or older."""
        now = self.stats.snapshot()
        previous = self._history[-1]
        self._history.append(now)  # trimmed before judging, so the window is window_s (or one period), not more
        while len(self._history) > 1 and self._history[1].time <= now.time - self._window_s:
            self._history.popleft()
        return assess(now, previous, input_timeout, facts, drop_warn_ratio, self._history[0], self._wording)
