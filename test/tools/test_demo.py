"""The demo end to end in its own process: real nodes, a tiny real EFM, the real people detector, few frames."""

from __future__ import annotations

import json
import math
from pathlib import Path
import subprocess
import sys

import cv2
import pytest
import torch

from support.auto_model import AUTO_LABELS
from qdr_train.export.onnx import export_onnx
from qdr_train.models import build_model

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model({'type': 'EFM', 'widths': [8, 8, 16], 'num_blocks': 1}).eval()
    path = tmp_path_factory.mktemp('demo_model') / 'efm_fp32.onnx'
    return export_onnx(model, path, metadata={'task': 'denoise', 'precision': 'fp32', 'stride': 8})


def test_demo_plays_changing_weather_and_writes_sane_outputs(auto_model: Path, tmp_path: Path) -> None:
    """Two conditions through a 3-output model: per-condition PSNR, the node's labels, 4-panel mosaic rows, plot."""
    out = tmp_path / 'demo'
    result = subprocess.run([sys.executable, '-m', 'qdr_ros.tools.demo', '--model', str(auto_model), '--schedule',
                             'denoise:2', 'clean:1', '--out', str(out), '--rate', '3', '--height', '320',
                             '--timeout', '150'], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'summary: 3 frames' in result.stdout and 'true noise' in result.stdout
    assert 'never retrieved' not in result.stdout + result.stderr  # teardown: no callback ran on a destroyed node
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['frames'] == 3 and summary['frames_published'] >= 3
    assert summary['fps'] > 0
    assert 0 < summary['latency_ms']['p50'] <= summary['latency_ms']['p95'] < 60_000
    conditions = summary['per_condition']
    assert set(conditions) <= {'denoise', 'clean'} and 'denoise' in conditions
    assert conditions['denoise']['truth'] == ['noise']
    # sigma 25 noise: about 20 dB; the model (0.8 x + 0.1) changes every frame, so PSNR stays finite
    assert 15 < conditions['denoise']['psnr_degraded_mean'] < 26
    assert math.isfinite(conditions['denoise']['psnr_restored_mean'])
    assert conditions['denoise']['infinite_psnr_frames'] == {'degraded': 0, 'restored': 0}
    assert set(summary['label_accuracy']['per_label']) == set(AUTO_LABELS)  # the node reported a condition per frame
    assert all(frame['seen'] for frame in summary['frames_seen'])
    assert summary['detections_total'] == sum(summary['detections_per_frame'])
    mosaic = cv2.imread(str(out / 'mosaic.png'))
    rows = len(conditions)
    assert mosaic is not None and mosaic.shape[0] >= rows * 260 and mosaic.shape[1] >= 4 * 130  # 4 panels, portrait too
    assert cv2.imread(summary['outputs']['conditions_plot']) is not None
    video = Path(summary['outputs']['video'])
    assert video.is_file() and video.stat().st_size > 1000
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    capture.release()


def test_demo_without_model_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, '-m', 'qdr_ros.tools.demo', '--model', str(tmp_path / 'missing.onnx'),
                             '--out', str(tmp_path / 'out')], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert 'not found' in result.stderr and '--model' in result.stderr and 'Traceback' not in result.stderr


def test_qdr_run_demo_runs_the_same_demo(tiny_model: Path, tmp_path: Path) -> None:
    """``qdr-run demo`` initialises rclpy itself; the demo must reuse that context."""
    result = subprocess.run([sys.executable, '-m', 'qdr_ros.tools.run', 'demo', '--model', str(tiny_model),
                             '--frames', '1', '--out', str(tmp_path), '--height', '240', '--timeout', '150'],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads((tmp_path / 'summary.json').read_text())['frames'] == 1


def test_data_replays_the_coco_samples_only(tmp_path: Path) -> None:
    """--data: the three COCO sample sets, one photo per name; never DAWN_fog's real fog as "clean" frames."""
    from qdr_ros.tools.demo import link_coco_samples

    for rel in ('coco8/images/train/a.jpg', 'coco8-human/images/val/a.jpg', 'coco8-pose/images/val/b.jpg',
                'DAWN_fog/images/foggy.jpg'):
        (tmp_path / 'detection' / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / 'detection' / rel).write_bytes(rel.encode())
    into = tmp_path / 'linked'
    into.mkdir()
    linked = link_coco_samples(tmp_path, into)
    assert sorted(p.name for p in linked.iterdir()) == ['a.jpg', 'b.jpg']
    assert (linked / 'a.jpg').read_bytes() == b'coco8/images/train/a.jpg'  # the first set's copy wins
