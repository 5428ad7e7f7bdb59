"""camera_source and frame_sources: folders and rosbag2 recordings replayed at a rate, degraded like training."""

from __future__ import annotations

from pathlib import Path
import time
from typing import Any

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
import torch

from qdr_ros.camera_source import CameraSource
from qdr_ros.frame_sources import BagSource, Degrader, FolderSource, open_source, resize, sample_photos
from qdr_train.config import load_config
from qdr_train.data.datasets import to_tensor
from qdr_train.data.degradations import degrade, image_seed, sample_params, synthesize
from qdr_train.engine.evaluator import degraded_input
from qdr_ros.image_conversions import tensor_to_rgb_uint8

NS = '/qdr_camera_test'
RNG = np.random.default_rng(0)
FRAMES = [RNG.integers(0, 256, (24, 32, 3), np.uint8) for _ in range(3)]


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

    def header(i: int) -> Any:
        return types['std_msgs/msg/Header'](stamp=types['builtin_interfaces/msg/Time'](sec=i, nanosec=0),
                                            frame_id='cam')
    with Writer(path, version=9) as writer:
        raw = writer.add_connection('/cam/image', 'sensor_msgs/msg/Image', typestore=store)
        packed = writer.add_connection('/cam/compressed', 'sensor_msgs/msg/CompressedImage', typestore=store)
        for i, rgb in enumerate(FRAMES):
            encoding, pixels = ('bgr8', rgb[..., ::-1]) if i == 1 else ('rgb8', rgb)
            padded = np.zeros((rgb.shape[0], rgb.shape[1] * 3 + 4), np.uint8)
            padded[:, :rgb.shape[1] * 3] = pixels.reshape(rgb.shape[0], -1)
            msg = types['sensor_msgs/msg/Image'](header=header(i), height=24, width=32, encoding=encoding,
                                                 is_bigendian=0, step=padded.shape[1], data=padded.reshape(-1))
            writer.write(raw, (i + 1) * 10**9, store.serialize_cdr(msg, 'sensor_msgs/msg/Image'))
        png = np.frombuffer(cv2.imencode('.png', cv2.cvtColor(FRAMES[0], cv2.COLOR_RGB2BGR))[1].tobytes(), np.uint8)
        msg = types['sensor_msgs/msg/CompressedImage'](header=header(0), format='png', data=png)
        writer.write(packed, 10**9, store.serialize_cdr(msg, 'sensor_msgs/msg/CompressedImage'))
    return path


def test_folder_and_bag_sources_read_exact_pixels(folder: Path, bag: Path) -> None:
    assert [f.name for f in FolderSource(folder)] == ['f0.png', 'f1.png', 'f2.png']
    for source in (FolderSource(folder), BagSource(bag, '/cam/image')):
        frames = list(source)
        assert len(frames) == 3
        for frame, expected in zip(frames, FRAMES):
            np.testing.assert_array_equal(frame.rgb, expected)
    compressed = list(open_source(bag, '/cam/compressed'))
    np.testing.assert_array_equal(compressed[0].rgb, FRAMES[0])
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
    np.testing.assert_array_equal(got, degraded_input(clean, 'denoise', {**cfg, 'seed': 3}, 'f0.png', severity))
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
    period = (stamps[-1] - stamps[0]) / (len(stamps) - 1)  # single gaps jitter when busy CPUs delay one tick
    assert period > 0.045  # never faster than 20 Hz on average; slower only when busy CPUs delay the timer
    assert period < 0.5
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


def test_config_file_matches_the_declared_parameters(repo_root: Path) -> None:
    import yaml

    from qdr_ros.camera_source import PARAMS

    data = yaml.safe_load((repo_root / 'config' / 'camera_source.yaml').read_text())
    assert data['/**/camera_source']['ros__parameters'] == {spec.name: spec.default for spec in PARAMS}


@pytest.mark.ros
def test_node_stops_at_the_end_without_loop(folder: Path) -> None:
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
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert node.published == 3
