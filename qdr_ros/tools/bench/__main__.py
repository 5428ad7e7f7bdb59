"""``python -m qdr_ros.tools.bench``: the ``qdr-bench`` command."""

import sys

from qdr_ros.tools.bench.cli import main

sys.exit(main())
