"""restore_node: restore camera frames with the EFM network and republish them for perception.

Topics (relative, rename them by remapping): subscribes ``image`` (``sensor_msgs/Image``; or
``image/compressed`` with ``input_compressed:=true``) and ``camera_info``; publishes
``image_restored`` (same header and encoding as the input), ``image_restored/camera_info`` (the
newest camera_info with the restored frame's header) and ``/diagnostics``. Service
``~/set_bypass`` (``std_srvs/SetBool``) switches pass-through on and off.

Threading: the executor only runs cheap callbacks. The image callback checks the header and puts
the frame into a one-slot mailbox (a newer frame overwrites an unprocessed one and counts as
dropped); one worker thread takes frames from it and runs inference, so no queue can grow and a
slow model never blocks parameters, services or diagnostics. Inference happens on the worker
only, so frames come out in order and at most one runs at a time.
"""

from __future__ import annotations

import copy
import sys
import threading
import time
from collections import deque
from typing import Any

import cv2
import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import SetBool

from qdr_ros import params
from qdr_ros.base_node import (LOG_THROTTLE_S, DiagnosticsPublisher, FrameWorker, ImageBuffer, Job, StartupError,
                               delay_ms, descriptor, image_msg, qos, run_node)
from qdr_ros.backends import Backend, create_backend
from qdr_ros.diagnostics import RESTORE, FrameStats, Health
from qdr_ros.image_conversions import (DEFAULT_MAX_PIXELS, FrameError, InputBuffer, alpha_channel, decode_compressed,
                                       downscale_to_fit, encoding_spec, from_model_output, image_view)


UINT8_RGB = ('rgb8', 'bgr8')


def load_backend(values: dict[str, Any]) -> Backend:
    """Validate, build and warm up the backend the parameters ask for; StartupError says what to fix."""
    path = params.resolve_model_path(values['model'])
    resolved = '' if str(path) == values['model'] else f' (resolved to {path})'
    try:
        backend = create_backend(path, values['backend'], threads=values['threads'],
                                 prefer_cpu_variant=values['prefer_cpu_variant'], device_id=values['device_id'],
                                 engine_cache_dir=values['engine_cache_dir'] or None)
        backend.warmup(values['warmup_height'], values['warmup_width'])
    except Exception as exc:  # ModelError, BackendUnavailable and ONNX Runtime's own untyped errors
        raise StartupError(f"cannot use model {values['model']!r}{resolved} with backend "
                           f"{values['backend']!r}: {exc}. Set model:=<exported .onnx/.engine> and/or "
                           "backend:=onnxruntime|tensorrt") from exc
    return backend


