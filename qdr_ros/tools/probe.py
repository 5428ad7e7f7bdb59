"""A node under test and the probe that talks to it: what the benchmark, the soak, the smoke check and the tests share.

``NodeProcess`` starts a qdr node module (or any command) in its own process, as an operator
would (``python -m qdr_ros.nodes.restore_node --ros-args -r __ns:=... -p k:=v -r from:=to``),
with its output in a log file: a pipe nobody reads fills up and stalls the node. ``Probe`` is
this process's side of the graph: a node with publishers, inboxes of received messages keyed by
header stamp, /diagnostics statuses, parameter and service calls. Every wait is bounded and
fails with a ``ProbeError`` that says what it waited for and shows the log of a node that died.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
import os
import struct
import subprocess
import sys
import tempfile
import time
from typing import IO, Any, Callable

import rclpy
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import Image

from qdr_ros.tools.processes import stop_process

Stamp = tuple[int, int]  # header.stamp (sec, nanosec): a frame's identity through the graph
WAIT_S = 30.0
RESEND_S = 1.5  # best-effort inputs lose frames, so an exchange sends again this often
CALL_RESEND_S = 5.0  # a service request without a reply goes again this often (see Probe.call)
WAKE_S = 0.05  # longest sleep in one spin, so resends and a dead node are noticed in time
LOG_TAIL = 30


class ProbeError(RuntimeError):
    """A node under test did not start, died, or did not answer in time; the message says which and why."""


def ros_arguments(namespace: str | None = None, params: Mapping[str, Any] | None = None,
                  remaps: Mapping[str, str] | None = None) -> list[str]:
    """``--ros-args -r __ns:=... -p k:=v ... -r from:=to ...`` (empty when there is nothing to set)."""
    args = ['-r', f'__ns:={namespace}'] if namespace else []
    for name, value in (params or {}).items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ['-p', f'{name}:={text}']
    for source, target in (remaps or {}).items():
        args += ['-r', f'{source}:={target}']
    return ['--ros-args', *args] if args else []


class NodeProcess:
    """One node (or launch) in its own process; its stdout and stderr go to a log kept until ``stop``."""

    def __init__(self, name: str, command: Sequence[str], env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None) -> None:
        self.name = name
        self.command = list(command)
        self._log: IO[bytes] = tempfile.TemporaryFile()
        self._final_log: str | None = None
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=None if env is None else dict(env), cwd=cwd)

    @classmethod
    def start(cls, module: str, *args: str, namespace: str | None = None, params: Mapping[str, Any] | None = None,
              remaps: Mapping[str, str] | None = None, python: str | os.PathLike[str] = sys.executable,
              env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None) -> NodeProcess:
        """Run ``python -m module *args`` with the ROS arguments for ``namespace``, ``params`` and ``remaps``."""
        command = [str(python), '-m', module, *args, *ros_arguments(namespace, params, remaps)]
        return cls(module.rsplit('.', 1)[-1], command, env, cwd)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        """Everything the process printed so far (read without moving the offset it writes at)."""
        if self._final_log is not None:
            return self._final_log
        fd = self._log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors='replace')

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        return '\n'.join(self.log().splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise ``ProbeError`` with the log's tail if the process has exited."""
        if not self.alive:
            raise ProbeError(f'{self.name} exited with {self.process.returncode}; its log:\n{self.log_tail()}')

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT (a normal exit for the qdr nodes), kill if it hangs; returns the exit code, keeps the log."""
        code = stop_process(self.process, timeout)
        if self._final_log is None:
            self._final_log = self.log()
            self._log.close()
        return code

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stamp_key(msg: Any) -> Stamp:
    """``header.stamp`` of a message as (sec, nanosec)."""
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def stamp_of(serialized: bytes) -> Stamp:
    """``header.stamp`` (sec, nanosec) of a CDR-serialized message whose first field is a std_msgs/Header.

    Lets an inbox take frames raw: it needs only their identity, and turning megabytes of pixels into
    a Python message per frame would take CPU from the node being measured.
    """
    little = serialized[1] & 1  # encapsulation id: 0x0001 CDR_LE, 0x0000 CDR_BE
    return struct.unpack_from('<iI' if little else '>iI', serialized, 4)


class Inbox:
    """The messages of one topic by header stamp, with their arrival times (``time.perf_counter``).

    ``raw`` inboxes keep arrival times only (see ``stamp_of``).
    """

    def __init__(self, probe: Probe, topic: str, msg_type: Any, qos: QoSProfile | int, raw: bool) -> None:
        self.topic = topic
        self.messages: dict[Stamp, Any] = {}
        self.arrivals: dict[Stamp, float] = {}
        self._probe, self._type, self._qos, self._raw = probe, msg_type, qos, raw
        self._subscription: Any = None
        self.subscribe()

    def _on_message(self, msg: Any) -> None:
        arrived = time.perf_counter()
        key = stamp_of(msg) if self._raw else stamp_key(msg)
        self.arrivals[key] = arrived
        if not self._raw:
            self.messages[key] = msg

    def subscribe(self) -> None:
        """Subscribe (again): the node under test sees a subscriber."""
        if self._subscription is None:
            self._subscription = self._probe.node.create_subscription(self._type, self.topic, self._on_message,
                                                                      self._qos, raw=self._raw)

    def unsubscribe(self) -> None:
        """Drop the subscription, so the node under test sees nobody listening."""
        if self._subscription is not None:
            self._probe.node.destroy_subscription(self._subscription)
            self._subscription = None

    def clear(self) -> None:
        self.messages.clear()
        self.arrivals.clear()

    def __contains__(self, key: object) -> bool:
        return key in self.arrivals

    def __getitem__(self, key: Stamp) -> Any:
        return self.messages[key]

    def __len__(self) -> int:
        return len(self.arrivals)

    def keys(self) -> set[Stamp]:
        return set(self.arrivals)

    def values(self) -> list[Any]:
        return list(self.messages.values())


class Probe:
    """This process's side of a graph under test: one rclpy node, its executor, and the nodes it watches.

    A watched ``NodeProcess`` that exits makes every wait fail at once with its log, instead of
    after the timeout.
    """

    def __init__(self, name: str, *, context: Context | None = None, namespace: str = '',
                 executor: Executor | None = None, watch: Sequence[NodeProcess] = (), wake_s: float = WAKE_S) -> None:
        self.node = rclpy.create_node(name, namespace=namespace, context=context)
        self._own_executor = executor is None
        self.executor = executor if executor is not None else SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.watched = list(watch)
        self.wake_s = wake_s
        self._publishers: dict[str, Any] = {}
        self._clients: dict[str, Any] = {}  # one per service: its requests reach the server in the order sent
        self.diagnostics: list[DiagnosticArray] | None = None

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Destroy the probe node (and the executor, when the probe made it)."""
        self.executor.remove_node(self.node)
        if self._own_executor:
            self.executor.shutdown()
        self.node.destroy_node()

    # --- topics ---

    def publisher(self, topic: str, msg_type: Any = Image, qos: QoSProfile | int = qos_profile_sensor_data) -> Any:
        """Return the probe's publisher on ``topic`` (made on first use; sensor-data QoS, as a camera's)."""
        if topic not in self._publishers:
            self._publishers[topic] = self.node.create_publisher(msg_type, topic, qos)
        return self._publishers[topic]

    def publish(self, topic: str, msg: Any) -> None:
        """Publish on ``topic`` (a publisher of the message's type is made on first use)."""
        self.publisher(topic, type(msg)).publish(msg)

    def inbox(self, topic: str, msg_type: Any = Image, qos: QoSProfile | int = 10, raw: bool = False) -> Inbox:
        """Subscribe to ``topic`` and collect its messages by stamp."""
        return Inbox(self, topic, msg_type, qos, raw)

    def watch_diagnostics(self) -> None:
        """Start collecting /diagnostics (the ``wait_status`` calls need it)."""
        if self.diagnostics is None:
            self.diagnostics = []
            self.node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 50)

    # --- waiting ---

    def watch(self, *processes: NodeProcess) -> None:
        """Also fail waits at once when one of ``processes`` exits."""
        self.watched += processes

    def check_watched(self) -> None:
        for process in self.watched:
            process.check_alive()

    def spin_once(self, timeout_s: float) -> None:
        """Run at most one callback, waiting up to ``timeout_s`` for one."""
        self.executor.spin_once(timeout_sec=max(0.0, timeout_s))

    def spin_until(self, done: Callable[[], bool], timeout_s: float = WAIT_S, every: Callable[[], None] | None = None,
                   period_s: float = RESEND_S) -> bool:
        """Spin until ``done()`` (True) or ``timeout_s`` (False), calling ``every()`` each ``period_s``.

        Raises ``ProbeError`` as soon as a watched node has exited.
        """
        deadline = time.monotonic() + timeout_s
        last = -period_s
        while not done():
            self.check_watched()
            now = time.monotonic()
            if now > deadline:
                return False
            if every is not None and now - last >= period_s:
                every()
                last = now
            wait = min(self.wake_s, deadline - now, last + period_s - now if every is not None else self.wake_s)
            self.spin_once(wait)
        return True

    def wait(self, done: Callable[[], bool], what: str, timeout_s: float = WAIT_S,
             every: Callable[[], None] | None = None, period_s: float = RESEND_S) -> None:
        """``spin_until`` that raises ``ProbeError`` naming ``what`` when the time runs out."""
        if not self.spin_until(done, timeout_s, every, period_s):
            raise self._timed_out(what, timeout_s)

    def _timed_out(self, what: str, timeout_s: float) -> ProbeError:
        """Build the error of a wait that ran out: what it waited for, then each watched node's state and log."""
        states = '; '.join(f"{p.name} {'running' if p.alive else 'exited'}" for p in self.watched)
        logs = ''.join(f'\n--- {p.name} log:\n{p.log_tail()}' for p in self.watched)
        return ProbeError(f'timed out after {timeout_s:g} s waiting for {what}'
                          + (f' ({states}){logs}' if self.watched else ''))

    def wait_for_graph(self, publishers: Sequence[str] = (), subscribers: Sequence[str] = (),
                       timeout_s: float = WAIT_S) -> None:
        """Wait until each topic in ``publishers`` has a publisher and each in ``subscribers`` a subscriber.

        For a topic the probe publishes on, its own publisher must have matched one (discovery done).
        """
        def count_subscribers(topic: str) -> int:
            own = self._publishers.get(topic)
            return own.get_subscription_count() if own is not None else self.node.count_subscribers(topic)

        def ready() -> bool:
            return (all(self.node.count_publishers(t) > 0 for t in publishers)
                    and all(count_subscribers(t) > 0 for t in subscribers))
        if not self.spin_until(ready, timeout_s):
            seen = ', '.join([f'publishers of {t}: {self.node.count_publishers(t)}' for t in publishers]
                             + [f'subscribers of {t}: {count_subscribers(t)}' for t in subscribers])
            raise self._timed_out(f'the nodes under test to come up ({seen})', timeout_s)

    def exchange(self, topic: str, msg: Any, replies: Inbox, timeout_s: float = WAIT_S, period_s: float = RESEND_S,
                 before: Callable[[], None] | None = None) -> Any:
        """Publish ``msg`` (again every ``period_s``: inputs are best effort) until ``replies`` has its stamp.

        ``before`` runs before each send (e.g. to publish the matching camera_info); returns the reply.
        """
        def send() -> None:
            if before is not None:
                before()
            self.publish(topic, msg)
        key = stamp_key(msg)
        self.wait(lambda: key in replies, f'the reply to {key} on {replies.topic}', timeout_s, send, period_s)
        return replies.messages.get(key)

    # --- diagnostics, parameters, services ---

    def statuses(self, start: int = 0) -> Iterator[dict[str, Any]]:
        """/diagnostics statuses received since array ``start``, newest first, flattened (see ``wait_status``)."""
        for array in reversed((self.diagnostics or [])[start:]):
            for status in array.status:
                level = status.level if isinstance(status.level, int) else status.level[0]
                yield {**{kv.key: kv.value for kv in status.values}, 'level': level, 'message': status.message,
                       'name': status.name, 'hardware_id': status.hardware_id}

    def wait_status(self, accept: Callable[[dict[str, Any]], bool], what: str = 'a /diagnostics status',
                    new: bool = True, timeout_s: float = WAIT_S, every: Callable[[], None] | None = None,
                    period_s: float = RESEND_S) -> dict[str, Any]:
        """Wait for a status that ``accept`` takes (only ones that arrive from now on, unless ``new`` is False).

        A status is its key/value pairs plus ``level``, ``message``, ``name`` and ``hardware_id``.
        """
        self.watch_diagnostics()
        start = len(self.diagnostics) if new else 0
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [s for s in self.statuses(start) if accept(s)][:1]
            return bool(found)
        self.wait(seen, what, timeout_s, every, period_s)
        return found[0]

    def call(self, srv_type: Any, name: str, request: Any, timeout_s: float = WAIT_S) -> Any:
        """Call service ``name`` once it is available; returns the first response.

        The request goes again every ``CALL_RESEND_S`` without a reply: a server whose reply writer has
        not yet matched this client's reader drops the reply (busy CPUs delay that discovery). Only
        idempotent requests (parameters, switches) go through here; a repeat may still be applied after
        this returns, but never after a later call's request: one client per service keeps them in order.
        """
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self.node.create_client(srv_type, name)
        futures: list[Any] = []
        self.wait(client.service_is_ready, f'service {name}', timeout_s)
        self.wait(lambda: any(f.done() for f in futures), f'the reply of {name}', timeout_s,
                  every=lambda: futures.append(client.call_async(request)), period_s=CALL_RESEND_S)
        return next(f for f in futures if f.done()).result()

    def set_parameter(self, node: str, name: str, value: Any, timeout_s: float = WAIT_S) -> Any:
        """Set ``name`` on ``node`` (its full name) through its set_parameters service; the SetParametersResult."""
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self.call(SetParameters, f'{node}/set_parameters', request, timeout_s).results[0]
