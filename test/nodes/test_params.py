"""Parameter tables, limits and validation (plain pytest, no ROS graph) and config/*.yaml against the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from qdr_ros.nodes import params


TABLES = (params.RESTORE_PARAMS, params.DETECT_PARAMS, params.CAMERA_PARAMS)


def _yaml_params(path: Path, table: params.ParamTable) -> dict[str, Any]:
    """The ``ros__parameters`` of ``table``'s node in a node-named ROS 2 parameter file."""
    data = yaml.safe_load(path.read_text()) or {}
    return next(dict(section.get('ros__parameters', {})) for key, section in data.items()
                if str(key).rstrip('/').split('/')[-1] == table.node_name and isinstance(section, dict))


@pytest.mark.parametrize('table', TABLES, ids=lambda t: t.node_name)
def test_config_file_matches_the_declared_parameters(table: params.ParamTable, repo_root: Path) -> None:
    """config/<node>.yaml holds every parameter of the node's table with the table's default (and type)."""
    path = repo_root / 'config' / table.config
    data = yaml.safe_load(path.read_text())
    assert list(data) == [table.yaml_key], 'the node-named key must match the node in any namespace'
    values = _yaml_params(path, table)
    # A ROS parameter file cannot type an empty array, so such parameters stay out of it (classes: all).
    expected = {name: default for name, default in table.defaults.items() if default != []}
    assert set(values) == set(expected), f'config/{table.config} and qdr_ros/nodes/params.py declare different keys'
    for name, default in expected.items():
        assert values[name] == default and type(values[name]) is type(default), name
    assert params.validate_all(table, values) == []


@pytest.mark.parametrize('table, spec', [(t, s) for t in TABLES for s in t.params],
                         ids=lambda x: getattr(x, 'name', None) or getattr(x, 'node_name', None))
def test_every_default_is_valid_and_described(table: params.ParamTable, spec: params.ParamSpec) -> None:
    assert params.validate(table, spec.name, spec.default) is None
    assert spec.description.endswith('.') or spec.description.endswith(')'), spec.name
    if spec.choices:
        assert spec.default in spec.choices and 'one of:' in spec.full_description()
    if spec.min_value is not None:
        assert spec.type in (int, float) and spec.min_value <= spec.default <= spec.max_value


@pytest.mark.parametrize('name, value, expected', [
    ('backend', 'cuda', 'backend must be one of auto, onnxruntime, tensorrt'),
    ('large_frames', 'crop', 'must be one of reject, downscale'),
    ('threads', -1, 'threads must be >= 0'),
    ('input_depth', 11, 'input_depth must be <= 10'),
    ('threads', 2.5, 'threads must be a int'),
    ('bypass', 'yes', 'bypass must be a bool'),
    ('max_pixels', True, 'max_pixels must be a int'),
    ('model', '  ', 'model must name a model file'),
    ('nonsense', 1, "unknown parameter 'nonsense'"),
])
def test_bad_values_are_refused_with_a_reason(name: str, value: object, expected: str) -> None:
    reason = params.validate(params.RESTORE_PARAMS, name, value)
    assert reason is not None and expected in reason, reason


@pytest.mark.parametrize('table, name, value, expected', [
    (params.DETECT_PARAMS, 'imgsz', 100, 'multiple of 32'),
    (params.DETECT_PARAMS, 'device', 'gpu', 'device must be auto, cpu, cuda or cuda:N'),
    (params.DETECT_PARAMS, 'classes', [0, -1], 'non-negative class ids'),
    (params.DETECT_PARAMS, 'conf', 1.5, 'conf must be <= 1.0'),
    (params.CAMERA_PARAMS, 'encoding', 'mono8', 'encoding must be one of rgb8, bgr8'),
], ids=lambda x: x if isinstance(x, str) else None)
def test_node_rules_come_with_their_table(table: params.ParamTable, name: str, value: object, expected: str) -> None:
    reason = params.validate(table, name, value)
    assert reason is not None and expected in reason, reason


def test_float_parameters_accept_integers_and_arrays_are_lists() -> None:
    assert params.validate(params.RESTORE_PARAMS, 'input_timeout', 3) is None
    assert params.DETECT_PARAMS.known({'classes': (0, 2), 'iou': 1, 'use_sim_time': True}) == {
        'classes': [0, 2], 'iou': 1.0}


def test_runtime_updates_follow_the_start_up_rules() -> None:
    table, values = params.RESTORE_PARAMS, params.RESTORE_PARAMS.defaults
    assert params.validate_update(table, {'bypass': True, 'model': 'other.onnx'}, values) is None
    assert 'threads' in params.validate_update(table, {'bypass': True, 'threads': -2}, values)
    assert params.validate_update(table, {'use_sim_time': True}, values) is None, "rclpy's own stay settable"


def test_cross_checks_judge_the_values_together() -> None:
    table, values = params.CAMERA_PARAMS, params.CAMERA_PARAMS.defaults
    both = {**values, 'task': 'denoise', 'schedule': 'clean:8 derain:8'}
    assert params.validate_all(table, both) == ['set either task (one degradation) or schedule (changing ones), '
                                                'not both']
    assert params.validate_update(table, {'schedule': 'clean:8'}, {**values, 'task': 'denoise'})


def test_model_paths_resolve_against_share_then_repo(tmp_path: Path) -> None:
    share = tmp_path / 'share' / 'qdr_ros'
    (share / 'models' / 'denoise').mkdir(parents=True)
    (share / 'models' / 'denoise' / 'efm_int8.onnx').write_bytes(b'x')
    assert params.resolve_model_path('models/denoise/efm_int8.onnx', share) == \
        share / 'models' / 'denoise' / 'efm_int8.onnx'
    assert params.resolve_model_path('models/other.onnx', share) == params.REPO_ROOT / 'models' / 'other.onnx'
    assert params.resolve_model_path(str(tmp_path / 'abs.onnx'), share) == tmp_path / 'abs.onnx'
