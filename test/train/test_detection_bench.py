"""COCO-style mAP on hand-made boxes, YOLO label parsing and the detector-to-COCO class mapping."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from qdr_ros.core.report_paths import shown_path
from qdr_train.data.datasets import data_root
from qdr_train.evaluation.detection_bench import gain_summary, gains_below
from qdr_train.evaluation.detection_scoring import (Boxes, average_precision, box_iou, evaluate_map, load_labelled,
                                                    model_to_coco, read_yolo_labels)


def boxes(xyxy: list[list[float]], classes: list[int], scores: list[float] | None = None) -> Boxes:
    return Boxes(np.array(xyxy, float).reshape(-1, 4), np.array(classes, int),
                 None if scores is None else np.array(scores, float))


def test_box_iou() -> None:
    iou = box_iou([[0, 0, 10, 10]], [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]])


def test_average_precision_101_points() -> None:
    assert average_precision(np.array([True, True]), 2) == 1.0
    assert average_precision(np.array([], bool), 3) == 0.0
    # one hit at rank 1 of 2 objects: precision 1 up to recall 0.5 -> 51 of 101 points
    assert average_precision(np.array([True, False]), 2) == pytest.approx(51 / 101)
    # false positive first, then a hit: precision 0.5 for every recall up to 1
    assert average_precision(np.array([False, True]), 1) == pytest.approx(0.5)


def test_perfect_and_empty_predictions() -> None:
    truth = [boxes([[0, 0, 10, 10], [20, 20, 40, 40]], [0, 0]), boxes([[5, 5, 50, 50]], [2])]
    perfect = [Boxes(t.xyxy, t.classes, np.ones(len(t.classes))) for t in truth]
    assert evaluate_map(perfect, truth) == {'map50_95': 1.0, 'map50': 1.0}
    none = [Boxes.empty(), Boxes.empty()]
    assert evaluate_map(none, truth) == {'map50_95': 0.0, 'map50': 0.0}


def test_iou_thresholds_and_duplicates() -> None:
    truth = [boxes([[0, 0, 100, 100]], [0])]
    # IoU 0.81 (a 90x90 box inside): a true positive at thresholds 0.50..0.80 (7 of 10), then missed
    shifted = [boxes([[0, 0, 90, 90]], [0], [0.9])]
    result = evaluate_map(shifted, truth)
    assert result['map50'] == 1.0
    assert result['map50_95'] == pytest.approx(0.7)
    # a duplicate with a lower score is a false positive after the recall is complete: AP unchanged
    duplicate = [boxes([[0, 0, 100, 100], [1, 1, 100, 100]], [0, 0], [0.9, 0.8])]
    assert evaluate_map(duplicate, truth)['map50_95'] == 1.0
    wrong_class = [boxes([[0, 0, 100, 100]], [1], [0.9])]
    assert evaluate_map(wrong_class, truth)['map50'] == 0.0


def test_classes_are_averaged_and_false_positives_on_empty_images_count() -> None:
    truth = [boxes([[0, 0, 10, 10]], [0]), boxes([[0, 0, 10, 10]], [1]), Boxes.empty()]
    preds = [boxes([[0, 0, 10, 10]], [0], [0.5]), Boxes.empty(), boxes([[0, 0, 10, 10]], [0], [0.9])]
    # class 0: a false positive (on the empty image) outranks the hit -> AP 0.5; class 1: missed -> 0
    assert evaluate_map(preds, truth) == {'map50_95': pytest.approx(0.25), 'map50': pytest.approx(0.25)}


def test_detections_of_classes_an_image_is_not_labelled_for_are_ignored() -> None:
    giraffe, person = 23, 0
    # a fully labelled image with a giraffe, and a people-only one whose giraffe nobody boxed
    truth = [boxes([[0, 0, 10, 10]], [giraffe]), Boxes(np.array([[0, 0, 20, 20]], float), np.array([person]),
                                                       labelled=frozenset({person}))]
    preds = [boxes([[0, 0, 10, 10]], [giraffe], [0.5]),
             boxes([[0, 0, 20, 20], [30, 30, 60, 60]], [person, giraffe], [0.9, 0.9])]
    assert evaluate_map(preds, truth) == {'map50_95': 1.0, 'map50': 1.0}
    truth[1].labelled = None  # labelled for every class, the unboxed giraffe is a false positive ranked first
    assert evaluate_map(preds, truth)['map50'] == pytest.approx(0.75)


def test_a_set_is_labelled_for_the_classes_its_yaml_names(tmp_path: Path) -> None:
    for name, classes in (('people', {0: 'person'}), ('all', {0: 'person', 23: 'giraffe'})):
        root = tmp_path / name
        (root / 'images').mkdir(parents=True)
        (root / 'labels').mkdir()
        (root / f'{name}.yaml').write_text(yaml.safe_dump({'names': classes}))
        cv2.imwrite(str(root / 'images' / f'{name}.jpg'), np.zeros((8, 8, 3), np.uint8))
        (root / 'labels' / f'{name}.txt').write_text('0 0.5 0.5 0.5 0.5\n')
    samples = load_labelled([tmp_path / 'people', tmp_path / 'all'], keep_classes={0, 23, 56})
    assert [s.truth.labelled for s in samples] == [frozenset({0}), frozenset({0, 23})]
    (tmp_path / 'all' / 'all.yaml').write_text(yaml.safe_dump({'names': ['person', 'bicycle']}))  # a list too
    assert load_labelled([tmp_path / 'all'], keep_classes={0, 1, 2})[0].truth.labelled == frozenset({0, 1})
    (tmp_path / 'all' / 'all.yaml').unlink()
    with pytest.raises(ValueError, match='dataset yaml'):
        load_labelled([tmp_path / 'all'], keep_classes={0})


def test_difficult_boxes_are_neither_objects_nor_false_positives(tmp_path: Path) -> None:
    from qdr_train.evaluation.real_detection import read_voc

    xml = tmp_path / 'a.xml'
    xml.write_text('<annotation>' + ''.join(
        f'<object><name>car</name><difficult>{d}</difficult><bndbox><xmin>{x}</xmin><ymin>0</ymin>'
        f'<xmax>{x + 10}</xmax><ymax>10</ymax></bndbox></object>' for x, d in ((0, 0), (50, 1))) + '</annotation>')
    truth = read_voc(xml, {'car': 2})
    assert truth.difficult.tolist() == [False, True]
    # the hit on the counted car, and a higher-scored one on the difficult car: ignored, AP 1; missing it costs nothing
    preds = [boxes([[50, 0, 60, 10], [0, 0, 10, 10]], [2, 2], [0.9, 0.8])]
    assert evaluate_map(preds, [truth]) == {'map50_95': 1.0, 'map50': 1.0}
    assert evaluate_map([boxes([[0, 0, 10, 10]], [2], [0.8])], [truth])['map50'] == 1.0
    truth.difficult = None  # counted, the second car is missed by the one box and found by the two
    assert evaluate_map([boxes([[0, 0, 10, 10]], [2], [0.8])], [truth])['map50'] == pytest.approx(51 / 101)


def test_a_yolo_set_with_its_own_class_list_is_mapped_to_coco_by_name(tmp_path: Path) -> None:
    from qdr_train.evaluation.real_detection import load_folder_set

    (tmp_path / 'images').mkdir()
    (tmp_path / 'labels').mkdir()
    cv2.imwrite(str(tmp_path / 'images' / 'a.jpg'), np.zeros((40, 40, 3), np.uint8))
    (tmp_path / 'labels' / 'a.txt').write_text('0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n2 0.7 0.7 0.1 0.1\n')
    coco = {0: 'person', 2: 'car', 3: 'motorcycle'}
    (tmp_path / 'classes.txt').write_text('car\nmotorbike\nsign\n')  # the set's own ids, Darknet spelling
    truth = load_folder_set(tmp_path, coco, keep={0, 2, 3})[0].truth
    assert truth.classes.tolist() == [2, 3]  # car -> 2, motorbike -> motorcycle 3, sign: no COCO class
    (tmp_path / 'classes.txt').unlink()
    assert load_folder_set(tmp_path, coco, keep={0, 2, 3})[0].truth.classes.tolist() == [0, 2]  # COCO ids as given


def test_read_yolo_labels(tmp_path: Path) -> None:
    label = tmp_path / 'a.txt'
    label.write_text('0 0.5 0.5 0.5 0.25 70 175 1\n3 0.25 0.75 0.1 0.1\n')
    truth = read_yolo_labels(label, width=200, height=400)
    np.testing.assert_allclose(truth.xyxy, [[50, 150, 150, 250], [40, 280, 60, 320]])
    assert truth.classes.tolist() == [0, 3]
    assert len(read_yolo_labels(tmp_path / 'missing.txt', 10, 10).classes) == 0


def test_segmentation_polygons_are_boxed_and_pose_rows_read_as_boxes(tmp_path: Path) -> None:
    """A polygon row (class x1 y1 x2 y2 x3 y3 ...) is its extent; a pose set's keypoints are not a polygon."""
    label = tmp_path / 'a.txt'
    label.write_text('2 0.1 0.2 0.5 0.1 0.3 0.9 0.2 0.4\n'  # 4 points; as a box it would be cx 0.1, w 0.1
                     '0 0.5 0.2 1.004 0.5 0.6 0.9\n')  # a vertex just past the border, as converters leave it
    np.testing.assert_allclose(read_yolo_labels(label, width=200, height=100).xyxy,
                               [[20, 10, 100, 90], [100, 20, 200.8, 90]])
    pose = tmp_path / 'p.txt'  # box, then 2 keypoints (x, y): the same number of columns as a 3-point polygon
    pose.write_text('0 0.5 0.5 0.2 0.4 0.45 0.4 0.55 0.6\n')
    np.testing.assert_allclose(read_yolo_labels(pose, 200, 100, keypoints=True).xyxy, [[80, 30, 120, 70]])


