"""Camera calibration in the camera_info_manager YAML format, read and checked without rclpy.

camera_source publishes ``camera_info`` from such a file (what ``camera_calibration`` writes:
image_width, image_height, camera_name, camera_matrix, distortion_model, distortion_coefficients,
rectification_matrix, projection_matrix), or from ``pinhole_guess`` when none is given. A file
that does not fit the format raises ``CalibrationError`` naming the key and what is wrong, so the
driver stops at start-up instead of publishing a calibration nobody can trust.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import math
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

# Coefficient counts of the models sensor_msgs/distortion_models.hpp names; others are passed on as given.
DISTORTION_COEFFICIENTS = {'plumb_bob': 5, 'rational_polynomial': 8, 'equidistant': 4}
MATRICES = {'camera_matrix': (3, 3), 'rectification_matrix': (3, 3), 'projection_matrix': (3, 4)}
GUESS_HFOV_DEG = 60.0  # horizontal field of view of the uncalibrated default (a typical webcam)


class CalibrationError(ValueError):
    """A calibration file that cannot be used; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class Calibration:
    """The fields of ``sensor_msgs/CameraInfo`` a calibration fixes (row-major K 3x3, R 3x3, P 3x4)."""

    width: int
    height: int
    camera_name: str
    distortion_model: str
    d: tuple[float, ...]
    k: tuple[float, ...]
    r: tuple[float, ...]
    p: tuple[float, ...]

    def scaled(self, width: int, height: int) -> Calibration:
        """Return the calibration of the same camera for frames resized to ``width`` x ``height``.

        Resizing scales the focal lengths and principal point (rows 0 and 1 of K and P); distortion and
        rectification do not change. camera_source resizes with ``width``/``height``, so its frames need this.
        """
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        k = tuple(v * (sx if i < 3 else sy if i < 6 else 1.0) for i, v in enumerate(self.k))
        p = tuple(v * (sx if i < 4 else sy if i < 8 else 1.0) for i, v in enumerate(self.p))
        return replace(self, width=width, height=height, k=k, p=p)


def pinhole_guess(width: int, height: int) -> Calibration:
    """Uncalibrated default: an ideal pinhole with a 60 degree horizontal field of view, centred, no distortion."""
    f = width / (2.0 * math.tan(math.radians(GUESS_HFOV_DEG) / 2.0))
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return Calibration(width, height, 'uncalibrated', 'plumb_bob', (0.0,) * 5,
                       (f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
                       (f, 0.0, cx, 0.0, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0))


def calibration_path(url: str) -> Path:
    """Return the file of a ``camera_info_url``: a path or a ``file://`` URL, as camera_info_manager takes them."""
    if '://' not in url:
        return Path(os.path.expanduser(url))
    parsed = urlparse(url)
    if parsed.scheme != 'file':
        raise CalibrationError(f'camera_info_url {url!r}: only file paths and file:// URLs are supported '
                               f'(got {parsed.scheme}://); give the file path')
    return Path(unquote(parsed.netloc + parsed.path))


def _matrix(path: Path, data: dict, key: str, rows: int, cols: int | None = None) -> tuple[float, ...]:
    """Check one ``{rows, cols, data}`` block; ``cols`` None = any count (distortion)."""
    block = data.get(key)
    if not isinstance(block, dict) or not {'rows', 'cols', 'data'} <= block.keys():
        raise CalibrationError(f'{path}: {key} must be a mapping with rows, cols and data, got {block!r}')
    values = block['data']
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
        raise CalibrationError(f'{path}: {key}.data must be a list of numbers, got {values!r}')
    shape = (block['rows'], block['cols'])
    if block['rows'] != rows or (cols is not None and block['cols'] != cols):
        raise CalibrationError(f'{path}: {key} must be {rows}x{cols if cols is not None else "N"}, '
                               f'got rows {shape[0]} cols {shape[1]}')
    if len(values) != shape[0] * shape[1]:
        raise CalibrationError(f'{path}: {key} says {shape[0]}x{shape[1]} but data has {len(values)} values')
    return tuple(float(v) for v in values)


def load_calibration(url: str) -> Calibration:
    """Read and check a camera_info_manager YAML file; CalibrationError says what is wrong."""
    path = calibration_path(url)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CalibrationError(f'cannot read calibration file {path}: {exc.strerror or exc}') from exc
    except yaml.YAMLError as exc:
        raise CalibrationError(f'{path} is not valid YAML: {exc}') from exc
    if not isinstance(data, dict):
        raise CalibrationError(f'{path}: expected a camera_info_manager calibration (a mapping with image_width, '
                               f'camera_matrix, ...), got {type(data).__name__}')
    for key in ('image_width', 'image_height'):
        if not isinstance(data.get(key), int) or isinstance(data.get(key), bool) or data[key] <= 0:
            raise CalibrationError(f'{path}: {key} must be a positive integer, got {data.get(key)!r}')
    model = data.get('distortion_model')
    if not isinstance(model, str) or not model:
        raise CalibrationError(f'{path}: distortion_model must name a model (plumb_bob, rational_polynomial, '
                               f'equidistant), got {model!r}')
    d = _matrix(path, data, 'distortion_coefficients', 1)
    expected = DISTORTION_COEFFICIENTS.get(model)
    if expected is not None and len(d) != expected:
        raise CalibrationError(f'{path}: distortion_model {model} takes {expected} coefficients, got {len(d)}')
    k, r, p = (_matrix(path, data, key, *shape) for key, shape in MATRICES.items())
    return Calibration(data['image_width'], data['image_height'], str(data.get('camera_name', '')), model, d, k, r, p)
