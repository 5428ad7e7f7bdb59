"""camera_source and frame_sources: folders and rosbag2 recordings replayed at a rate, degraded like training.

camera_source as a driver: reliable image + camera_info with one header, calibration files, optical
frame id, recorded or sim-time stamps and /diagnostics, all checked over DDS with a real probe node.
"""

from __future__ import annotations

import os
from pathlib import Path
import re
import subprocess
import sys
import time
from typing import Any, Callable

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
import torch
import yaml

from qdr_ros.nodes.base_node import StartupError
from qdr_ros.nodes.camera_source import CameraSource
from qdr_ros.core.frame_sources import BagSource, Degrader, FolderSource, open_source, resize, sample_photos
from qdr_train.config import load_config
from qdr_train.data.datasets import to_tensor
from qdr_train.data.degradations import degrade, image_seed, sample_params, synthesize
from qdr_train.evaluation.evaluator import degraded_input
from qdr_ros.core.image_conversions import tensor_to_rgb_uint8

NS = '/qdr_camera_test'
RNG = np.random.default_rng(0)
FRAMES = [RNG.integers(0, 256, (24, 32, 3), np.uint8) for _ in range(3)]
RECORDED = [(1000 + i, 1000 * i) for i in range(3)]  # header stamps (sec, nanosec) of the bag's Image messages


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for i, rgb in enumerate(FRAMES):
        cv2.imwrite(str(tmp_path / f'f{i}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return tmp_path


@pytest.fixture()
def bag(tmp_path: Path) -> Path:
    """A rosbag2 (sqlite3) with the frames as rgb8, bgr8 (row-padded) and rgb8 Images plus one CompressedImage."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    path = tmp_path / 'bag'

    def header(sec: int, nanosec: int) -> Any:
        return types['std_msgs/msg/Header'](stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec),
                                            frame_id='cam')
    with Writer(path, version=9) as writer:
        raw = writer.add_connection('/cam/image', 'sensor_msgs/msg/Image', typestore=store)
        packed = writer.add_connection('/cam/compressed', 'sensor_msgs/msg/CompressedImage', typestore=store)
        for i, rgb in enumerate(FRAMES):
            encoding, pixels = ('bgr8', rgb[..., ::-1]) if i == 1 else ('rgb8', rgb)
            padded = np.zeros((rgb.shape[0], rgb.shape[1] * 3 + 4), np.uint8)
            padded[:, :rgb.shape[1] * 3] = pixels.reshape(rgb.shape[0], -1)
            msg = types['sensor_msgs/msg/Image'](header=header(*RECORDED[i]), height=24, width=32, encoding=encoding,
                                                 is_bigendian=0, step=padded.shape[1], data=padded.reshape(-1))
            writer.write(raw, (i + 1) * 10**9, store.serialize_cdr(msg, 'sensor_msgs/msg/Image'))
        png = np.frombuffer(cv2.imencode('.png', cv2.cvtColor(FRAMES[0], cv2.COLOR_RGB2BGR))[1].tobytes(), np.uint8)
        msg = types['sensor_msgs/msg/CompressedImage'](header=header(0, 0), format='png', data=png)  # no stamp
        writer.write(packed, 10**9, store.serialize_cdr(msg, 'sensor_msgs/msg/CompressedImage'))
    return path


def test_folder_and_bag_sources_read_exact_pixels(folder: Path, bag: Path) -> None:
    assert [f.name for f in FolderSource(folder)] == ['f0.png', 'f1.png', 'f2.png']
    for source in (FolderSource(folder), BagSource(bag, '/cam/image')):
        frames = list(source)
        assert len(frames) == 3
        for frame, expected in zip(frames, FRAMES):
            np.testing.assert_array_equal(frame.rgb, expected)
    assert [f.stamp_ns for f in BagSource(bag, '/cam/image')] == [sec * 10**9 + ns for sec, ns in RECORDED]
    compressed = list(open_source(bag, '/cam/compressed'))
    np.testing.assert_array_equal(compressed[0].rgb, FRAMES[0])
    assert compressed[0].stamp_ns == 10**9  # no header stamp recorded: the bag's log time
    assert [f.stamp_ns for f in FolderSource(folder)] == [None] * 3
    assert open_source(bag).describe().startswith(f'rosbag2 {bag} topic /cam/compressed')  # first image topic
    with pytest.raises(ValueError, match='no image topic'):
        BagSource(bag, '/other')


def test_sample_photos_are_real_photos() -> None:
    names = [f.name for f in sample_photos()]
    assert names == ['bus.jpg', 'zidane.jpg', 'astronaut.png', 'coffee.png', 'chelsea.png']
    assert resize(FRAMES[0], height=12).shape == (12, 16, 3)


@pytest.mark.parametrize('severity', [None, 0.7])
def test_degrader_matches_the_training_degradations(severity: float | None) -> None:
    clean = FRAMES[0]
    cfg = load_config('denoise')
    gen = torch.Generator().manual_seed(image_seed('denoise', 3, 'f0.png'))
    if severity is None:
        expected = tensor_to_rgb_uint8(synthesize(to_tensor(clean), 'denoise', cfg['levels'], 3, 'f0.png'))
    else:
        params = sample_params('denoise', cfg['degradation'], 1, gen, severity)
        expected = tensor_to_rgb_uint8(degrade(to_tensor(clean), 'denoise', params, gen))
    got = Degrader('denoise', severity, seed=3)(clean, 'f0.png')
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, degraded_input(clean, 'denoise', {**cfg, 'eval_seed': 3}, 'f0.png', severity))
    assert np.abs(got.astype(int) - clean).mean() > 5


@pytest.mark.ros
@pytest.mark.parametrize('kind', ['folder', 'bag'])
def test_node_replays_at_rate_with_degradation(kind: str, folder: Path, bag: Path) -> None:
    source = folder if kind == 'folder' else bag
    severity = None if kind == 'folder' else 0.4
    context = Context()
    rclpy.init(context=context)
    names: dict[int, str] = {}
    got: dict[str, dict[int, Image]] = {'image': {}, 'image_clean': {}}
    overrides = [Parameter('source', value=str(source)),
                 Parameter('topic', value='/cam/image' if kind == 'bag' else ''),
                 Parameter('rate', value=20.0), Parameter('loop', value=True), Parameter('max_frames', value=400),
                 Parameter('width', value=16), Parameter('task', value='derain'), Parameter('frame_id', value='cam9'),
                 Parameter('level', value='documented' if severity is None else 'severity'),
                 Parameter('severity', value=0.4)]
    probe = rclpy.create_node('camera_probe', namespace=NS, context=context)
    for topic in got:
        probe.create_subscription(Image, topic, lambda m, t=topic: got[t].__setitem__(stamp(m), m),
                                  qos_profile_sensor_data)
    created = time.time()  # the node clock is system time here; its timer starts after this
    node = CameraSource(listener=lambda header, name: names.__setitem__(stamp(SimpleHeader(header)), name),
                        context=context, namespace=NS, parameter_overrides=overrides)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(probe)
    deadline = time.monotonic() + 30

    def common() -> list[int]:
        return sorted(set(got['image']) & set(got['image_clean']))
    try:
        while len(common()) < 8:  # best effort: frames sent before discovery finished are lost
            assert time.monotonic() < deadline, f'only {len(common())} frame pairs arrived in 30 s'
            executor.spin_once(timeout_sec=0.02)
    finally:
        executor.shutdown()
        node.destroy_node()
        probe.destroy_node()
        rclpy.shutdown(context=context)
    stamps = np.asarray(sorted(names)) / 1e9
    # Never faster than 20 Hz: tick k fires no earlier than (k + 1) periods after the timer was made, however
    # late busy CPUs made the ticks before it (a gap after a late tick is short, so single gaps prove nothing).
    assert stamps[-1] - created >= len(stamps) * 0.05 - 0.002
    assert (stamps[-1] - stamps[0]) / (len(stamps) - 1) < 0.5  # and not stalled
    degrader = Degrader('derain', severity)
    originals = {f.name: f.rgb for f in open_source(source, '/cam/image' if kind == 'bag' else '')}
    for key in common():
        degraded, clean = got['image'][key], got['image_clean'][key]
        assert degraded.header.frame_id == clean.header.frame_id == 'cam9'
        assert (degraded.width, degraded.height, degraded.encoding) == (16, 12, 'rgb8')
        clean_rgb = np.frombuffer(bytes(clean.data), np.uint8).reshape(12, 16, 3)
        np.testing.assert_array_equal(clean_rgb, resize(originals[names[key].split('@pass')[0]], 16))
        np.testing.assert_array_equal(np.frombuffer(bytes(degraded.data), np.uint8).reshape(12, 16, 3),
                                      degrader(clean_rgb, names[key]))


class SimpleHeader:
    """Adapter so ``stamp`` works on a bare header as on a message."""

    def __init__(self, header: Any) -> None:
        self.header = header


def stamp(msg: Any) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def replay_to_the_end(folder: Path) -> tuple[int, Any]:
    """Run camera_source over ``folder`` once (loop false) until it stops; its published count and stats."""
    context = Context()
    rclpy.init(context=context)
    node = CameraSource(context=context, namespace=NS, parameter_overrides=[
        Parameter('source', value=str(folder)), Parameter('rate', value=50.0), Parameter('loop', value=False)])
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + 20
    try:
        while not node.finished.is_set():
            assert time.monotonic() < deadline, 'camera_source did not stop at the end of the folder'
            executor.spin_once(timeout_sec=0.02)
        return node.published, node._stats.snapshot()
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.ros
def test_node_stops_at_the_end_without_loop(folder: Path) -> None:
    assert replay_to_the_end(folder)[0] == 3


@pytest.mark.ros
def test_a_corrupt_file_is_skipped_and_counted_and_the_replay_goes_on(folder: Path) -> None:
    (folder / 'f1.png').write_bytes(b'not a png')  # sorted between two readable frames
    items = list(FolderSource(folder))
    assert [type(i).__name__ for i in items] == ['Frame', 'Unreadable', 'Frame']
    assert items[1].name == 'f1.png' and 'cannot decode' in items[1].reason
    published, stats = replay_to_the_end(folder)
    assert published == 2  # f0 and f2: the file after the corrupt one still came
    assert stats.rejected == {'unreadable': 1}


CALIBRATION = {  # camera_calibration's output format, for the 32x24 frames of FRAMES
    'image_width': 32, 'image_height': 24, 'camera_name': 'test_cam',
    'camera_matrix': {'rows': 3, 'cols': 3, 'data': [40.0, 0, 16.0, 0, 42.0, 12.0, 0, 0, 1]},
    'distortion_model': 'plumb_bob',
    'distortion_coefficients': {'rows': 1, 'cols': 5, 'data': [-0.2, 0.05, 0, 0, 0]},
    'rectification_matrix': {'rows': 3, 'cols': 3, 'data': [1, 0, 0, 0, 1, 0, 0, 0, 1]},
    'projection_matrix': {'rows': 3, 'cols': 4, 'data': [38.0, 0, 16.0, 0, 0, 40.0, 12.0, 0, 0, 0, 1, 0]},
}
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


class Graph:
    """A CameraSource and a probe node on their own context, with everything the probe received."""

    def __init__(self, overrides: list[Parameter], qos: Any = RELIABLE) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.images: list[Image] = []
        self.infos: list[CameraInfo] = []
        self.statuses: list[Any] = []
        self.probe = rclpy.create_node('camera_probe', namespace=NS, context=self.context)
        self.probe.create_subscription(Image, 'image', self.images.append, qos)
        self.probe.create_subscription(CameraInfo, 'camera_info', self.infos.append, qos)
        self.probe.create_subscription(DiagnosticArray, '/diagnostics', lambda m: self.statuses.extend(m.status), 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.probe)
        self.node: CameraSource | None = None
        try:
            self.node = CameraSource(context=self.context, namespace=NS, parameter_overrides=overrides)
        except BaseException:
            self.close()
            raise
        self.executor.add_node(self.node)

    def spin_until(self, done: Callable[[], bool], what: str, seconds: float = 30.0,
                   each: Callable[[], None] | None = None) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            assert time.monotonic() < deadline, f'timed out waiting for {what}'
            if each is not None:
                each()
            self.executor.spin_once(timeout_sec=0.01)

    def spin_for(self, seconds: float) -> None:
        """Spin for ``seconds`` of wall time, whatever arrives."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)

    def status(self, done: Callable[[dict[str, str]], bool]) -> dict[str, str] | None:
        """The newest camera status whose values satisfy ``done``, as a dict with name, level, message, hardware_id."""
        for status in reversed(self.statuses):
            values = {kv.key: kv.value for kv in status.values}
            if status.name == f'{NS}/camera_source: camera' and done(values):
                return {**values, 'hardware_id': status.hardware_id, 'level': status.level[0],
                        'message': status.message}
        return None

    def close(self) -> None:
        self.executor.shutdown()
        if self.node is not None:
            self.node.destroy_node()
        self.probe.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.mark.ros
def test_node_publishes_reliable_frames_with_camera_info_and_diagnostics(folder: Path, tmp_path: Path) -> None:
    calibration = tmp_path / 'ost.yaml'
    calibration.write_text(yaml.safe_dump(CALIBRATION))
    graph = Graph([Parameter('source', value=str(folder)), Parameter('rate', value=20.0), Parameter('width', value=16),
                   Parameter('camera_info_url', value=f'file://{calibration}')])
    try:
        graph.spin_until(lambda: len(graph.images) >= 5 and len(graph.infos) >= 5, 'frames and camera_info')
        graph.spin_until(lambda: graph.status(lambda v: int(v['frames_out']) >= 5) is not None, 'a camera status')
        qos = graph.probe.get_publishers_info_by_topic(f'{NS}/image')[0].qos_profile
    finally:
        graph.close()
    assert qos.reliability == ReliabilityPolicy.RELIABLE  # REP 2003: drivers publish reliable
    infos = {(i.header.stamp.sec, i.header.stamp.nanosec): i for i in graph.infos}
    for image in graph.images:
        info = infos[(image.header.stamp.sec, image.header.stamp.nanosec)]
        assert image.header.frame_id == info.header.frame_id == 'camera_optical_frame'
        assert (info.width, info.height, image.width, image.height) == (16, 12, 16, 12)
    assert list(info.k) == [20.0, 0, 8.0, 0, 21.0, 6.0, 0, 0, 1]  # the 32x24 calibration at half size
    assert list(info.p) == [19.0, 0, 8.0, 0, 0, 20.0, 6.0, 0, 0, 0, 1, 0]
    assert (info.distortion_model, list(info.d)) == ('plumb_bob', [-0.2, 0.05, 0, 0, 0])
    status = graph.status(lambda v: int(v['frames_out']) >= 5)
    assert status['hardware_id'] == 'camera_optical_frame' and status['level'] == 0, status
    # a tick that busy CPUs delay past 1.5 periods counts as dropped and is named in the message
    assert re.fullmatch(r'publishing( \(\d+% of frames dropped, newest frame wins\))?', status['message']), status
    assert float(status['drop_ratio']) <= 0.5
    assert status['calibration'] == f'file://{calibration}' and status['output_topic'] == f'{NS}/image'


@pytest.mark.ros
def test_slow_frames_at_a_high_rate_warn_of_missed_ticks(folder: Path) -> None:
    """Degrading 1280x960 frames takes far longer than 1/100 s: most ticks are missed, diagnostics say so."""
    graph = Graph([Parameter('source', value=str(folder)), Parameter('rate', value=100.0),
                   Parameter('width', value=1280), Parameter('task', value='denoise')])
    try:
        graph.spin_until(lambda: graph.status(lambda v: int(v['frames_out']) >= 3) is not None
                         and graph.status(lambda v: True)['level'] == 1, 'a WARN camera status', seconds=60)
    finally:
        graph.close()
    status = graph.status(lambda v: True)
    assert float(status['drop_ratio']) > 0.5 and 'above drop_warn_ratio 0.5' in status['message'], status
    assert 'timer ticks missed' in status['message'] and int(status['dropped']) > 0
    assert graph.images and all(m.header.frame_id == 'camera_optical_frame' for m in graph.images)


@pytest.mark.ros
def test_recorded_stamps_are_kept(bag: Path) -> None:
    graph = Graph([Parameter('source', value=str(bag)), Parameter('topic', value='/cam/image'),
                   Parameter('rate', value=20.0), Parameter('stamp', value='recorded')])
    try:
        graph.spin_until(lambda: len({m.header.stamp.sec for m in graph.images}) == 3, 'all three recorded stamps')
    finally:
        graph.close()
    recorded = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in graph.images}
    assert recorded == set(RECORDED)
    assert {(m.header.stamp.sec, m.header.stamp.nanosec) for m in graph.infos} <= recorded


@pytest.mark.ros
def test_timer_and_stamps_follow_sim_time(folder: Path) -> None:
    """With use_sim_time, frames come only while /clock runs, at the rate in sim time, stamped with it."""
    graph = Graph([Parameter('source', value=str(folder)), Parameter('rate', value=10.0),
                   Parameter('use_sim_time', value=True)])
    clock_pub = graph.probe.create_publisher(Clock, '/clock', 10)
    sim = [5000.0]

    def advance() -> None:  # 50 ms of sim time per ~10 ms of wall time: sim runs faster than the wall clock
        sim[0] += 0.05
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = int(sim[0]), int(round(sim[0] % 1 * 1e9)) % 10**9
        clock_pub.publish(msg)
    try:
        graph.spin_for(1.0)  # no /clock yet: sim time stands still, so does the camera
        assert not graph.images, 'frames published before /clock started'
        graph.spin_until(lambda: len(graph.images) >= 10, '10 frames under sim time', each=advance)
        graph.spin_for(0.75)  # /clock stopped: the messages still queued are taken first
        running = graph.node.published
        graph.spin_for(0.75)  # then sim time stands still, and so does the camera
        paused = graph.node.published - running
    finally:
        graph.close()
    nanos = np.array([m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in graph.images])
    assert np.all((nanos >= 5000 * 10**9) & (nanos <= round(sim[0] * 1e9))), nanos
    # 1/rate (0.1 s) of sim time between frames, in the 0.05 s steps /clock moves by: each frame takes
    # a few callbacks, each a step, so 0.15-0.3 s (a wall-clock timer would see about 0.5 s); whole
    # nanoseconds, as stamps near 5000 s do not hold 0.2 exactly as a float
    spacing = np.median(np.diff(nanos)) / 1e9
    assert 0.05 <= spacing <= 0.4, nanos
    assert paused == 0, f'{paused} frames while /clock was paused: the timer ran on wall time'


def test_bad_driver_parameters_stop_start_up_with_a_reason(folder: Path, tmp_path: Path) -> None:
    broken = dict(CALIBRATION, projection_matrix={'rows': 3, 'cols': 3, 'data': [0] * 9})
    calibration = tmp_path / 'broken.yaml'
    calibration.write_text(yaml.safe_dump(broken))
    context = Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(StartupError, match=f'{calibration}: projection_matrix must be 3x4'):
            CameraSource(context=context, parameter_overrides=[
                Parameter('source', value=str(folder)), Parameter('camera_info_url', value=str(calibration))])
        with pytest.raises(StartupError, match=r'invalid parameters: rate: .*out of range.*-1\.0\. Fix'):
            CameraSource(context=context, parameter_overrides=[
                Parameter('source', value=str(folder)), Parameter('rate', value=-1.0)])
        with pytest.raises(StartupError, match='stamp:=recorded needs a rosbag2 source'):
            CameraSource(context=context, parameter_overrides=[
                Parameter('source', value=str(folder)), Parameter('stamp', value='recorded')])
    finally:
        rclpy.shutdown(context=context)


def test_float_parameters_take_whole_numbers(folder: Path) -> None:
    """-p drop_warn_ratio:=1 or a YAML 'rate: 10' are numbers to an operator; a string is still refused."""
    context = Context()
    rclpy.init(context=context)
    try:
        node = CameraSource(context=context, parameter_overrides=[
            Parameter('source', value=str(folder)), Parameter('rate', value=10), Parameter('drop_warn_ratio', value=1)])
        try:
            assert [r.successful for r in node.set_parameters([Parameter('drop_warn_ratio', value=0)])] == [True]
            refused = node.set_parameters([Parameter('drop_warn_ratio', value='half')])[0]
            assert not refused.successful and 'drop_warn_ratio must be a float' in refused.reason
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


# camera_source's main() in a Python where the named modules cannot be imported, as in the runtime install.
WITHOUT = ('import sys\nfor name in sys.argv[1].split(","): sys.modules[name] = None\n'
           'from qdr_ros.nodes.camera_source import main\nsys.exit(main(sys.argv[2:]))')


@pytest.mark.ros
@pytest.mark.parametrize('missing', ['torch', 'qdr_train,torch'])
def test_task_without_the_training_install_says_how_to_get_it(folder: Path, missing: str) -> None:
    def run(*params: str) -> subprocess.CompletedProcess:
        args = [arg for param in params for arg in ('-p', param)]
        return subprocess.run([sys.executable, '-c', WITHOUT, missing, '--ros-args', *args], env=os.environ,
                              capture_output=True, text=True, timeout=120)
    degrading = run(f'source:={folder}', 'task:=denoise')
    assert degrading.returncode == 1, degrading.stderr
    assert 'task needs the training install: pip install -r requirements/train.txt' in degrading.stderr
    assert missing.split(',')[0] in degrading.stderr and 'Traceback' not in degrading.stderr
    plain = run(f'source:={folder}', 'loop:=false', 'rate:=50.0')  # the runtime path needs neither
    assert plain.returncode == 0 and 'published 3 frames' in plain.stderr + plain.stdout, plain.stderr
