"""The real ``ros2 launch qdr_ros restore.launch.py`` on the colcon-built package, with the detector on.

The launch stack (launch, launch_ros, ros2cli) is not on the package index; ``make setup`` installs it
from ``../shared/wheels/ros2-launch`` (skipped only where that folder is absent). The package is built
in a temporary colcon workspace as on a robot (scripts/colcon_build.sh). The test reads the topics
``config/qdr.rviz`` shows, publishes a real photo on the raw one and checks that restored frames and
detection frames arrive on the other two; with ``namespace:=`` every topic of the nodes must move under it.
"""

from __future__ import annotations

from collections.abc import Iterator
import os
from pathlib import Path
import shutil
import subprocess
import sys

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rcl_interfaces.msg import ParameterValue
from rcl_interfaces.srv import GetParameters
from std_msgs.msg import Header
import yaml

from qdr_ros.nodes.base_node import image_msg
from qdr_ros.core.frame_sources import sample_photos
from qdr_ros.tools.probe import NodeProcess, Probe

# pytest-timeout counts a module fixture's setup in the first test: the build has its own, longer limit
pytestmark = [pytest.mark.slow, pytest.mark.ros, pytest.mark.timeout(1200)]

WAIT_S = 120.0
# Global by design: the ROS log, parameter events and the diagnostics bus aggregators read.
GLOBAL_TOPICS = {'/rosout', '/parameter_events', '/diagnostics'}


