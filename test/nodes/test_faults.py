"""Fault injection around a running restore_node (issue #8): peers die and return, the model file goes bad.

The node runs in its own process for the whole module; camera and downstream peers are separate
processes that get SIGKILLed (no clean shutdown) and replaced. The node must keep serving.
"""

from __future__ import annotations

from collections.abc import Iterator
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from rclpy.context import Context

from qdr_ros.core import ros_env
from support.frames import make_image, offline
from qdr_ros.tools.probe import Inbox, NodeProcess, Probe

pytestmark = pytest.mark.ros

NS = '/faults'
NODE = f'{NS}/restore_node'
IMAGE, RESTORED = f'{NS}/image', f'{NS}/restored'
PROCESS_START_S = 60.0  # a fresh camera process imports rclpy and joins discovery; slow on loaded CPUs


@pytest.fixture(scope='module', autouse=True)
def own_domain() -> Iterator[str]:
    """Run this module in a ROS domain of its own (autouse: set before its context and processes start).

    SIGKILLed peers stay in the graph until their discovery lease runs out; in their own domain
    they never reach a later module's discovery.
    """
    shared = os.environ['ROS_DOMAIN_ID']
    domain = next(d for d in iter(ros_env.domain_id, None) if d != shared)
    os.environ['ROS_DOMAIN_ID'] = domain
    yield domain
    os.environ['ROS_DOMAIN_ID'] = shared


