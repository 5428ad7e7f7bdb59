"""Frame buffers <-> model tensors: the one pre/post-processing path for node, evaluation, export checks and bench.

Supported ``sensor_msgs/Image`` encodings (see ``ENCODINGS``): ``rgb8 bgr8 rgba8 bgra8 mono8`` and
their 16-bit twins ``rgb16 bgr16 rgba16 bgra16 mono16``. 16-bit values map to the model range as
``v / 65535`` (the 8-bit equivalent is ``v / 257``) and come back as 16-bit, so every output has
the encoding of its input. Deliberately not supported (``unsupported_encoding``): float images
(``32FC*``: no defined channel order or value range), signed and generic ``8UC*``/``16UC*`` types
(no channel order), Bayer and YUV (debayer/convert upstream with ``image_proc``).

Size policy: ``image_view`` rejects frames above ``max_pixels`` (default 4096x4096) as
``too_large``; that is a safety limit against corrupt headers. A node that wants to process
big frames anyway raises the limit and shrinks them with ``downscale_to_fit``.

No rclpy import here: everything is numpy and OpenCV, so it is testable with plain pytest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_STRIDE = 8
PAD_MODE = "reflect"
BT601 = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Encoding:
    """Layout of one supported encoding: channel count, sample type and where R, G, B sit."""

    channels: int
    dtype: type[np.unsignedinteger[Any]]
    rgb_index: tuple[int, int, int]
    alpha_index: int | None = None

    @property
    def max_value(self) -> int:
        return int(np.iinfo(self.dtype).max)

    @property
    def mono(self) -> bool:
        return self.channels == 1


ENCODINGS: dict[str, Encoding] = {
    "rgb8": Encoding(3, np.uint8, (0, 1, 2)),
    "bgr8": Encoding(3, np.uint8, (2, 1, 0)),
    "rgba8": Encoding(4, np.uint8, (0, 1, 2), 3),
    "bgra8": Encoding(4, np.uint8, (2, 1, 0), 3),
    "mono8": Encoding(1, np.uint8, (0, 0, 0)),
    "rgb16": Encoding(3, np.uint16, (0, 1, 2)),
    "bgr16": Encoding(3, np.uint16, (2, 1, 0)),
    "rgba16": Encoding(4, np.uint16, (0, 1, 2), 3),
    "bgra16": Encoding(4, np.uint16, (2, 1, 0), 3),
    "mono16": Encoding(1, np.uint16, (0, 0, 0)),
}

_UNSUPPORTED_HINTS = {
    "32F": "float images have no defined channel order or value range; publish rgb8/bgr8/mono8",
    "64F": "float images have no defined channel order or value range; publish rgb8/bgr8/mono8",
    "8U": "generic 8UCn has no channel order; publish rgb8, bgr8 or mono8",
    "16U": "generic 16UCn has no channel order; publish rgb16, bgr16 or mono16",
    "8S": "signed images are not camera frames; publish rgb8, bgr8 or mono8",
    "16S": "signed images are not camera frames; publish rgb8, bgr8 or mono8",
    "32S": "signed images are not camera frames; publish rgb8, bgr8 or mono8",
    "bayer": "debayer first (image_proc debayer node) and feed rgb8/bgr8",
    "yuv": "convert YUV to rgb8/bgr8 first (e.g. the camera driver's pixel_format or image_proc)",
    "uyvy": "convert YUV to rgb8/bgr8 first (e.g. the camera driver's pixel_format or image_proc)",
    "yuyv": "convert YUV to rgb8/bgr8 first (e.g. the camera driver's pixel_format or image_proc)",
    "nv": "convert YUV to rgb8/bgr8 first (e.g. the camera driver's pixel_format or image_proc)",
}


class FrameError(ValueError):
    """A frame that cannot be processed; ``reason_code`` is stable for diagnostics and counters."""

    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.message = message


def encoding_spec(encoding: str) -> Encoding:
    """Look up ``encoding``; unknown and unsupported names raise ``FrameError`` with what to publish instead."""
    spec = ENCODINGS.get(encoding)
    if spec is not None:
        return spec
    supported = ", ".join(ENCODINGS)
    for prefix, hint in _UNSUPPORTED_HINTS.items():
        if encoding.startswith(prefix):
            raise FrameError("unsupported_encoding",
                             f"encoding {encoding!r} is not supported: {hint} (supported: {supported})")
    raise FrameError("unknown_encoding",
                     f"unknown encoding {encoding!r}; the camera driver must set one of: {supported}")


def image_view(data: Any, height: int, width: int, encoding: str, step: int, is_bigendian: bool | int = False,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return the frame as an HxWxC array that shares memory with ``data`` (no copy), after checking the header.

    ``data`` is any bytes-like buffer (``bytes``, ``array.array`` from rclpy, ``memoryview``, a
    uint8 ndarray). Row padding (``step`` > width * bytes per pixel) is honoured through strides.
    ``is_bigendian`` matters only for 16-bit encodings; the view then has a big-endian dtype,
    which numpy converts correctly in any later arithmetic.
    """
    spec = encoding_spec(encoding)
    label = f"frame {width}x{height} {encoding}"
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (height, width, step)):
        raise FrameError("bad_header", f"{label}: height, width and step must be integers, got "
                         f"{type(height).__name__}, {type(width).__name__}, {type(step).__name__}")
    height, width, step = int(height), int(width), int(step)
    if height < 0 or width < 0 or step < 0:
        raise FrameError("bad_header", f"{label} with step {step}: negative sizes; the message header is corrupt")
    if height == 0 or width == 0:
        raise FrameError("empty_frame", f"{label} has no pixels; the camera driver sent an empty image")
    if height * width > max_pixels:
        raise FrameError("too_large", f"{label} has {height * width} pixels, above the limit of {max_pixels} "
                         "(max_pixels); lower the camera resolution or raise max_pixels")
    itemsize = np.dtype(spec.dtype).itemsize
    row_bytes = width * spec.channels * itemsize
    if step < row_bytes:
        raise FrameError("bad_step", f"{label} needs step >= {row_bytes} bytes, got {step}; "
                         "fix the camera driver's step")
    try:
        raw = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise FrameError("bad_data", f"{label}: data is not a byte buffer ({type(data).__name__}: {exc})") from exc
    if raw.size != step * height:
        raise FrameError("bad_data_size", f"{label} with step {step} needs {step * height} data bytes, "
                         f"got {raw.size}; the message is truncated or its header is wrong")
    dtype = np.dtype(spec.dtype)
    if itemsize > 1:
        dtype = dtype.newbyteorder(">" if is_bigendian else "<")
    return np.ndarray((height, width, spec.channels), dtype=dtype, buffer=raw,
                      strides=(step, spec.channels * itemsize, itemsize))