def _clean_env() -> dict[str, str]:
    """The venv's ros2 first on PATH; no outer workspace leaking in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ('PYTHONPATH', 'AMENT_PREFIX_PATH', 'COLCON_PREFIX_PATH', 'CMAKE_PREFIX_PATH')}
    env['PATH'] = f'{Path(sys.executable).parent}:{env.get("PATH", "")}'
    return env


@pytest.fixture(scope='module')
def workspace(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """colcon-build the package, after checking the launch stack is there."""
    wheels = repo_root.parent / 'shared' / 'wheels' / 'ros2-launch'
    if not wheels.is_dir():
        pytest.skip(f'{wheels} absent: no ROS 2 launch stack to test with')
    result = subprocess.run([sys.executable, '-c', 'import launch_ros, ros2launch'], capture_output=True, text=True)
    assert result.returncode == 0, f'launch stack missing from the venv; run make setup\n{result.stderr}'
    ws = tmp_path_factory.mktemp('launch_ws')
    result = subprocess.run(['bash', str(repo_root / 'scripts' / 'colcon_build.sh'), str(ws)],
                            capture_output=True, text=True, timeout=300, env=_clean_env())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return ws


@pytest.fixture(scope='module')
def rviz_topics(repo_root: Path) -> dict[str, str]:
    """Display name -> topic of the image displays of config/qdr.rviz."""
    config = yaml.safe_load((repo_root / 'config' / 'qdr.rviz').read_text())
    return {d['Name']: d['Topic']['Value'] for d in config['Visualization Manager']['Displays']
            if d['Class'] == 'rviz_default_plugins/Image'}


@pytest.fixture(scope='module')
def fastestdet(repo_root: Path) -> Path:
    path = repo_root.parent / 'shared' / 'data' / 'detection' / 'FastestDet' / 'FastestDet.onnx'
    if not path.is_file():
        pytest.skip(f'{path} absent')
    return path


@pytest.fixture
def probe() -> Iterator[Probe]:
    context = Context()
    rclpy.init(context=context)
    with Probe('launch_probe', context=context) as probe:
        yield probe
    rclpy.shutdown(context=context)


def _launch(ws: Path, *arguments: str) -> NodeProcess:
    command = f'source {ws / "install" / "setup.bash"} && exec ros2 launch qdr_ros restore.launch.py ' + ' '.join(
        arguments)
    return NodeProcess('ros2 launch', ['bash', '-c', command], cwd=ws, env=_clean_env())


def _restore_and_detect(probe: Probe, launch: NodeProcess, raw: str, restored_topic: str, detections_topic: str,
                        gate_topic: str | None = None) -> None:
    """Publish a photo on ``raw`` until a restored and a detection frame (and gate map) of one stamp come back."""
    probe.watch(launch)
    gates = probe.inbox(gate_topic) if gate_topic is not None else None
    photo = np.ascontiguousarray(next(f.rgb for f in sample_photos() if f.name == 'bus.jpg')[::2, ::2])
    restored, detected = probe.inbox(restored_topic), probe.inbox(detections_topic)

    def common() -> set[tuple[int, int]]:
        return restored.keys() & detected.keys() & (gates.keys() if gates is not None else restored.keys())

    def send() -> None:
        header = Header(stamp=probe.node.get_clock().now().to_msg(), frame_id='camera_optical_frame')
        probe.publish(raw, image_msg(header, photo, 'rgb8'))
    probe.wait(lambda: bool(common()), f'frames of one stamp on {restored_topic}, {detections_topic} and {gate_topic}',
               WAIT_S, every=send, period_s=1.0)
    stamp = min(common())
    frame, boxes = restored[stamp], detected[stamp]
    pixels = np.frombuffer(bytes(frame.data), np.uint8).reshape(photo.shape)
    drawn = np.frombuffer(bytes(boxes.data), np.uint8).reshape(photo.shape)
    assert np.any(drawn != pixels, axis=2).mean() > 0.001, 'no detection box drawn on a photo of a bus and people'
    if gates is not None:
        gate = gates[stamp]
        assert (gate.encoding, gate.width, gate.height) == ('mono8', photo.shape[1], photo.shape[0])


def _node_topics(node: Node, name: str, namespace: str) -> set[str]:
    """Every topic the node ``namespace/name`` publishes or subscribes (as the graph reports it)."""
    topics = node.get_publisher_names_and_types_by_node(name, namespace)
    topics += node.get_subscriber_names_and_types_by_node(name, namespace)
    return {topic for topic, _ in topics}


def _parameters(probe: Probe, node: str, names: list[str]) -> list[ParameterValue]:
    """Read parameters of a running node through its parameter service."""
    client = probe.node.create_client(GetParameters, f'{node}/get_parameters')
    try:
        assert probe.spin_until(client.service_is_ready, 30), f'no parameter service on {node}'
        future = client.call_async(GetParameters.Request(names=names))
        assert probe.spin_until(future.done, 30), f'{node} did not answer get_parameters'
        return list(future.result().values)
    finally:
        probe.node.destroy_client(client)


def test_launch_with_detector_feeds_the_rviz_topics(workspace: Path, rviz_topics: dict[str, str],
                                                    fastestdet: Path, probe: Probe) -> None:
    assert set(rviz_topics) == {'Raw', 'Restored', 'Gate', 'Detections'}
    launch = _launch(workspace, 'use_detector:=true', f'detector_model:={fastestdet}', 'publish_gate:=true',
                     'detector_iou:=0.45', 'dla_core:=-1', 'force_engine_rebuild:=false')
    try:
        _restore_and_detect(probe, launch, rviz_topics['Raw'], rviz_topics['Restored'], rviz_topics['Detections'],
                            rviz_topics['Gate'])
        assert _parameters(probe, '/camera/detect_node', ['iou'])[0].double_value == 0.45  # the file says 0.7
    finally:
        assert launch.stop() == 0, launch.log_tail(60)


def test_namespace_moves_every_topic(workspace: Path, rviz_topics: dict[str, str], fastestdet: Path,
                                     probe: Probe) -> None:
    no_rviz = shutil.which('rviz2') is None  # without rviz2 use_rviz:=true must start the rest (no GUI in a test)
    launch = _launch(workspace, 'namespace:=robot7', 'use_detector:=true', f'detector_model:={fastestdet}',
                     'log_level:=warn', *(['use_rviz:=true'] if no_rviz else []))
    try:
        _restore_and_detect(probe, launch, *('/robot7' + rviz_topics[k] for k in ('Raw', 'Restored', 'Detections')))
        assert not no_rviz or 'rviz2 is not installed' in launch.log_tail(200)
        node = probe.node
        for name in ('restore_node', 'detect_node'):
            assert ('/robot7/camera', name) in [(ns, n) for n, ns in node.get_node_names_and_namespaces()]
            topics = _node_topics(node, name, '/robot7/camera')
            assert topics and all(t.startswith('/robot7/camera/') for t in topics - GLOBAL_TOPICS), (name, topics)
    finally:
        launch.stop()
