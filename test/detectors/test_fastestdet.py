"""FastestDet (COCO-80 ONNX, ``../shared/data/detection/FastestDet``) behind the detector API and in detect_node."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from qdr_ros.nodes.detect_node import DetectNode
from qdr_ros.detectors import Detection, DetectorError, create_detector, default_model_path
from qdr_ros.detectors.fastestdet import FastestDet, is_fastestdet
from qdr_train.data.datasets import data_root
from qdr_train.evaluation.detection_bench import LABELLED_SETS
from qdr_train.evaluation.detection_scoring import (Boxes, Scorer, coco_names, evaluate_map, load_labelled,
                                                    model_to_coco)

MODEL = data_root() / 'detection' / 'FastestDet' / 'FastestDet.onnx'
pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason='FastestDet not in the shared data')
# The four people and the bus of ultralytics' bus.jpg (810x1080), xyxy, read off the photo.
BUS_PEOPLE = [(50, 400, 245, 905), (220, 405, 345, 860), (670, 380, 810, 880), (0, 550, 65, 870)]
BUS = (15, 230, 805, 760)


def bus_bgr() -> np.ndarray:
    import ultralytics

    return cv2.imread(str(Path(ultralytics.__file__).parent / 'assets' / 'bus.jpg'))


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def found_people_and_bus(detections: list[Detection]) -> tuple[int, bool]:
    people = sum(any(d.name == 'person' and iou(d.xyxy, p) > 0.5 for d in detections) for p in BUS_PEOPLE)
    return people, any(d.name == 'bus' and iou(d.xyxy, BUS) > 0.5 for d in detections)


def test_people_and_the_bus_are_found_in_either_channel_order() -> None:
    detector = create_detector(str(MODEL), conf=0.4, iou=0.45)
    assert isinstance(detector, FastestDet) and detector.names[0] == 'person' and len(detector.names) == 80
    bgr = bus_bgr()
    dets = detector.detect(bgr, 'bgr8')
    assert found_people_and_bus(dets) == (4, True), dets
    assert dets == detector.detect(np.ascontiguousarray(bgr[..., ::-1]), 'rgb8')
    assert all(0 <= d.xyxy[0] < d.xyxy[2] <= bgr.shape[1] and 0 <= d.xyxy[1] < d.xyxy[3] <= bgr.shape[0]
               for d in dets)
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    only_bus = detector.detect(bgr, 'bgr8', classes=[5])
    assert only_bus and {d.name for d in only_bus} == {'bus'}


def test_it_scores_the_labelled_coco_samples_on_every_class() -> None:
    """All 80 classes map to COCO (six by their Darknet spelling); mAP50-95 as measured when it was added."""
    detector = create_detector(str(MODEL), conf=0.001, iou=0.7, max_det=100)
    assert len(model_to_coco(detector.names, coco_names(data_root()))) == 80
    samples = load_labelled([data_root() / s for s in LABELLED_SETS], set(range(80)))

    def boxes(dets: list[Detection]) -> Boxes:
        return Boxes(np.array([d.xyxy for d in dets]).reshape(-1, 4), np.array([d.class_id for d in dets], int),
                     np.array([d.score for d in dets]))

    scores = evaluate_map([boxes(detector.detect(s.rgb)) for s in samples], [s.truth for s in samples])
    # 0.455 / 0.627 on 21 images, 63 boxes, the people-only sets scored for people (counting FastestDet's
    # giraffes there as false positives gave 0.398 / 0.550)
    assert scores['map50_95'] == pytest.approx(0.455, abs=0.005) and scores['map50'] == pytest.approx(0.627, abs=0.005)


@pytest.mark.timeout(900)  # CPU-heavy: room for a CI machine several times slower than the dev VM
def test_the_benchmark_gives_each_restored_gain_a_paired_bootstrap_interval() -> None:
    """On clean frames: a restorer that returns its input gains exactly 0, one that blurs loses, both with intervals."""
    from qdr_train.evaluation.detection_bench import bench_set, format_table

    scorer = Scorer(str(MODEL), 'cpu', coco_names(data_root()))
    samples = load_labelled([data_root() / s for s in LABELLED_SETS], set(range(80)), limit=8)
    restorers = {'clean': {'fp32': lambda rgb: rgb, 'int8': lambda rgb: cv2.blur(rgb, (15, 15))}}
    results, intervals = bench_set(samples, scorer, restorers, pseudo=False, progress=False)
    assert intervals['clean']['fp32']['map50_95'] == (0.0, 0.0)
    loss = 100 * (results['clean']['int8']['map50_95'] - results['clean']['degraded']['map50_95'])
    low, high = (100 * v for v in intervals['clean']['int8']['map50_95'])
    assert loss < -5 and low <= loss and high < 0, (loss, low, high)
    row = format_table('coco', results, intervals).splitlines()[4]
    assert row.startswith('| clean | mAP50-95 |')
    assert row.endswith(f'| +0.0 (+0.0, +0.0) | {loss:+.1f} ({low:+.1f}, {high:+.1f}) |')


def test_bad_models_and_settings_say_what_to_fix(tmp_path: Path) -> None:
    assert not is_fastestdet(default_model_path())
    assert not is_fastestdet(Path(__file__).resolve().parents[2] / 'models' / 'denoise' / 'efm_int8.onnx')
    lonely = tmp_path / 'FastestDet.onnx'
    shutil.copy(MODEL, lonely)
    with pytest.raises(DetectorError, match='coco.names'):
        create_detector(str(lonely))
    (tmp_path / 'coco.names').write_text('person\ncar\n')
    with pytest.raises(DetectorError, match='lists 2 names but FastestDet.onnx has 80 classes'):
        create_detector(str(lonely))
    with pytest.raises(DetectorError, match='ONNX Runtime on the CPU'):
        create_detector(str(MODEL), device='cuda')
    with pytest.raises(DetectorError, match=r'classes \[80\] are not in the model'):
        create_detector(str(MODEL), classes=[80])
    import onnx

    dynamic = onnx.load(str(MODEL))
    for dim, name in zip(dynamic.graph.input[0].type.tensor_type.shape.dim[2:], ('h', 'w')):
        dim.dim_param = name  # an export without a fixed size
    onnx.save(dynamic, str(lonely))
    (tmp_path / 'coco.names').write_text((MODEL.parent / 'coco.names').read_text())
    with pytest.raises(DetectorError, match='needs a fixed'):
        create_detector(str(lonely))


@pytest.mark.ros
def test_detect_node_runs_it_over_dds() -> None:
    context = Context()
    rclpy.init(context=context)
    found: dict[int, list[Detection]] = {}
    node = DetectNode(listener=lambda header, dets: found.__setitem__(header.stamp.nanosec, list(dets)),
                      context=context, namespace='/qdr_fastestdet_test',
                      parameter_overrides=[Parameter('model', value=str(MODEL)), Parameter('iou', value=0.45),
                                           Parameter('conf', value=0.4)])
    probe = rclpy.create_node('fastestdet_probe', namespace='/qdr_fastestdet_test', context=context)
    pub = probe.create_publisher(Image, 'image', qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(probe)
    try:
        bgr = bus_bgr()
        msg = Image(height=bgr.shape[0], width=bgr.shape[1], encoding='bgr8', step=bgr.shape[1] * 3,
                    data=bgr.tobytes())
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1, 500
        deadline, last = time.monotonic() + 60.0, 0.0
        while 500 not in found:
            assert time.monotonic() < deadline, 'detect_node returned no detections for the bus photo in 60 s'
            if time.monotonic() - last > 2.0:
                pub.publish(msg)
                last = time.monotonic()
            executor.spin_once(timeout_sec=0.05)
        assert found_people_and_bus(found[500]) == (4, True), found[500]
    finally:
        executor.shutdown()
        node.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.ros
def test_qdr_run_gives_the_detector_its_own_params_file(tmp_path: Path) -> None:
    """qdr-run's detect_node reads config/detect.yaml's layout (not restore.yaml), in the launch file's namespace."""
    import yaml

    from qdr_ros.nodes import params
    from qdr_ros.tools import run

    values = {**params.DETECT_PARAMS.defaults, 'iou': 0.45}
    values.pop('classes')  # ROS YAML has no empty arrays
    detect_yaml = tmp_path / 'detect.yaml'
    detect_yaml.write_text(yaml.safe_dump({params.DETECT_PARAMS.yaml_key: {'ros__parameters': values}}))
    args = run.parse_args(['--use-detector', '--detector-params-file', str(detect_yaml),
                           '--detector-model', str(MODEL)])
    context = Context()
    rclpy.init(context=context)
    try:
        node = run._detect_node(args, context)
        assert node is not None
        assert (node.get_namespace(), node.get_parameter('iou').value) == ('/camera', 0.45)
        assert node.get_parameter('model').value == str(MODEL)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
