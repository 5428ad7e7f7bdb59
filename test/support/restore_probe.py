"""The test's side of a restore_node graph: a probe node that publishes frames and reads what comes back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
import subprocess
import time
from typing import Any, Callable

import numpy as np
import rclpy
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from diagnostic_msgs.msg import DiagnosticArray

from qdr_ros.core.image_conversions import alpha_channel, from_model_output, image_view, to_model_input
from qdr_ros.inference import create_backend
from qdr_ros.tools.processes import stop_process

NS = '/qdr_test'
WAIT_S = 30.0
RESEND_S = 1.5


@dataclass
class Probe:
    """The test's side of the graph: publishers, subscriptions keyed by stamp, service calls."""

    node: Node
    executor: SingleThreadedExecutor
    prefix: str
    restored: dict[tuple[int, int], Image] = field(default_factory=dict)
    infos: dict[tuple[int, int], CameraInfo] = field(default_factory=dict)
    diagnostics: list[DiagnosticArray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.image_pub = self.node.create_publisher(Image, f'{self.prefix}/image', qos_profile_sensor_data)
        self.compressed_pub = self.node.create_publisher(CompressedImage, f'{self.prefix}/image/compressed',
                                                         qos_profile_sensor_data)
        self.info_pub = self.node.create_publisher(CameraInfo, f'{self.prefix}/camera_info', qos_profile_sensor_data)
        self.subscribe_restored()
        self.node.create_subscription(CameraInfo, f'{self.prefix}/restored/camera_info',
                                      lambda m: self.infos.__setitem__(key(m), m), 10)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 10)

    def subscribe_restored(self) -> None:
        self.restored_sub = self.node.create_subscription(Image, f'{self.prefix}/restored',
                                                          lambda m: self.restored.__setitem__(key(m), m), 10)

    def spin_until(self, done: Callable[[], bool], timeout: float = WAIT_S, every: Callable[[], None] | None = None,
                   what: str = 'condition', period: float = RESEND_S) -> None:
        deadline = time.monotonic() + timeout
        last = -period
        while not done():
            assert time.monotonic() < deadline, f'timed out after {timeout} s waiting for {what}'
            if every is not None and time.monotonic() - last > period:
                every()
                last = time.monotonic()
            self.executor.spin_once(timeout_sec=0.05)

    def exchange(self, msg: Image | CompressedImage, info: CameraInfo | None = None) -> Image:
        """Publish ``msg`` (resending while lost) until the restored frame with its stamp arrives."""
        pub = self.compressed_pub if isinstance(msg, CompressedImage) else self.image_pub

        def send() -> None:
            if info is not None:
                self.info_pub.publish(info)
            pub.publish(msg)
        self.spin_until(lambda: key(msg) in self.restored, every=send, what=f'the restored frame {key(msg)}')
        return self.restored[key(msg)]

    def call(self, srv_type: Any, name: str, request: Any) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            self.spin_until(client.service_is_ready, what=f'service {name}')
            future = client.call_async(request)
            self.spin_until(future.done, what=f'the reply of {name}')
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_parameter(self, name: str, value: Any, node: str = '/restore_node') -> Any:
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self.call(SetParameters, f'{node}/set_parameters', request).results[0]

    def latest_status(self, input_topic: str, done: Callable[[dict[str, str]], bool],
                      every: Callable[[], None] | None = None, period: float = RESEND_S) -> dict[str, str]:
        """Wait for a new /diagnostics status of the node reading ``input_topic`` that satisfies ``done``."""
        return self.wait_status(lambda name, v: v.get('input_topic') == input_topic and done(v), every, period,
                                f'diagnostics of the node on {input_topic}')

    def condition_status(self, done: Callable[[dict[str, str]], bool]) -> dict[str, str]:
        """Wait for a restore_node "condition" status in /diagnostics that satisfies ``done``."""
        return self.wait_status(lambda name, v: name.endswith(': condition') and done(v),
                                what='the condition status in /diagnostics')

    def wait_status(self, accept: Callable[[str, dict[str, str]], bool], every: Callable[[], None] | None = None,
                    period: float = RESEND_S, what: str = 'a status') -> dict[str, str]:
        """Wait for a new /diagnostics status that ``accept(name, values)`` takes; its values plus level, name, ids."""
        found: list[dict[str, str]] = []
        start = len(self.diagnostics)

        def check() -> bool:
            for array in reversed(self.diagnostics[start:]):
                for status in array.status:
                    values = {kv.key: kv.value for kv in status.values}
                    if accept(status.name, values):
                        found.append({**values, 'level': status.level[0], 'message': status.message,
                                      'name': status.name, 'hardware_id': status.hardware_id})
                        return True
            return False
        self.spin_until(check, every=every, period=period, what=what)
        return found[0]


def key(msg: Any) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def open_probe(context: Context, node_process: subprocess.Popen, name: str, ns: str = NS) -> Iterator[Probe]:
    """A probe node in this process, yielded once the restore node in ``ns`` publishes."""
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    probe = Probe(node, executor, ns)
    try:
        probe.spin_until(lambda: node.count_publishers(f'{ns}/restored') > 0 or node_process.poll() is not None,
                         what='restore_node to appear')
    except AssertionError as error:
        stop_process(node_process)
        raise AssertionError(f'{error}; restore_node printed:\n{node_process.communicate()[0]}') from None
    assert node_process.poll() is None, node_process.communicate()[0]
    yield probe
    executor.shutdown()
    node.destroy_node()


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
