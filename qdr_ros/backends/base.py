"""The one interface every inference backend implements, so the node never cares which engine runs."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from qdr_ros.image_conversions import from_model_output, pad_to_stride, padded_size, to_model_input
from qdr_ros.model_info import ModelInfo


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (library missing, no GPU); the message says what to install."""


class Backend(ABC):
    """Runs a restoration model: (N, 3, H, W) float32 RGB in [0, 1] in, the same shape out.

    ``restore_uint8`` takes an 8-bit RGB/BGR camera frame instead (the node's path for rgb8/bgr8).

    ``reason`` records why this backend, device and file were chosen; it is never empty, so a
    fallback (for example TensorRT missing -> ONNX Runtime on CPU) is always visible in logs.
    """

    name: str
    device: str
    precision: str
    model_path: str
    providers: list[str]
    info: ModelInfo
    reason: str = ""

    @property
    def stride(self) -> int:
        return self.info.stride

    @abstractmethod
    def infer(self, x: np.ndarray) -> np.ndarray:
        """Restore a batch; H and W must be multiples of ``stride``."""

    def restore_uint8(self, image: np.ndarray, bgr: bool = False, out: np.ndarray | None = None) -> np.ndarray:
        """Restore an HxWx3 uint8 RGB (or BGR) frame of any size; returns ``out`` when given, else a new frame.

        ``out`` (HxWx3 uint8, C-contiguous) lets the caller choose where the pixels land, e.g. the
        data array of the outgoing message. The frame is padded to the stride by reflection and the
        result cropped back, as ``image_conversions.to_model_input`` / ``from_model_output`` do.
        """
        height, width = image.shape[:2]
        if out is not None:
            check_output(out, height, width)
        padded = pad_to_stride(image, self.stride)
        restored = self._infer_uint8(padded[None], bgr)[0, :height, :width]
        if out is None:
            return restored
        out[...] = restored
        return out

    def _infer_uint8(self, batch: np.ndarray, bgr: bool) -> np.ndarray:
        """(1, Hp, Wp, 3) uint8 -> (1, Hp, Wp, 3) uint8 through ``infer`` and the numpy conversions.

        Backends that can run the conversions inside their engine override this.
        """
        encoding = "bgr8" if bgr else "rgb8"
        x, (h, w) = to_model_input(batch[0], encoding, stride=self.stride)
        return from_model_output(self.infer(x), h, w, encoding)[None]

    def warmup(self, height: int, width: int, runs: int = 2) -> float:
        """Run ``runs`` dummy frames of the padded size through both paths so the first real frame is not slow.

        Returns the last float run's seconds.
        """
        hp, wp = padded_size(height, width, self.stride)
        x = np.full((1, 3, hp, wp), 0.5, np.float32)
        frame = np.full((hp, wp, 3), 128, np.uint8)
        elapsed = 0.0
        for _ in range(max(1, runs)):
            self.restore_uint8(frame)
            start = time.perf_counter()
            self.infer(x)
            elapsed = time.perf_counter() - start
        return elapsed

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
            "reason": self.reason,
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


def check_output(out: np.ndarray, height: int, width: int) -> None:
    """Refuse an ``out`` array the restored frame cannot be written into as it is."""
    if out.shape != (height, width, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous \
            or not out.flags.writeable:
        raise ValueError(f"out must be a writeable C-contiguous ({height}, {width}, 3) uint8 array, "
                         f"got {out.shape} {out.dtype}")
