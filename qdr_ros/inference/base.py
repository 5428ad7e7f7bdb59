"""The one interface every inference backend implements, so the node never cares which engine runs."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from qdr_ros.core.image_conversions import from_model_output, pad_to, padded_size, to_model_input
from qdr_ros.core.model_info import CONDITION_NAME, GATE_NAME, OUTPUT_NAME, ModelInfo


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (library missing, no GPU); the message says what to install."""


@dataclass(frozen=True)
class Restoration:
    """One restored camera frame and what an "auto" model says about it (None for a plain restoration model).

    ``condition`` holds one probability per ``ModelInfo.condition_labels`` entry; ``gate`` is the
    per-pixel gate in [0, 1], cropped to the frame like the image.
    """

    image: np.ndarray
    condition: np.ndarray | None = None
    gate: np.ndarray | None = None


class Backend(ABC):
    """Runs a restoration model: (N, 3, H, W) float32 RGB in [0, 1] in, the same shape out.

    ``restore_frame`` / ``restore_uint8`` take an 8-bit RGB/BGR camera frame instead (the node's
    path for rgb8/bgr8). ``infer_outputs`` and ``restore_frame`` also return a model's optional
    ``condition`` and ``gate`` outputs.

    ``min_hw`` / ``max_hw`` bound the (stride-padded) input sizes the engine accepts: smaller inputs
    are padded up by reflection and the outputs cropped back; larger ones are refused (restore_node
    shrinks them first with ``downscale_to_fit``; ``fit_scale`` gives the scale).

    ``reason`` records why this backend, device and file were chosen; it is never empty, so a
    fallback (for example TensorRT missing -> ONNX Runtime on CPU) is always visible in logs.
    ``fallback`` is set only when ``backend:=auto`` found TensorRT but it failed (build, load or
    first inference): then it says why, and diagnostics show it.
    """

    name: str
    device: str
    precision: str
    model_path: str
    providers: list[str]
    info: ModelInfo
    reason: str = ""
    fallback: str = ""
    min_hw: tuple[int, int] = (1, 1)
    max_hw: tuple[int, int] | None = None

    @property
    def stride(self) -> int:
        return self.info.stride

    @abstractmethod
    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run a checked batch whose size the engine accepts; every model output by name."""

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Return the size a ``height`` x ``width`` frame is padded to: the stride, then at least ``min_hw``."""
        hp, wp = padded_size(height, width, self.stride)
        return max(hp, self.min_hw[0]), max(wp, self.min_hw[1])

    def fit_scale(self, height: int, width: int) -> float:
        """Scale (<= 1) that brings a frame within ``max_hw``; 1.0 when it already fits.

        ``max_hw`` is a multiple of the stride, so the frame shrunk to ``int(height * scale)`` x
        ``int(width * scale)`` still fits once padded to the stride.
        """
        if self.max_hw is None:
            return 1.0
        return min(1.0, self.max_hw[0] / height, self.max_hw[1] / width)

    def infer_outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch (H and W multiples of ``stride``, within ``max_hw``); all outputs, cropped to H x W."""
        self.check_input(x)
        height, width = x.shape[2:]
        hp, wp = self.input_size(height, width)
        if (hp, wp) == (height, width):
            return self._run(x)
        outputs = self._run(np.ascontiguousarray(pad_to(x, hp, wp, axes=(2, 3))))
        return {name: y[:, :, :height, :width] if y.ndim == 4 else y for name, y in outputs.items()}

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Restore a batch (see ``infer_outputs``); only the restored images."""
        return self.infer_outputs(x)[OUTPUT_NAME]

    def restore_frame(self, image: np.ndarray, bgr: bool = False, out: np.ndarray | None = None) -> Restoration:
        """Restore an HxWx3 uint8 RGB (or BGR) frame within ``max_hw``; the image is ``out`` when given.

        ``out`` (HxWx3 uint8, C-contiguous) lets the caller choose where the pixels land, e.g. the
        data array of the outgoing message. The frame is padded (``input_size``) by reflection and
        the results cropped back, as ``image_conversions.to_model_input`` / ``from_model_output`` do.
        """
        height, width = image.shape[:2]
        if out is not None:
            check_output(out, height, width)
        padded = pad_to(image, *self.input_size(height, width))
        restored, extras = self._infer_uint8(padded[None], bgr)
        restored = restored[0, :height, :width]
        if out is not None:
            out[...] = restored
            restored = out
        return restoration(restored, extras, height, width)

    def restore_uint8(self, image: np.ndarray, bgr: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        """Restore an HxWx3 uint8 RGB (or BGR) frame (see ``restore_frame``); only the image."""
        return self.restore_frame(image, bgr, out).image

    def _infer_uint8(self, batch: np.ndarray, bgr: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(1, Hp, Wp, 3) uint8 -> (1, Hp, Wp, 3) uint8 and the other outputs, via ``infer_outputs`` and numpy.

        Backends that can run the conversions inside their engine override this.
        """
        encoding = "bgr8" if bgr else "rgb8"
        x, (h, w) = to_model_input(batch[0], encoding, stride=self.stride)
        outputs = self.infer_outputs(x)
        restored = outputs.pop(OUTPUT_NAME)
        return from_model_output(restored, h, w, encoding)[None], outputs

    def warmup(self, height: int, width: int, runs: int = 2) -> float:
        """Run ``runs`` dummy frames of the padded size through both paths so the first real frame is not slow.

        Returns the last float run's seconds.
        """
        scale = self.fit_scale(height, width)
        hp, wp = self.input_size(max(1, int(height * scale)), max(1, int(width * scale)))
        x = np.full((1, 3, hp, wp), 0.5, np.float32)
        frame = np.full((hp, wp, 3), 128, np.uint8)
        elapsed = 0.0
        for _ in range(max(1, runs)):
            self.restore_uint8(frame)
            start = time.perf_counter()
            self.infer(x)
            elapsed = time.perf_counter() - start
        return elapsed

    def close(self) -> None:
        """Release native resources (GPU memory, streams) now rather than at garbage collection.

        Call it only once nothing runs on the backend any more; it is unusable afterwards. The base
        releases nothing: ONNX Runtime frees its session when the backend itself is dropped.
        """

    def describe(self) -> dict[str, Any]:
        """Flat facts for logs and diagnostics."""
        return {
            "backend": self.name,
            "device": self.device,
            "precision": self.precision,
            "model_path": self.model_path,
            "model_sha256": self.info.sha256,
            "providers": list(self.providers),
            "stride": self.stride,
            "outputs": list(self.info.output_names) or [OUTPUT_NAME],
            "condition_labels": list(self.info.condition_labels),
            "reason": self.reason,
            "fallback": self.fallback,
        }

    def check_input(self, x: np.ndarray) -> None:
        """Reject what the model would reject, with a message that names the fix."""
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4 or x.shape[1] != 3:
            shape = getattr(x, "shape", None)
            dtype = getattr(x, "dtype", type(x).__name__)
            raise ValueError(f"{self.name} expects an (N, 3, H, W) float32 array, got {shape} {dtype}")
        if x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise ValueError(f"input {x.shape[2]}x{x.shape[3]} is not a multiple of the model stride {self.stride}; "
                             "pad it with image_conversions.to_model_input")
        if self.max_hw is not None and (x.shape[2] > self.max_hw[0] or x.shape[3] > self.max_hw[1]):
            raise ValueError(f"input {x.shape[2]}x{x.shape[3]} is larger than {self.max_hw[0]}x{self.max_hw[1]}, the "
                             f"largest size this {self.name} engine accepts; shrink the frame by fit_scale() first "
                             "(restore_node does) or rebuild the engine for larger frames (raise max_pixels)")


def restoration(image: np.ndarray, extras: dict[str, np.ndarray], height: int, width: int) -> Restoration:
    """Package a restored frame with the first image's ``condition`` and ``gate`` (cropped to H x W), when present.

    The gate stays a view of the engine's output where no crop is needed (the per-frame path copies nothing).
    """
    condition, gate = extras.get(CONDITION_NAME), extras.get(GATE_NAME)
    return Restoration(image=image,
                       condition=None if condition is None else np.asarray(condition[0], np.float32),
                       gate=None if gate is None else np.asarray(gate[0, 0, :height, :width], np.float32))


def check_output(out: np.ndarray, height: int, width: int) -> None:
    """Refuse an ``out`` array the restored frame cannot be written into as it is."""
    if out.shape != (height, width, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous \
            or not out.flags.writeable:
        raise ValueError(f"out must be a writeable C-contiguous ({height}, {width}, 3) uint8 array, "
                         f"got {out.shape} {out.dtype}")
