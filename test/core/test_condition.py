"""Condition steadying: no flicker on single-frame blips, a real change reported within 1 s at 30 Hz."""

from __future__ import annotations

import numpy as np
import pytest

from qdr_ros.core.condition import ConditionTracker, labels_of

LABELS = ('clean', 'noise', 'rain', 'lowlight', 'haze')
CLEAN = np.array([0.95, 0.02, 0.03, 0.02, 0.05])
FOG = np.array([0.05, 0.02, 0.03, 0.02, 0.9])
NIGHT = np.array([0.02, 0.8, 0.05, 0.9, 0.1])


def run(tracker: ConditionTracker, frames: list[np.ndarray], start: float = 0.0, rate: float = 30.0) -> list:
    return [tracker.update(p, start + i / rate) for i, p in enumerate(frames)]


def test_a_change_is_reported_within_one_second_and_stays() -> None:
    tracker = ConditionTracker(LABELS)
    states = run(tracker, [CLEAN] * 30 + [FOG] * 60)
    assert states[29].present == ('clean',)
    first = next(i for i, s in enumerate(states) if s.present == ('haze',))
    assert 30 < first <= 60, first  # after the change, within 30 frames = 1 s of stamps
    assert all(s.present == ('haze',) for s in states[first:])
    assert states[-1].probabilities['haze'] > 0.85


def test_single_frame_blips_do_not_flicker() -> None:
    tracker = ConditionTracker(LABELS)
    frames = [CLEAN] * 90
    for i in range(5, 90, 7):
        frames[i] = FOG  # one foggy frame in seven
    assert {s.present for s in run(tracker, frames)} == {('clean',)}
    raw = [labels_of(p, LABELS) for p in frames]
    assert ('haze',) in raw  # the unsmoothed labels do flicker


def test_smoothing_follows_stamps_not_frame_count() -> None:
    """The same second of stamps moves the value the same at 10 Hz and at 60 Hz."""
    slow, fast = ConditionTracker(LABELS), ConditionTracker(LABELS)
    a = run(slow, [CLEAN] + [FOG] * 10, rate=10.0)[-1].probabilities['haze']
    b = run(fast, [CLEAN] + [FOG] * 60, rate=60.0)[-1].probabilities['haze']
    assert a == pytest.approx(b, abs=1e-9)


def test_several_labels_at_once_and_gate_share() -> None:
    tracker = ConditionTracker(LABELS, time_constant_s=0.0)
    gate = np.zeros((40, 40))
    gate[:12] = 0.9
    state = tracker.update(NIGHT, 1.0, gate)
    assert state.present == ('noise', 'lowlight') and state.gate_open == pytest.approx(0.3)


def test_stamp_going_back_restarts_and_bad_input_is_refused() -> None:
    tracker = ConditionTracker(LABELS)
    run(tracker, [FOG] * 30, start=100.0)
    assert tracker.update(CLEAN, 5.0).present == ('clean',)  # a bag looped: no history from the future
    with pytest.raises(ValueError, match='5 labels'):
        tracker.update(np.zeros(3), 6.0)
    with pytest.raises(ValueError, match='hysteresis'):
        ConditionTracker(LABELS, hysteresis=0.5)


def test_a_non_finite_frame_is_left_out() -> None:
    tracker = ConditionTracker(LABELS)
    assert tracker.update(np.full(5, np.nan), 0.0) is None  # nothing steadied yet: nothing to report
    run(tracker, [CLEAN] * 30)
    broken = tracker.update(np.full(5, np.nan), 1.0)
    assert broken.present == ('clean',) and np.isfinite(list(broken.probabilities.values())).all()
    assert run(tracker, [FOG] * 60, start=1.1)[-1].present == ('haze',)  # NaN would have frozen every label


def test_unstamped_frames_are_smoothed_over_the_node_clock() -> None:
    """A driver that leaves stamps at 0: the node's clock stands in, so the condition still follows the frames."""
    from std_msgs.msg import Header
    from qdr_ros.nodes.restore_node import stamp_seconds

    clock = iter(np.arange(0.0, 10.0, 1 / 30))
    tracker = ConditionTracker(LABELS)
    states = [tracker.update(p, stamp_seconds(Header(), lambda: next(clock))) for p in [CLEAN] * 30 + [FOG] * 60]
    assert states[29].present == ('clean',) and states[-1].present == ('haze',)
    stamped = Header()
    stamped.stamp.sec, stamped.stamp.nanosec = 12, 500_000_000
    assert stamp_seconds(stamped, lambda: 99.0) == 12.5  # a real stamp wins over the clock
    # sim time before any /clock: the node clock reads 0 as well, and frames still move the smoothing
    first, second = stamp_seconds(Header(), lambda: 0.0), stamp_seconds(Header(), lambda: 0.0)
    assert 0 < first <= second
