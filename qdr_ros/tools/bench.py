"""qdr-bench: benchmarks of the deployed pipeline, one subcommand each.

    qdr-bench restore [--quick] [--json results/bench/restore.json]
    qdr-bench detection [--tasks denoise ...] [--data ../shared/data] [--out results/detection]

Dispatch only: each subcommand is a module with ``add_arguments(parser)`` and ``run(args) -> int``,
listed in ``COMMANDS``; only the module of the command being run is imported (they pull in
torch, rclpy or ultralytics).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

PROG = 'qdr-bench'

# name -> (help, module with add_arguments/run)
COMMANDS: dict[str, tuple[str, str]] = {
    'restore': ('restoration speed: engine only per backend and through restore_node', 'qdr_ros.tools.restore_bench'),
    'detection': ('detector mAP on clean, degraded, FP32- and INT8-restored images',
                  'qdr_train.evaluation.detection_bench'),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """Return the parser; only ``command``'s module is imported to add its options."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
    for name, (text, module_name) in COMMANDS.items():
        if name != command:
            commands.add_parser(name, help=text)
            continue
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=text, description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``COMMAND [options]`` and run the subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith('-')), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    return args.run(args)


if __name__ == '__main__':
    sys.exit(main())
