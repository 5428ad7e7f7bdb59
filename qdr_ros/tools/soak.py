"""qdr soak: run publisher -> restore_node (own process) [-> detect_node] for a long time and judge stability.

    python -m qdr_ros.tools.soak --minutes 30 --rate 30 --size 640x480 --detect --out results/soak

Samples each node's RSS (psutil) every second and the latency (receive time minus the camera
stamp) of every restored frame and, with ``--detect``, of every annotated detection frame; per
bucket (one minute, or a sixth of short runs) it records per stage latency p50/p99, frames
received and drops (sent minus received: the nodes keep only the newest frame, so a slower stage
drops rather than queues). Verdicts, after a warm-up of one bucket: each node's RSS growth from
the first to the last third of the run < 5 %, and each stage's last-third p99 latency not above
the first third's by more than 25 % + 2 ms. Writes ``soak.json`` and ``soak.png`` to ``--out``
and exits 0 only when every node is alive at the end and every verdict passes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from qdr_ros.tools.processes import stop_process

NS = '/soak'
RSS_GROWTH_LIMIT = 0.05
P99_SLACK = (1.25, 2.0)  # last-third p99 may be at most 1.25 x first-third p99 + 2 ms
START_TIMEOUT_S = 120.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='qdr-soak', description=__doc__,
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
        args.width, args.height = (int(v) for v in args.size.lower().split('x'))
    except ValueError:
        parser.error(f'--size must be WIDTHxHEIGHT, got {args.size!r}')
    if args.minutes <= 0 or args.rate <= 0:
        parser.error('--minutes and --rate must be positive')
    return args


def _thirds(values: list[float]) -> tuple[list[float], list[float]]:
    third = max(1, len(values) // 3)
    return values[:third], values[-third:]


@dataclass
class Stage:
    """One output the soak listens to: its topic and (seconds since start, latency ms) per received frame."""

    name: str
    topic: str
    latencies: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Watched:
    """One node process, its log (a temporary file: a pipe nobody reads would fill) and its RSS samples."""

    name: str
    process: subprocess.Popen
    log: IO[str]
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes)

    @classmethod
    def start(cls, module: str, *ros_args: str) -> Watched:
        """Start ``python -m module`` in the soak namespace."""
        log = tempfile.TemporaryFile('w+')
        process = subprocess.Popen([sys.executable, '-m', module, '--ros-args', '-r', f'__ns:={NS}', *ros_args],
                                   stdout=subprocess.DEVNULL, stderr=log, text=True)
        return cls(module.rsplit('.', 1)[-1], process, log)

    def log_tail(self, lines: int = 20) -> str:
        self.log.seek(0)
        return '\n'.join(self.log.read().splitlines()[-lines:])


def rss_growth(rss: list[tuple[float, int]], warmup_s: float) -> float | None:
    """Median RSS of the last third over the first third after warm-up, minus one (None: too few samples)."""
    after = [float(v) for t, v in rss if t >= warmup_s]
    if len(after) < 2:
        return None
    first, last = _thirds(after)
    return float(np.median(last) / np.median(first) - 1.0)


def p99_trend(latencies: list[tuple[float, float]], warmup_s: float) -> tuple[float, float] | None:
    """p99 latency (ms) of the first and the last third after warm-up (None: too few frames)."""
    after = [v for t, v in latencies if t >= warmup_s]
    if len(after) < 6:
        return None
    first, last = _thirds(after)
    return float(np.percentile(first, 99)), float(np.percentile(last, 99))


def judge(rss: dict[str, list[tuple[float, int]]], latencies: dict[str, list[tuple[float, float]]],
          warmup_s: float) -> dict[str, Any]:
    """PASS/MISS per node (RSS growth) and per stage (p99 trend); ``pass`` when every one holds."""
    verdict: dict[str, Any] = {'rss': {}, 'p99': {}}
    for name, samples in rss.items():
        growth = rss_growth(samples, warmup_s)
        verdict['rss'][name] = {'growth': growth, 'pass': growth is not None and growth < RSS_GROWTH_LIMIT}
    for name, samples in latencies.items():
        trend = p99_trend(samples, warmup_s)
        first, last = trend if trend else (None, None)
        verdict['p99'][name] = {'first_ms': first, 'last_ms': last,
                                'pass': trend is not None and last <= first * P99_SLACK[0] + P99_SLACK[1]}
    verdict['pass'] = all(v['pass'] for group in ('rss', 'p99') for v in verdict[group].values())
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
            row[name] = {'received': len(lat), 'drops': max(0, n_sent - len(lat)),
                         'p50_ms': float(np.percentile(lat, 50)) if lat else None,
                         'p99_ms': float(np.percentile(lat, 99)) if lat else None}
        for name, samples in rss.items():
            mem = [v for t, v in samples if start <= t < end]
            row[f'{name}_rss_mib'] = mem[-1] / 2**20 if mem else None
        rows.append(row)
    return rows


def plot(rows: list[dict[str, Any]], stages: list[Stage], watched: list[Watched], path: Path) -> None:
    """RSS of each node over time; per stage latency p50/p99 per bucket, with the drops as bars."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for w in watched:
        top.plot([t / 60 for t, _ in w.rss], [v / 2**20 for _, v in w.rss], label=w.name)
    top.set_ylabel('RSS (MiB)')
    top.legend()
    mid = [r['start_s'] / 60 for r in rows]
    drops = bottom.twinx()
    width = 0.6 * (mid[1] - mid[0]) / len(stages) if len(mid) > 1 else 0.1
    for i, stage in enumerate(stages):
        bottom.plot(mid, [r[stage.name]['p50_ms'] for r in rows], 'o-', label=f'{stage.name} p50')
        bottom.plot(mid, [r[stage.name]['p99_ms'] for r in rows], 's--', label=f'{stage.name} p99')
        drops.bar([m + i * width for m in mid], [r[stage.name]['drops'] for r in rows], width=width, alpha=0.25,
                  label=f'{stage.name} drops')
    bottom.set_ylabel('latency from camera stamp (ms)')
    bottom.set_xlabel('minutes')
    drops.set_ylabel('dropped frames per bucket')
    bottom.legend(loc='upper left', fontsize='small')
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary_lines(verdict: dict[str, Any], stages: list[Stage], sent: int, alive: dict[str, bool]) -> list[str]:
    """Return the operator-readable verdict, one line per check."""
    lines = []
    for name, v in verdict['rss'].items():
        growth = 'n/a' if v['growth'] is None else f"{v['growth']:+.1%}"
        lines.append(f"{name} RSS growth after warm-up: {growth} {'PASS' if v['pass'] else 'MISS'} "
                     f'(limit {RSS_GROWTH_LIMIT:.0%})')
    for stage in stages:
        v = verdict['p99'][stage.name]
        trend = 'n/a' if v['first_ms'] is None else f"{v['first_ms']:.1f}/{v['last_ms']:.1f} ms"
        lines.append(f"{stage.name} p99 latency first/last third: {trend} {'PASS' if v['pass'] else 'MISS'}; "
                     f'received {len(stage.latencies)} of {sent} frames sent')
    lines.append('nodes alive at the end: ' + ', '.join(f"{k} {'yes' if ok else 'NO'}" for k, ok in alive.items()))
    return lines