def padded_size(height: int, width: int, stride: int = DEFAULT_STRIDE) -> tuple[int, int]:
    """Smallest (H, W) >= the input that are multiples of ``stride`` (what the model accepts)."""
    return -(-height // stride) * stride, -(-width // stride) * stride


def _check_view(view: np.ndarray, spec: Encoding, encoding: str) -> None:
    if view.ndim == 2 and spec.mono:
        return
    if view.ndim != 3 or view.shape[2] != spec.channels or view.dtype.kind != "u" \
            or view.dtype.itemsize != np.dtype(spec.dtype).itemsize:
        raise FrameError("bad_shape", f"array {view.shape} {view.dtype} does not hold {encoding} pixels "
                         f"(expected HxWx{spec.channels} {np.dtype(spec.dtype).name})")


def _planes(view: np.ndarray) -> list[np.ndarray]:
    """Split an HxW(xC) frame into its channel planes.

    Native-endian interleaved pixels (row padding allowed) go through ``cv2.split``: the division
    that follows then reads contiguous planes, which makes ``to_model_input`` about twice as fast
    (docs/benchmarks.md#design-measurements). Anything else (big-endian or misaligned 16-bit, odd
    strides) is sliced as numpy views.
    """
    if view.ndim == 2:
        return [view]
    channels, itemsize = view.shape[2], view.itemsize
    row = view.strides[0]
    if channels >= 3 and view.dtype.isnative and view.strides[1:] == (channels * itemsize, itemsize) \
            and row >= view.shape[1] * channels * itemsize and row % itemsize == 0 \
            and view.ctypes.data % itemsize == 0:
        return list(cv2.split(view))
    return [view[..., c] for c in range(channels)]


def _pad_index(size: int, padded: int) -> np.ndarray:
    """Source index of each of ``padded`` positions: reflection past the edge (replication for size 1)."""
    return np.pad(np.arange(size), (0, padded - size), mode=PAD_MODE if size > 1 else "edge")


def to_model_input(view: np.ndarray, encoding: str, out: np.ndarray | None = None,
                   stride: int = DEFAULT_STRIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """Convert an HxWxC frame to a (1, 3, Hp, Wp) float32 RGB tensor in [0, 1] and its original (H, W).

    Hp and Wp are H and W rounded up to ``stride``; the margin is filled by reflection (edge
    replication where the frame is too small to reflect) so the net sees no artificial border.
    Values are ``v / 255`` (``v / 65535`` for 16-bit), exactly like torchvision's ``to_tensor``.
    ``out`` (see ``InputBuffer``) avoids a new allocation per frame.
    """
    spec = encoding_spec(encoding)
    _check_view(view, spec, encoding)
    height, width = view.shape[:2]
    hp, wp = padded_size(height, width, stride)
    if out is None:
        out = np.empty((1, 3, hp, wp), np.float32)
    elif out.shape != (1, 3, hp, wp) or out.dtype != np.float32:
        raise ValueError(f"out buffer is {out.shape} {out.dtype}, need (1, 3, {hp}, {wp}) float32")
    planes = _planes(view)
    scale = np.float32(spec.max_value)
    for c, src in enumerate(spec.rgb_index):
        np.divide(planes[src], scale, out=out[0, c, :height, :width], casting="unsafe")
    if wp > width:
        cols = _pad_index(width, wp)
        out[0, :, :height, width:] = out[0][:, :height, cols[width:]]
    if hp > height:
        rows = _pad_index(height, hp)
        out[0, :, height:, :] = out[0][:, rows[height:], :]
    return out, (height, width)


def pad_to(array: np.ndarray, height: int, width: int, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """``array`` itself when its ``axes`` already have ``height`` x ``width``, else a copy padded by reflection.

    The margin is filled as in ``to_model_input`` (reflection, edge replication for size 1); used
    for HxWxC frames (``axes`` (0, 1)) and NCHW tensors (``axes`` (2, 3)) alike.
    """
    if axes[1] != axes[0] + 1:
        raise ValueError(f"pad_to needs two adjacent axes, got {axes}")
    rows, cols = array.shape[axes[0]], array.shape[axes[1]]
    if (rows, cols) == (height, width):
        return array
    index: list[Any] = [slice(None)] * array.ndim
    index[axes[0]] = _pad_index(rows, height).reshape(-1, 1)
    index[axes[1]] = _pad_index(cols, width).reshape(1, -1)
    return array[tuple(index)]


class InputBuffer:
    """Reuses one input array across frames of the same size (no per-frame allocation).

    The returned array is overwritten by the next ``convert``; use it before converting the next frame.
    """

    def __init__(self, stride: int = DEFAULT_STRIDE) -> None:
        self.stride = stride
        self._array: np.ndarray | None = None

    def convert(self, view: np.ndarray, encoding: str) -> tuple[np.ndarray, tuple[int, int]]:
        """``to_model_input`` into the reused array."""
        shape = (1, 3, *padded_size(view.shape[0], view.shape[1], self.stride))
        if self._array is None or self._array.shape != shape:
            self._array = np.empty(shape, np.float32)
        return to_model_input(view, encoding, out=self._array, stride=self.stride)


def alpha_channel(view: np.ndarray, encoding: str) -> np.ndarray | None:
    """Return the HxW alpha plane of an rgba/bgra frame (a view), else None; pass it to ``from_model_output``."""
    spec = encoding_spec(encoding)
    return None if spec.alpha_index is None else view[..., spec.alpha_index]


def from_model_output(y: np.ndarray, height: int, width: int, encoding: str,
                      alpha: np.ndarray | None = None) -> np.ndarray:
    """Turn a (1, 3, Hp, Wp) or (3, Hp, Wp) model output back into an HxWxC frame of ``encoding``.

    Crops the stride padding, clamps to [0, 1], scales and rounds half-to-even (``np.rint``).
    The dtype follows the encoding (uint8, or uint16 for 16-bit). Alpha is copied from ``alpha``
    (e.g. ``alpha_channel(view, enc)``) or set opaque; mono is BT.601 luminance of the RGB output.
    """
    spec = encoding_spec(encoding)
    y = np.asarray(y)
    if y.ndim == 4:
        if y.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {y.shape[0]}")
        y = y[0]
    if y.ndim != 3 or y.shape[0] != 3 or y.shape[1] < height or y.shape[2] < width:
        raise ValueError(f"model output {y.shape} cannot hold a 3x{height}x{width} image")
    rgb = np.clip(y[:, :height, :width], 0.0, 1.0).astype(np.float32, copy=False)
    scale = np.float32(spec.max_value)
    if spec.mono:
        result = np.empty((height, width, 1), spec.dtype)
        luma = BT601[0] * rgb[0] + BT601[1] * rgb[1] + BT601[2] * rgb[2]
        result[..., 0] = np.rint(np.minimum(luma, 1.0) * scale)
        return result
    # Scale and round all channels in place, then interleave once with cv2.merge: 0.37 instead of
    # 0.8 ms at 640x480 rgb8 (per-channel temporaries and strided writes were the cost).
    np.multiply(rgb, scale, out=rgb)
    np.rint(rgb, out=rgb)
    planes = rgb.astype(spec.dtype)
    channels: list[np.ndarray] = [planes[0]] * spec.channels
    for c, dst in enumerate(spec.rgb_index):
        channels[dst] = planes[c]
    if spec.alpha_index is not None:
        channels[spec.alpha_index] = (np.full((height, width), spec.max_value, spec.dtype) if alpha is None
                                      else np.ascontiguousarray(alpha, dtype=spec.dtype))
    return cv2.merge(channels).reshape(height, width, spec.channels)


def tensor_to_rgb_uint8(x: Any) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) float in [0, 1] -> HxWx3 uint8 RGB with the node's rounding.

    Accepts numpy arrays and torch tensors (detached and moved to the CPU here).
    """
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    y = np.asarray(x, dtype=np.float32)
    return from_model_output(y, y.shape[-2], y.shape[-1], "rgb8")


def decode_compressed(data: Any, fmt: str = "", max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, str]:
    """Decode a ``sensor_msgs/CompressedImage`` payload (JPEG, PNG, ...) to HxWx3 BGR uint8 and ``'bgr8'``.

    ``fmt`` is the message's ``format`` field; depth streams (``compressedDepth``) are refused.
    The pixel format is read from the payload itself, so a mislabelled JPEG/PNG still decodes.
    """
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise FrameError("unsupported_format", f"compressed format {fmt!r} is a depth stream; "
                         "subscribe to a colour image topic")
    try:
        raw = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise FrameError("bad_data", f"compressed data is not a byte buffer ({type(data).__name__})") from exc
    if raw.size == 0:
        raise FrameError("empty_compressed", "compressed image has no data; check the camera's compressed stream")
    try:
        image = cv2.imdecode(raw, cv2.IMREAD_COLOR)
    except cv2.error:  # a header claiming more pixels than OpenCV's own limit raises rather than returning None
        image = None
    if image is None:
        raise FrameError("decode_failed", f"compressed image ({raw.size} bytes, format {fmt!r}) could not be "
                         "decoded; the stream is corrupt or not JPEG/PNG")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise FrameError("too_large", f"decoded frame {image.shape[1]}x{image.shape[0]} is above the limit of "
                         f"{max_pixels} pixels (max_pixels); lower the camera resolution or raise max_pixels")
    return image, "bgr8"


def downscale_to_fit(view: np.ndarray, max_pixels: int,
                     max_hw: tuple[int, int] | None = None) -> tuple[np.ndarray, float]:
    """Shrink an HxWxC frame (area interpolation) so H*W <= ``max_pixels`` and H, W <= ``max_hw``.

    Returns the image and the scale; frames that already fit come back unchanged with scale 1.0.
    ``max_hw`` is the largest frame an engine accepts (``Backend.max_hw``, None = any).
    """
    height, width = view.shape[:2]
    scale = math.sqrt(max_pixels / (height * width)) if height * width > max_pixels else 1.0
    if max_hw is not None:
        scale = min(scale, max_hw[0] / height, max_hw[1] / width)
    if scale >= 1.0:
        return view, 1.0
    new_w, new_h = max(1, int(width * scale)), max(1, int(height * scale))
    src = np.ascontiguousarray(view, dtype=view.dtype.newbyteorder("="))
    small = cv2.resize(src, (new_w, new_h), interpolation=cv2.INTER_AREA)
    # the smaller side's ratio: a one-pixel-wide frame keeps its width, yet it was shrunk (scale < 1)
    return small.reshape(new_h, new_w, *view.shape[2:]), min(new_w / width, new_h / height)
