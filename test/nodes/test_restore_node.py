"""restore_node and qdr-run end to end: real processes over Fast DDS, real ONNX Runtime, tiny real EFM models.

One restore_node process serves the module's tests in file order (frames, bad frames, parameters,
model swap, bypass, diagnostics, SIGINT); qdr-run and the failing start-up get their own processes.
Every wait is bounded; frames are resent because the input QoS is best effort.
"""

from __future__ import annotations

from collections.abc import Iterator
import importlib.util
import itertools
from pathlib import Path
import subprocess
import sys
import time
from typing import Any, Callable

import cv2
import numpy as np
import pytest
from rcl_interfaces.srv import GetParameters
from rclpy.context import Context
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import SetBool
import yaml

from support.auto_model import AUTO_LABELS, auto_model_reference
from support.frames import make_image, offline
from qdr_ros.nodes import params
from qdr_ros.inference import create_backend
from qdr_ros.nodes.diagnostics import ERROR, OK, WARN, FrameStats, assess
from qdr_ros.core.image_conversions import decode_compressed, downscale_to_fit, from_model_output, to_model_input
from qdr_ros.nodes.base_node import Job, Mailbox
from qdr_ros.tools.probe import Inbox, NodeProcess, Probe, stamp_key

pytestmark = pytest.mark.ros

NS = '/qdr_test'
NODE = '/restore_node'
IMAGE, COMPRESSED, INFO, RESTORED = f'{NS}/image', f'{NS}/image/compressed', f'{NS}/camera_info', f'{NS}/restored'


@pytest.fixture(scope='module')
def node_process(models: dict[str, Path]) -> Iterator[NodeProcess]:
    """restore_node in its own process, as an operator would start it."""
    with NodeProcess.start('qdr_ros.nodes.restore_node', params={
            'model': models['int8'], 'warmup_width': 64, 'warmup_height': 48, 'diagnostics_period': 0.5}, remaps={
            'image': IMAGE, 'camera_info': INFO, 'image_restored': RESTORED,
            'image_restored/camera_info': f'{RESTORED}/camera_info'}) as node:
        yield node


@pytest.fixture(scope='module')
def probe(context: Context, node_process: NodeProcess) -> Iterator[Probe]:
    with Probe('qdr_restore_probe', context=context, watch=[node_process]) as probe:
        yield probe


@pytest.fixture(scope='module')
def infos(probe: Probe) -> Inbox:
    return probe.inbox(f'{RESTORED}/camera_info', CameraInfo)


@pytest.fixture(scope='module')
def restored(probe: Probe, infos: Inbox) -> Inbox:
    """The restored frames by stamp, once restore_node publishes them (both inboxes exist before it is up)."""
    inbox = probe.inbox(RESTORED)
    probe.wait_for_graph(publishers=[RESTORED, infos.topic], timeout_s=120)  # node start included
    return inbox


def status(probe: Probe, done: Callable[[dict[str, Any]], bool], input_topic: str = IMAGE,
           **wait: Any) -> dict[str, Any]:
    """Wait for a new /diagnostics status of the node reading ``input_topic`` that satisfies ``done``."""
    return probe.wait_status(lambda v: v.get('input_topic') == input_topic and done(v),
                             f'diagnostics of the node on {input_topic}', **wait)


def frames() -> list[tuple[str, np.ndarray, int]]:
    rng = np.random.default_rng(3)
    return [
        ('rgb8', rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), 0),
        ('bgr8', rng.integers(0, 256, (53, 37, 3), dtype=np.uint8), 5),
        ('mono8', rng.integers(0, 256, (40, 40, 1), dtype=np.uint8), 0),
        ('rgba8', rng.integers(0, 256, (24, 16, 4), dtype=np.uint8), 0),
        ('bgr16', rng.integers(0, 65536, (12, 20, 3), dtype=np.uint16), 4),
    ]


