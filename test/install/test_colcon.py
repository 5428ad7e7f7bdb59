"""Build the repo with colcon in a temp workspace, as on a robot, and use what it installed."""

from __future__ import annotations

import configparser
import os
from pathlib import Path
import subprocess
import sys
from xml.etree import ElementTree

import pytest

# pytest-timeout counts a module fixture's setup in the first test: the build has its own, longer limit
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SUBPACKAGES = ['qdr_ros', 'qdr_ros.core', 'qdr_ros.inference', 'qdr_ros.detectors', 'qdr_ros.nodes', 'qdr_ros.tools',
               'qdr_train', 'qdr_train.data', 'qdr_train.models', 'qdr_train.quant', 'qdr_train.losses',
               'qdr_train.engine', 'qdr_train.evaluation', 'qdr_train.release', 'qdr_train.export',
               'qdr_train.configs']
PYTHON_DIR = f'python{sys.version_info.major}.{sys.version_info.minor}'


@pytest.fixture(scope='module')
def workspace(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copy the repo into ``<ws>/src`` and ``colcon build`` it with the venv's colcon."""
    ws = tmp_path_factory.mktemp('colcon_ws')
    result = subprocess.run(['bash', str(repo_root / 'scripts' / 'colcon_build.sh'), str(ws)],
                            capture_output=True, text=True, timeout=300, env=_clean_env())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return ws


def _clean_env() -> dict[str, str]:
    """Drop paths an outer sourced workspace could leak into the build or the checks."""
    return {k: v for k, v in os.environ.items()
            if k not in ('PYTHONPATH', 'AMENT_PREFIX_PATH', 'COLCON_PREFIX_PATH', 'CMAKE_PREFIX_PATH')}


def _sourced(ws: Path, command: str) -> subprocess.CompletedProcess:
    """Run ``command`` in bash after ``source install/setup.bash``, from an unrelated cwd."""
    script = f'source {ws / "install" / "setup.bash"} && {command}'
    return subprocess.run(['bash', '-c', script], cwd=ws, capture_output=True, text=True, timeout=120,
                          env=_clean_env())


def _console_scripts(ws: Path) -> dict[str, str]:
    site = ws / 'install' / 'qdr_ros' / 'lib' / PYTHON_DIR / 'site-packages'
    entry_points = next(site.glob('qdr_ros-*.egg-info')) / 'entry_points.txt'
    parser = configparser.ConfigParser()
    parser.read(entry_points)
    return dict(parser['console_scripts'])


def test_executables_installed_in_lib(workspace: Path) -> None:
    scripts = _console_scripts(workspace)
    assert 'qdr-train' in scripts
    for name in scripts:
        assert os.access(workspace / 'install' / 'qdr_ros' / 'lib' / 'qdr_ros' / name, os.X_OK), name


def test_share_files_installed(workspace: Path, repo_root: Path) -> None:
    install = workspace / 'install' / 'qdr_ros'
    share = install / 'share' / 'qdr_ros'
    assert (install / 'share' / 'ament_index' / 'resource_index' / 'packages' / 'qdr_ros').is_file()
    assert ElementTree.parse(share / 'package.xml').getroot().findtext('name') == 'qdr_ros'
    for pattern in ['launch/*.launch.py', 'config/*.yaml', 'config/*.rviz', 'models/**/efm_int8*.onnx',
                    'models/**/MODEL_CARD_int8.md', 'models/**/model_card_int8.json']:
        for source in repo_root.glob(pattern):
            assert (share / source.relative_to(repo_root)).is_file(), source
    for training_only in ('models/**/*.pt', 'models/**/efm_fp32.onnx'):  # FP32 and checkpoints stay in the repo
        assert not list(share.glob(training_only)), training_only
    site = install / 'lib' / PYTHON_DIR / 'site-packages'
    for config in (repo_root / 'qdr_train' / 'configs').glob('*.yaml'):
        assert (site / 'qdr_train' / 'configs' / config.name).is_file(), config


def test_packages_import_from_install(workspace: Path) -> None:
    # A directory without __init__.py imports as a namespace package (no __file__) from the
    # editable checkout, but find_packages() skips it, so the robot's install would lack it.
    code = ('import importlib; '
            f'[print(m, importlib.import_module(m).__file__) for m in {SUBPACKAGES!r}]')
    result = _sourced(workspace, f'{sys.executable} -c {_quote(code)}')
    assert result.returncode == 0, result.stderr
    install = str(workspace / 'install')
    outside = [line for line in result.stdout.splitlines() if not line.split()[1].startswith(install)]
    assert not outside, f'not installed by colcon (missing __init__.py?): {outside}'


def test_cli_tools_start_after_sourcing(workspace: Path) -> None:
    for name in _console_scripts(workspace):
        if not name.startswith('qdr-'):
            continue  # nodes spin forever; they are exercised by their own tests
        result = _sourced(workspace, f'{workspace}/install/qdr_ros/lib/qdr_ros/{name} --help')
        assert result.returncode == 0, f'{name}: {result.stdout}{result.stderr}'
        assert 'usage' in result.stdout.lower(), result.stdout


def test_colcon_test_runs_package_tests(workspace: Path) -> None:
    colcon = str(Path(sys.executable).parent / 'colcon')
    common = ['--build-base', str(workspace / 'build'), '--install-base', str(workspace / 'install')]
    result = subprocess.run(
        [colcon, '--log-base', str(workspace / 'log'), 'test', '--base-paths', str(workspace / 'src'), *common,
         '--event-handlers', 'console_cohesion+',
         # leading spaces keep colcon's parser from taking -k as its own option
         '--pytest-args', 'test/install/test_lint.py', ' -k', 'package_xml or matches_package_xml'],
        cwd=workspace, capture_output=True, text=True, timeout=240, env=_clean_env())
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = subprocess.run([colcon, 'test-result', '--test-result-base', str(workspace / 'build')],
                             cwd=workspace, capture_output=True, text=True, timeout=60)
    assert summary.returncode == 0, summary.stdout + summary.stderr
    assert '2 tests, 0 errors, 0 failures' in summary.stdout, summary.stdout


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
