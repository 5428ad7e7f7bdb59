"""Scoring a detector against boxes: COCO-style mAP, YOLO labels, the detector-to-COCO class mapping.

mAP50-95 and mAP50 are 101-point interpolated AP over IoU .50:.05:.95 with at most 100 detections
per image and no crowd/area handling, computed here (and tested on hand-made boxes) so the
benchmark needs no COCO toolkit. ``Scorer`` turns a detector into predictions in COCO class ids.

An image may be labelled for some classes only (coco8-human and coco8-pose box people and nothing
else): its ground truth says which (``Boxes.labelled``), and detections of the other classes there
are ignored, as LVIS and Open Images score partly labelled images. Counted as false positives, the
giraffes and umbrellas a COCO-80 detector finds on those photos would lower the AP of classes that
other images do label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

IOU_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 2)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETS = 100
# The Darknet spelling of six COCO classes (FastestDet's coco.names) -> the COCO / ultralytics one.
DARKNET_NAMES = {'motorbike': 'motorcycle', 'aeroplane': 'airplane', 'sofa': 'couch', 'pottedplant': 'potted plant',
                 'diningtable': 'dining table', 'tvmonitor': 'tv'}
EVAL_CONF = 0.001  # low threshold so the precision-recall curve is complete (as COCO evaluation does)
EVAL_IOU = 0.7  # NMS IoU of every detector scored (ultralytics' validation value; FastestDet's own default is 0.45)


@dataclass
class Boxes:
    """Boxes of one image in pixels (xyxy), their class ids and (for predictions) scores.

    ``labelled`` (ground truth only): the classes the image was annotated for; None means all.
    ``difficult`` (ground truth only): boxes to ignore, as VOC's ``difficult`` and COCO's crowd regions
    are: not counted as objects, and a detection on one is neither a hit nor a false positive.
    """

    xyxy: np.ndarray
    classes: np.ndarray
    scores: np.ndarray | None = None
    labelled: frozenset[int] | None = None
    difficult: np.ndarray | None = None

    def counted(self) -> np.ndarray:
        """Mask of the boxes that count as objects (all but the difficult ones)."""
        return np.ones(len(self.classes), bool) if self.difficult is None else ~self.difficult

    @classmethod
    def empty(cls) -> Boxes:
        return cls(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0))


@dataclass
class Sample:
    """One image: its name, pixels (RGB uint8) and ground truth."""

    name: str
    rgb: np.ndarray
    truth: Boxes


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M)."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(tp: np.ndarray, n_truth: int) -> float:
    """COCO 101-point interpolated AP of score-sorted true/false positive flags against ``n_truth`` objects."""
    if n_truth == 0:
        return float('nan')
    tp = np.asarray(tp, bool)
    if tp.size == 0:
        return 0.0
    hits = np.cumsum(tp)
    recall = hits / n_truth
    precision = hits / np.arange(1, tp.size + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the envelope: best precision at recall >= r
    index = np.searchsorted(recall, RECALL_POINTS, side='left')
    return float(np.mean([precision[i] if i < precision.size else 0.0 for i in index]))


def _match(pred: Boxes, truth: Boxes, cls: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy COCO matching for one image and class: (scores, true-positive flags) of its counted predictions.

    An image not labelled for ``cls`` contributes nothing: its detections of that class are ignored. A
    detection is matched to a counted box first; one that only a difficult box takes is left out.
    """
    keep = (pred.classes == cls) & (truth.labelled is None or cls in truth.labelled)
    scores, boxes = pred.scores[keep], pred.xyxy[keep]
    order = np.argsort(-scores, kind='stable')[:MAX_DETS]
    scores, boxes = scores[order], boxes[order]
    mine = truth.classes == cls
    gt, counted = truth.xyxy[mine], truth.counted()[mine]
    tp, kept = np.zeros(len(scores), bool), np.ones(len(scores), bool)
    if len(gt) and len(boxes):
        iou = box_iou(boxes, gt)
        taken = np.zeros(len(gt), bool)
        for i in range(len(boxes)):
            for pool in (counted, ~counted):  # a counted object first, then a difficult one
                candidates = np.where(pool & ~taken & (iou[i] >= threshold - 1e-10), iou[i], -1.0)
                j = int(np.argmax(candidates))
                if candidates[j] >= 0:
                    taken[j], tp[i], kept[i] = True, bool(counted[j]), bool(counted[j])
                    break
    return scores[kept], tp[kept]


