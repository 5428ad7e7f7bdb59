"""Results: a markdown table (stdout and ``restore.md``), ``--json PATH`` and ``restore_latency.png`` in ``--out``.

Each report names the machine it was measured on (CPU model, cores, GPU, library versions, load at
start) and says PASS/MISS per target; every file is written atomically, so a run stopped half way
leaves the previous report whole.
"""

from __future__ import annotations

from importlib import metadata
import json
import os
from pathlib import Path
import platform
import shutil
import subprocess
from typing import Any

import psutil

from qdr_ros.core import plots
from qdr_ros.core.atomic import atomic_write
from qdr_ros.tools.bench.engines import engine_label
from qdr_ros.tools.bench.settings import PROG, REFERENCE_SIZE, Settings

TARGETS = {  # name: (threshold, comparison, unit, description)
    'int8_fps': (30.0, '>=', 'FPS', 'ORT INT8 engine-only at 640x480'),
    'int8_speedup': (2.0, '>=', 'x', 'ORT INT8 vs ORT FP32 at 640x480'),
    'node_overhead': (10.0, '<=', '% of engine', 'node overhead, one frame in flight, 640x480'),
    'saturated_ratio': (90.0, '>=', '% of engine', 'saturated end-to-end vs engine-only FPS, 640x480'),
    'saturated_fps': (30.0, '>=', 'FPS', 'saturated end-to-end throughput, 640x480'),
    'node_peak_rss': (400.0, '<=', 'MiB', 'restore node peak RSS, ORT INT8, 640x480'),
    'int8_file_size': (1.0, '<=', 'MB', 'shipped INT8 model file(s)'),
}
# auto is one model for every condition, with its condition head: its file may be larger than a specialist's
FILE_SIZE_MB = {'auto': 1.5}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, GPU (through nvidia-smi) and library versions: what the numbers depend on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    gpu = 'none (nvidia-smi not found)'
    if shutil.which('nvidia-smi'):
        try:
            result = subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version', '--format=csv,noheader'],
                                    capture_output=True, text=True, timeout=20)
            gpu = result.stdout.strip().replace('\n', '; ') or f'nvidia-smi failed: {result.stderr.strip()}'
        except (OSError, subprocess.TimeoutExpired) as exc:
            gpu = f'nvidia-smi failed: {exc}'
    return {
        'cpu': cpu,
        'logical_cores': os.cpu_count(),
        'physical_cores': psutil.cpu_count(logical=False),
        'memory_gb': round(psutil.virtual_memory().total / 2**30, 1),
        'gpu': gpu,
        'os': platform.platform(),
        'python': platform.python_version(),
        'versions': {d: _version(d) for d in ('onnxruntime', 'onnxruntime-gpu', 'torch', 'numpy', 'tensorrt',
                                              'ros-rclpy', 'ros-rmw-fastrtps-cpp') if _version(d)},
        'load_average_at_start': [round(v, 2) for v in os.getloadavg()],
    }


def check_targets(engine_rows: list[dict[str, Any]], ros_rows: list[dict[str, Any]],
                  files: dict[str, Path], task: str) -> list[dict[str, Any]]:
    """PASS/MISS per target (n/a when its measurement was not part of this run); the size limit is per task."""
    ref = '{}x{}'.format(*REFERENCE_SIZE)
    by_key = {(r['backend'], r['precision'], r['size']): r for r in engine_rows}
    int8, fp32 = by_key.get(('onnxruntime', 'int8', ref)), by_key.get(('onnxruntime', 'fp32', ref))
    node = next((r for r in ros_rows if r['size'] == ref), None)
    int8_files = [files[k] for k in ('int8_onnx', 'int8_cpu_onnx') if k in files]
    values = {
        'int8_fps': 1e3 / int8['median_ms'] if int8 else None,
        'int8_speedup': fp32['median_ms'] / int8['median_ms'] if int8 and fp32 else None,
        'node_overhead': node['overhead_percent'] if node else None,
        'saturated_ratio': node['saturated_percent'] if node else None,
        'saturated_fps': node['saturated_fps'] if node else None,
        'node_peak_rss': node['node_peak_rss_mb'] if node else None,
        'int8_file_size': max(p.stat().st_size for p in int8_files) / 1e6 if int8_files else None,
    }
    results = []
    for name, (threshold, op, unit, text) in TARGETS.items():
        value = values[name]
        if name == 'int8_file_size':
            threshold = FILE_SIZE_MB.get(task, threshold)
        status = 'n/a' if value is None else (
            'PASS' if (value >= threshold if op == '>=' else value <= threshold) else 'MISS')
        results.append({'name': name, 'description': text, 'value': None if value is None else round(value, 2),
                        'threshold': threshold, 'comparison': op, 'unit': unit, 'status': status})
    return results