class RestoreNode(Node):
    """Subscribe to frames, restore the newest one on a worker thread, publish it with the input's header."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(params.NODE_NAME, **kwargs)
        self._frames = FrameWorker(self._handle, 'restore_worker')
        for spec in params.PARAMS:
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
        values = {name: self.get_parameter(name).value for name in params.DEFAULTS}
        problems = params.validate_all(values)
        if problems:
            raise StartupError('invalid parameters: ' + '; '.join(problems))
        self._values = values
        self._backend = load_backend(values)
        self._log_backend('using')
        self._stats = FrameStats()
        self._health = Health(self._stats, RESTORE)
        self._frame_id = ''  # header.frame_id of the newest frame: the camera, for diagnostics
        self._camera_infos: deque[CameraInfo] = deque(maxlen=8)  # guarded by _info_lock (worker reads it)
        self._info_lock = threading.Lock()
        self._input_buffer = InputBuffer(self._backend.stride)
        self._output_buffer = ImageBuffer()  # worker thread only

        out_qos = qos(values['output_reliability'], values['output_depth'])
        in_qos = qos(values['input_reliability'], values['input_depth'])
        self._pub = self.create_publisher(Image, 'image_restored', out_qos)
        self._info_pub = self.create_publisher(CameraInfo, 'image_restored/camera_info', out_qos)
        self._diagnostics = DiagnosticsPublisher(self, 'restoration')
        if values['input_compressed']:
            self._sub = self.create_subscription(CompressedImage, 'image/compressed', self._on_compressed, in_qos)
        else:
            self._sub = self.create_subscription(Image, 'image', self._on_image, in_qos)
        self.create_subscription(CameraInfo, 'camera_info', self._on_camera_info, in_qos)
        self.create_service(SetBool, '~/set_bypass', self._on_set_bypass)
        self.create_timer(values['diagnostics_period'], self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._frames.start()
        self.get_logger().info(
            f"restoring {self._sub.topic_name} -> {self._pub.topic_name} (input QoS {values['input_reliability']} "
            f"depth {values['input_depth']}, output {values['output_reliability']} depth {values['output_depth']}, "
            f"frames above {values['max_pixels']} px: {values['large_frames']}, bypass {values['bypass']})")

    def _log_backend(self, verb: str) -> None:
        b = self._backend
        self.get_logger().info(f'{verb} backend {b.name} on {b.device}, {b.precision} model {b.model_path} '
                               f'(sha256 {b.info.sha256[:12]}); why: {b.reason}')

    def destroy_node(self) -> None:
        """Stop the worker before the publishers go away."""
        self._frames.close()
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
        """Give the worker ``job`` and the GIL at once, not ~0.3 ms later when the executor next waits."""
        self._stats.offered(dropped=int(self._frames.put(job)))
        time.sleep(0)

    def _reject(self, exc: FrameError) -> None:
        self._stats.rejected(exc.reason_code)
        self.get_logger().warning(f'dropping frame ({exc.reason_code}): {exc.message}',
                                  throttle_duration_sec=LOG_THROTTLE_S)

    def _on_set_bypass(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        result = self.set_parameters([Parameter('bypass', Parameter.Type.BOOL, bool(request.data))])[0]
        response.success = result.successful
        response.message = (f"bypass {'on: frames pass through unchanged' if request.data else 'off: restoring'}"
                            if result.successful else result.reason)
        return response

    def _on_set_parameters(self, changed: list[Parameter]) -> SetParametersResult:
        """Validate a runtime change; a new model/backend is built and warmed up first, then swapped in."""
        updates = {p.name: p.value for p in changed}
        reason = params.validate_update(updates)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        merged = {**self._values, **updates}
        if any(k in updates for k in params.BACKEND_KEYS):  # setting model again re-reads the file
            try:
                backend = load_backend(merged)
            except StartupError as exc:
                self.get_logger().error(f'refused parameter change, still serving {self._backend.model_path}: {exc}')
                return SetParametersResult(successful=False,
                                           reason=f'{exc} (still serving {self._backend.model_path})')
            self._backend = backend
            self._log_backend('switched to')
        self._values = merged
        if 'bypass' in updates:
            self.get_logger().info(f"bypass {'on' if merged['bypass'] else 'off'}")
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        values = self._values
        facts = {**self._backend.describe(), 'bypass': values['bypass'],
                 'input_topic': self._sub.topic_name, 'output_topic': self._pub.topic_name}
        facts['model'] = facts.pop('model_path')
        report = self._health.report(values['input_timeout'], values['drop_warn_ratio'], facts)
        self._diagnostics.publish(report, self._frame_id)

    # --- worker thread ---

    def _handle(self, job: Job) -> None:
        """Process one frame on the worker; a failing frame is counted and logged, never fatal."""
        try:
            self._process(job)
        except FrameError as exc:
            self._reject(exc)
        except Exception as exc:  # a failing backend must not kill the worker; diagnostics turn ERROR
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
        if values['bypass']:
            self._publish(image_msg(msg.header, view, encoding), None)
            return
        restored, inference_ms = self._restore(backend, view, encoding, values['max_pixels'])
        self._publish(self._output_buffer.message(msg.header, restored, encoding), inference_ms)

    def _restore(self, backend: Backend, view: np.ndarray, encoding: str, max_pixels: int) -> tuple[np.ndarray, float]:
        """Restore ``view``; frames above ``max_pixels`` are restored shrunk and resized back to the input size.

        8-bit RGB/BGR frames go to the backend as they are (``Backend.restore_uint8``: the ONNX Runtime
        backend converts inside the graph and writes straight into the outgoing message's array);
        other encodings through the float tensor path.
        """
        height, width = view.shape[:2]
        alpha = alpha_channel(view, encoding)
        small, scale = downscale_to_fit(view, max_pixels)
        if encoding in UINT8_RGB:
            target = self._output_buffer.view(height, width, 3) if scale == 1.0 else None
            start = time.perf_counter()
            restored = backend.restore_uint8(small, bgr=encoding == 'bgr8', out=target)
            inference_ms = (time.perf_counter() - start) * 1e3
        else:
            if self._input_buffer.stride != backend.stride:
                self._input_buffer = InputBuffer(backend.stride)
            x, (h, w) = self._input_buffer.convert(small, encoding)
            start = time.perf_counter()
            y = backend.infer(x)
            inference_ms = (time.perf_counter() - start) * 1e3
            restored = from_model_output(y, h, w, encoding, alpha=alpha if scale == 1.0 else None)
        if scale != 1.0:
            restored = cv2.resize(restored, (width, height), interpolation=cv2.INTER_LINEAR)
            restored = restored.reshape(height, width, -1)
            alpha_index = encoding_spec(encoding).alpha_index
            if alpha_index is not None:
                restored[..., alpha_index] = alpha
        return restored, inference_ms

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