def test_restored_frames_match_offline_inference(probe: Probe, restored: Inbox, infos: Inbox,
                                                 models: dict[str, Path]) -> None:
    info = CameraInfo(width=64, height=48, distortion_model='plumb_bob')
    info.k[0] = 321.0
    for encoding, pixels, pad in frames():
        msg = make_image(pixels, encoding, pad)
        info.header = msg.header
        before = (lambda: probe.publish(INFO, info)) if encoding == 'rgb8' else None
        out = probe.exchange(IMAGE, msg, restored, before=before)
        h, w = pixels.shape[:2]
        assert (out.header.frame_id, stamp_key(out)) == (msg.header.frame_id, stamp_key(msg))
        assert (out.height, out.width, out.encoding) == (h, w, encoding)
        assert out.step == w * pixels.shape[2] * pixels.itemsize
        assert bytes(out.data) == offline(models['int8'], msg), f'{encoding} {w}x{h}: node != offline inference'
        assert bytes(out.data) != pixels.tobytes(), 'the frame came back unrestored'
    rgb = frames()[0][1]

    def resend() -> None:  # best effort: a camera_info lost on the way comes with the next frame
        again = make_image(rgb, 'rgb8')
        info.header = again.header
        probe.publish(INFO, info)
        probe.publish(IMAGE, again)
    probe.wait(lambda: len(infos) > 0, 'the restored camera_info', every=resend)
    restored_info = infos.values()[0]
    assert restored_info.k[0] == 321.0 and restored_info.header.frame_id == 'qdr_cam'


def test_bad_frames_are_counted_and_good_frames_still_served(probe: Probe, restored: Inbox,
                                                             models: dict[str, Path]) -> None:
    good = np.full((16, 16, 3), 90, np.uint8)
    bad = {
        'bad_data_size': make_image(good, 'rgb8'),
        'empty_frame': make_image(good, 'rgb8'),
        'unsupported_encoding': make_image(np.zeros((16, 16, 4), np.uint8), '32FC1'),
        'bad_step': make_image(good, 'rgb8'),
        'too_large': make_image(good, 'rgb8'),
    }
    bad['bad_data_size'].data = bytes(100)
    bad['empty_frame'].height = bad['empty_frame'].width = 0
    bad['bad_step'].step = 10
    bad['too_large'].height = bad['too_large'].width = 100_000

    cycle = itertools.cycle(bad.values())  # one at a time: the depth-1 input keeps only the newest

    def send_bad() -> None:
        probe.publish(IMAGE, next(cycle))
    seen = status(probe, lambda v: all(f'rejected.{r}' in v for r in bad), every=send_bad, period_s=0.1)
    assert int(seen['rejected']) >= len(bad)
    assert seen['level'] in (WARN, OK)
    msg = make_image(good, 'rgb8')
    assert bytes(probe.exchange(IMAGE, msg, restored).data) == offline(models['int8'], msg)


def test_bad_parameter_updates_are_rejected_with_a_reason(probe: Probe) -> None:
    result = probe.set_parameter(NODE, 'backend', 'cuda')
    assert not result.successful and 'backend must be one of' in result.reason
    result = probe.set_parameter(NODE, 'large_frames', 'crop')
    assert not result.successful and 'reject, downscale' in result.reason
    result = probe.set_parameter(NODE, 'threads', -3)
    assert not result.successful and result.reason
    result = probe.set_parameter(NODE, 'input_depth', 5)
    assert not result.successful and result.reason
    assert probe.set_parameter(NODE, 'input_timeout', 3.0).successful


def serving(probe: Probe, model: Path) -> dict[str, Any]:
    """Wait until diagnostics say ``model`` (or its CPU twin) serves: swaps happen on the loader thread."""
    names = {str(model), str(model.with_name(f'{model.stem}_cpu{model.suffix}'))}
    return status(probe, lambda v: v['model'] in names and v['model_load'] == 'ready')