def test_people_detector_maps_to_coco_person() -> None:
    coco = {0: 'person', 1: 'bicycle', 2: 'car'}
    assert model_to_coco({0: 'Normal', 1: 'Fall'}, coco) == {0: 0, 1: 0}
    assert model_to_coco({0: 'car', 1: 'tree'}, coco) == {0: 2}


def test_gain_summary_averages_tasks_in_points() -> None:
    def kinds(degraded: float, fp32: float, int8: float) -> dict[str, dict[str, float]]:
        return {k: {'map50_95': v, 'map50': v} for k, v in
                (('clean', 0.5), ('degraded', degraded), ('fp32', fp32), ('int8', int8))}

    g = gain_summary({'denoise': kinds(0.1, 0.30, 0.29), 'derain': kinds(0.2, 0.25, 0.27)})
    assert g['int8_minus_degraded'] == pytest.approx((19 + 7) / 2)
    assert g['clean_minus_degraded'] == pytest.approx((40 + 30) / 2)
    assert g['int8_minus_fp32'] == pytest.approx((-1 + 2) / 2)
    assert g['max_int8_fp32_gap'] == pytest.approx(2.0)


def test_gains_below_names_the_tasks_that_cost_the_detector_more_than_the_floor() -> None:
    def kinds(degraded: float, int8: float) -> dict[str, dict[str, float]]:
        return {k: {'map50_95': v, 'map50': v} for k, v in
                (('clean', 0.5), ('degraded', degraded), ('fp32', int8), ('int8', int8))}

    results = {'clean': kinds(0.40, 0.392), 'denoise': kinds(0.2, 0.3), 'night': kinds(0.3, 0.296)}
    assert gains_below(results, -0.5) == {'clean': pytest.approx(-0.8)}
    assert gains_below(results, 0.0) == {'clean': pytest.approx(-0.8), 'night': pytest.approx(-0.4)}
    assert gains_below({'clean': kinds(float('nan'), float('nan'))}, -0.5) == {}


