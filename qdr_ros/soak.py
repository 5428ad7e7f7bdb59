"""qdr soak: run publisher -> restore_node (own process) [-> detect_node] for a long time and judge stability.

    python -m qdr_ros.soak --minutes 30 --rate 30 --size 640x480 --out results/soak

Samples the node's RSS (psutil) every second and the end-to-end latency (receive time minus header
stamp) of every restored frame; per bucket (one minute, or a sixth of short runs) it records
latency p50/p99, frames sent/received and drops. Verdicts, after a warm-up of one bucket:
RSS growth from the first to the last third of the run < 5 %, and the last third's p99 latency not
above the first third's by more than 25 % + 2 ms. Writes ``soak.json`` and ``soak.png`` to ``--out``
and exits 0 only when both pass.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from qdr_ros.processes import stop_process

NS = '/soak'
RSS_GROWTH_LIMIT = 0.05
P99_SLACK = (1.25, 2.0)  # last-third p99 may be at most 1.25 x first-third p99 + 2 ms


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='qdr-soak', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--minutes', type=float, default=30.0, help='run time (default 30)')
    parser.add_argument('--rate', type=float, default=30.0, help='published frames per second (default 30)')
    parser.add_argument('--size', default='640x480', help='frame WIDTHxHEIGHT (default 640x480)')
    parser.add_argument('--model', default='models/denoise/efm_int8.onnx', help='restore_node model:=')
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


def _start(module: str, *ros_args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-m', module, '--ros-args', '-r', f'__ns:={NS}', *ros_args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _thirds(values: list[float]) -> tuple[list[float], list[float]]:
    third = max(1, len(values) // 3)
    return values[:third], values[-third:]


def judge(rss: list[tuple[float, int]], latencies: list[tuple[float, float]], warmup_s: float) -> dict[str, Any]:
    """PASS/MISS for RSS growth and p99 trend from (time, rss bytes) and (time, latency ms) after ``warmup_s``."""
    rss_after = [float(v) for t, v in rss if t >= warmup_s]
    lat_after = [v for t, v in latencies if t >= warmup_s]
    verdict: dict[str, Any] = {'rss_pass': False, 'p99_pass': False}
    if len(rss_after) >= 2:
        first, last = _thirds(rss_after)
        growth = float(np.median(last) / np.median(first) - 1.0)
        verdict.update(rss_growth=growth, rss_pass=growth < RSS_GROWTH_LIMIT)
    if len(lat_after) >= 6:
        first, last = _thirds(lat_after)
        p99_first, p99_last = float(np.percentile(first, 99)), float(np.percentile(last, 99))
        verdict.update(p99_first_ms=p99_first, p99_last_ms=p99_last,
                       p99_pass=p99_last <= p99_first * P99_SLACK[0] + P99_SLACK[1])
    return verdict


def buckets(duration: float, sent: list[float], latencies: list[tuple[float, float]],
            rss: list[tuple[float, int]], bucket_s: float) -> list[dict[str, Any]]:
    """Per-bucket latency p50/p99, frames sent/received, drops and the last RSS sample."""
    rows = []
    for start in np.arange(0.0, duration, bucket_s):
        end = start + bucket_s
        lat = [v for t, v in latencies if start <= t < end]
        n_sent = int(sum(start <= t < end for t in sent))
        mem = [v for t, v in rss if start <= t < end]
        rows.append({'start_s': float(start), 'sent': n_sent, 'received': len(lat), 'drops': max(0, n_sent - len(lat)),
                     'p50_ms': float(np.percentile(lat, 50)) if lat else None,
                     'p99_ms': float(np.percentile(lat, 99)) if lat else None,
                     'rss_mib': mem[-1] / 2**20 if mem else None})
    return rows


def plot(rows: list[dict[str, Any]], rss: list[tuple[float, int]], path: Path) -> None:
    """RSS over time and per-bucket latency p50/p99 with drops."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    top.plot([t / 60 for t, _ in rss], [v / 2**20 for _, v in rss])
    top.set_ylabel('restore_node RSS (MiB)')
    mid = [(r['start_s'] / 60) for r in rows]
    bottom.plot(mid, [r['p50_ms'] for r in rows], 'o-', label='p50')
    bottom.plot(mid, [r['p99_ms'] for r in rows], 's-', label='p99')
    bottom.set_ylabel('latency (ms)')
    bottom.set_xlabel('minutes')
    drops = bottom.twinx()
    drops.bar(mid, [r['drops'] for r in rows], width=0.6 * (mid[1] - mid[0]) if len(mid) > 1 else 0.1,
              alpha=0.3, color='red')
    drops.set_ylabel('drops')
    bottom.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Run the soak and write the report; 0 when both verdicts pass."""
    import psutil
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from qdr_ros import ros_env
    from qdr_ros.base_node import image_msg

    ros_env.apply()
    node_process = _start('qdr_ros.restore_node', '-p', f'model:={args.model}', '-p', f'threads:={args.threads}',
                          '-p', f'warmup_width:={args.width}', '-p', f'warmup_height:={args.height}')
    detect = _start('qdr_ros.detect_node', '-r', 'image:=image_restored') if args.detect else None
    rclpy.init()
    node = rclpy.create_node('qdr_soak')
    sent: list[float] = []
    latencies: list[tuple[float, float]] = []
    rss: list[tuple[float, int]] = []
    t0 = time.monotonic()

    def on_restored(msg: Image) -> None:
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        latencies.append((time.monotonic() - t0, (node.get_clock().now().nanoseconds - stamp_ns) / 1e6))

    pub = node.create_publisher(Image, f'{NS}/image', qos_profile_sensor_data)
    node.create_subscription(Image, f'{NS}/image_restored', on_restored, 10)
    pixels = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    try:
        deadline = time.monotonic() + 120
        while node.count_subscribers(f'{NS}/image') == 0:
            if node_process.poll() is not None or time.monotonic() > deadline:
                print(f'restore_node did not start:\n{node_process.stderr.read()}', file=sys.stderr)
                return 2
            rclpy.spin_once(node, timeout_sec=0.1)
        proc = psutil.Process(node_process.pid)
        duration = args.minutes * 60
        t0 = time.monotonic()
        next_frame = next_sample = 0.0
        while (now := time.monotonic() - t0) < duration and node_process.poll() is None:
            if now >= next_frame:
                msg = image_msg(Image().header, pixels, 'rgb8')
                msg.header.stamp = node.get_clock().now().to_msg()
                msg.header.frame_id = 'soak'
                pub.publish(msg)
                sent.append(now)
                next_frame += 1.0 / args.rate
            if now >= next_sample:
                rss.append((now, proc.memory_info().rss))
                next_sample += 1.0
            rclpy.spin_once(node, timeout_sec=max(0.0, min(next_frame, next_sample) - (time.monotonic() - t0)))
        alive = node_process.poll() is None
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        for process in (detect, node_process):
            if process is not None:
                stop_process(process)
    bucket_s = 60.0 if duration >= 180 else duration / 6
    rows = buckets(duration, sent, latencies, rss, bucket_s)
    verdict = judge(rss, latencies, warmup_s=bucket_s)
    report = {'args': {k: str(v) for k, v in vars(args).items()}, 'node_alive': alive, 'bucket_s': bucket_s,
              'sent': len(sent), 'received': len(latencies), **verdict, 'buckets': rows,
              'rss_samples': [[t, v] for t, v in rss]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'soak.json').write_text(json.dumps(report, indent=1))
    plot(rows, rss, args.out / 'soak.png')
    ok = alive and verdict['rss_pass'] and verdict['p99_pass']
    print(f"RSS growth after warm-up: {verdict.get('rss_growth', float('nan')):+.1%} "
          f"{'PASS' if verdict['rss_pass'] else 'MISS'} (limit {RSS_GROWTH_LIMIT:.0%})")
    print(f"p99 latency first/last third: {verdict.get('p99_first_ms', float('nan')):.1f}/"
          f"{verdict.get('p99_last_ms', float('nan')):.1f} ms {'PASS' if verdict['p99_pass'] else 'MISS'}")
    print(f"frames sent {len(sent)}, restored {len(latencies)}, node alive {alive}: {'PASS' if ok else 'MISS'}; "
          f"report {args.out / 'soak.json'}")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m qdr_ros.soak``."""
    return run(parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