def test_runtime_model_swap(probe: Probe, restored: Inbox, models: dict[str, Path], auto_model: Path) -> None:
    """Swaps load off the executor (the call returns, the old model serves meanwhile); bad files are refused."""
    pixels = np.random.default_rng(5).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    try:
        assert probe.set_parameter(NODE, 'model', str(models['fp32'])).successful
        serving(probe, models['fp32'])
        msg = make_image(pixels, 'rgb8')
        assert bytes(probe.exchange(IMAGE, msg, restored).data) == offline(models['fp32'], msg)

        result = probe.set_parameter(NODE, 'model', str(models['corrupt']))
        assert not result.successful
        assert 'corrupt.onnx' in result.reason and 'still serving' in result.reason
        msg = make_image(pixels, 'rgb8')
        out = probe.exchange(IMAGE, msg, restored)
        assert bytes(out.data) == offline(models['fp32'], msg), 'the old model stopped serving'

        # three outputs: restored, condition, gate
        assert probe.set_parameter(NODE, 'model', str(auto_model)).successful
        ready = serving(probe, auto_model)
        assert ready['outputs'] == "['restored', 'condition', 'gate']"
        assert ready['condition_labels'] == str(list(AUTO_LABELS))
        msg = make_image(pixels, 'bgr8')
        out = np.frombuffer(bytes(probe.exchange(IMAGE, msg, restored).data), np.uint8).astype(int)
        assert np.abs(out - np.frombuffer(offline(auto_model, msg), np.uint8)).max() <= 1  # uint8 vs float path
        stamp = f'{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}'
        seen = probe.wait_status(lambda v: v['name'].endswith(': condition') and v['frame_stamp'] == stamp,
                                 'the condition status in /diagnostics')
        expected = auto_model_reference(to_model_input(pixels[..., ::-1], 'rgb8', stride=8)[0])['condition'][0]
        for label, probability in zip(AUTO_LABELS, expected):  # the first frame of a new model: not smoothed yet
            assert float(seen[label]) == pytest.approx(float(probability), abs=2e-3), (label, seen)
        present = [label for label, p in zip(AUTO_LABELS, expected) if label != 'clean' and p >= 0.6] or ['clean']
        assert seen['present'] == ','.join(present) and seen['hardware_id'] == 'qdr_cam'
        assert 0.0 <= float(seen['gate_open']) <= 1.0
    finally:
        assert probe.set_parameter(NODE, 'model', str(models['int8'])).successful
        serving(probe, models['int8'])


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None, reason='TensorRT is installed: it would load')
def test_a_model_change_that_fails_to_load_keeps_the_old_model(probe: Probe, restored: Inbox,
                                                               models: dict[str, Path]) -> None:
    """backend:=tensorrt cannot load here: accepted at once, fails on the loader, reported and set back."""
    result = probe.set_parameter(NODE, 'backend', 'tensorrt')
    assert result.successful, result.reason
    failed = status(probe, lambda v: v['model_load'].startswith('failed'))
    assert 'TensorRT is not installed' in failed['model_load'] and failed['backend'] == 'onnxruntime'
    request = GetParameters.Request(names=['backend'])
    probe.wait(lambda: probe.call(GetParameters, f'{NODE}/get_parameters', request).values[0]
               .string_value == 'auto', 'backend to be set back to auto')
    msg = make_image(np.full((16, 24, 3), 40, np.uint8), 'rgb8')
    assert bytes(probe.exchange(IMAGE, msg, restored).data) == offline(models['int8'], msg)


def test_large_frames_downscale_or_reject(probe: Probe, restored: Inbox, models: dict[str, Path]) -> None:
    pixels = np.random.default_rng(7).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    try:
        assert probe.set_parameter(NODE, 'max_pixels', 192).successful  # 32x24 = 768 px: restored at 16x12
        msg = make_image(pixels, 'rgb8')
        out = probe.exchange(IMAGE, msg, restored)
        assert (out.width, out.height, out.encoding) == (32, 24, 'rgb8'), 'downscale must resize back to input size'
        backend = create_backend(models['int8'], 'onnxruntime', threads=1)
        small, scale = downscale_to_fit(pixels, 192)
        x, (h, w) = to_model_input(small, 'rgb8', stride=backend.stride)
        expected = cv2.resize(from_model_output(backend.infer(x), h, w, 'rgb8'), (32, 24),
                              interpolation=cv2.INTER_LINEAR)
        assert (small.shape[:2], bytes(out.data)) == ((12, 16), expected.tobytes())

        assert probe.set_parameter(NODE, 'large_frames', 'reject').successful
        status(probe, lambda v: int(v.get('rejected.too_large', 0)) >= 2,
               every=lambda: probe.publish(IMAGE, make_image(pixels, 'rgb8')))
    finally:
        assert probe.set_parameter(NODE, 'large_frames', 'downscale').successful
        assert probe.set_parameter(NODE, 'max_pixels', params.RESTORE_PARAMS.defaults['max_pixels']).successful


