"""Parameter defaults, limits and validation (plain pytest, no ROS graph) and config/restore.yaml against them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qdr_ros.nodes import params


def test_restore_yaml_matches_declared_defaults(repo_root: Path) -> None:
    data = yaml.safe_load((repo_root / 'config' / 'restore.yaml').read_text())
    assert list(data) == [params.YAML_NODE_KEY], 'the node-named key must match the node in any namespace'
    values = params.load_yaml_params(repo_root / 'config' / 'restore.yaml')
    assert set(values) == set(params.DEFAULTS), 'config/restore.yaml and qdr_ros/nodes/params.py declare different keys'
    for name, default in params.DEFAULTS.items():
        assert values[name] == default and type(values[name]) is type(default), name
    assert params.validate_all(values) == []


@pytest.mark.parametrize('spec', params.PARAMS, ids=lambda s: s.name)
def test_every_default_is_valid_and_described(spec: params.ParamSpec) -> None:
    assert params.validate(spec.name, spec.default) is None
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
    reason = params.validate(name, value)
    assert reason is not None and expected in reason, reason


def test_float_parameters_accept_integers() -> None:
    assert params.validate('input_timeout', 3) is None


def test_runtime_updates_refuse_read_only_parameters() -> None:
    assert 'restart' in params.validate_update({'input_reliability': 'reliable'})
    assert params.validate_update({'bypass': True, 'model': 'other.onnx'}) is None
    assert 'threads' in params.validate_update({'bypass': True, 'threads': -2})
    assert params.validate_update({'use_sim_time': True}) is None, "rclpy's own parameters stay settable"


def test_model_paths_resolve_against_share_then_repo(tmp_path: Path) -> None:
    share = tmp_path / 'share' / 'qdr_ros'
    (share / 'models' / 'denoise').mkdir(parents=True)
    (share / 'models' / 'denoise' / 'efm_int8.onnx').write_bytes(b'x')
    assert params.resolve_model_path('models/denoise/efm_int8.onnx', share) == \
        share / 'models' / 'denoise' / 'efm_int8.onnx'
    assert params.resolve_model_path('models/other.onnx', share) == params.REPO_ROOT / 'models' / 'other.onnx'
    assert params.resolve_model_path(str(tmp_path / 'abs.onnx'), share) == tmp_path / 'abs.onnx'


def test_yaml_without_the_node_section_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / 'p.yaml'
    path.write_text('other_node:\n  ros__parameters: {a: 1}\n')
    with pytest.raises(KeyError, match='restore_node'):
        params.load_yaml_params(path)
    path.write_text('restore_node:\n  ros__parameters: {bypass: true}\n')
    assert params.load_yaml_params(path) == {'bypass': True}