def evaluate_map(predictions: Sequence[Boxes], truths: Sequence[Boxes]) -> dict[str, float]:
    """mAP50-95 and mAP50 over the classes that have ground truth (per-image lists in the same order)."""
    if len(predictions) != len(truths):
        raise ValueError(f'{len(predictions)} prediction sets for {len(truths)} images')
    classes = sorted({int(c) for t in truths for c in t.classes[t.counted()]})
    if not classes:
        return {'map50_95': float('nan'), 'map50': float('nan')}
    ap = np.zeros((len(classes), len(IOU_THRESHOLDS)))
    for ci, cls in enumerate(classes):
        n_truth = sum(int(np.sum((t.classes == cls) & t.counted())) for t in truths)
        for ti, threshold in enumerate(IOU_THRESHOLDS):
            matched = [_match(p, t, cls, threshold) for p, t in zip(predictions, truths)]
            scores = np.concatenate([m[0] for m in matched]) if matched else np.zeros(0)
            tp = np.concatenate([m[1] for m in matched]) if matched else np.zeros(0, bool)
            ap[ci, ti] = average_precision(tp[np.argsort(-scores, kind='stable')], n_truth)
    return {'map50_95': float(ap.mean()), 'map50': float(ap[:, 0].mean())}


POLYGON_SLACK = 0.01  # ultralytics accepts normalised coordinates in [-0.01, 1.01]


def read_yolo_labels(path: Path, width: int, height: int, keypoints: bool = False) -> Boxes:
    """YOLO label file -> pixel xyxy boxes.

    A row is ``class cx cy w h`` (normalised), perhaps with more columns: keypoints in a pose set
    (``keypoints``, its yaml has ``kpt_shape``) or attributes (coco8-human), ignored. In a
    segmentation set a row is ``class x1 y1 ... xk yk``, a polygon of k >= 3 points, boxed by its
    extent as ultralytics does: a row of an odd length over 5 whose values all lie in [0, 1] (give or
    take ``POLYGON_SLACK``: converters write vertices just past the border unclipped).
    """
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    if not rows:
        return Boxes.empty()
    boxes, classes = [], []
    for row in rows:
        values = np.array(row[1:], float)
        if not keypoints and len(values) > 4 and len(values) % 2 == 0 and values.min() >= -POLYGON_SLACK \
                and values.max() <= 1 + POLYGON_SLACK:
            xy = values.reshape(-1, 2) * (width, height)
            boxes.append(np.concatenate([xy.min(axis=0), xy.max(axis=0)]))
        else:
            cx, cy, w, h = values[0] * width, values[1] * height, values[2] * width, values[3] * height
            boxes.append(np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]))
        classes.append(int(float(row[0])))
    return Boxes(np.stack(boxes), np.array(classes, int))


def _dataset_yaml(folder: Path) -> dict[str, Any] | None:
    """Return the one dataset yaml of a YOLO-layout set, or None when it has none."""
    import yaml

    found = sorted(folder.glob('*.yaml'))
    if len(found) > 1:
        raise ValueError(f'{folder} holds {len(found)} yaml files; keep the one dataset yaml with the class names')
    return (yaml.safe_load(found[0].read_text()) or {}) if found else None


def has_keypoints(folder: Path) -> bool:
    """Tell whether a YOLO-layout set is a pose set (its yaml has ``kpt_shape``): rows carry keypoints."""
    return 'kpt_shape' in (_dataset_yaml(folder) or {})


def dataset_names(folder: Path) -> dict[int, str] | None:
    """Return class id -> name of a YOLO-layout set, or None when it lists none.

    From its dataset yaml's ``names`` (a mapping or a list), else ``classes.txt`` (one name per line).
    """
    spec = _dataset_yaml(folder)
    if spec is not None:
        listed = spec.get('names')
        if isinstance(listed, list):
            return {i: str(v) for i, v in enumerate(listed)}
        if isinstance(listed, dict) and listed:
            return {int(k): str(v) for k, v in listed.items()}
        raise ValueError(f'{next(folder.glob("*.yaml"))} has no names (a list, or a mapping of class id: name)')
    if (folder / 'classes.txt').is_file():
        return dict(enumerate(line.strip() for line in (folder / 'classes.txt').read_text().splitlines()))
    return None


