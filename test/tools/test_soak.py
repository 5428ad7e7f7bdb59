"""The soak command: its verdicts on synthetic traces, and a short real run through restore_node.

The 30-minute run itself is ``make soak`` (results/soak/); here the judging logic is checked on
traces whose answer is known, and a few-second run shows the command works end to end, and that
SIGTERM (``timeout``, a cancelled CI job) stops it the way Ctrl-C does.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from qdr_ros.tools import soak


def test_flat_memory_and_latency_pass() -> None:
    rss = [(float(t), 200 * 2**20) for t in range(60)]
    lat = [(t / 10, 30.0 + (t % 7)) for t in range(600)]
    verdict = soak.judge({'node': rss}, {'restored': lat}, warmup_s=10, end_s=60)
    assert verdict['pass']
    assert verdict['rss']['node']['growth'] == pytest.approx(0.0)


def test_leak_after_warmup_is_caught() -> None:
    rss = [(float(t), (200 + 2 * t) * 2**20) for t in range(60)]  # +2 MiB/s: far above 5 % over the run
    verdict = soak.judge({'node': rss}, {'restored': [(t / 10, 30.0) for t in range(600)]}, warmup_s=10,
                         end_s=60)
    assert not verdict['rss']['node']['pass'] and not verdict['pass']


def test_warmup_growth_is_ignored() -> None:
    rss = [(float(t), (100 if t < 10 else 200) * 2**20) for t in range(60)]  # model load in the warm-up only
    assert soak.judge({'node': rss}, {}, warmup_s=10, end_s=60)['pass']


def test_rising_p99_is_caught() -> None:
    lat = [(t / 10, 30.0 + t / 10) for t in range(600)]  # latency climbs 1 ms per second
    verdict = soak.judge({}, {'restored': lat}, warmup_s=5, end_s=60)
    assert not verdict['p99']['restored']['pass']
    assert verdict['p99']['restored']['last_ms'] > verdict['p99']['restored']['first_ms']


def test_a_stage_that_never_delivered_fails() -> None:
    verdict = soak.judge({}, {'restored': []}, warmup_s=0, end_s=60)
    assert not verdict['pass'] and verdict['p99']['restored']['first_ms'] is None


def test_a_pipeline_that_stalls_while_alive_fails() -> None:
    """Frames stop after a third of the run while every node lives: the last third is empty, not the last frames."""
    lat = [(t / 30, 70.0) for t in range(30 * 600)]  # 30 fps for 10 of the 30 minutes, then nothing
    rss = [(float(t), 200 * 2**20) for t in range(1800)]
    verdict = soak.judge({'node': rss}, {'restored': lat}, warmup_s=60, end_s=1800)
    assert verdict['delivery']['restored'] == {'first': 30 * 540, 'last': 0, 'pass': False}
    assert verdict['p99']['restored']['first_ms'] is None and not verdict['pass']
    slower = [(t / 30, 70.0) for t in range(30 * 1800) if t < 30 * 1200 or t % 3]  # a third fewer at the end
    assert soak.judge({}, {'restored': slower}, warmup_s=60, end_s=1800)['delivery']['restored']['pass']


def test_buckets_count_drops_per_stage() -> None:
    sent = [t / 10 for t in range(100)]  # 10 s at 10 Hz
    arrived = [(t / 10, 20.0) for t in range(0, 100, 2)]  # every second frame arrives
    rows = soak.buckets(10.0, sent, {'restored': arrived}, {'node': [(1.0, 2**20)]}, bucket_s=5.0)
    assert [r['sent'] for r in rows] == [50, 50]
    assert [r['restored']['drops'] for r in rows] == [25, 25]
    assert rows[0]['node_rss_mib'] == 1.0 and rows[1]['node_rss_mib'] is None


def test_short_run_through_restore_node(tmp_path: Path) -> None:
    rc = soak.main(['--minutes', '0.1', '--rate', '10', '--size', '160x120', '--out', str(tmp_path)])
    report = json.loads((tmp_path / 'soak.json').read_text())
    assert report['alive'] == {'restore_node': True}
    assert report['received']['restored'] > 0.5 * report['sent'] > 0
    assert rc == (0 if report['pass'] else 1)
    assert (tmp_path / 'soak.png').stat().st_size > 0


def test_sigterm_stops_the_nodes_and_writes_an_interrupted_report(tmp_path: Path) -> None:
    cmd = [sys.executable, '-m', 'qdr_ros.tools.soak', '--minutes', '5', '--rate', '10', '--size', '160x120',
           '--out', str(tmp_path)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        lines = []
        for line in proc.stdout:  # the line that says frames flow comes once the nodes answer
            lines.append(line)
            if line.startswith('soak: frames flow'):
                break
        assert lines and lines[-1].startswith('soak: frames flow'), ''.join(lines)
        nodes = psutil.Process(proc.pid).children(recursive=True)
        assert nodes, 'the soak started no node process'
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out  # stopped early: a report, never a PASS
    report = json.loads((tmp_path / 'soak.json').read_text())
    assert report['interrupted'].startswith('stopped after') and not report['pass']
    assert report['alive'] == {'restore_node': True}
    gone, alive = psutil.wait_procs(nodes, timeout=10)
    assert not alive, alive
