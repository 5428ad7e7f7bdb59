"""Config resolution: defaults, task files, overrides; unknown keys and wrong types stop early."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qdr_train.cli import main
from qdr_train.config import ConfigError, load_config
from qdr_train.data.degradations import sample_params


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
    (["degradation.denoise.sigmaa=[0,10]"], "unknown config key 'degradation.denoise.sigmaa'"),
    (["levels.denoise.sigmma=30"], "unknown config key 'levels.denoise.sigmma'"),
    (["degradation.fog.beta=[1,2]"], "unknown config key 'degradation.fog'"),
    (["stage=ptq"], "stage=ptq calibrates and trains nothing: set train.iters=0"),
    (["stage=qdr", "init=models/denoise/efm_fp32.pt"], "stage=qdr starts from quant.teacher; init=.* would be ignored"),
    (["model.widths=[8,8]"], "model.widths=\\[8, 8\\] must be three positive integers"),
    (["model.widths=[8,8,x]"], "must be three positive integers"),
    (["degradation.lowlight.quiet=[0.2,0.5]"], "quiet=\\[0.2, 0.5\\] must be one share in \\[0, 1\\]"),
    (["degradation.lowlight.quiet_exposure=0.05"], "quiet_exposure=0.05 must be a range"),
    (["degradation.night.quiet=1.5"], "night.quiet=1.5 must be one share in \\[0, 1\\]"),
    (["degradation.night.quiet_exposure=[0.1,0.05]"], "unknown config key 'degradation.night.quiet_exposure'"),
])
def test_bad_overrides_fail_with_the_key_named(override: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("denoise", overrides=override)


def test_optional_degradation_keys_are_accepted() -> None:
    cfg = load_config("auto", overrides=["degradation.lowlight.quiet=0.25",
                                         "degradation.lowlight.quiet_exposure=[0.1,0.05]"])
    assert cfg["degradation"]["lowlight"]["quiet"] == 0.25


def test_night_can_keep_its_dark_stage_noisy_when_low_light_has_a_quiet_share() -> None:
    """Night's own ``quiet`` overrides low light's: its crops read low light's section, then their own."""
    cfg = load_config("denoise", overrides=["degradation.lowlight.quiet=0.5", "degradation.night.quiet=0.0"])
    gen = torch.Generator().manual_seed(0)
    assert float(sample_params("lowlight", cfg["degradation"], 400, gen)["quiet"].mean()) > 0.4
    assert torch.equal(sample_params("night", cfg["degradation"], 400, gen)["quiet"], torch.zeros(400))
    inherited = load_config("denoise", overrides=["degradation.lowlight.quiet=0.5"])["degradation"]
    assert "quiet" not in inherited["night"]  # default.yaml leaves night's share out: it follows low light's
    assert float(sample_params("night", inherited, 400, gen)["quiet"].mean()) > 0.4
    assert load_config("auto")["degradation"]["night"]["quiet"] == 0.0  # auto.yaml keeps night's noise


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


def test_cli_refuses_bad_arguments_and_files_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    assert main(["check-int8", str(corrupt)]) == 2  # 1 is kept for "the Q/DQ rules do not hold"
    assert "not a readable ONNX file" in capsys.readouterr().err
    assert main(["eval", "--task", "auto", "--model", str(corrupt)]) == 2
    assert "one condition at a time" in capsys.readouterr().err
    for argv, message in ((["eval", "--task", "denoise", "--model", "m.onnx", "--limit", "-3"], "is negative"),
                          (["build-engine", "m.onnx", "--min", "64"], "'64' is not HxW")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err
