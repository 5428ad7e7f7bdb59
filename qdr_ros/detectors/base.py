"""What every detector returns and shares: ``Detection`` records, the base class, drawing, person classes.

Callers never touch a detector library's result objects: every detector returns plain ``Detection``
records in pixel coordinates of the frame it was given. Plain numpy/OpenCV, no ROS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from qdr_ros.core.image_conversions import encoding_spec

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


def nms(xyxy: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Return the indices greedy non-maximum suppression keeps within each class, in ascending order."""
    kept = [members[_nms_one_class(xyxy[members], scores[members], iou)]
            for members in (np.nonzero(classes == c)[0] for c in np.unique(classes))]
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, int)


def _nms_one_class(xyxy: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Return the indices greedy non-maximum suppression keeps, highest score first (one class's boxes)."""
    order = np.argsort(-scores, kind='stable')
    area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        x1 = np.maximum(xyxy[best, 0], xyxy[rest, 0])
        y1 = np.maximum(xyxy[best, 1], xyxy[rest, 1])
        x2 = np.minimum(xyxy[best, 2], xyxy[rest, 2])
        y2 = np.minimum(xyxy[best, 3], xyxy[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        order = rest[inter / (area[best] + area[rest] - inter + 1e-9) < iou]
    return keep


def person_class_ids(names: dict[int, str]) -> list[int]:
    """Model class ids that are people (for scoring a people detector against COCO ``person`` boxes)."""
    return [k for k, v in names.items() if v.strip().lower() in PERSON_NAMES]
