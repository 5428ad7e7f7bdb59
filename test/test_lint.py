"""Style and packaging checks that ament's linters would run (flake8, pep257, package.xml)."""

from __future__ import annotations

import ast
from pathlib import Path
import subprocess
import sys

from catkin_pkg.package import parse_package

# ament_pep257's default ignores: missing docstrings are allowed, D203/D212/D404 clash with pep257.
PEP257_IGNORES = 'D100,D101,D102,D103,D104,D105,D106,D107,D203,D212,D404'
EXEC_DEPENDS = {
    'rclpy', 'sensor_msgs', 'std_msgs', 'std_srvs', 'diagnostic_msgs', 'visualization_msgs', 'vision_msgs',
    'launch', 'launch_ros', 'rviz2', 'python3-numpy', 'python3-opencv', 'python3-yaml',
}
TEST_DEPENDS = {'ament_copyright', 'ament_flake8', 'ament_pep257', 'python3-pytest'}


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
    assert EXEC_DEPENDS <= {dep.name for dep in package.exec_depends}
    assert TEST_DEPENDS <= {dep.name for dep in package.test_depends}


def test_setup_py_matches_package_xml(repo_root: Path) -> None:
    package = parse_package(str(repo_root))
    keywords = _setup_keywords(repo_root)
    assert keywords['license'] == package.licenses[0] == 'Apache-2.0'
    assert keywords['version'] == package.version
    assert keywords['maintainer_email'] == package.maintainers[0].email
