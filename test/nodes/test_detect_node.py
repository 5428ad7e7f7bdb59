"""detect_node end to end over DDS with the real offline people detector on a real photo (ultralytics bus.jpg).

The node runs in this process (so its per-frame results can be checked: vision_msgs is not among
the PyPI wheels) but every frame reaches it and leaves it over Fast DDS. Waits are bounded; frames
are resent because the input QoS is best effort.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from qdr_ros.nodes.detect_node import DetectNode, to_detection_array, to_label_info
from qdr_ros.detectors import Detection, default_model_path, to_bgr8
from qdr_ros.nodes.base_node import StartupError
from qdr_ros.tools.probe import Probe

pytestmark = pytest.mark.ros

NS = '/qdr_detect_test'
WAIT_S = 60.0


def bus_rgb() -> np.ndarray:
    import ultralytics

    path = Path(ultralytics.__file__).parent / 'assets' / 'bus.jpg'
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope='module')
def graph() -> Iterator[dict[str, Any]]:
    """One DetectNode (real default model) and a probe on their own context and executor."""
    context = Context()
    rclpy.init(context=context)
    found: dict[int, list[Detection]] = {}
    node = DetectNode(listener=lambda header, dets: found.__setitem__(header.stamp.nanosec, list(dets)),
                      context=context, namespace=NS, parameter_overrides=[Parameter('imgsz', value=640)])
    executor = MultiThreadedExecutor(context=context)
    executor.add_node(node)
    probe = Probe('detect_probe', context=context, namespace=NS, executor=executor)
    probe.watch_diagnostics()
    yield {'node': node, 'probe': probe, 'found': found, 'annotated': probe.inbox('image_detections')}
    executor.shutdown()
    probe.close()
    node.destroy_node()
    rclpy.shutdown(context=context)


def spin_until(graph: dict[str, Any], done: Callable[[], bool], send: Callable[[], None], what: str) -> None:
    graph['probe'].wait(done, what, WAIT_S, every=send, period_s=2.0)


def publish(graph: dict[str, Any], msg: Image) -> Callable[[], None]:
    return lambda: graph['probe'].publish('image', msg)


def image_msg(pixels: np.ndarray, encoding: str, nanosec: int, step: int | None = None) -> Image:
    header = Header(frame_id='bus_camera')
    header.stamp.sec, header.stamp.nanosec = 1, nanosec
    msg = Image(header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding)
    msg.step = step or pixels.shape[1] * 3
    msg.data = np.ascontiguousarray(pixels).tobytes()
    return msg


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8'])
def test_people_found_on_bus_photo_with_header_kept(graph: dict[str, Any], encoding: str) -> None:
    rgb = bus_rgb()
    pixels = rgb if encoding == 'rgb8' else rgb[..., ::-1]
    stamp = 100 if encoding == 'rgb8' else 200
    msg = image_msg(pixels, encoding, stamp)
    spin_until(graph, lambda: (1, stamp) in graph['annotated'] and stamp in graph['found'], publish(graph, msg),
               f'the annotated {encoding} frame')
    people = graph['found'][stamp]
    assert len(people) >= 3, people
    assert all(d.name == 'person' and d.class_id in (0, 1) and 0.25 <= d.score <= 1 for d in people)
    assert all(0 <= d.xyxy[0] < d.xyxy[2] <= rgb.shape[1] and 0 <= d.xyxy[1] < d.xyxy[3] <= rgb.shape[0]
               for d in people)
    out = graph['annotated'][1, stamp]
    assert out.header.frame_id == 'bus_camera' and (out.header.stamp.sec, out.header.stamp.nanosec) == (1, stamp)
    assert (out.encoding, out.height, out.width, out.step) == (encoding, rgb.shape[0], rgb.shape[1], rgb.shape[1] * 3)
    drawn = np.frombuffer(bytes(out.data), np.uint8).reshape(rgb.shape)
    changed = np.any(drawn != pixels, axis=2)
    assert 0 < changed.mean() < 0.2  # boxes and labels drawn, the photo itself untouched
    x1, y1, x2, y2 = (int(round(v)) for v in people[0].xyxy)
    assert changed[y1:y2, x1:x2].any()


def test_diagnostics_name_the_node_and_the_camera(graph: dict[str, Any]) -> None:
    msg = image_msg(bus_rgb(), 'rgb8', 500)
    spin_until(graph, lambda: 500 in graph['found'], publish(graph, msg), 'detections of a frame')
    status = graph['probe'].wait_status(
        lambda v: v['name'] == f'{NS}/detect_node: detection' and int(v['frames_out']) >= 1,
        'a detection status after a frame', new=False, timeout_s=WAIT_S, every=publish(graph, msg), period_s=2.0)
    assert status['hardware_id'] == 'bus_camera'
    assert 0 < float(status['inference_ms_p50']) <= float(status['inference_ms_p95'])
    assert status['input_topic'] == f'{NS}/image' and status['model'].endswith('best.pt')
    assert 0.0 <= float(status['drop_ratio']) <= 1.0 and int(status['frames_in']) >= int(status['frames_out'])


def test_bad_frames_are_dropped_and_counted(graph: dict[str, Any]) -> None:
    node = graph['node']
    bad = image_msg(np.zeros((4, 4, 3), np.uint8), 'rgb8', 300, step=6)  # step shorter than a row
    unsupported = image_msg(np.zeros((4, 4, 3), np.uint8), '32FC1', 301)

    def rejected() -> dict[str, int]:
        return node._stats.snapshot().rejected

    def send() -> None:  # one at a time: the input keeps only the newest frame
        graph['probe'].publish('image', unsupported if 'bad_step' in rejected() else bad)
    spin_until(graph, lambda: {'bad_step', 'unsupported_encoding'} <= rejected().keys(), send, 'rejected frames')
    assert (1, 300) not in graph['annotated'] and (1, 301) not in graph['annotated']


def test_runtime_parameters_are_validated(graph: dict[str, Any]) -> None:
    node = graph['node']
    results = node.set_parameters([Parameter('imgsz', value=100)])
    assert not results[0].successful and 'multiple of 32' in results[0].reason
    assert not node.set_parameters([Parameter('classes', value=[7])])[0].successful
    assert not node.set_parameters([Parameter('model', value='other.pt')])[0].successful
    assert node.set_parameters([Parameter('classes', value=[0]), Parameter('conf', value=0.3)])[0].successful
    assert list(node.get_parameter('classes').value) == [0]
    assert node.set_parameters([Parameter('classes', Parameter.Type.INTEGER_ARRAY, [])])[0].successful


def test_max_det_takes_effect_at_runtime(graph: dict[str, Any]) -> None:
    node, rgb = graph['node'], bus_rgb()
    assert node.set_parameters([Parameter('max_det', value=1)])[0].successful
    try:
        msg = image_msg(rgb, 'rgb8', 400)
        spin_until(graph, lambda: 400 in graph['found'], publish(graph, msg), 'a frame with max_det 1')
        assert len(graph['found'][400]) == 1  # the bus photo has at least 3 people (test above)
    finally:
        assert node.set_parameters([Parameter('max_det', value=300)])[0].successful


def test_label_info_names_every_class() -> None:
    """Built against stand-ins with vision_msgs' LabelInfo/VisionClass field names."""
    header = Header(frame_id='cam')
    info = to_label_info(header, {1: 'person', 0: 'person'}, 0.25,
                         (lambda: SimpleNamespace(header=None, class_map=[], threshold=0.0),
                          lambda class_id, class_name: SimpleNamespace(class_id=class_id, class_name=class_name)))
    assert info.header is header and info.threshold == 0.25
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(0, 'person'), (1, 'person')]


