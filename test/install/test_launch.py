"""launch/restore.launch.py, config/qdr.rviz and the console scripts, checked without ROS 2's launch installed.

``launch``/``launch_ros`` are not on PyPI, so the launch file is compiled and read as an AST here;
``test_ros2_launch.py`` runs it for real with the shared launch wheels.
"""

from __future__ import annotations

import ast
from pathlib import Path
import py_compile

import pytest
import yaml

from qdr_ros.nodes import params

LAUNCH = Path('launch') / 'restore.launch.py'
REQUIRED_ARGUMENTS = {'model', 'backend', 'threads', 'bypass', 'input_topic', 'output_topic', 'params_file',
                      'namespace', 'camera', 'use_detector', 'use_rviz', 'detector_model', 'detector_params_file',
                      'use_sim_time', 'log_level', 'respawn'}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and (getattr(node.func, 'id', None) == name or getattr(node.func, 'attr', None) == name)]


@pytest.fixture(scope='module')
def tree(repo_root: Path) -> ast.Module:
    path = repo_root / LAUNCH
    py_compile.compile(str(path), doraise=True, cfile=None)
    return ast.parse(path.read_text())


def _declared(tree: ast.Module) -> dict[str, dict[str, object]]:
    """Launch argument name -> its keywords (literals, or the source text of names and calls)."""
    return {ast.literal_eval(call.args[0]): {kw.arg: _literal(kw.value) for kw in call.keywords}
            for call in _calls(tree, 'DeclareLaunchArgument')}


def _literal(node: ast.AST) -> object:
    try:
        return ast.literal_eval(node)
    except ValueError:  # names and calls: BOOLEAN, KEEP + [...], os.path.join(...)
        return ast.unparse(node)


def test_declared_arguments(tree: ast.Module) -> None:
    names = [ast.literal_eval(call.args[0]) for call in _calls(tree, 'DeclareLaunchArgument')]
    assert len(names) == len(set(names)), names
    assert REQUIRED_ARGUMENTS <= set(names), REQUIRED_ARGUMENTS - set(names)
    overridable = next(ast.literal_eval(node.value) for node in ast.walk(tree) if isinstance(node, ast.Assign)
                       and getattr(node.targets[0], 'id', None) == 'PARAMETER_ARGUMENTS')
    assert set(overridable) <= set(names) and set(overridable) <= set(params.RESTORE_PARAMS.defaults), \
        'parameter arguments must be named like the node parameters'
    declared = _declared(tree)
    # Relative topics, so that namespace:= and camera:= move them.
    assert declared['input_topic']['default_value'] == 'image_raw'
    assert declared['output_topic']['default_value'] == 'image_restored'
    assert declared['camera']['default_value'] == 'camera'
    for name in ('use_detector', 'use_rviz', 'use_sim_time', 'respawn'):
        assert declared[name]['default_value'] == 'false' and declared[name]['choices'] == 'BOOLEAN', name
    for name in ('backend', 'large_frames', 'log_level', 'bypass'):
        assert 'choices' in declared[name], f'{name} has a fixed set of values: declare choices'


def test_nodes_and_remappings(tree: ast.Module, repo_root: Path) -> None:
    executables = {ast.literal_eval(kw.value) for call in _calls(tree, 'Node') for kw in call.keywords
                   if kw.arg == 'executable'}
    assert executables == {'restore_node', 'detect_node', 'rviz2'}
    remapped = {ast.literal_eval(t.elts[0]) for t in ast.walk(tree) if isinstance(t, ast.Tuple) and len(t.elts) == 2
                and isinstance(t.elts[0], ast.Constant) and isinstance(t.elts[0].value, str)}
    assert {'image', 'image/compressed', 'camera_info', 'image_restored', 'image_restored/camera_info'} <= remapped
    text = (repo_root / LAUNCH).read_text()
    assert "get_package_share_directory('qdr_ros')" in text and "'qdr.rviz'" in text
    assert "'restore.yaml'" in text and "'detect.yaml'" in text


def test_rviz_config_shows_the_four_images(repo_root: Path) -> None:
    config = yaml.safe_load((repo_root / 'config' / 'qdr.rviz').read_text())
    manager = config['Visualization Manager']
    images = [d for d in manager['Displays'] if d['Class'] == 'rviz_default_plugins/Image']
    assert [d['Topic']['Value'] for d in images] == \
        ['/camera/image_raw', '/camera/image_restored', '/camera/gate', '/camera/image_detections']
    source = yaml.safe_load((repo_root / 'config' / 'camera_source.yaml').read_text())
    frame_id = next(iter(source.values()))['ros__parameters']['frame_id']
    assert manager['Global Options']['Fixed Frame'] == frame_id  # the frame the shown images carry


def test_console_scripts(repo_root: Path) -> None:
    tree = ast.parse((repo_root / 'setup.py').read_text())
    scripts = {s.replace(' ', '') for node in ast.walk(tree) if isinstance(node, ast.Dict)
               for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant) and k.value == 'console_scripts'
               for s in ast.literal_eval(v)}
    assert {'restore_node=qdr_ros.nodes.restore_node:main', 'qdr-run=qdr_ros.tools.run:main'} <= scripts
