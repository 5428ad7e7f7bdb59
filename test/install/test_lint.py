"""Style and packaging checks that ament's linters would run (flake8, pep257, package.xml)."""

from __future__ import annotations

import ast
from pathlib import Path
import subprocess
import sys

from catkin_pkg.package import parse_package
import pytest

# ament_pep257's default ignores: missing docstrings are allowed, D203/D212/D404 clash with pep257.
PEP257_IGNORES = 'D100,D101,D102,D103,D104,D105,D106,D107,D203,D212,D404'
# One rosdep key per runtime import (rosdistro rosdep/python.yaml for the python3-* keys); rviz2 is
# optional (use_rviz:=true) so headless robots do not pull a GUI.
EXEC_DEPENDS = {
    'rclpy', 'rcl_interfaces', 'builtin_interfaces', 'ament_index_python', 'sensor_msgs', 'std_msgs', 'std_srvs',
    'diagnostic_msgs', 'vision_msgs', 'launch', 'launch_ros',
    'python3-numpy', 'python3-opencv', 'python3-yaml', 'python3-psutil', 'python3-onnxruntime-pip',
    'python3-rosbags-pip',
}  # not ultralytics: the default people detector is opt-in (AGPL-3.0, pulls torch; docs/robot.md)
TEST_DEPENDS = {'ament_copyright', 'ament_flake8', 'ament_pep257', 'python3-pytest'}
# qdr_ros/tools (run, demo, soak, smoke check, benchmarks) may use the training install (torch, qdr_train,
# matplotlib, tqdm); the nodes and everything they import must not.
TOOLS = r'qdr_ros/tools/.*'
# Imports the runtime code guards with a clear message when absent, and why none is a runtime requirement.
OPTIONAL_IMPORTS = {
    'onnx': 'faster uint8-I/O session and the ONNX checker; no rosdep key, numpy/ORT fallback without it',
    'google': 'protobuf, only together with onnx',
    'tensorrt': 'TensorRT backend: JetPack on the Jetson, not on any package index here',
    'cuda': 'cuda-python for the TensorRT backend, with JetPack',
    'vision_msgs': 'Detection2DArray/LabelInfo: a ROS 2 distribution has it, no PyPI wheel',
    'skimage': "camera_source's bundled sample photos (training install); folders, videos and bags work without",
    'matplotlib': 'report figures (qdr_ros.core.plots), imported on first use by the tools and the trainer; '
                  'the nodes never plot, and the tools write their reports without a figure when it is absent',
}


def _existing(root: Path, *names: str) -> list[str]:
    """Return the given repo paths that exist (launch/ arrives later than the packages)."""
    return [name for name in names if (root / name).exists()]


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', *args], cwd=root, capture_output=True, text=True, timeout=240)


def _setup_keywords(root: Path) -> dict[str, object]:
    """Read the literal keyword arguments of setup() without running setup.py."""
    tree = ast.parse((root / 'setup.py').read_text())
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, 'id', None) == 'setup')
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords
            if isinstance(kw.value, ast.Constant)}


def test_flake8(repo_root: Path) -> None:
    paths = _existing(repo_root, 'qdr_ros', 'qdr_train', 'launch', 'test', 'setup.py')
    result = _run(repo_root, 'flake8', '--max-line-length', '120', *paths)
    assert result.returncode == 0, result.stdout + result.stderr


def test_pep257(repo_root: Path) -> None:
    result = _run(repo_root, 'pydocstyle', '--convention=pep257', f'--add-ignore={PEP257_IGNORES}',
                  'qdr_ros', 'qdr_train')
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_xml(repo_root: Path) -> None:
    package = parse_package(str(repo_root))
    package.validate()
    assert package.name == 'qdr_ros'
    assert package.get_build_type() == 'ament_python'
    assert {dep.name for dep in package.exec_depends} == EXEC_DEPENDS
    # LabelInfo, which both nodes publish, came with vision_msgs 4.1.0 (early Humble installs have 4.0.0)
    assert {dep.name: dep.version_gte for dep in package.exec_depends}['vision_msgs'] == '4.1.0'
    assert TEST_DEPENDS <= {dep.name for dep in package.test_depends}
    license_text = (repo_root / 'LICENSE').read_text()
    assert package.licenses[0] == 'Apache-2.0' and 'Apache License' in license_text and 'Version 2.0' in license_text


def test_runtime_imports_are_runtime_requirements(repo_root: Path) -> None:
    """Deptry: every third-party import of the runtime code is in requirements/runtime.txt (or the extra).

    requirements/detect-ultralytics.txt is the optional ultralytics detector; ros-rmw-fastrtps-cpp is
    loaded by rclpy, never imported; torchvision is what ultralytics needs beside torch.
    """
    if not (repo_root / 'requirements' / 'runtime.txt').is_file():
        pytest.skip('no requirements/runtime.txt (colcon test copy without requirements/)')
    ignores = ','.join(OPTIONAL_IMPORTS)
    result = _run(repo_root, 'deptry', 'qdr_ros', '--no-ansi', '-kf', 'qdr_ros', '-kf', 'qdr_train',
                  '--requirements-files', 'requirements/runtime.txt,requirements/detect-ultralytics.txt',
                  '--extend-exclude', TOOLS,
                  '--per-rule-ignores', f'DEP001={ignores.replace(",", "|")},DEP003={ignores.replace(",", "|")},'
                  'DEP002=ros-rmw-fastrtps-cpp|torchvision')
    assert result.returncode == 0, result.stdout + result.stderr


def test_setup_py_matches_package_xml(repo_root: Path) -> None:
    package = parse_package(str(repo_root))
    keywords = _setup_keywords(repo_root)
    assert keywords['license'] == package.licenses[0] == 'Apache-2.0'
    assert keywords['version'] == package.version
    assert keywords['maintainer_email'] == package.maintainers[0].email


def test_import_layers(repo_root: Path) -> None:
    """import-linter (.importlinter): the runtime never imports the trainer or torch, inference never rclpy."""
    if not (repo_root / '.importlinter').is_file():
        pytest.skip('no .importlinter (colcon test copy)')
    lint_imports = Path(sys.executable).with_name('lint-imports')  # import-linter has no __main__
    result = subprocess.run([str(lint_imports), '--no-cache'], cwd=repo_root, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr


def test_restore_node_imports_without_torch_or_the_trainer(repo_root: Path) -> None:
    """What the contract says, seen in a real interpreter: importing the node loads neither."""
    code = ('import sys, qdr_ros.nodes.restore_node, qdr_ros.nodes.detect_node, qdr_ros.nodes.camera_source; '
            'loaded = sorted(m for m in sys.modules if m == "torch" or m.split(".")[0] == "qdr_train"); '
            'print(loaded); sys.exit(1 if loaded else 0)')
    result = subprocess.run([sys.executable, '-c', code], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