def set_classes(root: Path) -> frozenset[int]:
    """Return the class ids an ultralytics-layout set labels: its dataset yaml's ``names``."""
    names = dataset_names(root)
    if names is None:
        raise ValueError(f'{root} needs a dataset yaml with the names of the classes it labels')
    return frozenset(names)


def load_labelled(roots: Sequence[Path], keep_classes: set[int], limit: int = 0) -> list[Sample]:
    """Images and labels of ultralytics-layout sets (images/**, labels/**), first of each file name, wanted classes.

    Class ids are COCO ids (the coco8 sets'); each image is labelled for its set's classes only.
    """
    from qdr_train.data.datasets import read_rgb

    samples: dict[str, Sample] = {}
    for root in roots:
        labelled, pose = set_classes(root) & frozenset(keep_classes), has_keypoints(root)
        for image in sorted((root / 'images').rglob('*.jpg')):
            if image.name in samples:
                continue
            rgb = read_rgb(image)
            label = root / 'labels' / image.relative_to(root / 'images').with_suffix('.txt')
            truth = read_yolo_labels(label, rgb.shape[1], rgb.shape[0], pose)
            keep = np.isin(truth.classes, sorted(keep_classes))
            samples[image.name] = Sample(image.name, rgb, Boxes(truth.xyxy[keep], truth.classes[keep],
                                                                labelled=labelled))
    found = list(samples.values())
    return found[:limit] if limit else found


def coco_names(data_root: Path) -> dict[int, str]:
    """COCO-80 class names from the coco8 dataset yaml."""
    import yaml

    return {int(k): str(v) for k, v in yaml.safe_load((data_root / 'detection/coco8/coco8.yaml').read_text())
            ['names'].items()}


def model_to_coco(model_names: dict[int, str], coco: dict[int, str]) -> dict[int, int]:
    """Map detector class ids to COCO ids: person-like names to ``person``, others by equal name."""
    from qdr_ros.detectors import person_class_ids

    by_name = {v.lower(): k for k, v in coco.items()}
    mapping = {k: by_name['person'] for k in person_class_ids(model_names)}
    for k, v in model_names.items():
        name = DARKNET_NAMES.get(v.lower(), v.lower())
        if k not in mapping and name in by_name:
            mapping[k] = by_name[name]
    return mapping


class Scorer:
    """Detector + class mapping: an RGB image -> predictions in COCO class ids.

    Where several detector classes map to one COCO class (the people detector's Normal and Fall are
    both ``person``), the detector's per-class NMS leaves one box of each on the same person; NMS
    again per COCO class keeps one, as a detector trained on that class alone would.
    """

    def __init__(self, model: str, device: str, coco: dict[int, str]) -> None:
        from qdr_ros.detectors import create_detector

        self.detector = create_detector(model or None, conf=EVAL_CONF, iou=EVAL_IOU, imgsz=640, device=device,
                                        max_det=MAX_DETS)
        self.mapping = model_to_coco(self.detector.names, coco)
        if not self.mapping:
            raise ValueError(f'no detector class maps to a COCO class ({self.detector.describe_classes()})')
        self.classes = {coco[c] for c in self.mapping.values()}
        self.merged = len(set(self.mapping.values())) < len(self.mapping)

    def __call__(self, rgb: np.ndarray) -> Boxes:
        from qdr_ros.detectors import nms

        dets = [d for d in self.detector.detect(rgb, 'rgb8') if d.class_id in self.mapping]
        if not dets:
            return Boxes.empty()
        boxes = Boxes(np.array([d.xyxy for d in dets], float), np.array([self.mapping[d.class_id] for d in dets]),
                      np.array([d.score for d in dets], float))
        if not self.merged:
            return boxes
        keep = nms(boxes.xyxy, boxes.scores, boxes.classes, EVAL_IOU)
        return Boxes(boxes.xyxy[keep], boxes.classes[keep], boxes.scores[keep])
