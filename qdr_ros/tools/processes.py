"""Stopping a node process the way an operator would: Ctrl-C first, kill only if it hangs."""

from __future__ import annotations

import signal
import subprocess


def stop_process(process: subprocess.Popen, timeout: float = 20.0) -> int:
    """Send SIGINT (a normal exit for the qdr nodes), kill after ``timeout`` s; return the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
