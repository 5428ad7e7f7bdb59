"""Stopping a node process the way an operator would: Ctrl-C first, kill only if it hangs.

What the process started (``ros2 launch`` starts the nodes) is stopped with it: a launch that hangs
on Ctrl-C, or exits leaving a node behind, would otherwise leave that node publishing on the graph
of whatever runs next. ``sigterm_as_ctrl_c`` lets a long tool (bench, soak) be stopped by SIGTERM
through the same path.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import psutil

ORPHAN_GRACE_S = 5.0  # how long a descendant may take to exit after its parent did, before it is killed


def sigterm_as_ctrl_c() -> None:
    """Handle SIGTERM (``timeout``, a cancelled CI job) as Ctrl-C: the tool stops its nodes and reports.

    Re-sent as SIGINT, so rclpy shuts its context down as on Ctrl-C: a KeyboardInterrupt raised
    straight from a SIGTERM handler left the executor's wait set in use, and destroying the probe
    node then never returned.
    """
    def resend(signum: int, frame: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGTERM, resend)


def _descendants(pid: int) -> list[psutil.Process]:
    """Every process ``pid`` started, directly or not (empty once it has exited)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop_process(process: subprocess.Popen, timeout: float = 20.0) -> int:
    """Send SIGINT (a normal exit for the qdr nodes), kill after ``timeout`` s; return the exit code.

    The processes it had started when the stop began are killed too if they outlive it: at once when it
    had to be killed, after ``ORPHAN_GRACE_S`` when it exited on its own.
    """
    if process.poll() is None:
        family = _descendants(process.pid)
        process.send_signal(signal.SIGINT)
        grace = ORPHAN_GRACE_S
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            grace = 0.0
        _, left = psutil.wait_procs(family, timeout=grace)
        for orphan in left:
            try:
                orphan.kill()
            except psutil.NoSuchProcess:
                pass  # exited between the check and the kill
        psutil.wait_procs(left, timeout=ORPHAN_GRACE_S)
    return process.returncode
