"""Plumbing shared by the qdr nodes: their base class, start-up errors, the newest-frame mailbox, QoS, main().

Each node module keeps one job (restore, detect, replay); what every node needs the same way lives
here once, so the nodes behave alike: same parameter handling, QoS choices, drop accounting,
diagnostics and exit codes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import array
import queue
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from qdr_ros.core.image_conversions import FrameError
from qdr_ros.nodes.diagnostics import FrameStats, Health, Report, Wording
from qdr_ros.nodes.params import ParamSpec, ParamTable, validate_all, validate_update

try:
    from vision_msgs.msg import LabelInfo, VisionClass
except ImportError:  # not among the PyPI ROS wheels; on a distribution, older than 4.1.0 (early Humble) lacks them
    LabelInfo = VisionClass = None
# What a node logs when vision_msgs is there but too old for its label-name topic.
NO_LABEL_INFO = ('vision_msgs older than 4.1.0 has no LabelInfo, so no label names are published; '
                 'update ros-$ROS_DISTRO-vision-msgs for them')

# Label names are published once and kept for late subscribers (rviz, a detector started later).
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)

LITTLE_ENDIAN = sys.byteorder == 'little'
LOG_THROTTLE_S = 5.0
T = TypeVar('T')
R = TypeVar('R')


class StartupError(RuntimeError):
    """The node cannot start (bad parameters or model); the message tells the operator what to do."""


@dataclass
class Job:
    """A frame waiting for the worker: the message, its checked pixel view (raw input only)."""

    msg: Image | CompressedImage
    view: np.ndarray | None


class Mailbox(Generic[T]):
    """One slot holding the newest item (a frame, a model request); ``put`` overwrites (and reports) an untaken one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> bool:
        """Store ``item``; True when it replaced a frame the worker had not taken (a drop)."""
        with self._cond:
            overwrote = self._item is not None
            self._item = item
            self._cond.notify()
            return overwrote

    def take(self) -> T | None:
        """Wait for the next frame; None once closed."""
        with self._cond:
            while self._item is None and not self._closed:
                self._cond.wait()
            item, self._item = self._item, None
            return None if self._closed else item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class FrameWorker(Generic[T]):
    """The newest-item mailbox and the one thread that drains it: ``handle(item)`` runs there, in order."""

    def __init__(self, handle: Callable[[T], None], name: str) -> None:
        self._mailbox: Mailbox[T] = Mailbox()
        self._handle = handle
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, job: T) -> bool:
        """Hand over the newest item; True when it replaced one the worker had not taken (a drop)."""
        return self._mailbox.put(job)

    def close(self) -> bool:
        """Stop taking frames and wait (bounded) for the one in progress; True when the thread has stopped."""
        self._mailbox.close()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (job := self._mailbox.take()) is not None:
            self._handle(job)


class OutputStage(Generic[R, T]):
    """A second thread that hands the worker's results on (publishes them), in order, none dropped.

    The worker takes one of the stage's resources (an output buffer) with ``acquire``, fills it,
    and gives it back with its result through ``submit``; ``handle(resource, item)`` then runs on
    the stage's thread, and the resource is free again once it returns. While one result is
    published the worker already runs the next frame into another resource, so publishing is no
    longer part of the time between two frames; with every resource out, ``acquire`` waits, so
    at most ``len(resources)`` results are ever in the stage.
    """

    def __init__(self, resources: Sequence[R], handle: Callable[[R, T], None], name: str) -> None:
        self._free: queue.SimpleQueue[R] = queue.SimpleQueue()
        for resource in resources:
            self._free.put(resource)
        self._pending: queue.SimpleQueue[tuple[R, T] | None] = queue.SimpleQueue()
        self._handle = handle
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def acquire(self) -> R:
        """Return a free resource, waiting while the stage holds all of them."""
        return self._free.get()

    def release(self, resource: R) -> None:
        """Give back an acquired resource unused (the frame failed before it had a result)."""
        self._free.put(resource)

    def submit(self, resource: R, item: T) -> None:
        """Queue ``item`` (whose data lives in ``resource``) for ``handle``; returns at once."""
        self._pending.put((resource, item))

    def close(self) -> bool:
        """Hand on what is queued, then stop (bounded wait; True when stopped); call after the producer has."""
        self._pending.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (entry := self._pending.get()) is not None:
            resource, item = entry
            try:
                self._handle(resource, item)
            finally:
                self._free.put(resource)


