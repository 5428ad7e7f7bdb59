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

from sensor_msgs.msg import Image
from std_msgs.msg import Header

from qdr_ros.detectors import Detection, DetectorError, annotate, create_detector
from qdr_ros.nodes.diagnostics import DETECT
from qdr_ros.core.image_conversions import FrameError, image_view
from qdr_ros.nodes.params import DETECT_PARAMS
from qdr_ros.nodes.base_node import (LATCHED, LOG_THROTTLE_S, NO_LABEL_INFO, FrameWorker, Job, LabelInfo, QdrNode,
                                     StartupError, delay_ms, image_msg, qos, run_node, to_label_info)

try:
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
except ImportError:  # not among the PyPI ROS wheels; present on a ROS 2 distribution
    Detection2D = Detection2DArray = ObjectHypothesisWithPose = None

DetectionsListener = Callable[[Header, Sequence[Detection]], None]


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


class DetectNode(QdrNode):
    """Detect objects in the newest frame on a worker thread; publish boxes and an annotated image."""

    def __init__(self, listener: DetectionsListener | None = None, **kwargs: Any) -> None:
        """Start the node; ``listener(header, detections)`` is called per frame (for in-process users like the demo)."""
        super().__init__(DETECT_PARAMS, DETECT, 'detection', **kwargs)
        self._listener = listener
        self._frames = FrameWorker(self._handle, 'detect_worker')
        values = self._values
        try:
            self._detector = create_detector(values['model'], conf=values['conf'], iou=values['iou'],
                                             classes=values['classes'], imgsz=values['imgsz'],
                                             device=values['device'], max_det=values['max_det'])
        except DetectorError as exc:
            raise StartupError(str(exc)) from exc
        try:
            self._detector.warmup()
        except Exception as exc:  # ONNX Runtime and torch raise their own errors on a model that cannot run
            raise StartupError(f"detector {values['model'] or 'default'} loaded but failed its first inference "
                               f'({type(exc).__name__}: {exc}); check that the file is a detector this node '
                               'supports (ultralytics .pt/.onnx or FastestDet .onnx)') from exc
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
        self.create_timer(values['stats_period'], self._log_stats)
        self._frames.start()
        outputs = self._image_pub.topic_name + (f' and {self._det_pub.topic_name} (vision_msgs/Detection2DArray)'
                                                if self._det_pub else ' (vision_msgs not installed: no detections '
                                                'topic, annotated image only)')
        self.get_logger().info(
            f'detecting on {self._sub.topic_name} ({values["input_reliability"]}) -> {outputs}; model '
            f'{self._detector.model_path} on {self._detector.device}, classes {self._detector.describe_classes()}, '
            f'conf {values["conf"]}, iou {values["iou"]}, imgsz {values["imgsz"]}, '
            f'keep {values["classes"] or "all classes"}')
        if self._det_pub is not None and self._labels_pub is None:
            self.get_logger().warning(f'no detection_labels: {NO_LABEL_INFO}')

    def _publish_labels(self) -> None:
        """Publish the class names (again when ``conf`` changes: it is LabelInfo's threshold)."""
        if self._labels_pub is not None:
            header = Header(stamp=self.get_clock().now().to_msg())
            self._labels_pub.publish(to_label_info(header, self._detector.names, self._values['conf']))

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

    def _check_update(self, updates: dict[str, Any]) -> str | None:
        """Refuse class ids the model does not have (they would silently match nothing)."""
        unknown = sorted(set(updates.get('classes', ())) - set(self._detector.names))
        return f'classes {unknown} are not in the model ({self._detector.describe_classes()})' if unknown else None

    def _apply_update(self, updates: dict[str, Any]) -> None:
        """Publish the labels again when conf, their threshold, changes."""
        if 'conf' in updates:
            self._publish_labels()

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
    return run_node(DetectNode, DETECT_PARAMS.node_name, args)


if __name__ == '__main__':
    sys.exit(main())
