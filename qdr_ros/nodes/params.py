"""The restore node's parameters: names, defaults, limits and validation in one place, without rclpy.

``restore_node`` declares exactly ``PARAMS`` (with descriptors built from them), ``config/restore.yaml``
must hold the same keys and defaults (a test checks it), and the node's on-set callback calls
``validate_update``, so a value is judged by the same rules at start-up, at runtime and in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from qdr_ros.core.image_conversions import DEFAULT_MAX_PIXELS
from qdr_ros.core.ros_env import REPO_ROOT

NODE_NAME = 'restore_node'
PACKAGE = 'qdr_ros'
# The YAML key that matches the node under any namespace (a plain ``restore_node:`` key only matches
# ``/restore_node``, so a namespaced launch would silently ignore the file).
YAML_NODE_KEY = f'/**/{NODE_NAME}'
BACKEND_KEYS = frozenset({'model', 'backend', 'threads', 'device_id', 'engine_cache_dir', 'prefer_cpu_variant',
                          'dla_core', 'force_engine_rebuild'})
RELIABILITIES = ('best_effort', 'reliable')
LARGE_FRAME_POLICIES = ('reject', 'downscale')


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its default (which also fixes its type), limits and what it is for."""

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None
    read_only: bool = False

    @property
    def type(self) -> type:
        return type(self.default)

    def full_description(self) -> str:
        """Return the description plus the allowed values, as shown by ``ros2 param describe``."""
        text = self.description
        if self.choices:
            text += f" (one of: {', '.join(self.choices)})"
        if self.read_only:
            text += ' (read-only: restart the node to change it)'
        return text


# Diagnostics parameters every qdr node declares the same way (restore_node, detect_node; camera_source
# has no input, so no input_timeout).
DIAGNOSTICS_PERIOD = ParamSpec('diagnostics_period', 1.0, 'Seconds between /diagnostics messages.',
                               min_value=0.1, max_value=10.0, read_only=True)
INPUT_TIMEOUT = ParamSpec('input_timeout', 2.0, 'Seconds without input after which diagnostics report WARN.',
                          min_value=0.1, max_value=60.0)
DROP_WARN_RATIO = ParamSpec(
    'drop_warn_ratio', 0.5,
    'Diagnostics report WARN when more than this share of the frames of the last 5 s (at least one diagnostics '
    'period) was dropped; dropping frames the node cannot keep up with (newest frame wins) is normal below it. '
    '0 = warn on any drop, 1 = never.', min_value=0.0, max_value=1.0)

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec('model', 'models/auto/efm_int8.onnx',
              'Model file (.onnx, or TensorRT .engine/.plan); relative paths resolve against the installed '
              'share/qdr_ros/, else the repository root. Changing it (or any backend option) at runtime loads '
              'the new model in the background while the old one serves, and swaps only if it works.'),
    ParamSpec('backend', 'auto', 'Inference backend; auto prefers TensorRT on a CUDA GPU, else ONNX Runtime.',
              choices=('auto', 'onnxruntime', 'tensorrt')),
    ParamSpec('threads', 0, 'ONNX Runtime CPU threads; 0 = one per physical core.', min_value=0, max_value=256),
    ParamSpec('device_id', 0, 'CUDA device for TensorRT / ONNX Runtime GPU providers.', min_value=0, max_value=63),
    ParamSpec('engine_cache_dir', '',
              'Folder for the TensorRT engines built from .onnx models (<model>-<key>.engine, <engine>.json, timing '
              'cache; the key covers model, TensorRT version, GPU, profile and options); empty = $QDR_ENGINE_CACHE, '
              'else ~/.cache/qdr/engines. With ONNX Runtime GPU providers: their TensorRT engine cache '
              '(empty = none).'),
    ParamSpec('force_engine_rebuild', False,
              'Build the TensorRT engine again even when the engine cache already holds one for this model.'),
    ParamSpec('dla_core', -1, 'TensorRT: DLA core to build for and run on (Jetson AGX/NX; layers DLA cannot run '
              'stay on the GPU); -1 = the GPU.', min_value=-1, max_value=7),
    ParamSpec('prefer_cpu_variant', True,
              'On CPU, run the *_cpu.onnx twin of the model when it exists (same outputs, faster on x86).'),
    ParamSpec('input_compressed', False,
              'Subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image.', read_only=True),
    ParamSpec('input_reliability', 'best_effort',
              'Input QoS reliability; best_effort (sensor data) never makes the camera wait.',
              choices=RELIABILITIES, read_only=True),
    ParamSpec('input_depth', 1, 'Input QoS history depth; the node keeps only the newest frame anyway.',
              min_value=1, max_value=10, read_only=True),
    ParamSpec('output_reliability', 'reliable', 'Output QoS reliability of image_restored and its camera_info.',
              choices=RELIABILITIES, read_only=True),
    ParamSpec('output_depth', 1, 'Output QoS history depth.', min_value=1, max_value=10, read_only=True),
    ParamSpec('max_pixels', 1920 * 1080,
              'Largest frame (width x height) restored at full size; larger frames follow large_frames.',
              min_value=64, max_value=DEFAULT_MAX_PIXELS),
    ParamSpec('large_frames', 'downscale',
              'Frames above max_pixels: reject (drop, counted as too_large) or downscale (restore a shrunk copy '
              'and resize the result back to the input size, so camera_info stays valid).',
              choices=LARGE_FRAME_POLICIES),
    ParamSpec('bypass', False, 'Pass frames through unchanged (same data and header); also the ~/set_bypass service.'),
    ParamSpec('process_without_subscribers', False,
              'Run inference even when nobody subscribes to image_restored (otherwise frames are skipped).'),
    ParamSpec('warmup_width', 640, 'Width of the warm-up inference run at start-up and after a model swap (also '
              'the size a TensorRT engine is tuned for; its profile covers every frame up to max_pixels, either way '
              'round).',
              min_value=8, max_value=4096),
    ParamSpec('warmup_height', 480, 'Height of the warm-up inference run.', min_value=8, max_value=4096),
    DIAGNOSTICS_PERIOD,
    INPUT_TIMEOUT,
    DROP_WARN_RATIO,
    ParamSpec('condition_time_constant', 0.3,
              'Seconds (of frame stamps) over which the reported condition is smoothed; 0 = every frame alone.',
              min_value=0.0, max_value=10.0),
    ParamSpec('condition_hysteresis', 0.1,
              'A condition label turns on above 0.5 + this and off below 0.5 - this (smoothed probability).',
              min_value=0.0, max_value=0.45),
    ParamSpec('publish_gate', False,
              'Publish the gate map (where the model corrects the frame) as a mono8 image on "gate" for rviz.'),
)

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMS}
DEFAULTS: dict[str, Any] = {spec.name: spec.default for spec in PARAMS}