def qos(reliability: str, depth: int) -> QoSProfile:
    """Keep-last QoS with the given reliability (``best_effort`` is the sensor-data choice)."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, durability=DurabilityPolicy.VOLATILE,
                      reliability=ReliabilityPolicy.BEST_EFFORT if reliability == 'best_effort'
                      else ReliabilityPolicy.RELIABLE)


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """Build the ROS ParameterDescriptor (with range and read-only flag) of one parameter table entry."""
    desc = ParameterDescriptor(description=spec.full_description(), read_only=spec.read_only)
    if spec.choices:
        desc.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.min_value is not None and spec.type is int:
        desc.integer_range = [IntegerRange(from_value=int(spec.min_value), to_value=int(spec.max_value), step=1)]
    elif spec.min_value is not None and spec.type is float:
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec.min_value),
                                                        to_value=float(spec.max_value), step=0.0)]
    if spec.type is float:
        # rclpy refuses an INTEGER for a DOUBLE parameter (-p drop_warn_ratio:=1, a YAML "rate: 10"); the
        # table's own checks take any number and treat it as a float (ParamSpec.coerce), strings they refuse
        desc.dynamic_typing = True
    return desc


class DiagnosticsPublisher:
    """Publish a node's ``Report`` on /diagnostics as one status named ``<full node name>: <what>``.

    The full name keeps two cameras' nodes apart (they differ by namespace); ``hardware_id`` is the
    camera's frame id, the one thing that names the hardware behind the frames.
    """

    def __init__(self, node: Node, what: str) -> None:
        self._node = node
        self.name = f'{node.get_fully_qualified_name()}: {what}'
        self._pub = node.create_publisher(DiagnosticArray, '/diagnostics', 10)

    def publish(self, report: Report, hardware_id: str, extra: Sequence[DiagnosticStatus] = ()) -> None:
        """Publish ``report`` as this node's status, followed by any ``extra`` statuses in the same array."""
        status = DiagnosticStatus(level=bytes([report.level]), name=self.name, message=report.message,
                                  hardware_id=hardware_id,
                                  values=[KeyValue(key=k, value=v) for k, v in report.values])
        diagnostics = DiagnosticArray(status=[status, *extra])
        diagnostics.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(diagnostics)


class QdrNode(Node, ABC):
    """What the three qdr nodes share: their parameter table, rejected-frame accounting and /diagnostics.

    The table is declared with descriptors and checked at start-up (one StartupError lists every
    problem); runtime changes pass the same rules, then the node's ``_check_update`` and
    ``_apply_update``; ``self._values`` always holds the accepted values. A subclass publishes its
    own ``_publish_diagnostics``, which the base calls every ``diagnostics_period`` seconds.
    """

    def __init__(self, table: ParamTable, wording: Wording, what: str, **kwargs: Any) -> None:
        """Declare and check ``table`` (StartupError says what to fix); ``what`` names the diagnostics status."""
        super().__init__(table.node_name, **kwargs)
        self._table = table
        self._values = self._declare_parameters()
        self._stats = FrameStats()
        self._health = Health(self._stats, wording)
        self._diagnostics = DiagnosticsPublisher(self, what)
        self.create_timer(self._values['diagnostics_period'], self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _declare_parameters(self) -> dict[str, Any]:
        """Declare every parameter of the table and return the values; StartupError lists every problem."""
        problems = []
        for spec in self._table.params:
            try:
                self._declare(spec)
            except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
                # Humble keeps (message, name) in args, Jazzy and later "message: name" in one string
                reason = str(exc.args[0] if exc.args else exc).removesuffix(f': {spec.name}')
                problems.append(f'{spec.name}: {reason}')
        values = self._table.known({name: self.get_parameter(name).value for name in self._table.specs
                                    if self.has_parameter(name)})
        problems += validate_all(self._table, values)
        if problems:
            raise StartupError(f"invalid parameters: {'; '.join(problems)}. Fix them in the parameter file "
                               f'(config/{self._table.config}) or with --ros-args -p name:=value')
        return values

    def _declare(self, spec: ParamSpec) -> None:
        if spec.type is not list:
            self.declare_parameter(spec.name, spec.default, descriptor(spec))
            return
        # rclpy cannot type an empty list: declare the (class id) array by type, then give it its default.
        self.declare_parameter(spec.name, Parameter.Type.INTEGER_ARRAY, descriptor(spec))
        if self.get_parameter_or(spec.name).type_ == Parameter.Type.NOT_SET:
            self.set_parameters([Parameter(spec.name, Parameter.Type.INTEGER_ARRAY, spec.default)])

    def _on_set_parameters(self, changed: list[Parameter]) -> SetParametersResult:
        """Refuse a runtime change that breaks the table's rules or the node's; store and apply it otherwise.

        Read-only parameters never get here: their descriptors make rclpy refuse the change with a reason.
        """
        updates = self._table.known({p.name: p.value for p in changed})
        reason = validate_update(self._table, updates, self._values) or self._check_update(updates)
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        self._values = {**self._values, **updates}
        self._apply_update(updates)
        return SetParametersResult(successful=True)

    def _check_update(self, updates: dict[str, Any]) -> str | None:
        """Why the node cannot take ``updates`` (beyond the table's rules), or None; runs before they are stored."""
        return None

    def _apply_update(self, updates: dict[str, Any]) -> None:
        """Act on accepted ``updates``, already in ``self._values``."""

    @abstractmethod
    def _publish_diagnostics(self) -> None:
        """Publish the node's status (``self._diagnostics``); called by the timer and whenever the node wants."""

    def _reject(self, exc: FrameError) -> None:
        """Count a frame refused for what it is (bad header, size, encoding) and log why, throttled."""
        self._stats.rejected(exc.reason_code)
        self.get_logger().warning(f'dropping frame ({exc.reason_code}): {exc.message}',
                                  throttle_duration_sec=LOG_THROTTLE_S)


def to_label_info(header: Header, names: dict[int, str], threshold: float, msgs: Any = None) -> Any:
    """Build a ``vision_msgs/LabelInfo`` (class id -> name, score threshold); ``msgs`` is for tests."""
    info_type, class_type = msgs or (LabelInfo, VisionClass)
    info = info_type()
    info.header = header
    info.class_map = [class_type(class_id=int(k), class_name=v) for k, v in sorted(names.items())]
    info.threshold = float(threshold)
    return info


def delay_ms(node: Node, stamp: Time) -> float | None:
    """End-to-end delay of a frame (now minus its header stamp) in ms; None for unstamped frames."""
    if not (stamp.sec or stamp.nanosec):
        return None
    return (node.get_clock().now().nanoseconds - (stamp.sec * 10**9 + stamp.nanosec)) / 1e6


def image_msg(header: Header, pixels: np.ndarray, encoding: str) -> Image:
    """Wrap an HxW(xC) frame (already in ``encoding``'s layout, 8 or 16 bit) as a ``sensor_msgs/Image``."""
    channels = pixels.shape[2] if pixels.ndim == 3 else 1
    out = Image(header=header, height=pixels.shape[0], width=pixels.shape[1], encoding=encoding)
    out.is_bigendian = 0 if pixels.dtype.itemsize == 1 or LITTLE_ENDIAN else 1
    out.step = pixels.shape[1] * channels * pixels.dtype.itemsize
    # One copy into the message's own array ('B' skips the field check); tobytes() would add a second.
    data = array.array('B')
    data.frombytes(np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder('=')).reshape(-1).view(np.uint8))
    out.data = data
    return out