FASTESTDET = data_root() / 'detection' / 'FastestDet' / 'FastestDet.onnx'


@pytest.mark.timeout(900)  # CPU-heavy: room for a CI machine several times slower than the dev VM
@pytest.mark.skipif(not FASTESTDET.is_file(), reason='FastestDet and COCO images not in the shared data')
def test_fail_under_gates_the_shipped_auto_model_on_clean_frames(tmp_path: Path, repo_root: Path) -> None:
    """qdr-bench detection end to end on three labelled COCO images: auto passes clean frames, so its gain
    is 0 points; a -0.5 floor passes (exit 0) and a +0.5 floor (a gain identity cannot make) fails (exit 4)."""
    import subprocess
    import sys

    command = [sys.executable, '-m', 'qdr_ros.tools.bench', 'detection', '--tasks', 'clean', '--restorer', 'auto',
               '--models', str(repo_root / 'models'), '--detector', str(FASTESTDET), '--pseudo-sets', '--real-sets',
               '--limit', '3', '--threads', '1', '--no-progress', '--out', str(tmp_path)]
    passed = subprocess.run(command + ['--fail-under', '-0.5'], capture_output=True, text=True, timeout=300)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "at least -0.5 points" in passed.stdout
    failed = subprocess.run(command + ['--fail-under', '0.5'], capture_output=True, text=True, timeout=300)
    assert failed.returncode == 4, failed.stdout + failed.stderr
    assert 'FAILED clean: INT8-restored mAP50-95 +0.00 points' in failed.stdout
    assert (tmp_path / 'map_coco.json').is_file()