def run(args: argparse.Namespace) -> int:
    """Run the soak and write the report; 0 when every node survived and every verdict passes."""
    import psutil
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from qdr_ros.core import ros_env
    from qdr_ros.nodes.base_node import image_msg

    ros_env.apply()
    watched = [Watched.start('qdr_ros.nodes.restore_node', '-p', f'model:={args.model}',
                             '-p', f'threads:={args.threads}', '-p', f'warmup_width:={args.width}',
                             '-p', f'warmup_height:={args.height}')]
    stages = [Stage('restored', f'{NS}/image_restored')]
    if args.detect:
        watched.append(Watched.start('qdr_ros.nodes.detect_node', '-r', 'image:=image_restored'))
        stages.append(Stage('detections', f'{NS}/image_detections'))
    rclpy.init()
    node = rclpy.create_node('qdr_soak')
    sent: list[float] = []
    t0 = time.monotonic()

    def listener(stage: Stage) -> Callable[[Image], None]:
        def on_frame(msg: Image) -> None:
            stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            stage.latencies.append((time.monotonic() - t0, (node.get_clock().now().nanoseconds - stamp_ns) / 1e6))
        return on_frame

    pub = node.create_publisher(Image, f'{NS}/image', qos_profile_sensor_data)
    for stage in stages:
        node.create_subscription(Image, stage.topic, listener(stage), 10)
    pixels = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    frame = image_msg(Image().header, pixels, 'rgb8')  # built once; each publish only restamps it
    frame.header.frame_id = 'soak'
    duration = args.minutes * 60
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(node.count_publishers(s.topic) for s in stages) or node.count_subscribers(f'{NS}/image') == 0:
            dead = next((w for w in watched if w.process.poll() is not None), None)
            if dead is not None or time.monotonic() > deadline:
                w = dead or watched[0]
                print(f'{w.name} did not start within {START_TIMEOUT_S:.0f} s:\n{w.log_tail()}',
                      file=sys.stderr)
                return 2
            rclpy.spin_once(node, timeout_sec=0.1)
        procs = [psutil.Process(w.process.pid) for w in watched]
        t0 = time.monotonic()
        next_frame = next_sample = 0.0
        with tqdm(total=int(duration), unit='s', desc='soak', disable=not sys.stderr.isatty()) as bar:
            while (now := time.monotonic() - t0) < duration and all(w.process.poll() is None for w in watched):
                if now >= next_frame:
                    frame.header.stamp = node.get_clock().now().to_msg()
                    pub.publish(frame)
                    sent.append(now)
                    next_frame += 1.0 / args.rate
                if now >= next_sample:
                    for w, proc in zip(watched, procs):
                        w.rss.append((now, proc.memory_info().rss))
                    next_sample += 1.0
                    bar.update(int(now) - bar.n)
                rclpy.spin_once(node, timeout_sec=max(0.0, min(next_frame, next_sample) - (time.monotonic() - t0)))
        alive = {w.name: w.process.poll() is None for w in watched}
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        for w in reversed(watched):
            stop_process(w.process)
            w.log.close()
    bucket_s = 60.0 if duration >= 180 else duration / 6
    rss = {w.name: w.rss for w in watched}
    latencies = {s.name: s.latencies for s in stages}
    rows = buckets(duration, sent, latencies, rss, bucket_s)
    verdict = judge(rss, latencies, warmup_s=bucket_s)
    ok = all(alive.values()) and verdict['pass']
    report = {'args': {k: str(v) for k, v in vars(args).items()}, 'alive': alive, 'pass': ok, 'bucket_s': bucket_s,
              'sent': len(sent), 'received': {s.name: len(s.latencies) for s in stages}, 'verdict': verdict,
              'buckets': rows, 'rss_samples': rss}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'soak.json').write_text(json.dumps(report, indent=1))
    plot(rows, stages, watched, args.out / 'soak.png')
    for line in summary_lines(verdict, stages, len(sent), alive):
        print(line)
    print(f"soak {'PASS' if ok else 'MISS'}; report {args.out / 'soak.json'}, plot {args.out / 'soak.png'}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m qdr_ros.tools.soak``."""
    return run(parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
