"""Config resolution: defaults, task files, overrides; unknown keys and wrong types stop early."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdr_train.cli import main
from qdr_train.config import ConfigError, load_config


def test_defaults_task_and_overrides_resolve() -> None:
    cfg = load_config("dehaze", overrides=["train.iters=7", "optim.lr=1e-3", "model.widths=[8,8,16]"])
    assert cfg["task"] == "dehaze"
    assert cfg["train"]["iters"] == 7
    assert cfg["optim"]["lr"] == pytest.approx(1e-3)
    assert cfg["model"]["widths"] == [8, 8, 16]


@pytest.mark.parametrize("override, message", [
    (["train.itres=5"], "unknown config key 'train.itres'"),
    (["train.iters=many"], "train.iters: expected int"),
    (["train.progress=3"], "train.progress: expected bool"),
    (["data=3"], "data: expected a mapping"),
    (["data.crop=50"], "multiple of the model stride"),
    (["nonsense"], "not key=value"),
    (["distill.lmr=uncertainty"], "distill.lmr='uncertainty' must be one of magnitude, bounded, gradient, aligned"),
    (["optim.slow_lr_ratio=-0.5"], "optim.slow_lr_ratio=-0.5 must be >= 0"),
    (["train.workers=-1"], "train.workers=-1 must be >= 0"),
])
def test_bad_overrides_fail_with_the_key_named(override: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("denoise", overrides=override)


def test_unknown_task_and_bad_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown task 'fog'"):
        load_config("fog")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {learning_rate: 1}\n")
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_config("denoise", config_file=bad)


def test_cli_reports_config_errors_before_training(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--task", "denoise", "train.bogus=1"]) == 2
    assert "unknown config key 'train.bogus'" in capsys.readouterr().err
