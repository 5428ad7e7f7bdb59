"""Stopping a process stops what it started: Ctrl-C first, then the kill, and no orphan left behind."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from qdr_ros.tools import processes
from qdr_ros.tools.processes import stop_process

# A parent that starts a child ignoring SIGINT, prints the child's pid and sleeps; with "deaf" the parent
# ignores SIGINT too (a launch that hangs on Ctrl-C), without it Ctrl-C ends the parent and leaves the child.
FAMILY = '''
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, '-c',
                          'import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(120)'])
if sys.argv[1] == 'deaf':
    signal.signal(signal.SIGINT, signal.SIG_IGN)
print(child.pid, flush=True)
time.sleep(120)
'''


def _start_family(mode: str) -> tuple[subprocess.Popen, psutil.Process]:
    parent = subprocess.Popen([sys.executable, '-c', FAMILY, mode], stdout=subprocess.PIPE, text=True)
    child = psutil.Process(int(parent.stdout.readline()))
    return parent, child


def _reap(process: psutil.Process) -> None:
    """Kill what a failing test left running, so it cannot outlive the test."""
    try:
        process.kill()
    except psutil.NoSuchProcess:
        pass


def _gone(process: psutil.Process) -> bool:
    return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE


def test_a_parent_deaf_to_ctrl_c_is_killed_with_its_child() -> None:
    parent, child = _start_family('deaf')
    try:
        assert stop_process(parent, timeout=1.0) == -9
        child.wait(timeout=10)
        assert _gone(child)
    finally:
        _reap(child)


def test_a_child_left_behind_by_a_clean_exit_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, 'ORPHAN_GRACE_S', 0.5)
    parent, child = _start_family('polite')
    try:
        assert stop_process(parent, timeout=10.0) not in (None, -9)  # Ctrl-C ended it, no kill needed
        child.wait(timeout=10)
        assert _gone(child)
    finally:
        _reap(child)


def test_stopping_an_exited_process_returns_its_code() -> None:
    done = subprocess.Popen([sys.executable, '-c', 'raise SystemExit(3)'])
    done.wait()
    assert stop_process(done) == 3