def validate(name: str, value: Any) -> str | None:
    """Return why ``value`` is not acceptable for parameter ``name``, or None when it is."""
    spec = SPECS.get(name)
    if spec is None:
        return f'unknown parameter {name!r}; known: {", ".join(SPECS)}'
    expected = spec.type
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        return f'{name} must be a {expected.__name__}, got {type(value).__name__} {value!r}'
    if spec.choices and value not in spec.choices:
        return f'{name} must be one of {", ".join(spec.choices)}, got {value!r}'
    if spec.min_value is not None and value < spec.min_value:
        return f'{name} must be >= {spec.min_value}, got {value}'
    if spec.max_value is not None and value > spec.max_value:
        return f'{name} must be <= {spec.max_value}, got {value}'
    if name == 'model' and not value.strip():
        return 'model must name a model file, got an empty string'
    return None


def validate_all(values: Mapping[str, Any]) -> list[str]:
    """Every problem in a full set of values (start-up check)."""
    return [reason for name, value in values.items() if (reason := validate(name, value))]


def validate_update(updates: Mapping[str, Any]) -> str | None:
    """Why a runtime update must be refused (read-only or invalid values), or None to accept it.

    Names not in ``PARAMS`` (rclpy's own, such as ``use_sim_time``) are left to rclpy.
    """
    for name, value in updates.items():
        spec = SPECS.get(name)
        if spec is None:
            continue
        if spec.read_only:
            return f'{name} cannot change while the node runs; restart it with the new value'
        reason = validate(name, value)
        if reason:
            return reason
    return None


def share_dir() -> Path | None:
    """Return the installed ``share/qdr_ros`` directory, or None when the package is not in the ament index."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except (PackageNotFoundError, ValueError, OSError):  # OSError: AMENT_PREFIX_PATH unset
        return None


def resolve_model_path(model: str, share: Path | None = None) -> Path:
    """Absolute path of ``model``: as given, else under share/qdr_ros when installed there, else the repo root."""
    path = Path(os.path.expanduser(model))
    if path.is_absolute():
        return path
    share = share if share is not None else share_dir()
    if share is not None and (share / path).exists():
        return share / path
    return REPO_ROOT / path


def load_yaml_params(path: str | os.PathLike[str], node_name: str = NODE_NAME) -> dict[str, Any]:
    """Return the ``ros__parameters`` of ``node_name`` from a node-named ROS 2 parameter file."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    for key, section in data.items():
        if str(key).rstrip('/').split('/')[-1] == node_name and isinstance(section, dict):
            return dict(section.get('ros__parameters', {}))
    raise KeyError(f'{path} has no {node_name!r} section (expected "{YAML_NODE_KEY}: ros__parameters: ...")')