class ImageBuffer:
    """The data array of the outgoing ``sensor_msgs/Image``, reused frame after frame; engines write into it.

    ``publish`` copies a message into the middleware before it returns, so while one thread
    builds and publishes the frames in turn, one array serves them all and the restored pixels
    go from the engine to DDS without a copy into a message of their own.
    """

    def __init__(self) -> None:
        self._data = array.array('B')
        self._view: np.ndarray | None = None

    def view(self, height: int, width: int, channels: int) -> np.ndarray:
        """Return the HxWxC uint8 array that the next message will carry (new memory only when the size changes)."""
        if self._view is None or self._view.shape != (height, width, channels):
            self._data = array.array('B', bytes(height * width * channels))
            self._view = np.frombuffer(self._data, np.uint8).reshape(height, width, channels)
        return self._view

    def message(self, header: Header, pixels: np.ndarray, encoding: str) -> Image:
        """Wrap ``pixels`` as an Image: this buffer itself when ``pixels`` is its view, else one copy."""
        if pixels is not self._view:
            return image_msg(header, pixels, encoding)
        height, width, channels = pixels.shape
        out = Image(header=header, height=height, width=width, encoding=encoding, is_bigendian=0,
                    step=width * channels)
        out.data = self._data
        return out


STOP_EXCEPTIONS = (KeyboardInterrupt, ExternalShutdownException, RuntimeError)


def is_shutdown(exc: BaseException) -> bool:
    """Whether ``exc`` from a spinning executor means Ctrl-C or shutdown rather than a fault.

    Besides KeyboardInterrupt and ExternalShutdownException, rclpy raises RCLError (a RuntimeError)
    when Ctrl-C shuts the context down while the executor builds its wait set.
    """
    return not isinstance(exc, RuntimeError) or not rclpy.ok()


def run_node(factory: Callable[[], Node], name: str, args: list[str] | None = None,
             spin: Callable[[Node], None] = rclpy.spin) -> int:
    """Run a node; Ctrl-C and external shutdown are a normal exit, start-up errors one line and exit 1."""
    rclpy.init(args=args)
    node = None
    try:
        node = factory()
        spin(node)
    except StartupError as exc:
        print(f'{name}: cannot start: {exc}', file=sys.stderr)
        return 1
    except STOP_EXCEPTIONS as exc:
        if not is_shutdown(exc):
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
