"""FastestDet, a COCO-80 detector exported to ONNX, run in ONNX Runtime behind ``Detector``'s API.

Why: the only pretrained ultralytics model that installs offline detects people only; FastestDet
(BSD-3, ``../shared/data/detection/FastestDet``) scores all 80 COCO classes and needs neither
ultralytics nor torch, so ``detect_node`` and ``qdr-bench detection`` accept it as their ``model``.

The network sees a 352x352 BGR frame scaled to [0, 1] (plain resize, no letterbox: what it was
trained on; BGR scores clearly above RGB on the COCO samples, docs/benchmarks.md#design-measurements)
and returns one
``(5 + C) x H x W`` grid: objectness (sigmoid applied in the graph), box centre offsets in cells
(tanh), box size as a fraction of the frame (sigmoid), class probabilities (softmax in the graph).
A cell's score is ``obj^0.6 * cls^0.4``; boxes are kept per class by non-maximum suppression.
Class names come from a ``coco.names`` (one per line) beside the model file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from qdr_ros.detectors.base import Detection, DetectorBase, DetectorError, nms, to_bgr8

NAMES_FILE = 'coco.names'


def is_fastestdet(path: Path) -> bool:
    """Whether ``path`` is an ONNX model with FastestDet's one-grid output ``1 x (5 + C) x H x W``.

    Read with ONNX Runtime, which the runtime install has (the ``onnx`` package is a training tool).
    """
    if path.suffix.lower() != '.onnx':
        return False
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    except Exception:  # not a model ONNX Runtime can load: let the ultralytics loader give its error
        return False
    if len(session.get_outputs()) != 1 or len(session.get_inputs()) != 1:
        return False
    dims = session.get_outputs()[0].shape
    return len(dims) == 4 and isinstance(dims[1], int) and dims[1] > 5


def read_names(model: Path, classes: int) -> dict[int, str]:
    """Class names from ``coco.names`` beside the model; their count must match the model's classes."""
    path = model.with_name(NAMES_FILE)
    if not path.is_file():
        raise DetectorError(f'{path} not found: a FastestDet model needs its class names ({classes}, one per line) '
                            'in coco.names beside the .onnx file')
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) != classes:
        raise DetectorError(f'{path} lists {len(names)} names but {model.name} has {classes} classes')
    return dict(enumerate(names))


class FastestDet(DetectorBase):
    """FastestDet in ONNX Runtime (CPU) with fixed thresholds; same ``detect`` contract as ``Detector``."""

    def __init__(self, model: Path, conf: float = 0.25, iou: float = 0.45, classes: Sequence[int] | None = None,
                 device: str = 'auto', max_det: int = 300) -> None:
        if device not in ('auto', 'cpu'):
            raise DetectorError(f'FastestDet runs in ONNX Runtime on the CPU; use device:=cpu or auto, not {device!r}')
        import onnxruntime as ort

        try:
            self._session = ort.InferenceSession(str(model), providers=['CPUExecutionProvider'])
        except Exception as exc:  # ORT raises its own untyped errors for unreadable files
            raise DetectorError(f'cannot load detector model {model}: {exc}') from exc
        spec = self._session.get_inputs()[0]
        self._input = spec.name
        if len(spec.shape) != 4 or not all(isinstance(d, int) for d in spec.shape[2:]):
            raise DetectorError(f'detector model {model} has input shape {spec.shape}; FastestDet needs a fixed '
                                '(1, 3, H, W) input, as its released ONNX file has: export it with a fixed size')
        self.input_height, self.input_width = spec.shape[2], spec.shape[3]
        self.model_path, self.device = model, 'cpu'
        self.names = read_names(model, int(self._session.get_outputs()[0].shape[1]) - 5)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self._set_classes(classes)

    def detect(self, image: np.ndarray, encoding: str = 'rgb8', conf: float | None = None,
               iou: float | None = None, classes: Sequence[int] | None = None,
               imgsz: int | None = None, max_det: int | None = None) -> list[Detection]:
        """Detect objects in one frame; ``imgsz`` is ignored (the network's input size is fixed)."""
        bgr = to_bgr8(image, encoding)
        height, width = bgr.shape[:2]
        blob = cv2.dnn.blobFromImage(bgr, 1 / 255, (self.input_width, self.input_height))  # resize + NCHW float
        grid = self._session.run(None, {self._input: blob})[0][0]
        cells_y, cells_x = grid.shape[1:]
        best = grid[5:].argmax(0)
        score = grid[0] ** 0.6 * grid[5:].max(0) ** 0.4
        keep = score > (self.conf if conf is None else conf)
        wanted = list(classes) if classes is not None else self.classes
        if wanted:
            keep &= np.isin(best, wanted)
        ys, xs = np.nonzero(keep)
        cx = (xs + np.tanh(grid[1, ys, xs])) / cells_x
        cy = (ys + np.tanh(grid[2, ys, xs])) / cells_y
        bw, bh = 1 / (1 + np.exp(-grid[3, ys, xs])), 1 / (1 + np.exp(-grid[4, ys, xs]))
        xyxy = np.stack([(cx - bw / 2) * width, (cy - bh / 2) * height,
                         (cx + bw / 2) * width, (cy + bh / 2) * height], 1).clip(0, [width, height, width, height])
        scores, ids = score[ys, xs], best[ys, xs]
        threshold = self.iou if iou is None else iou
        kept = sorted(nms(xyxy, scores, ids, threshold), key=lambda i: -scores[i])[:max_det or self.max_det]
        return [Detection(int(ids[i]), self.names[int(ids[i])], float(scores[i]), tuple(float(v) for v in xyxy[i]))
                for i in kept]