def test_installed_models_are_shown_without_the_machine_prefix() -> None:
    assert shown_path(Path('/x/.venv/lib/python3.11/site-packages/pkg/models/best.pt')) == 'pkg/models/best.pt'
    assert shown_path(Path('models/yolo.pt')) == 'models/yolo.pt'


def test_voc_folder_sets_and_the_paired_bootstrap(tmp_path: Path) -> None:
    """A folder with VOC labels is a benchmark set; the bootstrap interval brackets a real gain, and 0 for none."""
    import cv2

    from qdr_train.evaluation.real_detection import load_folder_set, paired_bootstrap

    (tmp_path / 'images').mkdir()
    (tmp_path / 'voc').mkdir()
    for i in range(6):
        cv2.imwrite(str(tmp_path / 'images' / f'f{i}.jpg'), np.full((60, 80, 3), 40 * i, np.uint8))
        (tmp_path / 'voc' / f'f{i}.xml').write_text(
            '<annotation><object><name>car</name><bndbox><xmin>10</xmin><ymin>5</ymin><xmax>40</xmax><ymax>30</ymax>'
            '</bndbox></object><object><name>tree</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>'
            '<ymax>2</ymax></bndbox></object></annotation>')
    coco = {0: 'person', 2: 'car'}
    samples = load_folder_set(tmp_path, coco, keep={0, 2})
    assert len(samples) == 6 and all(s.truth.classes.tolist() == [2] for s in samples)  # 'tree' is no COCO class
    truths = [s.truth for s in samples]
    perfect = [Boxes(t.xyxy, t.classes, np.ones(len(t.classes))) for t in truths]
    half = [p if i % 2 else Boxes.empty() for i, p in enumerate(perfect)]
    intervals = paired_bootstrap(half, {'same': half, 'better': perfect}, truths, samples=50)
    assert intervals['same']['map50'] == (0.0, 0.0)
    low, high = intervals['better']['map50']
    assert 0 < low <= high <= 1
    with pytest.raises(FileNotFoundError, match='no VOC'):
        (tmp_path / 'voc' / 'f0.xml').unlink()
        load_folder_set(tmp_path, coco, keep={2})
