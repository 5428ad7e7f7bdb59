"""qdr-run: run the qdr nodes in one process, for machines without ``ros2 launch`` (PyPI wheels, CI, laptops).

    qdr-run [restore] --model models/auto/efm_int8.onnx [--use-detector --detector-model FastestDet.onnx]

The defaults of ``launch/restore.launch.py``: the nodes in ``/camera`` (``--namespace``), topics relative
to it (``image_raw``, ``camera_info`` in; ``image_restored``, ``condition``, ``gate`` out), the installed
``config/restore.yaml`` and ``config/detect.yaml``; so ``config/qdr.rviz`` shows it. The nodes share one
``SingleThreadedExecutor`` (and so one process): their callbacks are cheap (inference runs on each
node's own worker thread), and once ``spin`` has returned none is still running, so the nodes can be
destroyed at Ctrl-C. With a pool, ``Executor.shutdown`` on Jazzy and Kilted does not wait for running
callbacks, which then fail at exit (``cannot use Destroyable``). ``qdr-run`` without a subcommand is
``qdr-run restore``; more subcommands (``demo``) plug into ``COMMANDS``. Anything after
``--ros-args`` goes to rclpy as usual (e.g. ``--ros-args --log-level debug``).
"""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path
import sys
from typing import Callable, Sequence

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from qdr_ros.tools import demo
from qdr_ros.nodes import params
from qdr_ros.core import ros_env
from qdr_ros.nodes.base_node import STOP_EXCEPTIONS, StartupError, is_shutdown
from qdr_ros.nodes.restore_node import RestoreNode

PROG = 'qdr-run'


def default_params_file(name: str = 'restore.yaml') -> Path:
    """Return the installed config/<name>, else the repository's."""
    share = params.share_dir()
    installed = share / 'config' / name if share is not None else None
    return installed if installed is not None and installed.is_file() else params.REPO_ROOT / 'config' / name


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments named like restore.launch.py's; parameter options left out keep the params file's value."""
    parser.add_argument('--model', help='model file (.onnx/.engine); relative to share/qdr_ros or the repo root')
    parser.add_argument('--backend', choices=('auto', 'onnxruntime', 'tensorrt'))
    parser.add_argument('--threads', type=int, help='ONNX Runtime CPU threads (0 = physical cores)')
    parser.add_argument('--bypass', action='store_true', default=None, help='pass frames through unchanged')
    parser.add_argument('--params-file', type=Path, default=default_params_file(),
                        help='node-named parameter YAML (default: %(default)s)')
    parser.add_argument('--input-topic', default='image_raw', help='camera image topic (relative: in the namespace)')
    parser.add_argument('--camera-info-topic', default='camera_info', help="the input's camera_info topic")
    parser.add_argument('--output-topic', default='image_restored',
                        help='restored image topic (camera_info on <output-topic>/camera_info)')
    parser.add_argument('--namespace', default='camera', help='namespace of the nodes and their relative topics')
    parser.add_argument('--use-detector', action='store_true', help='also run detect_node on the restored image')
    parser.add_argument('--detector-params-file', type=Path, default=default_params_file('detect.yaml'),
                        help='node-named parameter YAML for detect_node (default: %(default)s)')
    parser.add_argument('--detector-model', help="detector file (ultralytics .pt/.onnx or FastestDet .onnx); "
                        "default: the detector params file's")


def _restore_cli_args(args: argparse.Namespace) -> list[str]:
    """Node-local ROS arguments: the params file and the topic remappings (as the launch file sets them)."""
    remaps = {
        'image': args.input_topic,
        'image/compressed': f'{args.input_topic}/compressed',
        'camera_info': args.camera_info_topic,
        'image_restored': args.output_topic,
        'image_restored/camera_info': f'{args.output_topic}/camera_info',
    }
    cli = ['--ros-args', '--params-file', str(args.params_file)]
    for source, target in remaps.items():
        cli += ['-r', f'{source}:={target}']
    return cli


def _detect_node(args: argparse.Namespace, context: Context | None = None) -> Node | None:
    """Build the detection node on the restored topic; None (with a note) while qdr_ros.nodes.detect_node is missing."""
    try:
        module = importlib.import_module('qdr_ros.nodes.detect_node')
        node_class = module.DetectNode
    except (ImportError, AttributeError) as exc:
        print(f'{PROG}: --use-detector ignored, the detection node is not available ({exc})', file=sys.stderr)
        return None
    overrides = [] if args.detector_model is None else [Parameter('model', value=args.detector_model)]
    return node_class(namespace=args.namespace, parameter_overrides=overrides, context=context,
                      cli_args=['--ros-args', '--params-file', str(args.detector_params_file),
                                '-r', f'image:={args.output_topic}'])


def run_restore(args: argparse.Namespace) -> int:
    """Run restore_node (and detect_node when asked) until Ctrl-C or shutdown."""
    files = {'--params-file': args.params_file}
    if args.use_detector:
        files['--detector-params-file'] = args.detector_params_file
    for option, path in files.items():
        if not path.is_file():
            print(f'{PROG}: parameter file {path} does not exist; pass {option}', file=sys.stderr)
            return 1
    overrides = [Parameter(name, value=value) for name, value in
                 (('model', args.model), ('backend', args.backend), ('threads', args.threads),
                  ('bypass', args.bypass)) if value is not None]
    nodes: list[Node] = []
    executor = SingleThreadedExecutor()
    starting = 'restore_node'
    try:
        nodes.append(RestoreNode(namespace=args.namespace, cli_args=_restore_cli_args(args),
                                 parameter_overrides=overrides))
        starting = 'detect_node'
        if args.use_detector and (detector := _detect_node(args)) is not None:
            nodes.append(detector)
        for node in nodes:
            executor.add_node(node)
        nodes[0].get_logger().info(f"{PROG}: running {', '.join(n.get_name() for n in nodes)} in one process "
                                   f"(ROS_DOMAIN_ID={os.environ.get('ROS_DOMAIN_ID', '0')}, "
                                   f'params {args.params_file})')
        executor.spin()
    except StartupError as exc:
        print(f'{PROG}: cannot start {starting}: {exc}', file=sys.stderr)
        return 1
    except STOP_EXCEPTIONS as exc:
        if not is_shutdown(exc):
            raise
    finally:
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    'restore': ('restore an image topic (default command)', add_restore_arguments, run_restore),
    'demo': ('camera_source -> restore_node -> detect_node on real photos for a few frames; writes out/demo/',
             demo.add_arguments, demo.run),
}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``[COMMAND] [options]``; no command means ``restore``."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f'Options of a command (--model, ...): {PROG} COMMAND --help')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name, (text, add_arguments, run) in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    argv = list(argv)
    if not argv or argv[0] not in (*COMMANDS, '-h', '--help'):
        argv.insert(0, 'restore')
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Set the environment, split ROS arguments from ours, run the command."""
    ros_env.apply()
    full = [PROG, *(sys.argv[1:] if argv is None else argv)]
    args = parse_args(rclpy.utilities.remove_ros_args(full)[1:])
    rclpy.init(args=full)
    try:
        return args.run(args)
    finally:
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
