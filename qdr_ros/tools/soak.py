"""qdr soak: run publisher -> restore_node (own process) [-> detect_node] for a long time and judge stability.

    python -m qdr_ros.tools.soak --minutes 30 --rate 30 --size 640x480 --detect --out results/soak

Samples each node's RSS (psutil) every second and the latency (receive time minus the time the frame
with that stamp was published) of every restored frame and, with ``--detect``, of every annotated detection frame; per
bucket (one minute, or a sixth of short runs) it records per stage latency p50/p99, frames
received and drops (sent minus received: the nodes keep only the newest frame, so a slower stage
drops rather than queues). Verdicts, after a warm-up of one bucket, on the first and the last
third of the remaining time: each node's median RSS grows < 5 %, each stage's p99 latency is not
above the first third's by more than 25 % + 2 ms, and each stage delivers at least half as many
frames in the last third as in the first (a pipeline that stalls while its nodes stay alive
fails). Writes ``soak.json`` and ``soak.png`` to ``--out`` (also when Ctrl-C or SIGTERM stops it
once the frames flow, marked ``interrupted``; before that, the nodes are stopped and nothing is
written) and exits 0 only when every node is alive at the end and every verdict passes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from tqdm import tqdm

from qdr_ros.core import plots
from qdr_ros.core.atomic import atomic_write
from qdr_ros.core.stats import percentiles
from qdr_ros.tools.bench.cli import parse_size
from qdr_ros.tools.processes import sigterm_as_ctrl_c

if TYPE_CHECKING:  # rclpy is imported when the soak runs, so the judging logic is testable without it
    from qdr_ros.tools.probe import Inbox

NS = '/soak'
RSS_GROWTH_LIMIT = 0.05
P99_SLACK = (1.25, 2.0)  # last-third p99 may be at most 1.25 x first-third p99 + 2 ms
DELIVERY_FLOOR = 0.5  # the last third must deliver at least this share of the first third's frames
START_TIMEOUT_S = 120.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m qdr_ros.tools.soak', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--minutes', type=float, default=30.0, help='run time (default 30)')
    parser.add_argument('--rate', type=float, default=30.0, help='published frames per second (default 30)')
    parser.add_argument('--size', default='640x480', help='frame WIDTHxHEIGHT (default 640x480)')
    parser.add_argument('--model', default='models/auto/efm_int8.onnx', help='restore_node model:=')
    parser.add_argument('--threads', type=int, default=0, help='restore_node threads:= (0 = per core)')
    parser.add_argument('--detect', action='store_true', help='also run detect_node on the restored frames')
    parser.add_argument('--out', type=Path, default=Path('results/soak'), help='output folder')
    args = parser.parse_args(argv)
    try:
        args.width, args.height = parse_size(args.size)
    except argparse.ArgumentTypeError as exc:
        parser.error(f'--size: {exc}')
    if args.minutes <= 0 or args.rate <= 0:
        parser.error('--minutes and --rate must be positive')
    return args


def _thirds(samples: list[tuple[float, Any]], start_s: float, end_s: float) -> tuple[list[Any], list[Any]]:
    """Return the values of the first and of the last third of the time from ``start_s`` to ``end_s``.

    Split by time, not by count: a stage that stops delivering halfway has an empty last third.
    """
    third = (end_s - start_s) / 3
    return ([v for t, v in samples if start_s <= t < start_s + third],
            [v for t, v in samples if end_s - third <= t < end_s])


@dataclass
class Stage:
    """One output the soak listens to: its topic, then (seconds since start, latency ms) per received frame."""

    name: str
    topic: str
    inbox: Inbox | None = None
    latencies: list[tuple[float, float]] = field(default_factory=list)


def rss_growth(rss: list[tuple[float, int]], warmup_s: float, end_s: float) -> float | None:
    """Median RSS of the last third over the first third after warm-up, minus one (None: no samples in one)."""
    first, last = _thirds(rss, warmup_s, end_s)
    if not first or not last:
        return None
    return float(np.median(last) / np.median(first) - 1.0)


def p99_trend(latencies: list[tuple[float, float]], warmup_s: float, end_s: float) -> tuple[float, float] | None:
    """p99 latency (ms) of the first and the last third after warm-up (None: under 2 frames in one)."""
    first, last = _thirds(latencies, warmup_s, end_s)
    if min(len(first), len(last)) < 2:
        return None
    return percentiles(first, (99,))[0], percentiles(last, (99,))[0]


def judge(rss: dict[str, list[tuple[float, int]]], latencies: dict[str, list[tuple[float, float]]],
          warmup_s: float, end_s: float) -> dict[str, Any]:
    """PASS/MISS per node (RSS growth) and per stage (p99 trend, delivery); ``pass`` when every one holds."""
    verdict: dict[str, Any] = {'rss': {}, 'p99': {}, 'delivery': {}}
    for name, samples in rss.items():
        growth = rss_growth(samples, warmup_s, end_s)
        verdict['rss'][name] = {'growth': growth, 'pass': growth is not None and growth < RSS_GROWTH_LIMIT}
    for name, samples in latencies.items():
        trend = p99_trend(samples, warmup_s, end_s)
        first, last = trend if trend else (None, None)
        verdict['p99'][name] = {'first_ms': first, 'last_ms': last,
                                'pass': trend is not None and last <= first * P99_SLACK[0] + P99_SLACK[1]}
        early, late = (len(third) for third in _thirds(samples, warmup_s, end_s))
        verdict['delivery'][name] = {'first': early, 'last': late, 'pass': early > 0 and late >= DELIVERY_FLOOR * early}
    verdict['pass'] = all(v['pass'] for group in ('rss', 'p99', 'delivery') for v in verdict[group].values())
    return verdict


def buckets(duration: float, sent: list[float], latencies: dict[str, list[tuple[float, float]]],
            rss: dict[str, list[tuple[float, int]]], bucket_s: float) -> list[dict[str, Any]]:
    """Per bucket: frames sent, and per stage received, drops, latency p50/p99; per node the last RSS."""
    rows = []
    for start in np.arange(0.0, duration, bucket_s):
        end = start + bucket_s
        n_sent = int(sum(start <= t < end for t in sent))
        row: dict[str, Any] = {'start_s': float(start), 'sent': n_sent}
        for name, samples in latencies.items():
            lat = [v for t, v in samples if start <= t < end]
            p50, p99 = percentiles(lat, (50, 99)) or (None, None)
            row[name] = {'received': len(lat), 'drops': max(0, n_sent - len(lat)), 'p50_ms': p50, 'p99_ms': p99}
        for name, samples in rss.items():
            mem = [v for t, v in samples if start <= t < end]
            row[f'{name}_rss_mib'] = mem[-1] / 2**20 if mem else None
        rows.append(row)
    return rows


def plot(rows: list[dict[str, Any]], stages: list[Stage], rss: dict[str, list[tuple[float, int]]], path: Path) -> None:
    """RSS of each node over time; per stage latency p50/p99 per bucket, with the drops as bars."""
    fig, (top, bottom) = plots.pyplot().subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, samples in rss.items():
        top.plot([t / 60 for t, _ in samples], [v / 2**20 for _, v in samples], label=name)
    top.set_ylabel('RSS (MiB)')
    top.legend()
    mid = [r['start_s'] / 60 for r in rows]
    drops = bottom.twinx()
    drops.grid(False)  # the latency axis's grid is the one to read
    width = 0.6 * (mid[1] - mid[0]) / len(stages) if len(mid) > 1 else 0.1
    for i, stage in enumerate(stages):
        bottom.plot(mid, [r[stage.name]['p50_ms'] for r in rows], 'o-', label=f'{stage.name} p50')
        bottom.plot(mid, [r[stage.name]['p99_ms'] for r in rows], 's--', label=f'{stage.name} p99')
        drops.bar([m + i * width for m in mid], [r[stage.name]['drops'] for r in rows], width=width, alpha=0.25,
                  label=f'{stage.name} drops')
    bottom.set_ylabel('latency from camera stamp (ms)')
    bottom.set_xlabel('minutes')
    drops.set_ylabel('dropped frames per bucket')
    bottom.legend(loc='upper left')
    plots.save(fig, path)


def summary_lines(verdict: dict[str, Any], stages: list[Stage], sent: int, alive: dict[str, bool]) -> list[str]:
    """Return the operator-readable verdict, one line per check."""
    lines = []
    for name, v in verdict['rss'].items():
        growth = 'n/a' if v['growth'] is None else f"{v['growth']:+.1%}"
        lines.append(f"{name} RSS growth after warm-up: {growth} {'PASS' if v['pass'] else 'MISS'} "
                     f'(limit {RSS_GROWTH_LIMIT:.0%})')
    for stage in stages:
        v, d = verdict['p99'][stage.name], verdict['delivery'][stage.name]
        trend = 'n/a' if v['first_ms'] is None else f"{v['first_ms']:.1f}/{v['last_ms']:.1f} ms"
        lines.append(f"{stage.name} p99 latency first/last third: {trend} {'PASS' if v['pass'] else 'MISS'}; "
                     f"frames first/last third {d['first']}/{d['last']} {'PASS' if d['pass'] else 'MISS'} "
                     f'(at least {DELIVERY_FLOOR:.0%}); received {len(stage.latencies)} of {sent} frames sent')
    lines.append('nodes alive at the end: ' + ', '.join(f"{k} {'yes' if ok else 'NO'}" for k, ok in alive.items()))
    return lines


def run(args: argparse.Namespace) -> int:
    """Run the soak and write the report; 0 when every node survived and every verdict passes."""
    import psutil
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from sensor_msgs.msg import Image

    from qdr_ros.core import ros_env
    from qdr_ros.nodes.base_node import image_msg
    from qdr_ros.tools.probe import NodeProcess, Probe, ProbeError

    ros_env.apply()
    sigterm_as_ctrl_c()  # timeout(1), a CI cancel: stop the nodes, keep the report
    watched = [NodeProcess.start('qdr_ros.nodes.restore_node', namespace=NS, params={
        'model': args.model, 'threads': args.threads, 'warmup_width': args.width, 'warmup_height': args.height})]
    stages = [Stage('restored', f'{NS}/image_restored')]
    if args.detect:
        watched.append(NodeProcess.start('qdr_ros.nodes.detect_node', namespace=NS,
                                         remaps={'image': 'image_restored'}))
        stages.append(Stage('detections', f'{NS}/image_detections'))
    rss: dict[str, list[tuple[float, int]]] = {w.name: [] for w in watched}  # (seconds since start, bytes)
    sent: dict[tuple[int, int], float] = {}  # stamp -> perf_counter when published
    rclpy.init()
    probe = Probe('qdr_soak', watch=watched)
    pixels = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    frame = image_msg(Image().header, pixels, 'rgb8')  # built once; each publish only restamps it
    frame.header.frame_id = 'soak'
    duration = args.minutes * 60
    interrupted = ''
    t0 = time.perf_counter()
    try:
        pub = probe.publisher(f'{NS}/image')
        for stage in stages:
            stage.inbox = probe.inbox(stage.topic, raw=True)  # stamps only: no Python copy of every frame
        try:
            probe.wait_for_graph(publishers=[s.topic for s in stages], subscribers=[f'{NS}/image'],
                                 timeout_s=START_TIMEOUT_S)
            # one frame through every stage before the clock starts: a node skips frames until it has seen
            # its own subscribers, and the first frame pays for warm-up; neither is what a soak measures
            frame.header.stamp = probe.node.get_clock().now().to_msg()
            probe.exchange(f'{NS}/image', frame, stages[-1].inbox, timeout_s=START_TIMEOUT_S)
        except ProbeError as exc:
            print(f'the nodes did not start: {exc}', file=sys.stderr)
            return 2
        procs = [psutil.Process(w.pid) for w in watched]
        t0 = time.perf_counter()
        next_frame = next_sample = 0.0
        try:  # from here on a Ctrl-C or SIGTERM, however early, ends in the report
            print(f'soak: frames flow through {", ".join(s.topic for s in stages)}; {duration:.0f} s at '
                  f'{args.rate:g} Hz (Ctrl-C stops it and writes the report)', flush=True)
            with tqdm(total=int(duration), unit='s', desc='soak', disable=not sys.stderr.isatty()) as bar:
                while (now := time.perf_counter() - t0) < duration and all(w.alive for w in watched):
                    if now >= next_frame:
                        frame.header.stamp = probe.node.get_clock().now().to_msg()
                        sent[frame.header.stamp.sec, frame.header.stamp.nanosec] = time.perf_counter()
                        pub.publish(frame)  # timed from before publish: sending a frame is part of its latency
                        next_frame += 1.0 / args.rate
                    if now >= next_sample:
                        for w, proc in zip(watched, procs):
                            rss[w.name].append((now, proc.memory_info().rss))
                        next_sample += 1.0
                        bar.update(int(now) - bar.n)
                    probe.spin_once(min(next_frame, next_sample) - (time.perf_counter() - t0))
        except (KeyboardInterrupt, ExternalShutdownException):  # Ctrl-C, SIGTERM: judge and write what was measured
            interrupted = f'stopped after {time.perf_counter() - t0:.0f} s of {duration:.0f}'
            print(f'soak {interrupted}; writing the report of what was measured', file=sys.stderr)
        alive = {w.name: w.alive for w in watched}
    finally:
        probe.close()
        rclpy.try_shutdown()
        for w in reversed(watched):
            w.stop()
    for stage in stages:
        stage.latencies = sorted((arrived - t0, (arrived - sent[key]) * 1e3)
                                 for key, arrived in stage.inbox.arrivals.items() if key in sent)
    bucket_s = 60.0 if duration >= 180 else duration / 6
    end_s = min(duration, time.perf_counter() - t0)  # shorter when interrupted
    latencies = {s.name: s.latencies for s in stages}
    rows = buckets(end_s, [t - t0 for t in sent.values()], latencies, rss, bucket_s)
    verdict = judge(rss, latencies, warmup_s=bucket_s, end_s=end_s)
    ok = all(alive.values()) and verdict['pass'] and not interrupted
    report = {'args': {k: str(v) for k, v in vars(args).items()}, 'alive': alive, 'pass': ok,
              'interrupted': interrupted, 'duration_s': end_s, 'bucket_s': bucket_s,
              'sent': len(sent), 'received': {s.name: len(s.latencies) for s in stages}, 'verdict': verdict,
              'buckets': rows, 'rss_samples': rss}
    atomic_write(args.out / 'soak.json', json.dumps(report, indent=1))
    plot(rows, stages, rss, args.out / 'soak.png')
    for line in summary_lines(verdict, stages, len(sent), alive):
        print(line)
    print(f"soak {'PASS' if ok else 'MISS'}; report {args.out / 'soak.json'}, plot {args.out / 'soak.png'}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m qdr_ros.tools.soak``."""
    return run(parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