def test_bad_start_parameters_stop_with_a_clear_message(tmp_path: Path) -> None:
    context = Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(StartupError, match='multiple of 32'):
            DetectNode(context=context, parameter_overrides=[Parameter('imgsz', value=100)])
        with pytest.raises(StartupError, match='does not exist'):
            DetectNode(context=context, parameter_overrides=[Parameter('model', value=str(tmp_path / 'none.pt'))])
    finally:
        rclpy.shutdown(context=context)


def test_detection_array_uses_the_humble_vision_msgs_layout() -> None:
    """Built against stand-ins with vision_msgs' field names (Humble+: bbox.center.position)."""
    def detection2d() -> SimpleNamespace:
        return SimpleNamespace(header=None, results=[], bbox=SimpleNamespace(
            center=SimpleNamespace(position=SimpleNamespace(x=0.0, y=0.0), theta=0.0), size_x=0.0, size_y=0.0))

    def hypothesis() -> SimpleNamespace:
        return SimpleNamespace(hypothesis=SimpleNamespace(class_id='', score=0.0), pose=None)

    header = Header(frame_id='cam')
    array = to_detection_array(header, [Detection(1, 'Fall', 0.75, (10.0, 20.0, 30.0, 60.0))],
                               (lambda: SimpleNamespace(header=None, detections=[]), detection2d, hypothesis))
    assert array.header is header and len(array.detections) == 1
    det = array.detections[0]
    assert det.header is header
    assert (det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.size_x, det.bbox.size_y) == (
        20.0, 40.0, 20.0, 40.0)
    assert (det.results[0].hypothesis.class_id, det.results[0].hypothesis.score) == ('1', 0.75)


def test_default_model_and_conversions() -> None:
    assert default_model_path().name == 'best.pt'
    mono16 = np.array([[[0], [65535]]], np.uint16)
    assert to_bgr8(mono16, 'mono16').tolist() == [[[0, 0, 0], [255, 255, 255]]]
    rgba = np.array([[[1, 2, 3, 4]]], np.uint8)
    assert to_bgr8(rgba, 'rgba8').tolist() == [[[3, 2, 1]]]