def test_frames_are_skipped_without_subscribers(probe: Probe, restored: Inbox) -> None:
    restored.unsubscribe()
    try:
        before = int(status(probe, lambda v: True)['skipped'])
        status(probe, lambda v: int(v['skipped']) > before,
               every=lambda: probe.publish(IMAGE, make_image(np.zeros((8, 8, 3), np.uint8), 'rgb8')))
    finally:
        restored.subscribe()


def test_bypass_by_service_and_parameter(probe: Probe, restored: Inbox, models: dict[str, Path]) -> None:
    pixels = np.random.default_rng(6).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    reply = probe.call(SetBool, f'{NODE}/set_bypass', SetBool.Request(data=True))
    assert reply.success, reply.message
    msg = make_image(pixels, 'bgr8', pad=3)
    out = probe.exchange(IMAGE, msg, restored)
    assert (bytes(out.data), out.step, out.encoding, out.header.frame_id) == \
        (bytes(msg.data), msg.step, 'bgr8', 'qdr_cam')
    assert probe.call(SetBool, f'{NODE}/set_bypass', SetBool.Request(data=False)).success
    msg = make_image(pixels, 'bgr8')
    assert bytes(probe.exchange(IMAGE, msg, restored).data) == offline(models['int8'], msg)

    assert probe.set_parameter(NODE, 'bypass', True).successful
    msg = make_image(pixels, 'rgb8')
    assert bytes(probe.exchange(IMAGE, msg, restored).data) == bytes(msg.data)
    assert probe.set_parameter(NODE, 'bypass', False).successful
    msg = make_image(pixels, 'rgb8')
    assert bytes(probe.exchange(IMAGE, msg, restored).data) == offline(models['int8'], msg)


def test_diagnostics_report_real_numbers(probe: Probe, restored: Inbox, models: dict[str, Path]) -> None:
    probe.exchange(IMAGE, make_image(np.full((32, 32, 3), 7, np.uint8), 'rgb8'), restored)
    # frames keep coming: the one status that counted the exchanged frame may have arrived during the exchange
    seen = status(probe, lambda v: float(v.get('output_rate_hz', 0)) > 0,
                  every=lambda: probe.publish(IMAGE, make_image(np.full((32, 32, 3), 7, np.uint8), 'rgb8')))
    assert seen['name'] == '/restore_node: restoration' and seen['hardware_id'] == 'qdr_cam'
    assert 0 < float(seen['inference_ms_p50']) <= float(seen['inference_ms_p95'])
    assert 0 < float(seen['delay_ms_p50']) <= float(seen['delay_ms_p95']) < 60_000
    assert int(seen['frames_out']) >= 1 and int(seen['frames_in']) >= int(seen['frames_out'])
    assert int(seen['dropped']) >= 0 and int(seen['skipped']) >= 0
    assert (seen['backend'], seen['precision']) == ('onnxruntime', 'int8')
    assert seen['model'] == str(models['int8'].with_name('efm_int8_cpu.onnx'))
    assert 'CPU variant' in seen['reason']


def test_sigint_is_a_clean_exit(probe: Probe, node_process: NodeProcess) -> None:
    assert node_process.stop() == 0, node_process.log()
    log = node_process.log()
    assert 'Traceback' not in log, log
    assert 'using backend onnxruntime' in log and 'why:' in log


def test_missing_model_stops_startup_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / 'nowhere' / 'efm_int8.onnx'
    result = subprocess.run([sys.executable, '-m', 'qdr_ros.nodes.restore_node', '--ros-args', '-r', '__ns:=/missing',
                             '-p', f'model:={missing}'], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if 'cannot start' in line]
    assert len(lines) == 1 and 'does not exist' in lines[0] and 'model:=' in lines[0], result.stderr


