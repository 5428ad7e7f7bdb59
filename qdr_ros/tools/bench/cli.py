"""qdr-bench: benchmarks of the deployed pipeline, one subcommand each.

    qdr-bench restore [--quick] [--json results/bench/restore.json]
    qdr-bench detection [--tasks denoise ...] [--data ../shared/data] [--out results/detection]

Dispatch only, plus ``restore``'s options: each subcommand has ``add_arguments(parser)`` and
``run(args) -> int``. ``detection`` (``qdr_train.evaluation.detection_bench``) is imported only when
it runs: it pulls in torch and ultralytics; ``restore`` imports torch and rclpy only for the parts
that need them.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
from pathlib import Path
import sys
import time
from typing import Any, Callable, Sequence

from qdr_ros.core import ros_env
from qdr_ros.core.report_paths import shown_path
from qdr_ros.tools.bench import engines, report, rounds
from qdr_ros.tools.processes import sigterm_as_ctrl_c
from qdr_ros.tools.bench.settings import (DEFAULT_MODELS, PROG, QUICK_SIZE, ROUNDS, SATURATE_S, SCRATCH_OUT, SIZES,
                                          BenchError, Settings)

RESTORE_DESCRIPTION = '\n\n'.join([
    f'{PROG}: how fast the EFM restores frames, in the engine alone and through a real ROS graph.\n\n'
    f'    {PROG} --json results/bench/restore.json          # full run, a few minutes\n'
    f'    {PROG} --quick --no-ros                            # seconds, engine only',
    engines.__doc__, rounds.__doc__, report.__doc__,
    'The environment comes from qdr_ros.core.ros_env (Fast DDS LARGE_DATA, a fresh domain).'])


# --- qdr-bench restore ---

def benchmark(settings: Settings, command: str) -> dict[str, Any]:
    """Measure everything ``settings`` asks for and write the reports; returns the JSON report."""
    started = time.perf_counter()
    ros_env.apply()
    # Before torch loads: its OpenMP threads otherwise spin-wait, and with anything else on two cores
    # that made FP32 runs 10-70x slower (700 vs 9 ms at 160x120); ONNX Runtime does not spin either.
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
    files = engines.model_files(settings.models_dir, settings.task)
    if not files:
        raise BenchError(f'no models in {settings.models_dir / settings.task} (expected efm_fp32.pt, efm_fp32.onnx, '
                         'efm_int8.onnx, efm_int8_cpu.onnx); train and export them, or pass --models-dir')
    machine = report.machine_info()
    print(f"{PROG}: {machine['cpu']}, {machine['physical_cores']} physical cores, GPU: {machine['gpu']}", flush=True)
    busy = machine['load_average_at_start'][0]
    if busy > 0.5 * (machine['logical_cores'] or 1):
        print(f'{PROG}: warning: load average {busy} at start; other processes are using the CPU and the '
              'numbers will be slower than this machine can do', flush=True)
    torch_net = engines.torch_model(files)
    built, skipped = engines.build_engines(files, settings.threads, torch_net)
    for s in skipped:
        print(f"  skipped {s['backend']} {s['precision'].upper()}: {s['reason']}", flush=True)
    stride = int(getattr(torch_net, 'stride', 8) or 8)
    engine_rows = engines.bench_engines(built, settings.sizes, settings, stride, torch_net)
    ros_rows: list[dict[str, Any]] = []
    ros_error = ''
    if settings.ros and 'int8_onnx' in files:
        reference = next((e for e in built if e.backend == 'onnxruntime' and e.precision == 'int8'), None)
        # Only the reference engine stays: the rounds time it in this process, which should not hold the
        # torch model and the FP32 sessions then (their memory and threads slowed engines timed beside them).
        del torch_net, built
        gc.collect()
        try:
            ros_rows = rounds.bench_ros(files['int8_onnx'], settings, reference, stride)
        except BenchError as exc:  # the engine-only results are still worth their minutes: write them
            ros_error = str(exc)
            print(f'{PROG}: the ROS part failed: {exc}; writing the engine-only results', file=sys.stderr)
    elif settings.ros:
        print(f'  skipped ROS end-to-end: efm_int8.onnx not found in {settings.models_dir / settings.task}')
    result = {
        'command': command,
        'machine': machine,
        'settings': {'task': settings.task, 'models_dir': shown_path(settings.models_dir),
                     'sizes': [f'{w}x{h}' for w, h in settings.sizes], 'runs': settings.runs,
                     'warmup': settings.warmup, 'threads': settings.threads, 'quick': settings.quick,
                     'ros': settings.ros, 'rounds': settings.rounds, 'saturate_s': settings.saturate_s,
                     'omp_wait_policy': os.environ['OMP_WAIT_POLICY']},
        'model_sizes': {shown_path(p): p.stat().st_size for p in files.values()},
        'engine': engine_rows,
        'skipped': skipped,
        'passthrough_node': 'restore_node with bypass:=true (same process, republishes the received message)',
        'ros': ros_rows,
        'ros_error': ros_error,
        'targets': report.check_targets(engine_rows, ros_rows, files, settings.task),
    }
    result['elapsed_s'] = round(time.perf_counter() - started, 1)
    report.write_reports(result, settings)
    return result


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WIDTHxHEIGHT``."""
    try:
        width, height = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'size must look like 640x480, got {text!r}') from None
    if width < 8 or height < 8:
        raise argparse.ArgumentTypeError(f'size {text} is too small (at least 8x8)')
    return width, height


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``qdr-bench restore``."""
    parser.add_argument('--task', default='auto', help='model folder under --models-dir (default: %(default)s)')
    parser.add_argument('--models-dir', type=Path, default=DEFAULT_MODELS,
                        help='holds <task>/efm_fp32.pt|.onnx, efm_int8.onnx, efm_int8_cpu.onnx (default: %(default)s)')
    parser.add_argument('--sizes', type=parse_size, nargs='+', metavar='WxH',
                        help='frame sizes (default: ' + ' '.join(f'{w}x{h}' for w, h in SIZES) + ')')
    parser.add_argument('--runs', type=int, help='timed runs per case (default 30; 5 with --quick)')
    parser.add_argument('--rounds', type=int,
                        help=f'node measurement rounds per size, median reported (default {ROUNDS}; 1 with --quick)')
    parser.add_argument('--threads', type=int, default=0,
                        help='CPU threads for ORT/torch and the node; 0 = physical cores (default)')
    parser.add_argument('--quick', action='store_true',
                        help=f'smoke run for CI: {QUICK_SIZE[0]}x{QUICK_SIZE[1]} only, few runs, a few seconds')
    parser.add_argument('--no-ros', dest='ros', action='store_false', help='engine-only, no restore_node process')
    parser.add_argument('--json', type=Path, dest='json_path', metavar='PATH', help='also write the report as JSON')
    parser.add_argument('--out', type=Path,
                        help="folder for restore.md and restore_latency.png (default: the --json file's folder, "
                             "else out/bench, so a quick run never replaces the committed report)")


def default_out(json_path: Path | None) -> Path:
    """Folder of restore.md and the plot: beside the JSON report, else the scratch folder (never results/)."""
    return json_path.parent if json_path is not None else SCRATCH_OUT


def settings_from(args: argparse.Namespace) -> Settings:
    """Resolve defaults that depend on --quick and the thread count."""
    from qdr_ros.inference.onnxruntime import physical_cores

    for name in ('runs', 'rounds'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise BenchError(f'--{name} must be at least 1')
    sizes = args.sizes or ([QUICK_SIZE] if args.quick else list(SIZES))
    return Settings(task=args.task, models_dir=args.models_dir, sizes=sizes,
                    runs=args.runs or (5 if args.quick else 30), warmup=1 if args.quick else 3,
                    threads=args.threads if args.threads > 0 else physical_cores(), ros=args.ros, quick=args.quick,
                    out=args.out or default_out(args.json_path),
                    json_path=args.json_path, saturate_s=1.0 if args.quick else SATURATE_S,
                    rounds=args.rounds or (1 if args.quick else ROUNDS))


def command_line(settings: Settings) -> str:
    """Return the command that repeats this run (recorded in the report)."""
    sizes = ' '.join(f'{w}x{h}' for w, h in settings.sizes)
    parts = [PROG, f'--task {settings.task}', f'--sizes {sizes}', f'--runs {settings.runs}',
             f'--rounds {settings.rounds}', f'--threads {settings.threads}']
    if settings.models_dir != DEFAULT_MODELS:
        parts.append(f'--models-dir {settings.models_dir}')
    parts += ['--quick'] * settings.quick + ['--no-ros'] * (not settings.ros)
    if settings.json_path is not None:
        parts.append(f'--json {settings.json_path}')
    if settings.out != default_out(settings.json_path):
        parts.append(f'--out {settings.out}')
    return ' '.join(parts)


def run_restore(args: argparse.Namespace) -> int:
    """Entry point of ``qdr-bench restore``; a BenchError is one line on stderr and exit 1.

    SIGTERM (timeout, a CI cancel) is handled as Ctrl-C, so the nodes the rounds started are stopped.
    """
    sigterm_as_ctrl_c()
    try:
        settings = settings_from(args)
        result = benchmark(settings, command_line(settings))
    except BenchError as exc:
        print(f'{PROG}: {exc}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the nodes are stopped by now (each round's finally)
        print(f'{PROG}: interrupted; no report written', file=sys.stderr)
        return 130
    return 1 if result['ros_error'] else 0


# --- the dispatcher ---

Command = tuple[str | None, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _detection() -> Command:
    module = importlib.import_module('qdr_train.evaluation.detection_bench')
    return module.__doc__, module.add_arguments, module.run


# name -> (help, loader of (description, add_arguments, run)): only the command being run is loaded
COMMANDS: dict[str, tuple[str, Callable[[], Command]]] = {
    'restore': ('restoration speed: engine only per backend and through restore_node',
                lambda: (RESTORE_DESCRIPTION, add_restore_arguments, run_restore)),
    'detection': ('detector mAP on clean, degraded, FP32- and INT8-restored images', _detection),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """Return the parser; only ``command``'s options are added (and only its module imported)."""
    parser = argparse.ArgumentParser(prog='qdr-bench', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, (text, load) in COMMANDS.items():
        if name != command:
            commands.add_parser(name, help=text)
            continue
        description, add_arguments, run = load()
        sub = commands.add_parser(name, help=text, description=description,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``COMMAND [options]`` and run the subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith('-')), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    return args.run(args)
