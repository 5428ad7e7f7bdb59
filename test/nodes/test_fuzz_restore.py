"""Fuzz restore_node with a table of malformed and unusual frames (issue #8).

One raw-input node and one compressed-input node, each in its own process. Between every bad frame a
good frame must come back restored with its header; at the end the /diagnostics counters must add
up (every frame received is published, dropped, skipped or rejected by reason) and the node must
still run. Each rejection's message must tell the operator what to fix.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
import re
from typing import Callable

import cv2
import numpy as np
import pytest
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CompressedImage, Image

from qdr_ros.core.image_conversions import FrameError, decode_compressed, image_view
from support.frames import make_image, offline
from qdr_ros.tools.probe import Inbox, NodeProcess, Probe, stamp_key

pytestmark = pytest.mark.ros

RAW_NS = '/fuzz_raw'
JPEG_NS = '/fuzz_jpeg'
# What an operator can act on: each rejection message names one of these remedies.
ACTIONABLE = re.compile(r'fix the camera driver|camera driver must set|publish (rgb|mono)|debayer|convert YUV|'
                        r'lower the camera resolution|header is (corrupt|wrong)|truncated|camera driver sent|'
                        r"check the camera's compressed stream|stream is corrupt|subscribe to a colour")


@dataclass(frozen=True)
class Case:
    """One fuzz input: a name, how to build the message, and the reject reason (None: must be restored)."""

    name: str
    build: Callable[[], Image | CompressedImage]
    reason: str | None


def _rgb(h: int = 12, w: int = 16) -> np.ndarray:
    return np.random.default_rng(h * 1000 + w).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _edit(msg: Image, **fields: object) -> Image:
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def _stamped(msg: Image, sec: int, nanosec: int) -> Image:
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    return msg


def _encoded(encoding: str, channels: int = 1, itemsize: int = 1) -> Callable[[], Image]:
    return lambda: make_image(np.zeros((8, 8, channels * itemsize), np.uint8), encoding)


RAW_CASES = [
    Case('short data', lambda: _edit(make_image(_rgb(), 'rgb8'), data=bytes(100)), 'bad_data_size'),
    Case('long data', lambda: _edit(make_image(_rgb(), 'rgb8'), data=bytes(12 * 16 * 3 + 7)), 'bad_data_size'),
    Case('zero width', lambda: _edit(make_image(_rgb(), 'rgb8'), width=0), 'empty_frame'),
    Case('zero height', lambda: _edit(make_image(_rgb(), 'rgb8'), height=0), 'empty_frame'),
    Case('100000x100000 with tiny data', lambda: _edit(make_image(_rgb(), 'rgb8'), height=100_000, width=100_000),
         'too_large'),
    Case('uint32 max sizes', lambda: _edit(make_image(_rgb(), 'rgb8'), height=2**32 - 1, width=2**32 - 1,
                                           step=2**32 - 1), 'too_large'),
    Case('step smaller than a row', lambda: _edit(make_image(_rgb(), 'rgb8'), step=10), 'bad_step'),
    Case('step larger than the data', lambda: _edit(make_image(_rgb(), 'rgb8'), step=16 * 3 + 9), 'bad_data_size'),
    Case('huge step', lambda: _edit(make_image(_rgb(), 'rgb8'), step=2**32 - 1), 'bad_data_size'),
    Case('mono16 with an odd byte count', lambda: _edit(make_image(np.zeros((4, 5, 2), np.uint8), 'mono16'),
                                                        data=bytes(39)), 'bad_data_size'),
    *(Case(f'unsupported {enc}', _encoded(enc, ch, size), 'unsupported_encoding') for enc, ch, size in [
        ('32FC1', 1, 4), ('32FC3', 3, 4), ('64FC1', 1, 8), ('8UC3', 3, 1), ('8UC1', 1, 1), ('16UC1', 1, 2),
        ('16SC1', 1, 2), ('8SC1', 1, 1), ('32SC1', 1, 4), ('bayer_rggb8', 1, 1), ('bayer_grbg16', 1, 2),
        ('yuv422', 2, 1), ('yuv422_yuy2', 2, 1), ('uyvy', 2, 1), ('nv21', 1, 1)]),
    *(Case(f'unknown {enc!r}', _encoded(enc), 'unknown_encoding')
      for enc in ['', 'RGB8', 'rgb9', '\x00', 'mono8 ', 'jpeg', 'rgb8; DROP TABLE']),
    Case('odd size 7x5 rgb8', lambda: make_image(_rgb(5, 7), 'rgb8'), None),
    Case('odd size 13x3 bgr8 with row padding', lambda: make_image(_rgb(3, 13), 'bgr8', pad=3), None),
    Case('1x1 mono8', lambda: make_image(np.full((1, 1, 1), 200, np.uint8), 'mono8'), None),
    Case('1xN rgba8', lambda: make_image(np.full((1, 9, 4), 99, np.uint8), 'rgba8'), None),
    Case('big-endian flag on rgb8', lambda: _edit(make_image(_rgb(), 'rgb8'), is_bigendian=1), None),
    Case('mono16 little-endian', lambda: make_image(
        np.random.default_rng(1).integers(0, 65536, (9, 11, 1), dtype=np.uint16), 'mono16'), None),
    Case('rgb16 big-endian', lambda: _edit(make_image(np.random.default_rng(2).integers(
        0, 65536, (6, 10, 3), dtype=np.uint16).astype('>u2'), 'rgb16'), is_bigendian=1), None),
    Case('stamp far in the future', lambda: _stamped(make_image(_rgb(), 'rgb8'), 2**31 - 1, 999_999_999), None),
    Case('stamp far in the past', lambda: _stamped(make_image(_rgb(), 'rgb8'), 1, 1), None),
    Case('stamp zero', lambda: _stamped(make_image(_rgb(), 'rgb8'), 0, 0), None),
]


def _jpeg(pixels: np.ndarray) -> bytes:
    return cv2.imencode('.jpg', pixels)[1].tobytes()


def _compressed(data: bytes, fmt: str = 'jpeg', sec: int | None = None) -> CompressedImage:
    stamp = make_image(np.zeros((1, 1, 3), np.uint8), 'rgb8').header.stamp
    msg = CompressedImage(format=fmt, data=data)
    msg.header.stamp = stamp
    if sec is not None:
        msg.header.stamp.sec = sec
    msg.header.frame_id = 'qdr_cam'
    return msg


COMPRESSED_CASES = [
    Case('empty payload', lambda: _compressed(b''), 'empty_compressed'),
    Case('garbage bytes', lambda: _compressed(b'\xff\xd8 not really a jpeg' * 4), 'decode_failed'),
    Case('random bytes', lambda: _compressed(np.random.default_rng(4).bytes(500)), 'decode_failed'),
    Case('truncated JPEG', lambda: _compressed(_jpeg(_rgb(40, 56))[:1000]), 'decode_failed'),
    Case('JPEG header only', lambda: _compressed(_jpeg(_rgb(40, 56))[:20]), 'decode_failed'),
    Case('compressedDepth stream', lambda: _compressed(_jpeg(_rgb()), 'png compressedDepth'), 'unsupported_format'),
    Case('odd-size PNG', lambda: _compressed(cv2.imencode('.png', _rgb(7, 9))[1].tobytes(), 'png'), None),
    Case('PNG labelled jpeg', lambda: _compressed(cv2.imencode('.png', _rgb())[1].tobytes(), 'jpeg'), None),
    Case('JPEG stamped far in the future', lambda: _compressed(_jpeg(_rgb()), sec=2**31 - 1), None),
    Case('JPEG stamped in the past', lambda: _compressed(_jpeg(_rgb()), sec=1), None),
]


def _start(models: dict[str, Path], ns: str, **params: object) -> NodeProcess:  # noqa: F811 (fixture argument)
    return NodeProcess.start('qdr_ros.nodes.restore_node', namespace=ns, params={
        'model': models['int8'], 'warmup_width': 32, 'warmup_height': 32, 'diagnostics_period': 0.2, 'threads': 1,
        **params}, remaps={'image_restored': 'restored', 'image_restored/camera_info': 'restored/camera_info'})


@pytest.fixture(scope='module')
def executor(context: Context) -> Iterator[SingleThreadedExecutor]:  # noqa: F811 (fixture argument)
    ex = SingleThreadedExecutor(context=context)
    yield ex
    ex.shutdown()


@dataclass
class Graph:
    """One fuzzed node: the probe, its input topics and the restored frames by stamp."""

    probe: Probe
    ns: str
    restored: Inbox

    def input_of(self, msg: Image | CompressedImage) -> str:
        return f'{self.ns}/image/compressed' if isinstance(msg, CompressedImage) else f'{self.ns}/image'


@contextmanager
def _probe(context: Context, executor: SingleThreadedExecutor, ns: str,  # noqa: F811
           process: NodeProcess) -> Iterator[Graph]:
    """A probe node on ``ns`` once the node there is up; removed again afterwards."""
    with Probe(f'qdr_fuzz_probe_{ns.strip("/")}', context=context, executor=executor, watch=[process]) as probe:
        restored = probe.inbox(f'{ns}/restored')
        probe.wait_for_graph(publishers=[restored.topic], timeout_s=120)  # node start included
        yield Graph(probe, ns, restored)


def _good(index: int) -> Image:
    return make_image(np.full((8, 8, 3), index % 256, np.uint8), 'rgb8', frame_id=f'good_{index}')


def _check_restored(graph: Graph, msg: Image | CompressedImage, model: Path) -> None:
    out = graph.probe.exchange(graph.input_of(msg), msg, graph.restored)
    assert (out.header.frame_id, stamp_key(out)) == (msg.header.frame_id, stamp_key(msg)), 'header not kept'
    expected = msg
    if isinstance(msg, CompressedImage):
        expected = make_image(decode_compressed(msg.data, msg.format)[0], 'bgr8')
    assert (out.width, out.height, out.encoding) == (expected.width, expected.height, expected.encoding)
    assert bytes(out.data) == offline(model, expected), 'node output != offline inference'


def _status(graph: Graph, input_topic: str, done: Callable[[dict[str, str]], bool],
            every: Callable[[], None] | None = None) -> dict[str, str]:
    return graph.probe.wait_status(lambda v: v.get('input_topic') == input_topic and done(v),
                                   f'diagnostics of the node on {input_topic}', every=every, period_s=1.0)


def _run_table(graph: Graph, cases: list[Case], input_topic: str, model: Path) -> dict[str, str]:
    """Send every case with a good frame after it; return the final balanced /diagnostics values."""
    compressed = input_topic.endswith('compressed')
    counted: dict[str, int] = {}
    frames_out = -1
    for index, case in enumerate(cases):
        if case.reason is None:
            _check_restored(graph, case.build(), model)
        else:
            before = counted.get(case.reason, 0)
            msg = case.build()
            _status(graph, input_topic, lambda v: int(v.get(f'rejected.{case.reason}', 0)) > before,
                    every=lambda: graph.probe.publish(input_topic, msg))
        good = _compressed(_jpeg(np.full((8, 8, 3), index, np.uint8))) if compressed else _good(index)
        _check_restored(graph, good, model)
        # counted by a status made after the good frame came out (frames_out grew): every copy of the bad
        # frame went before it, so a late copy is never taken for the next case's rejection
        status = _status(graph, input_topic, lambda v: int(v['frames_out']) > frames_out)
        frames_out = int(status['frames_out'])
        counted = {k[len('rejected.'):]: int(v) for k, v in status.items() if k.startswith('rejected.')}

    def balanced(v: dict[str, str]) -> bool:
        handled = sum(int(v[k]) for k in ('frames_out', 'dropped', 'skipped', 'rejected', 'backend_errors'))
        return int(v['frames_in']) == handled
    status = _status(graph, input_topic, balanced)
    by_reason = {k[len('rejected.'):]: int(v) for k, v in status.items() if k.startswith('rejected.')}
    assert sum(by_reason.values()) == int(status['rejected'])
    assert set(by_reason) == set(counted) == {c.reason for c in cases if c.reason}
    assert all(by_reason[r] >= n for r, n in counted.items())
    assert int(status['backend_errors']) == 0
    return status


def _check_log(process: NodeProcess) -> None:
    """Stop the node; every logged rejection must name its reason and an operator action."""
    assert process.alive, 'the node died during fuzzing:\n' + process.log()
    assert process.stop() == 0
    log = process.log()
    assert 'Traceback' not in log, log
    drops = [line for line in log.splitlines() if re.search(r'dropping frame \([a-z_]+\): ', line)]
    assert drops, log
    for line in drops:
        assert ACTIONABLE.search(line), line


def test_raw_fuzz_table(context: Context, executor: SingleThreadedExecutor,  # noqa: F811
                        models: dict[str, Path]) -> None:  # noqa: F811
    assert len(RAW_CASES) + len(COMPRESSED_CASES) >= 25
    with _start(models, RAW_NS) as process:
        with _probe(context, executor, RAW_NS, process) as graph:
            _check_restored(graph, _good(-1), models['int8'])
            status = _run_table(graph, RAW_CASES, f'{RAW_NS}/image', models['int8'])
            assert int(status['rejected']) >= sum(c.reason is not None for c in RAW_CASES)
        _check_log(process)


def test_compressed_fuzz_table(context: Context, executor: SingleThreadedExecutor,  # noqa: F811
                               models: dict[str, Path]) -> None:  # noqa: F811
    with _start(models, JPEG_NS, input_compressed=True) as process:
        with _probe(context, executor, JPEG_NS, process) as graph:
            _check_restored(graph, _compressed(_jpeg(_rgb())), models['int8'])
            _run_table(graph, COMPRESSED_CASES, f'{JPEG_NS}/image/compressed', models['int8'])
        _check_log(process)


@pytest.mark.parametrize('case', [c for c in RAW_CASES + COMPRESSED_CASES if c.reason], ids=lambda c: c.name)
def test_every_rejection_tells_the_operator_what_to_fix(case: Case) -> None:
    msg = case.build()
    with pytest.raises(FrameError) as info:
        if isinstance(msg, CompressedImage):
            decode_compressed(msg.data, msg.format)
        else:
            image_view(msg.data, msg.height, msg.width, msg.encoding, msg.step, msg.is_bigendian)
    assert info.value.reason_code == case.reason
    assert ACTIONABLE.search(info.value.message), info.value.message
