"""The shipped auto model through restore_node over DDS: it names the condition and leaves clean frames alone.

restore_node runs in its own process with its default model (``models/auto/efm_int8.onnx``); this
test publishes real photos, clean and degraded with the training degradations at their documented
levels, and reads the restored frames and the node's ``<node>: condition`` status in /diagnostics,
matched to the frame by ``frame_stamp``.
"""

from __future__ import annotations

from collections.abc import Iterator
import subprocess
import sys
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from qdr_ros.nodes import params
from qdr_ros.nodes.base_node import image_msg
from qdr_ros.core.frame_sources import Degrader, sample_photos
from qdr_ros.tools.processes import stop_process
from qdr_train.metrics import psnr

pytestmark = pytest.mark.ros

NS = '/qdr_auto'
WAIT_S = 60.0
# Conditions whose labels the shipped model names reliably at the documented level (docs/results.md).
NAMED = {'lowlight': 'lowlight', 'derain': 'rain'}

if not params.resolve_model_path(params.RESTORE_PARAMS.defaults['model']).is_file():
    pytest.skip(f"no shipped model {params.RESTORE_PARAMS.defaults['model']}", allow_module_level=True)


@pytest.fixture(scope='module')
def node_process() -> Iterator[subprocess.Popen]:
    """restore_node with its defaults (the auto model); statuses often, so each frame's shows up."""
    process = subprocess.Popen(
        [sys.executable, '-m', 'qdr_ros.nodes.restore_node', '--ros-args', '-p', 'diagnostics_period:=0.1',
         '-p', 'condition_time_constant:=0.0', '-r', f'image:={NS}/image', '-r', f'image_restored:={NS}/restored'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield process
    stop_process(process)


@pytest.fixture(scope='module')
def graph(node_process: subprocess.Popen) -> Iterator[dict[str, Any]]:
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node('auto_probe', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    seen: dict[str, Any] = {'restored': {}, 'conditions': {}}

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.endswith(': condition'):
                values = {kv.key: kv.value for kv in status.values}
                seen['conditions'][values['frame_stamp']] = values

    node.create_subscription(Image, f'{NS}/restored', lambda m: seen['restored'].__setitem__(_stamp(m), m), 10)
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 50)
    seen.update(node=node, executor=executor, process=node_process,
                pub=node.create_publisher(Image, f'{NS}/image', qos_profile_sensor_data))
    yield seen
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


def _stamp(msg: Any) -> str:
    return f'{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}'


def exchange(graph: dict[str, Any], rgb: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    """Publish ``rgb`` (resent while lost) until its restored frame and its condition status arrive."""
    header = Header(frame_id='auto_cam', stamp=graph['node'].get_clock().now().to_msg())
    msg = image_msg(header, np.ascontiguousarray(rgb), 'rgb8')
    key = _stamp(msg)
    deadline, last = time.monotonic() + WAIT_S, 0.0
    while key not in graph['restored'] or key not in graph['conditions']:
        if graph['process'].poll() is not None:
            pytest.fail(f"restore_node exited: {graph['process'].stdout.read()[-3000:]}")
        assert time.monotonic() < deadline, f'no restored frame and condition status for {key} in {WAIT_S} s'
        if time.monotonic() - last > 1.0:
            graph['pub'].publish(msg)
            last = time.monotonic()
        graph['executor'].spin_once(timeout_sec=0.05)
    out = graph['restored'][key]
    return np.frombuffer(bytes(out.data), np.uint8).reshape(rgb.shape), graph['conditions'][key]


@pytest.fixture(scope='module')
def photos() -> list[np.ndarray]:
    found = [np.ascontiguousarray(f.rgb[:480, :640]) for f in sample_photos()]
    if not found:
        pytest.skip('no bundled sample photos (ultralytics / scikit-image)')
    return found


def test_clean_photos_come_back_unchanged_and_called_clean(graph: dict[str, Any], photos: list[np.ndarray]) -> None:
    errors, present = [], []
    for rgb in photos:
        restored, condition = exchange(graph, rgb)
        errors.append(np.mean((restored.astype(np.float64) - rgb) ** 2))
        present.append(condition['present'])
    pooled = 10 * np.log10(255.0 ** 2 / max(float(np.mean(errors)), 1e-12))
    assert pooled >= 45.0, f'PSNR(restored, input) {pooled:.2f} dB over {len(photos)} clean photos'
    assert present.count('clean') >= len(photos) - 1, present


@pytest.mark.parametrize('condition', sorted(NAMED))
def test_a_degraded_frame_is_named_in_diagnostics(graph: dict[str, Any], photos: list[np.ndarray],
                                                  condition: str) -> None:
    degrade = Degrader(condition)
    hits = 0
    for index, rgb in enumerate(photos):
        lq = degrade(rgb, f'photo{index}')
        restored, status = exchange(graph, lq)
        hits += NAMED[condition] in status['present'].split(',')
        assert float(status[NAMED[condition]]) >= 0.0 and status['frame_id'] == 'auto_cam'
    assert hits >= len(photos) - 1, f'{condition}: named in {hits} of {len(photos)} frames'
    assert psnr(restored, rgb) > psnr(lq, rgb), 'restoring made the last frame worse'
