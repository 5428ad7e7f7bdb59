"""The drop verdict: newest-frame-wins drops warn only above drop_warn_ratio over the recent window."""

from __future__ import annotations

from qdr_ros.nodes.diagnostics import CAMERA, DETECT, OK, WARN, FrameStats, Health


def run(stats: FrameStats, now: list[float], seconds: int, dropped_per_10: int) -> None:
    """Feed ``seconds`` of 10 frames/s, ``dropped_per_10`` of each second's frames overwritten before inference."""
    for _ in range(seconds):
        for i in range(10):
            stats.frame_in()
            stats.offered(dropped=int(i < dropped_per_10))
        for _ in range(10 - dropped_per_10):
            stats.frame_out(inference_ms=50.0)
        now[0] += 1.0


def test_drops_warn_only_above_the_ratio_over_the_window() -> None:
    now = [0.0]
    stats = FrameStats(clock=lambda: now[0])
    health = Health(stats, DETECT, window_s=5.0)
    run(stats, now, 1, 4)  # 40 % dropped: the normal cost of a slow detector
    report = health.report(2.0, 0.5, {})
    assert report.level == OK and 'detecting (40% of frames dropped' in report.message
    assert ('drop_ratio', '0.400') in report.values
    run(stats, now, 1, 8)  # 80 % in this second: over the window start (t=0) it is 60 %
    report = health.report(2.0, 0.5, {})
    assert report.level == WARN and '60% of frames dropped in the last 2 s' in report.message
    assert 'above drop_warn_ratio 0.5' in report.message and 'imgsz' in report.message
    assert health.report(2.0, 0.7, {}).level == OK  # the same history under a higher threshold


def test_old_drops_leave_the_window() -> None:
    now = [0.0]
    stats = FrameStats(clock=lambda: now[0])
    health = Health(stats, CAMERA, window_s=3.0)
    for _ in range(3):
        run(stats, now, 1, 9)
        assert health.report(2.0, 0.5, {}).level == WARN
    for second in range(6):
        run(stats, now, 1, 0)
        report = health.report(2.0, 0.5, {})
        ratio = float(dict(report.values)['drop_ratio'])
        if second >= 4:  # the window (3-4 s back) holds only drop-free seconds now
            assert report.level == OK and ratio == 0.0 and report.message == 'publishing'
    assert health.report(2.0, 0.0, {}).level == OK  # no drop at all in the window: even threshold 0 is calm


def test_threshold_zero_warns_on_any_drop_and_one_never() -> None:
    now = [0.0]
    stats = FrameStats(clock=lambda: now[0])
    health = Health(stats, DETECT)
    run(stats, now, 1, 1)
    assert health.report(2.0, 0.0, {}).level == WARN
    run(stats, now, 1, 10)
    assert health.report(2.0, 1.0, {}).level == OK


def test_the_drop_window_is_window_s_long() -> None:
    now = [0.0]
    stats = FrameStats(clock=lambda: now[0])
    health = Health(stats, CAMERA, window_s=5.0)
    run(stats, now, 1, 9)  # a burst in the first second, then none
    levels = [health.report(2.0, 0.1, {}).level]
    for _ in range(7):
        run(stats, now, 1, 0)
        report = health.report(2.0, 0.1, {})
        levels.append(report.level)
    assert dict(report.values)['drop_window_s'] == '5.0'
    assert levels[4] == WARN and levels[5] == OK  # at t=6 the window [1, 6] no longer holds the burst


def test_bypass_frames_end_a_failing_state() -> None:
    stats = FrameStats()
    stats.backend_error('CUDA error')
    assert stats.snapshot().backend_failing
    stats.frame_out()  # bypass: a frame delivered without inference
    assert not stats.snapshot().backend_failing