def fmt(value: Any, digits: int = 1) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def markdown(report: dict[str, Any]) -> str:
    """Render the human-readable report: machine, engine table, node table, targets."""
    m = report['machine']
    versions = ', '.join(f'{k} {v}' for k, v in m['versions'].items())
    lines = [f"# Restore benchmark ({report['settings']['task']})", '',
             f"Machine: {m['cpu']}, {m['physical_cores']} physical / {m['logical_cores']} logical cores, "
             f"{m['memory_gb']} GiB, GPU: {m['gpu']}; {versions}; load average at start "
             f"{m['load_average_at_start'][0]}.", '',
             f"Command: `{report['command']}` ({report['elapsed_s']:.0f} s). Threads: {report['settings']['threads']}.",
             '', '## Engine only', '',
             '| engine | device | size | median ms | p95 ms | FPS | GMAC/frame | GMAC/s |',
             '|---|---|---|---:|---:|---:|---:|---:|']
    for r in report['engine']:
        lines.append(f"| {r['backend']} {r['precision'].upper()} | {r['device']} | {r['size']} | "
                     f"{fmt(r['median_ms'], 2)} | {fmt(r['p95_ms'], 2)} | {fmt(r['fps'])} | "
                     f"{fmt(r['macs'] / 1e9 if r['macs'] else None, 2)} | {fmt(r['gmac_per_s'])} |")
    lines += [''] + [f"Skipped {s['backend']} {s['precision'].upper()}: {s['reason']}" for s in report['skipped']]
    lines += [f"Models: {', '.join(f'{Path(p).name} {s / 1e6:.2f} MB' for p, s in report['model_sizes'].items())}."]
    if report.get('ros_error'):
        lines += ['', f"## Through ROS: failed ({report['ros_error']})"]
    if report['ros']:
        lines += ['', f"## Through ROS (restore_node in its own process, ORT INT8; pass-through = "
                  f"{report['passthrough_node']})", '',
                  f"Each size: {report['settings']['rounds']} rounds of pass-through (back to back, then paced), "
                  f"end-to-end, {report['settings']['saturate_s']:g} s saturated, then the ORT INT8 engine again in "
                  "the benchmark process with the node idle; ratios are per round against that round's engine, each "
                  "cell is the median over rounds (every round is in the JSON). Pass-through paced = each frame "
                  "sent after one engine run in the benchmark process, so it meets the transport after the same "
                  "work and idle time as a frame during restoration; this is the overhead's baseline. Back to back "
                  "= each frame sent as soon as the previous one came back (a transport kept hot), with the "
                  "overhead against it beside. Engine = the model on a float tensor; node's uint8 call = "
                  "`restore_uint8` on a camera frame as the node makes it (conversions inside the graph, output "
                  "written into the message array), timed the same way, for reference.",
                  '',
                  '| size | pass-through ms paced (back to back) | end-to-end ms (p95) | engine ms '
                  '| node\'s uint8 call ms | node overhead ms (% of engine; vs back to back) '
                  '| saturated FPS (% of engine) | node CPU % | node peak RSS MiB |',
                  '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
        for r in report['ros']:
            lines.append(f"| {r['size']} | {fmt(r['passthrough_ms'], 2)} "
                         f"({fmt(r['passthrough_back_to_back_ms'], 2)}) | "
                         f"{fmt(r['end_to_end_ms'], 2)} ({fmt(r['end_to_end_p95_ms'], 2)}) | "
                         f"{fmt(r['engine_median_ms'], 2)} | {fmt(r.get('node_call_median_ms'), 2)} | "
                         f"{fmt(r['overhead_ms'], 2)} "
                         f"({fmt(r['overhead_percent'])}%; {fmt(r['overhead_back_to_back_percent'])}%) | "
                         f"{fmt(r['saturated_fps'])} "
                         f"({fmt(r['saturated_percent'])}%) | {fmt(r['node_cpu_percent'], 0)} | "
                         f"{fmt(r['node_peak_rss_mb'], 0)} |")
        lines += ['', 'Saturated = two frames in flight, the second arriving while the node works on the first (a '
                  'camera faster than the node); frames lost on the way and replaced, all rounds: '
                  + ', '.join(f"{r['size']} {r['saturated_lost']} of {r['saturated_frames']}" for r in report['ros'])
                  + '.']
    lines += ['', '## Targets', '', '| target | measured | needed | result |', '|---|---:|---:|---|']
    for t in report['targets']:
        lines.append(f"| {t['description']} | {fmt(t['value'], 2)} {t['unit']} | {t['comparison']} "
                     f"{t['threshold']:g} {t['unit']} | {t['status']} |")
    return '\n'.join(lines) + '\n'


def plot(report: dict[str, Any], path: Path) -> str | None:
    """Median latency vs pixels per engine (and the node end to end); returns why no plot was made, else None."""
    if (why_not := plots.missing()) is not None:
        return why_not
    fig, ax = plots.pyplot().subplots(figsize=(7, 4.5))
    series: dict[str, list[tuple[float, float]]] = {}
    for r in report['engine']:
        series.setdefault(engine_label(r['backend'], r['precision'], r['device']), []).append(
            (r['width'] * r['height'] / 1e6, r['median_ms']))
    for r in report['ros']:
        series.setdefault('restore_node end-to-end (ORT INT8)', []).append(
            (r['width'] * r['height'] / 1e6, r['end_to_end_ms']))
    for label, points in series.items():
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker='o', linestyle='--' if label.startswith('restore_node') else '-', label=label)
    ax.axhline(1e3 / 30, color='grey', linewidth=0.8, linestyle=':', label='30 FPS')
    sizes = sorted({(r['width'], r['height']) for r in report['engine']}, key=lambda s: s[0] * s[1])
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xticks([w * h / 1e6 for w, h in sizes], [f'{w}x{h}' for w, h in sizes])
    ax.minorticks_off()
    ax.set_xlabel('resolution')
    ax.set_ylabel('median latency (ms)')
    m = report['machine']
    ax.set_title(f"EFM {report['settings']['task']}: latency vs resolution\n{m['cpu']}; GPU: {m['gpu']}")
    ax.legend()
    plots.save(fig, path)
    return None


def write_reports(report: dict[str, Any], settings: Settings) -> None:
    """Print the markdown; write ``restore.md``, the plot and (with ``--json``) the JSON report."""
    text = markdown(report)
    print('\n' + text, flush=True)
    atomic_write(settings.out / 'restore.md', text)
    why_no_plot = plot(report, settings.out / 'restore_latency.png')
    if why_no_plot:
        print(f'{PROG}: no plot: {why_no_plot}')
    if settings.json_path is not None:
        atomic_write(settings.json_path, json.dumps(report, indent=2) + '\n')
