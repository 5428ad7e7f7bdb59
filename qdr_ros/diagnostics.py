"""Frame counters, timing windows and the health verdict the restore node publishes on /diagnostics.

Plain Python (no rclpy) so the verdict rules are testable on their own; the node turns a
``Report`` into a ``diagnostic_msgs/DiagnosticStatus``. Thread-safe: the subscription callback
and the inference worker update one ``FrameStats`` concurrently.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
import threading
import time
from typing import Callable

import numpy as np

OK, WARN, ERROR = 0, 1, 2
WINDOW = 100  # timing samples kept for the percentiles (the last ~100 frames)


@dataclass(frozen=True)
class Snapshot:
    """Counters since start plus timing percentiles over the last ``WINDOW`` frames."""

    time: float
    frames_in: int
    frames_out: int
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


@dataclass(frozen=True)
class Report:
    """One diagnostics verdict: level, a one-line message, and the key/value pairs."""

    level: int
    message: str
    values: list[tuple[str, str]] = field(default_factory=list)


def _percentiles(samples: deque[float]) -> tuple[float, float] | None:
    if not samples:
        return None
    p50, p95 = np.percentile(np.fromiter(samples, float), [50, 95])
    return float(p50), float(p95)


class FrameStats:
    """What happened to every frame: received, published, dropped (overwritten), skipped, rejected by reason."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._frames_in = self._frames_out = self._dropped = self._skipped = self._backend_errors = 0
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
        with self._lock:
            self._frames_out += 1
            if inference_ms is not None:
                self._inference.append(inference_ms)
                self._failing = False
            if delay_ms is not None:
                self._delay.append(delay_ms)

    def dropped(self) -> None:
        with self._lock:
            self._dropped += 1

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
            return Snapshot(self._clock(), self._frames_in, self._frames_out, self._dropped, self._skipped,
                            dict(self._rejected), self._backend_errors, self._last_error, self._failing,
                            self._last_input, self._started, _percentiles(self._inference),
                            _percentiles(self._delay))


def _fmt(pair: tuple[float, float] | None, index: int) -> str:
    return 'n/a' if pair is None else f'{pair[index]:.1f}'


def assess(now: Snapshot, previous: Snapshot | None, input_timeout: float,
           facts: dict[str, object]) -> Report:
    """Judge two consecutive snapshots: level, one-line message and the key/value pairs.

    ERROR while inference fails; WARN on no input for ``input_timeout`` seconds or on new rejects or
    drops since ``previous``; else OK. ``facts`` (backend, model, ...) are appended as they are.
    """
    before = previous or Snapshot(now.started, 0, 0, 0, 0, {}, 0, '', False, None, now.started, None, None)
    elapsed = max(now.time - before.time, 1e-6)
    idle = now.time - (now.last_input if now.last_input is not None else now.started)
    new_dropped = now.dropped - before.dropped
    new_rejected = {k: v - before.rejected.get(k, 0) for k, v in now.rejected.items()
                    if v > before.rejected.get(k, 0)}
    if now.backend_failing:
        level, message = ERROR, f'inference failing: {now.last_backend_error}'
    elif idle > input_timeout:
        level, message = WARN, f'no input frame for {idle:.1f} s; check the camera and the image remapping'
    elif new_rejected:
        reasons = ', '.join(f'{k} x{v}' for k, v in sorted(new_rejected.items()))
        level, message = WARN, f'rejecting frames ({reasons}); see the node log for what to fix'
    elif new_dropped:
        level, message = WARN, (f'{new_dropped} frames dropped (inference slower than the camera); '
                                'lower the camera rate or resolution')
    else:
        level, message = OK, 'restoring' if now.frames_out > before.frames_out else 'ok, idle'
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
        ('skipped', str(now.skipped)),
        ('rejected', str(now.rejected_total)),
        *((f'rejected.{k}', str(v)) for k, v in sorted(now.rejected.items())),
        ('backend_errors', str(now.backend_errors)),
        *((str(k), str(v)) for k, v in facts.items()),
    ]
    return Report(level, message, values)
