"""qdr-bench restore --quick on a tiny EFM: the report's shape and that every measurement is a positive number.

Speed thresholds are never asserted here (CI machines differ); the committed table in
results/bench/ is where the targets are judged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from qdr_ros.tools.bench import cli, settings
from qdr_ros.tools.bench.report import TARGETS, check_targets
from qdr_ros.tools.bench.engines import Timing
from qdr_ros.tools.bench.rounds import ros_round, ros_row, start_discovered
from qdr_ros.tools.probe import ProbeError
from qdr_train.engine.checkpoint import save_model_file
from qdr_train.export.cpu_variant import to_cpu_variant
from qdr_train.export.onnx import export_onnx
from qdr_train.models import build_model
from qdr_train.quant import calibrate, prepare_qat

TINY = {'type': 'EFM', 'widths': [8, 8, 16], 'num_blocks': 1}


@pytest.fixture(scope='module')
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the four shipped files of a tiny ``denoise`` EFM."""
    root = tmp_path_factory.mktemp('bench_models')
    folder = root / 'denoise'
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    meta = {'task': 'denoise', 'stride': 8, 'model': TINY}
    save_model_file(model, TINY, folder / 'efm_fp32.pt', task='denoise')
    export_onnx(model, folder / 'efm_fp32.onnx', metadata={**meta, 'precision': 'fp32'})
    qat = calibrate(prepare_qat(model), [torch.rand(1, 3, 32, 32) for _ in range(2)], progress=False)
    int8 = export_onnx(qat, folder / 'efm_int8.onnx', metadata={**meta, 'precision': 'int8'})
    to_cpu_variant(int8, folder / 'efm_int8_cpu.onnx')
    return root


