"""Downstream object detectors behind one small API, shared by detect_node, the demo and the benchmark; no ROS.

``create_detector`` picks the implementation from the model file: FastestDet for its ONNX grid
model (COCO-80, needs only ONNX Runtime), else an ultralytics YOLO model (``yolo.Detector``; the
default people detector when no model is given).
"""

from __future__ import annotations

import os
from typing import Sequence

from qdr_ros.detectors.base import (PERSON, Detection, DetectorBase, DetectorError, annotate, nms, person_class_ids,
                                    to_bgr8)
from qdr_ros.detectors.fastestdet import FastestDet, is_fastestdet
from qdr_ros.detectors.yolo import DEVICE_PATTERN, Detector, default_model_path, resolve_model

__all__ = ['DEVICE_PATTERN', 'PERSON', 'Detection', 'Detector', 'DetectorBase', 'DetectorError', 'FastestDet',
           'annotate', 'create_detector', 'default_model_path', 'nms', 'person_class_ids', 'to_bgr8']


def create_detector(model: str | os.PathLike[str] | None = None, conf: float = 0.25, iou: float = 0.7,
                    classes: Sequence[int] | None = None, imgsz: int = 640, device: str = 'auto',
                    max_det: int = 300) -> DetectorBase:
    """Build the detector ``model`` names: ``FastestDet`` for its ONNX grid model, else an ultralytics ``Detector``."""
    path = resolve_model(model)
    if is_fastestdet(path):
        return FastestDet(path, conf=conf, iou=iou, classes=classes, device=device, max_det=max_det)
    return Detector(model, conf=conf, iou=iou, classes=classes, imgsz=imgsz, device=device, max_det=max_det)
