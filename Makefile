# One-command entry points. Every target that needs Python first runs setup, which is a
# no-op (well under a second) when .venv is current; see scripts/setup_env.sh.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: setup test demo lint colcon

setup:
	bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest

# Until `qdr-run demo` exists: a two-process rclpy image round trip over Fast DDS.
demo: setup
	$(PY) -m qdr_ros.smoke_node

lint: setup
	$(PY) -m pytest test/test_lint.py

colcon: setup
	bash scripts/colcon_build.sh