def run_bench(tmp_path: Path, models_dir: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / 'out'
    code = cli.main(['restore', '--quick', '--task', 'denoise', '--models-dir', str(models_dir), '--out', str(out),
                     '--json', str(out / 'restore.json'), *extra])
    assert code == 0
    assert (out / 'restore.md').read_text().startswith('# Restore benchmark (denoise)')
    assert (out / 'restore_latency.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    return json.loads((out / 'restore.json').read_text())


def check_engine_rows(report: dict[str, Any]) -> None:
    engines = {(r['backend'], r['precision']) for r in report['engine']}
    assert {('torch', 'fp32'), ('onnxruntime', 'fp32'), ('onnxruntime', 'int8')} <= engines
    int8 = next(r for r in report['engine'] if r['backend'] == 'onnxruntime' and r['precision'] == 'int8')
    assert Path(int8['model']).name == 'efm_int8_cpu.onnx'  # the node's choice: the CPU twin
    for row in report['engine']:
        assert row['size'] == 'x'.join(map(str, settings.QUICK_SIZE))
        for key in ('runs', 'median_ms', 'p95_ms', 'mean_ms', 'fps', 'macs', 'gmac_per_s'):
            assert row[key] > 0, (key, row)
        assert row['p95_ms'] >= row['median_ms']
    skipped = {(s['backend'], s['precision']) for s in report['skipped']}
    assert skipped <= {('tensorrt', 'int8'), ('torch', 'fp32/fp16 cuda')}
    for key in ('cpu', 'logical_cores', 'physical_cores', 'gpu', 'versions'):
        assert report['machine'][key]
    assert report['machine']['versions']['onnxruntime']


def test_quick_engine_only(tmp_path: Path, models_dir: Path) -> None:
    report = run_bench(tmp_path, models_dir, '--no-ros')
    assert set(report) >= {'command', 'machine', 'settings', 'model_sizes', 'engine', 'skipped', 'ros', 'targets',
                           'elapsed_s'}
    assert report['command'].startswith('qdr-bench restore --task denoise')
    check_engine_rows(report)
    assert {(r['backend'], r['timed_alone']) for r in report['engine']} == {('torch', False), ('onnxruntime', True)}
    assert report['ros'] == []
    targets = {t['name']: t for t in report['targets']}
    assert set(targets) == set(TARGETS)
    assert targets['int8_file_size']['value'] > 0 and targets['int8_file_size']['status'] in ('PASS', 'MISS')
    assert targets['node_overhead']['status'] == 'n/a'  # 640x480 through ROS was not part of this run


def test_file_size_limit_is_per_task(tmp_path: Path) -> None:
    """auto (one model with its condition head) may ship up to 1.5 MB, a specialist 1 MB."""
    onnx = tmp_path / 'efm_int8.onnx'
    onnx.write_bytes(b'\0' * 1_260_000)

    def size_target(task: str) -> dict[str, Any]:
        return next(t for t in check_targets([], [], {'int8_onnx': onnx}, task) if t['name'] == 'int8_file_size')

    assert size_target('auto')['status'] == 'PASS' and size_target('auto')['threshold'] == 1.5
    assert size_target('denoise')['status'] == 'MISS' and size_target('denoise')['threshold'] == 1.0
    assert size_target('auto')['value'] == 1.26


@pytest.mark.ros
def test_quick_with_restore_node(tmp_path: Path, models_dir: Path) -> None:
    report = run_bench(tmp_path, models_dir)
    check_engine_rows(report)
    (row,) = report['ros']
    (one_round,) = row['rounds']  # --quick: one round
    for phase in ('passthrough', 'passthrough_back_to_back', 'end_to_end', 'engine'):
        timing = one_round[phase]
        assert timing['runs'] > 0 and timing['median_ms'] > 0 and timing['p95_ms'] >= timing['median_ms']
    for key in ('passthrough_ms', 'passthrough_back_to_back_ms', 'end_to_end_ms', 'end_to_end_p95_ms',
                'saturated_fps', 'saturated_frames', 'node_cpu_percent', 'node_peak_rss_mb', 'engine_median_ms',
                'engine_fps', 'saturated_percent'):
        assert row[key] > 0, (key, row)
    assert row['end_to_end_ms'] == one_round['end_to_end']['median_ms']
    assert row['overhead_ms'] == pytest.approx(row['end_to_end_ms'] - row['engine_median_ms'] - row['passthrough_ms'],
                                               abs=0.01)
    back_to_back = row['end_to_end_ms'] - row['engine_median_ms'] - row['passthrough_back_to_back_ms']
    assert row['overhead_back_to_back_percent'] == pytest.approx(100 * back_to_back / row['engine_median_ms'], abs=0.1)
    assert row['saturated_percent'] == pytest.approx(100 * row['saturated_fps'] / row['engine_fps'], abs=0.1)
    assert 0 <= row['saturated_lost'] < row['saturated_frames']
    assert 'bypass:=true' in report['passthrough_node']


@pytest.mark.ros
def test_a_node_the_probe_does_not_see_is_started_once_more(models_dir: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    model = models_dir / 'denoise' / 'efm_int8_cpu.onnx'
    with pytest.raises(ProbeError, match='the nodes under test to come up'):
        start_discovered(model, 64, 64, 1, timeout_s=0.0)  # nothing is discovered in no time: both attempts fail
    err = capsys.readouterr().err
    assert 'restore_node 64x64 was running but not discovered in 0 s (attempt 1 of 2)' in err
    assert 'attempt 2 of 2' not in err  # the last failure is raised, not retried


@pytest.mark.ros
def test_a_node_that_exits_is_not_started_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / 'broken.onnx'
    broken.write_bytes(b'not an ONNX model')
    with pytest.raises(ProbeError, match='restore_node exited'):
        start_discovered(broken, 64, 64, 1)
    assert 'attempt' not in capsys.readouterr().err


def test_sizes_are_parsed_and_checked() -> None:
    assert cli.parse_size('640x480') == (640, 480)
    with pytest.raises(argparse.ArgumentTypeError, match='640x480'):
        cli.parse_size('640*480')


def test_missing_models_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(['restore', '--quick', '--no-ros', '--models-dir', str(tmp_path), '--out',
                     str(tmp_path / 'out')]) == 1
    assert 'no models in' in capsys.readouterr().err


def test_each_round_is_judged_against_its_own_engine_timing() -> None:
    """A machine that slows down between rounds moves engine and node together: the ratios stay put."""
    def timing(ms: float) -> Timing:
        return Timing.of([ms / 1e3] * 5)

    rounds = [ros_round((timing(1.0), timing(0.5)), timing(1.0 + engine * 1.05),
                        saturated=(0.9e3 / engine, 50, lost), cpu=150.0, engine=timing(engine))
              for engine, lost in ((20.0, 0), (30.0, 2), (25.0, 1))]
    assert [r['overhead_percent'] for r in rounds] == [5.0, 5.0, 5.0]
    assert [r['overhead_back_to_back_percent'] for r in rounds] == [7.5, 6.7, 7.0]  # + 0.5 ms of 20, 30, 25 ms
    assert [r['saturated_percent'] for r in rounds] == [90.0, 90.0, 90.0]
    row = ros_row(640, 480, rounds, rss=200.0)
    assert row['engine_median_ms'] == 25.0 and row['end_to_end_ms'] == pytest.approx(27.25)
    assert row['overhead_percent'] == 5.0 and row['saturated_percent'] == 90.0
    assert row['saturated_frames'] == 150 and row['saturated_lost'] == 3 and len(row['rounds']) == 3
    assert ros_round((timing(1.0), timing(1.0)), timing(30.0), (30.0, 10, 0), 100.0, None)['overhead_percent'] is None
