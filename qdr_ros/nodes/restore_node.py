"""restore_node: restore camera frames with the EFM network and republish them for perception.

Topics (relative, rename them by remapping): subscribes ``image`` (``sensor_msgs/Image``; or
``image/compressed`` with ``input_compressed:=true``) and ``camera_info``; publishes
``image_restored`` (same header and encoding as the input), ``image_restored/camera_info`` (the
newest camera_info with the restored frame's header) and ``/diagnostics``. Service
``~/set_bypass`` (``std_srvs/SetBool``) switches pass-through on and off.

What the camera sees (models with a ``condition`` output, such as ``models/auto``): each restored
frame's condition probabilities are steadied over frame stamps (``condition.ConditionTracker``) and
published with the frame's header on ``condition`` (``vision_msgs/Classification``, with the label
names on ``condition/labels``, ``vision_msgs/LabelInfo``, transient local) where vision_msgs is
installed, and always in ``/diagnostics`` (status ``<node>: condition``: one key per label, the
labels present, the share of the frame the gate opens, and the stamp of the frame they belong to).
``publish_gate`` adds the gate map as a mono8 image on ``gate``. A model without a condition output
publishes none of these.

Threading: the executor only runs cheap callbacks. The image callback checks the header and puts
the frame into a one-slot mailbox (a newer frame overwrites an unprocessed one and counts as
dropped); one worker thread takes frames from it and runs inference, so no queue can grow and a
slow model never blocks parameters, services or diagnostics. Frames are restored on the worker
only, one at a time (a model swap warms the new model up on the loader thread meanwhile). The
worker restores into one of two outgoing message buffers and hands the result to an output
thread (``base_node.OutputStage``), which publishes the frame, its camera_info and the condition
in the order the frames were restored, none dropped: the worker starts on the next frame while
the previous one is published, so a camera faster than the node gets frames at the rate of
inference alone. With both buffers still being published the worker waits, so results never
pile up.

Model swaps: a runtime change of ``model`` or a backend option is checked cheaply in the parameter
callback (the file must be a usable model), which then returns; a second thread (the loader,
again a one-slot mailbox: the newest request wins) builds and warms the new backend (a TensorRT
engine build can take minutes and logs its progress) while the old backend keeps serving, then
swaps it in. A load that fails leaves the old backend serving, is logged, shows in diagnostics
(``model_load``) and the parameters are set back to what is serving.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

import cv2
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
import numpy as np
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import SetBool

try:
    from vision_msgs.msg import Classification, ObjectHypothesis
except ImportError:  # not among the PyPI ROS wheels; present on a ROS 2 distribution
    Classification = ObjectHypothesis = None

from qdr_ros.nodes import params
from qdr_ros.core.condition import Condition, ConditionTracker
from qdr_ros.nodes.base_node import (LATCHED, LOG_THROTTLE_S, NO_LABEL_INFO, FrameWorker, ImageBuffer, Job, LabelInfo,
                                     OutputStage, QdrNode, StartupError, delay_ms, image_msg, qos, run_node,
                                     to_label_info)
from qdr_ros.inference import Backend, Restoration, create_backend
from qdr_ros.inference.base import restoration
from qdr_ros.nodes.diagnostics import RESTORE
from qdr_ros.core.model_info import OUTPUT_NAME, ModelError, validate_model_file
from qdr_ros.core.image_conversions import (DEFAULT_MAX_PIXELS, FrameError, InputBuffer, alpha_channel,
                                            decode_compressed, downscale_to_fit, encoding_spec, from_model_output,
                                            image_view)


UINT8_RGB = ('rgb8', 'bgr8')
# In-process users (the demo): called on the output thread, in order, for every restored frame with its header, the
# backend's restoration (image, raw condition, gate) and the steadied condition (None without one).
RestoreListener = Callable[[Header, Restoration, 'Condition | None'], None]


@dataclass(frozen=True)
class Outgoing:
    """What the worker hands the output thread for one frame: a restoration, or a message to pass on as it is."""

    header: Header
    encoding: str
    restoration: Restoration | None = None
    inference_ms: float | None = None
    publish_gate: bool = False
    message: Image | None = None  # bypass: the frame to publish unchanged
    labels: tuple[str, ...] = ()  # the condition labels of the backend that restored it (a swap may follow)


def stamp_seconds(header: Header, now: Callable[[], float]) -> float:
    """Return a header's stamp in seconds (the clock the condition is smoothed over); ``now()`` if it is unset.

    An unstamped frame (stamp 0, some drivers) would give every frame the same time, and the
    smoothing, whose weight grows with the time between frames, would never move again. Under
    ``use_sim_time`` with no ``/clock`` yet the node clock reads 0 too: the monotonic clock stands in.
    """
    stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
    return stamp if stamp > 0 else (now() or time.monotonic())


def to_classification(header: Header, condition: Condition, msgs: Any = None) -> Any:
    """Build a ``vision_msgs/Classification``: every label with its smoothed probability; ``msgs`` is for tests."""
    msg_type, hypothesis_type = msgs or (Classification, ObjectHypothesis)
    out = msg_type()
    out.header = header
    out.results = [hypothesis_type(class_id=label, score=float(p)) for label, p in condition.probabilities.items()]
    return out


def condition_values(condition: Condition, header: Header) -> list[tuple[str, str]]:
    """List the condition status values: one per label, what is present, gate share, frame stamp."""
    values = [(label, f'{p:.3f}') for label, p in condition.probabilities.items()]
    values += [('present', ','.join(condition.present)),
               ('gate_open', '' if condition.gate_open is None else f'{condition.gate_open:.3f}'),
               ('frame_stamp', f'{header.stamp.sec}.{header.stamp.nanosec:09d}'), ('frame_id', header.frame_id)]
    return values


def load_backend(values: dict[str, Any]) -> Backend:
    """Validate, build and warm up the backend the parameters ask for; StartupError says what to fix.

    A TensorRT engine built from an ``.onnx`` model gets the profile of ``max_pixels`` (see
    ``ShapeProfile.for_frames``), tuned for the warm-up size.
    """
    path = params.resolve_model_path(values['model'])
    resolved = '' if str(path) == values['model'] else f' (resolved to {path})'
    try:
        backend = create_backend(path, values['backend'], threads=values['threads'],
                                 prefer_cpu_variant=values['prefer_cpu_variant'], device_id=values['device_id'],
                                 engine_cache_dir=values['engine_cache_dir'] or None,
                                 warmup_hw=(values['warmup_height'], values['warmup_width']),
                                 max_pixels=values['max_pixels'], dla_core=values['dla_core'],
                                 force_rebuild=values['force_engine_rebuild'])
    except Exception as exc:  # ModelError, BackendUnavailable and ONNX Runtime's own untyped errors
        raise StartupError(f"cannot use model {values['model']!r}{resolved} with backend "
                           f"{values['backend']!r}: {exc}. Set model:=<exported .onnx/.engine> and/or "
                           "backend:=onnxruntime|tensorrt") from exc
    return backend


class RestoreNode(QdrNode):
    """Subscribe to frames, restore the newest one on a worker thread, publish it with the input's header."""

    def __init__(self, listener: RestoreListener | None = None, **kwargs: Any) -> None:
        """Start the node; ``listener`` (in-process users such as the demo) sees every restored frame."""
        super().__init__(params.RESTORE_PARAMS, RESTORE, 'restoration', **kwargs)
        self._listener = listener
        self._frames: FrameWorker[Job] = FrameWorker(self._handle, 'restore_worker')
        # Two outgoing message buffers: the worker restores into one while the other is being published.
        self._output: OutputStage[ImageBuffer, Outgoing] = OutputStage((ImageBuffer(), ImageBuffer()), self._send,
                                                                       'restore_output')
        self._loader: FrameWorker[tuple[int, dict[str, Any]]] = FrameWorker(self._load, 'model_loader')
        self._closing = threading.Event()  # set by destroy_node: a load that ends later is dropped
        self._load_requests = 0  # numbers the loader's requests; only the newest failure reverts parameters
        self._load_status = 'ready'
        self._failed_request = 0  # the number of a failed request whose parameters are still to be set back
        self._reverting = threading.local()  # set while _revert_backend_parameters puts parameters back
        values = self._values
        self._backend = load_backend(values)
        self._serving_values = {k: values[k] for k in params.BACKEND_KEYS}
        self._log_backend('using')
        self._frame_id = ''  # header.frame_id of the newest frame: the camera, for diagnostics
        self._camera_infos: deque[CameraInfo] = deque(maxlen=8)  # guarded by _info_lock (worker reads it)
        self._info_lock = threading.Lock()
        self._input_buffer = InputBuffer(self._backend.stride)

        out_qos = qos(values['output_reliability'], values['output_depth'])
        in_qos = qos(values['input_reliability'], values['input_depth'])
        self._pub = self.create_publisher(Image, 'image_restored', out_qos)
        self._info_pub = self.create_publisher(CameraInfo, 'image_restored/camera_info', out_qos)
        self._gate_pub = self.create_publisher(Image, 'gate', out_qos)
        self._condition_pub = (self.create_publisher(Classification, 'condition', out_qos)
                               if Classification is not None else None)
        self._condition_labels_pub = (self.create_publisher(LabelInfo, 'condition/labels', LATCHED)
                                      if LabelInfo is not None else None)
        self._tracker: ConditionTracker | None = None
        self._condition: tuple[Condition, Header] | None = None  # newest steadied condition and its frame
        self._use_condition_head(self._backend)
        if values['input_compressed']:
            self._sub = self.create_subscription(CompressedImage, 'image/compressed', self._on_compressed, in_qos)
        else:
            self._sub = self.create_subscription(Image, 'image', self._on_image, in_qos)
        self.create_subscription(CameraInfo, 'camera_info', self._on_camera_info, in_qos)
        self.create_service(SetBool, '~/set_bypass', self._on_set_bypass)
        self._output.start()
        self._frames.start()
        self._loader.start()
        self.get_logger().info(
            f"restoring {self._sub.topic_name} -> {self._pub.topic_name} (input QoS {values['input_reliability']} "
            f"depth {values['input_depth']}, output {values['output_reliability']} depth {values['output_depth']}, "
            f"frames above {values['max_pixels']} px: {values['large_frames']}, bypass {values['bypass']})")

    def _use_condition_head(self, backend: Backend) -> None:
        """Track (and announce) the conditions ``backend`` reports, or say once that it reports none."""
        labels = backend.info.condition_labels
        if not labels:
            self._tracker, self._condition = None, None
            self.get_logger().info(f'model {backend.model_path} has no condition output: no condition is published')
            return
        if self._tracker is None or self._tracker.labels != tuple(labels):
            self._tracker = ConditionTracker(tuple(labels), self._values['condition_time_constant'],
                                             self._values['condition_hysteresis'])
        where = (f'{self._condition_pub.topic_name} (vision_msgs/Classification) and /diagnostics'
                 if self._condition_pub is not None else '/diagnostics (vision_msgs not installed: no condition topic)')
        self.get_logger().info(f"model reports conditions {', '.join(labels)} on {where}")
        if self._condition_pub is not None and self._condition_labels_pub is None:
            self.get_logger().warning(f'no {self._condition_pub.topic_name}/labels: {NO_LABEL_INFO}')
        if self._condition_labels_pub is not None:
            header = Header(stamp=self.get_clock().now().to_msg())
            self._condition_labels_pub.publish(to_label_info(header, dict(enumerate(labels)), 0.5))

    def _log_backend(self, verb: str) -> None:
        b = self._backend
        self.get_logger().info(f'{verb} backend {b.name} on {b.device}, {b.precision} model {b.model_path} '
                               f'(sha256 {b.info.sha256[:12]}); why: {b.reason}')
        if b.fallback:
            self.get_logger().warning(f'backend auto fell back to {b.name}: {b.fallback}')

    @property
    def model_path(self) -> str:
        """The file the backend runs (on a CPU, the ``*_cpu.onnx`` twin of the model when it exists)."""
        return self._backend.model_path

    def destroy_node(self) -> None:
        """Stop the loader, the worker and then the output thread before the publishers go away.

        The serving backend's GPU memory is released once no thread can still use it; a load still
        building an engine when the node goes is dropped when it ends (``_load``).
        """
        self._closing.set()
        self._loader.close()
        worker_stopped = self._frames.close()
        backend = getattr(self, '_backend', None)  # None: the node failed to start (the context destroys it too)
        if self._output.close() and worker_stopped and backend is not None:
            backend.close()
        super().destroy_node()

    # --- executor callbacks (cheap, never block on inference) ---

    def _wanted(self) -> bool:
        """Whether to work on a frame: somebody listens, or processing is forced."""
        return self._values['process_without_subscribers'] or self._pub.get_subscription_count() > 0

    def _on_image(self, msg: Image) -> None:
        self._stats.frame_in()
        self._frame_id = msg.header.frame_id
        if self._values['bypass']:
            self._publish(msg, None)
            return
        if not self._wanted():
            self._stats.skipped()
            return
        reject_large = self._values['large_frames'] == 'reject'
        limit = self._values['max_pixels'] if reject_large else max(DEFAULT_MAX_PIXELS, self._values['max_pixels'])
        try:
            view = image_view(msg.data, msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian, limit)
        except FrameError as exc:
            self._reject(exc)
            return
        self._hand_over(Job(msg, view))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._info_lock:
            self._camera_infos.append(msg)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._stats.frame_in()
        self._frame_id = msg.header.frame_id
        if not self._values['bypass'] and not self._wanted():
            self._stats.skipped()
        else:
            self._hand_over(Job(msg, None))

    def _hand_over(self, job: Job) -> None:
        """Give the worker ``job`` and the GIL at once, not later when the executor next waits."""
        self._stats.offered(dropped=int(self._frames.put(job)))
        time.sleep(0)

    def _on_set_bypass(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        result = self.set_parameters([Parameter('bypass', Parameter.Type.BOOL, bool(request.data))])[0]
        response.success = result.successful
        response.message = (f"bypass {'on: frames pass through unchanged' if request.data else 'off: restoring'}"
                            if result.successful else result.reason)
        return response

    def _check_update(self, updates: dict[str, Any]) -> str | None:
        """Refuse a new model that is not a usable model file at once (cheap: parse and check it)."""
        if 'model' not in updates or getattr(self._reverting, 'active', False):
            return None
        try:
            validate_model_file(params.resolve_model_path(updates['model']))
        except ModelError as exc:
            serving = self._backend.model_path
            self.get_logger().error(f'refused parameter change, still serving {serving}: {exc}')
            return f'{exc} (still serving {serving})'
        return None

    def _apply_update(self, updates: dict[str, Any]) -> None:
        """Load a new model/backend on the loader thread (swapped in when ready); retune the condition tracker."""
        values = self._values
        # An engine built from the .onnx has its profile sized from max_pixels: a new limit needs a new
        # engine (a prebuilt .engine file keeps its own profile).
        profile_changed = ('max_pixels' in updates and self._backend.name == 'tensorrt'
                           and self._backend.model_path.lower().endswith('.onnx'))
        if (profile_changed or any(k in updates for k in params.BACKEND_KEYS)) \
                and not getattr(self._reverting, 'active', False):
            self._load_requests += 1
            self._load_status = f"loading {values['model']} with backend {values['backend']}"
            self._loader.put((self._load_requests, values))
            self.get_logger().info(f'{self._load_status} in the background; still serving {self._backend.model_path}')
        tracker = self._tracker
        if tracker is not None:
            tracker.time_constant_s = values['condition_time_constant']
            tracker.hysteresis = values['condition_hysteresis']
        if 'bypass' in updates:
            self.get_logger().info(f"bypass {'on' if values['bypass'] else 'off'}")

    def _load(self, request: tuple[int, dict[str, Any]]) -> None:
        """Loader thread: build and warm up the requested backend, then swap it in (or keep the old one)."""
        number, values = request
        try:
            backend = load_backend(values)
        except StartupError as exc:
            if self._closing.is_set() or not self.context.ok():
                return
            serving = self._backend
            self._load_status = f'failed: {exc}'
            self.get_logger().error(f'model change failed, still serving {serving.model_path}: {exc}')
            self._failed_request = number  # the executor sets the parameters back (see _revert_backend_parameters)
            return
        if self._closing.is_set():  # the node went while this model loaded: nobody will serve it
            backend.close()
            return
        self._use_condition_head(backend)
        self._backend = backend
        self._serving_values = {k: values[k] for k in params.BACKEND_KEYS}
        self._load_status = 'ready'
        self._log_backend('switched to')

    def _revert_backend_parameters(self) -> None:
        """After a failed load, set the backend parameters back to those of the backend that serves.

        Runs on the executor (diagnostics timer), so the change that asked for the load has been
        stored by then; a newer request that is still loading is left alone.
        """
        if not self._failed_request or self._failed_request != self._load_requests:
            return
        self._failed_request = 0
        serving = self._serving_values
        back = [Parameter(k, value=serving[k]) for k in sorted(params.BACKEND_KEYS)
                if self.get_parameter(k).value != serving[k]]
        self._reverting.active = True
        try:
            self.set_parameters(back)
        finally:
            self._reverting.active = False

    def _publish_diagnostics(self) -> None:
        self._revert_backend_parameters()
        values = self._values
        facts = {**self._backend.describe(), 'model_load': self._load_status, 'bypass': values['bypass'],
                 'input_topic': self._sub.topic_name, 'output_topic': self._pub.topic_name}
        facts['model'] = facts.pop('model_path')
        report = self._health.report(values['input_timeout'], values['drop_warn_ratio'], facts)
        extra = []
        newest = self._condition
        if newest is not None:
            condition, header = newest
            extra.append(DiagnosticStatus(
                level=bytes([0]), name=f'{self.get_fully_qualified_name()}: condition',
                message=f"sees {', '.join(condition.present)}", hardware_id=header.frame_id,
                values=[KeyValue(key=k, value=v) for k, v in condition_values(condition, header)]))
        self._diagnostics.publish(report, self._frame_id, extra)

    # --- worker thread ---

    def _handle(self, job: Job) -> None:
        """Process one frame on the worker; a failing frame is counted and logged, never fatal."""
        try:
            self._process(job)
        except FrameError as exc:
            self._reject(exc)
        except Exception as exc:  # a failing backend must not kill the worker; diagnostics turn ERROR
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        """Count and log (throttled) a frame lost to an error in the worker or the output thread."""
        if not self.context.ok():
            return
        self._stats.backend_error(f'{type(exc).__name__}: {exc}')
        self.get_logger().error(f'inference failed, frame dropped: {type(exc).__name__}: {exc}',
                                throttle_duration_sec=LOG_THROTTLE_S)

    def _process(self, job: Job) -> None:
        values, backend = self._values, self._backend  # one consistent configuration for this frame
        msg = job.msg
        if isinstance(msg, CompressedImage):
            view, encoding = decode_compressed(msg.data, msg.format, max(DEFAULT_MAX_PIXELS, values['max_pixels']))
            if values['large_frames'] == 'reject' and view.shape[0] * view.shape[1] > values['max_pixels']:
                raise FrameError('too_large', f'decoded frame {view.shape[1]}x{view.shape[0]} is above max_pixels '
                                 f"{values['max_pixels']}; lower the camera resolution or raise max_pixels")
        else:
            view, encoding = job.view, msg.encoding
        buffer = self._output.acquire()  # waits only while both buffers are still being published
        try:
            if values['bypass']:
                out = Outgoing(msg.header, encoding, message=image_msg(msg.header, view, encoding))
            else:
                restoration, inference_ms = self._restore(backend, view, encoding, values['max_pixels'], buffer)
                out = Outgoing(msg.header, encoding, restoration, inference_ms, values['publish_gate'],
                               labels=backend.info.condition_labels)
        except BaseException:
            self._output.release(buffer)
            raise
        self._output.submit(buffer, out)

    # --- output thread ---

    def _send(self, buffer: ImageBuffer, out: Outgoing) -> None:
        """Publish one frame the worker finished (restored into ``buffer``) and what the model says about it."""
        try:
            if out.restoration is None:
                self._publish(out.message, None)
                return
            self._publish(buffer.message(out.header, out.restoration.image, out.encoding), out.inference_ms)
            self._report_condition(out)
        except Exception as exc:  # the output thread must survive a failing publish or listener
            self._failed(exc)

    def _report_condition(self, out: Outgoing) -> None:
        """Steady and publish what the model says about the frame (nothing for a model without a condition).

        A frame restored by the model a swap just replaced is not folded into the new model's tracker.
        """
        header, restoration, publish_gate = out.header, out.restoration, out.publish_gate
        tracker, condition = self._tracker, None
        if tracker is not None and restoration.condition is not None and tracker.labels == out.labels:
            now = self.get_clock().now
            condition = tracker.update(restoration.condition, stamp_seconds(header, lambda: now().nanoseconds * 1e-9),
                                       restoration.gate)
        if condition is not None:  # None: a non-finite first frame, nothing steadied to report yet
            self._condition = (condition, header)
            if self._condition_pub is not None:
                self._condition_pub.publish(to_classification(header, condition))
        if publish_gate and restoration.gate is not None and self._gate_pub.get_subscription_count() > 0:
            gate = np.clip(np.rint(restoration.gate * 255), 0, 255).astype(np.uint8)
            self._gate_pub.publish(image_msg(header, gate[..., None], 'mono8'))
        if self._listener is not None:
            self._listener(header, restoration, condition)

    def _restore(self, backend: Backend, view: np.ndarray, encoding: str, max_pixels: int,
                 buffer: ImageBuffer) -> tuple[Restoration, float]:
        """Restore ``view``; frames above ``max_pixels`` or the engine's size are restored shrunk, then resized back.

        8-bit RGB/BGR frames go to the backend as they are (``Backend.restore_uint8``: the ONNX Runtime
        backend converts inside the graph and writes straight into ``buffer``, the outgoing message's array);
        other encodings through the float tensor path.
        """
        height, width = view.shape[:2]
        alpha = alpha_channel(view, encoding)
        small, scale = downscale_to_fit(view, max_pixels, backend.max_hw)
        if encoding in UINT8_RGB:
            target = buffer.view(height, width, 3) if scale == 1.0 else None
            start = time.perf_counter()
            result = backend.restore_frame(small, bgr=encoding == 'bgr8', out=target)
            inference_ms = (time.perf_counter() - start) * 1e3
        else:
            if self._input_buffer.stride != backend.stride:
                self._input_buffer = InputBuffer(backend.stride)
            x, (h, w) = self._input_buffer.convert(small, encoding)
            start = time.perf_counter()
            outputs = backend.infer_outputs(x)
            inference_ms = (time.perf_counter() - start) * 1e3
            result = restoration(from_model_output(outputs.pop(OUTPUT_NAME), h, w, encoding,
                                                   alpha=alpha if scale == 1.0 else None), outputs, h, w)
        restored, condition, gate = result.image, result.condition, result.gate
        if scale != 1.0:
            restored = cv2.resize(restored, (width, height), interpolation=cv2.INTER_LINEAR)
            restored = restored.reshape(height, width, -1)
            alpha_index = encoding_spec(encoding).alpha_index
            if alpha_index is not None:
                restored[..., alpha_index] = alpha
            if gate is not None:
                gate = cv2.resize(gate, (width, height), interpolation=cv2.INTER_NEAREST)
        return Restoration(restored, condition, gate), inference_ms

    def _publish(self, out: Image, inference_ms: float | None) -> None:
        """Publish a frame and the camera_info that matches its stamp (else the newest one)."""
        stamp = out.header.stamp
        delay = delay_ms(self, stamp)
        self._pub.publish(out)
        with self._info_lock:
            infos = list(self._camera_infos)
        if infos:
            info = next((i for i in reversed(infos) if i.header.stamp == stamp), infos[-1])
            info = copy.copy(info)
            info.header = out.header
            self._info_pub.publish(info)
        self._stats.frame_out(inference_ms, delay)


def main(args: list[str] | None = None) -> int:
    """Run the restore node (see ``base_node.run_node`` for exit behaviour)."""
    return run_node(RestoreNode, 'restore_node', args)


if __name__ == '__main__':
    sys.exit(main())
