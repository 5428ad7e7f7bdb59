"""What the camera sees, steadied over time: the condition head's per-frame probabilities -> labels.

The model gives one sigmoid per label (``clean, noise, rain, lowlight, haze``) for every frame.
Single frames flicker (a passing truck, a dark tunnel mouth), so the node reports a smoothed
value: an exponential moving average whose weight follows the frames' own stamps (time constant
``time_constant_s``; a bag played at any rate behaves the same), and a label turns on above
``0.5 + hysteresis`` and off below ``0.5 - hysteresis``. "clean" is reported when no degradation
label is on, which is how the head is scored. With a 0.3 s time constant a change of condition
crosses the hysteresis band in about 0.3 s of stamps.
No ROS here: the restore node feeds it and publishes what it returns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CLEAN = 'clean'
GATE_OPEN = 0.5  # a gate pixel at or above this counts as open
GATE_STRIDE = 4  # the open share is read on every 4th row and column (1/16 of the work, per frame)


@dataclass(frozen=True)
class Condition:
    """The steadied condition after one frame."""

    stamp: float
    probabilities: dict[str, float]  # smoothed, one per label of the model
    present: tuple[str, ...]  # labels on after hysteresis; ('clean',) when no degradation is
    gate_open: float | None  # smoothed share of the frame where the gate is open (None: model has no gate)


class ConditionTracker:
    """Exponential smoothing over frame stamps plus per-label hysteresis."""

    def __init__(self, labels: tuple[str, ...], time_constant_s: float = 0.3, hysteresis: float = 0.1) -> None:
        if time_constant_s < 0:
            raise ValueError(f'time_constant_s must be >= 0, got {time_constant_s}')
        if not 0 <= hysteresis < 0.5:
            raise ValueError(f'hysteresis must be in [0, 0.5), got {hysteresis}')
        self.labels = tuple(labels)
        self.time_constant_s, self.hysteresis = time_constant_s, hysteresis
        self.reset()

    def reset(self) -> None:
        """Forget the history (a new stream, a stamp that went backwards)."""
        self._stamp: float | None = None
        self._smoothed: np.ndarray | None = None
        self._gate: float | None = None
        self._on = {label: False for label in self.labels}

    def update(self, probabilities: np.ndarray, stamp: float, gate: np.ndarray | None = None) -> Condition | None:
        """Fold in one frame's probabilities (len(labels),) and optional gate map; return the steadied state.

        A frame with a non-finite probability is left out: the state is returned as it was, or None
        when there is none yet (nothing to report).
        """
        probs = np.asarray(probabilities, np.float64).reshape(-1)
        if probs.size != len(self.labels):
            raise ValueError(f'{probs.size} condition probabilities for {len(self.labels)} labels {self.labels}')
        if not np.isfinite(probs).all():  # a broken frame must not poison the average for good (NaN stays NaN)
            return None if self._smoothed is None else self._state(stamp, self._smoothed)
        sampled = None if gate is None else np.asarray(gate)[::GATE_STRIDE, ::GATE_STRIDE]
        gate_open = None if sampled is None else float(np.mean(sampled >= GATE_OPEN))
        if self._stamp is not None and stamp < self._stamp:
            self.reset()
        weight = self._weight(stamp)
        self._smoothed = probs if self._smoothed is None else self._smoothed + weight * (probs - self._smoothed)
        if gate_open is not None:
            self._gate = gate_open if self._gate is None else self._gate + weight * (gate_open - self._gate)
        self._stamp = stamp
        for label, value in zip(self.labels, self._smoothed):
            if value >= 0.5 + self.hysteresis:
                self._on[label] = True
            elif value < 0.5 - self.hysteresis:
                self._on[label] = False
        return self._state(stamp, self._smoothed)

    def _state(self, stamp: float, smoothed: np.ndarray) -> Condition:
        degraded = tuple(label for label in self.labels if label != CLEAN and self._on[label])
        return Condition(stamp, dict(zip(self.labels, map(float, smoothed))), degraded or (CLEAN,), self._gate)

    def _weight(self, stamp: float) -> float:
        """Weight of the new frame: 1 - exp(-dt / tau); the first frame, or tau 0, takes it whole."""
        if self._stamp is None or self.time_constant_s == 0:
            return 1.0
        return 1.0 - math.exp(-(stamp - self._stamp) / self.time_constant_s)


def labels_of(probabilities: np.ndarray, labels: tuple[str, ...], threshold: float = 0.5) -> tuple[str, ...]:
    """One frame's label set, unsmoothed: degradation labels at or above ``threshold``, else ('clean',)."""
    degraded = tuple(label for label, p in zip(labels, np.asarray(probabilities).reshape(-1))
                     if label != CLEAN and p >= threshold)
    return degraded or (CLEAN,)