def test_qdr_run_restores_compressed_frames_end_to_end(tmp_path: Path, context: Context,
                                                       models: dict[str, Path]) -> None:
    """qdr-run with a custom params file (compressed input) and a namespace; one JPEG through, then SIGINT."""
    values = {**params.RESTORE_PARAMS.defaults, 'input_compressed': True, 'warmup_width': 32, 'warmup_height': 32,
              'diagnostics_period': 0.5}
    params_file = tmp_path / 'restore.yaml'
    params_file.write_text(yaml.safe_dump({params.RESTORE_PARAMS.yaml_key: {'ros__parameters': values}}))
    with NodeProcess.start('qdr_ros.tools.run', '--model', str(models['int8']), '--threads', '1',
                           '--params-file', str(params_file), '--namespace', 'qdr_run', '--output-topic',
                           '/qdr_run/restored') as process:  # input topics: the defaults, relative to the namespace
        with Probe('qdr_run_probe', context=context, watch=[process]) as probe:
            restored = probe.inbox('/qdr_run/restored')
            pixels = np.random.default_rng(8).integers(0, 256, (40, 56, 3), dtype=np.uint8)
            msg = CompressedImage(format='jpeg', data=cv2.imencode('.jpg', pixels)[1].tobytes())
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
            msg.header.frame_id = 'qdr_run_cam'
            probe.wait_for_graph(publishers=['/qdr_run/restored'], timeout_s=60)  # process start, then discovery
            out = probe.exchange('/qdr_run/image_raw/compressed', msg, restored)
            assert process.alive, process.log()
            decoded, encoding = decode_compressed(msg.data, msg.format)
            expected = make_image(decoded, encoding)
            assert (out.encoding, out.width, out.height, out.header.frame_id) == ('bgr8', 56, 40, 'qdr_run_cam')
            assert bytes(out.data) == offline(models['int8'], expected)

            garbage = CompressedImage(format='jpeg', data=b'\xff\xd8 not really a jpeg')
            seen = status(probe, lambda v: 'rejected.decode_failed' in v, '/qdr_run/image_raw/compressed',
                          every=lambda: probe.publish('/qdr_run/image_raw/compressed', garbage))
            assert int(seen['rejected.decode_failed']) >= 1
            assert probe.set_parameter('/qdr_run/restore_node', 'bypass', True).successful
        code = process.stop()
    log = process.log()
    assert code == 0, log
    assert 'running restore_node in one process' in log and 'Traceback' not in log, log


def test_mailbox_keeps_only_the_newest_frame() -> None:
    box = Mailbox()
    first, second = Job(Image(), None), Job(Image(), None)
    assert box.put(first) is False
    assert box.put(second) is True, 'overwriting an untaken frame must count as a drop'
    assert box.take() is second
    box.close()
    assert box.take() is None


def test_diagnostics_levels() -> None:
    now = [100.0]
    stats = FrameStats(clock=lambda: now[0])
    first = stats.snapshot()
    assert assess(first, None, 2.0, {}, 0.5).level == OK
    now[0] += 3.0
    idle = stats.snapshot()
    assert assess(idle, first, 2.0, {}, 0.5).level == WARN and 'no input' in assess(idle, first, 2.0, {}, 0.5).message
    stats.frame_in()
    stats.rejected('bad_step')
    rejecting = stats.snapshot()
    report = assess(rejecting, idle, 2.0, {'backend': 'onnxruntime'}, 0.5)
    assert report.level == WARN and 'bad_step' in report.message
    assert ('rejected.bad_step', '1') in report.values and ('backend', 'onnxruntime') in report.values
    stats.frame_in()
    stats.frame_out(inference_ms=4.0, delay_ms=9.0)
    calm = stats.snapshot()
    assert assess(calm, rejecting, 2.0, {}, 0.5).level == OK
    stats.backend_error('RuntimeError: boom')
    assert assess(stats.snapshot(), calm, 2.0, {}, 0.5).level == ERROR
