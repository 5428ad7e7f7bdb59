"""Frames the node tests send, and what restore_node must send back (the same backend and conversions, run here)."""

from __future__ import annotations

from pathlib import Path
import time

import numpy as np
from sensor_msgs.msg import Image

from qdr_ros.core.image_conversions import alpha_channel, from_model_output, image_view, to_model_input
from qdr_ros.inference import create_backend

_counter = iter(range(1, 1_000_000))


def make_image(pixels: np.ndarray, encoding: str, pad: int = 0, frame_id: str = 'qdr_cam') -> Image:
    """An Image with a fresh unique stamp; ``pad`` extra bytes per row exercise ``step``."""
    h, w = pixels.shape[:2]
    row = np.ascontiguousarray(pixels).reshape(h, -1).view(np.uint8)
    buf = np.zeros((h, row.shape[1] + pad), np.uint8)
    buf[:, :row.shape[1]] = row
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=buf.shape[1], data=buf.tobytes())
    stamp_ns = time.time_ns() + next(_counter)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.header.frame_id = frame_id
    return msg


def offline(model: Path, msg: Image) -> bytes:
    """What the node should publish: the same backend and image_conversions, run here."""
    backend = create_backend(model, 'onnxruntime', threads=1)
    view = image_view(msg.data, msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian)
    x, (h, w) = to_model_input(view, msg.encoding, stride=backend.stride)
    return from_model_output(backend.infer(x), h, w, msg.encoding, alpha_channel(view, msg.encoding)).tobytes()
