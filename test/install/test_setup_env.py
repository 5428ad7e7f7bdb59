"""scripts/setup_env.sh: every missing prerequisite ends in a message naming it and the fix."""

from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys

import pytest


def _setup(repo_root: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Run the setup script against a venv path in ``tmp_path`` so the real .venv is untouched."""
    full_env = {**os.environ, 'QDR_VENV': str(tmp_path / 'venv'), **env}
    return subprocess.run(['bash', str(repo_root / 'scripts' / 'setup_env.sh')], env=full_env,
                          capture_output=True, text=True, timeout=240)


def _fake_python(tmp_path: Path, body: str) -> Path:
    """Write an executable ``python3`` shell script standing in for a broken interpreter."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    fake = bin_dir / 'python3'
    fake.write_text(f'#!/bin/sh\n{body}\n')
    fake.chmod(0o755)
    return fake


def _assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Traceback' not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_missing_python(repo_root: Path, tmp_path: Path) -> None:
    result = _setup(repo_root, tmp_path, QDR_PYTHON=str(tmp_path / 'nowhere' / 'python3'))
    _assert_clean_error(result, 'not found', 'Python 3.11-3.12', 'apt-get install python3')


def test_wrong_python_version_on_path(repo_root: Path, tmp_path: Path) -> None:
    fake = _fake_python(tmp_path, 'echo 3.9')
    result = _setup(repo_root, tmp_path, PATH=f'{fake.parent}{os.pathsep}{os.environ["PATH"]}')
    _assert_clean_error(result, 'Python 3.9', 'Python 3.11-3.12 is required', 'QDR_PYTHON')


def test_broken_python(repo_root: Path, tmp_path: Path) -> None:
    fake = _fake_python(tmp_path, 'exit 1')
    result = _setup(repo_root, tmp_path, QDR_PYTHON=str(fake))
    _assert_clean_error(result, 'does not run')


def test_missing_venv_module(repo_root: Path, tmp_path: Path) -> None:
    fake = _fake_python(tmp_path, 'case "$2" in *ensurepip*) exit 1;; esac\necho 3.11')
    result = _setup(repo_root, tmp_path, QDR_PYTHON=str(fake))
    _assert_clean_error(result, 'venv/ensurepip', 'apt-get install python3-venv')


def test_low_disk(repo_root: Path, tmp_path: Path) -> None:
    result = _setup(repo_root, tmp_path, QDR_PYTHON=sys._base_executable, QDR_MIN_FREE_GB='1000000')
    _assert_clean_error(result, 'GB free', 'needs about 1000000 GB', 'free some space')
    assert not (tmp_path / 'venv').exists()


@pytest.mark.slow
def test_offline_index(repo_root: Path, tmp_path: Path) -> None:
    """No reachable index: pip's failure is reported as such, not as a pip traceback."""
    empty_links = tmp_path / 'no_wheels'
    empty_links.mkdir()
    result = _setup(repo_root, tmp_path, QDR_PYTHON=sys._base_executable, QDR_MIN_FREE_GB='0',
                    PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL='http://127.0.0.1:9/simple', PIP_EXTRA_INDEX_URL='',
                    PIP_FIND_LINKS=str(empty_links), PIP_RETRIES='0', PIP_DEFAULT_TIMEOUT='5')
    _assert_clean_error(result, 'package index', 'offline')


def test_second_run_is_a_no_op(repo_root: Path) -> None:
    """After make setup (make test runs it first) the stamp makes setup a no-op (no pip run, nothing installed).

    An impossible disk-space floor stops a setup that is not a no-op before pip could change the venv
    under the running suite (plain ``pytest`` after editing requirements/): run ``make setup`` first.
    """
    result = subprocess.run(['bash', str(repo_root / 'scripts' / 'setup_env.sh')], capture_output=True,
                            text=True, timeout=600, env={**os.environ, 'QDR_MIN_FREE_GB': '1000000'})
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'is up to date' in result.stdout, result.stdout
