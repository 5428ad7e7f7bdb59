"""The shipped auto model through restore_node over DDS: it names the condition and leaves clean frames alone.

restore_node runs in its own process with its default model (``models/auto/efm_int8.onnx``); this
test publishes real photos, clean and degraded with the training degradations at their documented
levels, and reads the restored frames and the node's ``<node>: condition`` status in /diagnostics,
matched to the frame by ``frame_stamp``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from rclpy.context import Context
from std_msgs.msg import Header

from qdr_ros.nodes import params
from qdr_ros.nodes.base_node import image_msg
from qdr_ros.core.frame_sources import Degrader, sample_photos
from qdr_ros.tools.probe import Inbox, NodeProcess, Probe, stamp_key
from qdr_train.metrics import psnr

pytestmark = pytest.mark.ros

NS = '/qdr_auto'
WAIT_S = 60.0
# Conditions whose labels the shipped model names reliably at the documented level (docs/results.md).
NAMED = {'lowlight': 'lowlight', 'derain': 'rain'}

if not params.resolve_model_path(params.RESTORE_PARAMS.defaults['model']).is_file():
    pytest.skip(f"no shipped model {params.RESTORE_PARAMS.defaults['model']}", allow_module_level=True)


@pytest.fixture(scope='module')
def node_process() -> Iterator[NodeProcess]:
    """restore_node with its defaults (the auto model); statuses often, so each frame's shows up."""
    with NodeProcess.start('qdr_ros.nodes.restore_node', params={
            'diagnostics_period': 0.1, 'condition_time_constant': 0.0},
            remaps={'image': f'{NS}/image', 'image_restored': f'{NS}/restored'}) as node:
        yield node


@pytest.fixture(scope='module')
def graph(context: Context, node_process: NodeProcess) -> Iterator[tuple[Probe, Inbox]]:
    """The probe, collecting /diagnostics from the start, and the restored frames by stamp."""
    with Probe('auto_probe', context=context, watch=[node_process]) as probe:
        probe.watch_diagnostics()
        yield probe, probe.inbox(f'{NS}/restored')


def exchange(graph: tuple[Probe, Inbox], rgb: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Publish ``rgb`` (resent while lost) until its restored frame and its condition status arrive."""
    probe, restored = graph
    header = Header(frame_id='auto_cam', stamp=probe.node.get_clock().now().to_msg())
    msg = image_msg(header, np.ascontiguousarray(rgb), 'rgb8')
    sec, nanosec = stamp_key(msg)
    out = probe.exchange(f'{NS}/image', msg, restored, timeout_s=WAIT_S, period_s=1.0)
    condition = probe.wait_status(
        lambda v: v['name'].endswith(': condition') and v.get('frame_stamp') == f'{sec}.{nanosec:09d}',
        f'the condition status of frame {sec}.{nanosec:09d}', new=False, timeout_s=WAIT_S,
        every=lambda: probe.publish(f'{NS}/image', msg), period_s=1.0)
    return np.frombuffer(bytes(out.data), np.uint8).reshape(rgb.shape), condition


@pytest.fixture(scope='module')
def photos() -> list[np.ndarray]:
    found = [np.ascontiguousarray(f.rgb[:480, :640]) for f in sample_photos()]
    if not found:
        pytest.skip('no bundled sample photos (ultralytics / scikit-image)')
    return found


def test_clean_photos_come_back_unchanged_and_called_clean(graph: tuple[Probe, Inbox],
                                                           photos: list[np.ndarray]) -> None:
    errors, present = [], []
    for rgb in photos:
        restored, condition = exchange(graph, rgb)
        errors.append(np.mean((restored.astype(np.float64) - rgb) ** 2))
        present.append(condition['present'])
    pooled = 10 * np.log10(255.0 ** 2 / max(float(np.mean(errors)), 1e-12))
    assert pooled >= 45.0, f'PSNR(restored, input) {pooled:.2f} dB over {len(photos)} clean photos'
    assert present.count('clean') >= len(photos) - 1, present


@pytest.mark.parametrize('condition', sorted(NAMED))
def test_a_degraded_frame_is_named_in_diagnostics(graph: tuple[Probe, Inbox], photos: list[np.ndarray],
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