CAMERA = '''
import sys, time, numpy as np, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node('fault_camera')
pub = node.create_publisher(Image, sys.argv[1], qos_profile_sensor_data)
while True:
    msg = Image(height=16, width=16, encoding='rgb8', step=48, data=np.full(768, 80, np.uint8).tobytes())
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.header.frame_id = sys.argv[2]
    pub.publish(msg)
    time.sleep(0.05)
'''
LISTENER = '''
import os, signal, sys, rclpy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node('fault_listener')
got = []
node.create_subscription(Image, sys.argv[1], lambda m: got.append(m.header.frame_id), 10)
while len(got) < 5:
    rclpy.spin_once(node, timeout_sec=0.1)
print('received', len(got), 'from', got[-1], flush=True)
if sys.argv[2] == 'die':
    os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.fixture(scope='module')
def served(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A private copy of the FP32 model, so the test can overwrite the file the node loaded."""
    path = tmp_path_factory.mktemp('faults') / 'served.onnx'
    shutil.copy(models['fp32'], path)
    return path


@pytest.fixture(scope='module')
def node_process(served: Path) -> Iterator[NodeProcess]:
    with NodeProcess.start('qdr_ros.nodes.restore_node', namespace=NS, params={
            'model': served, 'warmup_width': 32, 'warmup_height': 32, 'diagnostics_period': 0.3, 'threads': 1},
            remaps={'image_restored': 'restored', 'image_restored/camera_info': 'restored/camera_info'}) as node:
        yield node


@pytest.fixture(scope='module')
def probe(context: Context, node_process: NodeProcess) -> Iterator[Probe]:  # noqa: F811
    with Probe('qdr_faults_probe', context=context, watch=[node_process]) as probe:
        yield probe


@pytest.fixture(scope='module')
def restored(probe: Probe) -> Inbox:
    inbox = probe.inbox(RESTORED)
    probe.wait_for_graph(publishers=[RESTORED], timeout_s=120)  # node start included
    return inbox


def _kill(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(timeout=10)


def _alive(node_process: NodeProcess) -> None:
    assert node_process.alive, 'restore_node died:\n' + node_process.log()


def test_camera_dies_and_comes_back(probe: Probe, restored: Inbox, node_process: NodeProcess) -> None:
    for generation in (1, 2, 3):
        camera = subprocess.Popen([sys.executable, '-c', CAMERA, IMAGE, f'camera_{generation}'])
        try:
            probe.wait(lambda: any(m.header.frame_id == f'camera_{generation}' for m in restored.values()),
                       f'restored frames from camera generation {generation}', timeout_s=PROCESS_START_S)
        finally:
            _kill(camera)
        _alive(node_process)
    status = probe.wait_status(lambda v: v.get('input_topic') == IMAGE, f'diagnostics of the node on {IMAGE}')
    assert int(status['backend_errors']) == 0 and int(status['frames_out']) >= 3


def _listen(mode: str) -> str:
    """Run one LISTENER to its end and return what it printed.

    A listener that segfaulted in the DDS library before it printed (seen once under heavy load, in
    libfastdds) is the test's own tool failing, not the node: it runs once more.
    """
    for _ in range(2):
        listener = subprocess.Popen([sys.executable, '-c', LISTENER, RESTORED, mode], stdout=subprocess.PIPE, text=True)
        try:
            out = listener.communicate(timeout=120)[0]
        finally:
            _kill(listener)  # a listener that never got its frames must not outlive the test
        if listener.returncode != -signal.SIGSEGV or 'received' in out:
            break
    return out


def test_downstream_dies_and_comes_back(probe: Probe, restored: Inbox, node_process: NodeProcess) -> None:
    restored.unsubscribe()
    camera = subprocess.Popen([sys.executable, '-c', CAMERA, IMAGE, 'camera_steady'])
    try:
        for mode in ('die', 'die', 'exit'):
            out = _listen(mode)
            assert 'received 5 from camera_steady' in out, out
            _alive(node_process)
    finally:
        _kill(camera)
        restored.subscribe()
    msg = make_image(np.full((8, 8, 3), 33, np.uint8), 'rgb8')
    assert probe.exchange(IMAGE, msg, restored).header.frame_id == 'qdr_cam'


def test_model_file_corrupted_while_running(probe: Probe, restored: Inbox, node_process: NodeProcess, served: Path,
                                            models: dict[str, Path]) -> None:  # noqa: F811
    pixels = np.random.default_rng(11).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    good = served.read_bytes()
    served.write_bytes(models['corrupt'].read_bytes())  # the file the node loaded goes bad on disk
    replacement = served.with_name('replacement.onnx')
    replacement.write_bytes(b'\x00' * 10)  # an update that arrived truncated
    try:
        msg = make_image(pixels, 'rgb8')
        served.write_bytes(good)
        expected = offline(served, msg)
        served.write_bytes(models['corrupt'].read_bytes())
        out = probe.exchange(IMAGE, msg, restored)
        assert bytes(out.data) == expected, 'the loaded model must keep serving from memory'
        for bad in (served.with_name('missing.onnx'), replacement, models['corrupt'], served):
            result = probe.set_parameter(NODE, 'model', str(bad))
            assert not result.successful, f'a reload of {bad} was accepted'
            assert bad.name in result.reason and 'still serving' in result.reason, result.reason
            msg = make_image(pixels, 'rgb8')
            assert bytes(probe.exchange(IMAGE, msg, restored).data) == expected, 'the old model stopped serving'
        _alive(node_process)
    finally:
        served.write_bytes(good)


@pytest.mark.parametrize(('name', 'value', 'why'), [
    ('backend', 'cuda', 'backend must be one of'),
    ('large_frames', 'crop', 'reject, downscale'),
    ('threads', -3, ''),
    ('threads', 'many', ''),
    ('input_depth', 5, 'read-only'),
    ('input_compressed', True, 'read-only'),
    ('diagnostics_period', -1.0, ''),
    ('max_pixels', 0, ''),
])
def test_invalid_parameter_updates_are_refused(probe: Probe, restored: Inbox, node_process: NodeProcess,
                                               name: str, value: object, why: str) -> None:
    result = probe.set_parameter(NODE, name, value)
    assert not result.successful, f'{name}:={value!r} was accepted'
    assert result.reason and why in result.reason, result.reason
    msg = make_image(np.full((8, 8, 3), int(time.time()) % 256, np.uint8), 'rgb8')
    assert probe.exchange(IMAGE, msg, restored).header.frame_id == 'qdr_cam'
    _alive(node_process)
