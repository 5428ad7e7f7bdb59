# One-command entry points. Every target that needs Python first runs setup, which is a
# no-op (well under a second) when .venv is current; see scripts/setup_env.sh.
SHELL := /bin/bash
PY := .venv/bin/python

.PHONY: setup test demo lint colcon bench soak

setup:
	bash scripts/setup_env.sh

test: setup
	$(PY) -m pytest

# camera_source (weather changing: clean, rain, fog, night) -> restore_node (models/auto/efm_int8.onnx)
# -> detect_node, 40 frames: out/demo/.
demo: setup
	$(PY) -m qdr_ros.tools.demo

lint: setup
	$(PY) -m pytest test/install/test_lint.py

colcon: setup
	bash scripts/colcon_build.sh

# Restoration speed (engine-only per backend and through restore_node), < 10 min: results/bench/.
bench: setup
	$(PY) -m qdr_ros.tools.bench restore --json results/bench/restore.json

# 30-minute stability run (RSS growth, p99 latency trend, drops), not part of CI: results/soak/.
soak: setup
	$(PY) -m qdr_ros.tools.soak --minutes 30 --rate 30 --size 640x480 --detect --out results/soak
