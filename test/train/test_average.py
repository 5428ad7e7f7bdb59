"""Averaging runs: the mean of real trained weights, a run folder the release tools take, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from qdr_train.cli import main
from qdr_train.config import load_config
from qdr_train.data.datasets import data_root
from qdr_train.engine.checkpoint import load_model, safe_load
from qdr_train.engine.trainer import Trainer

if not (data_root() / "clean" / "CBSD68").is_dir():
    pytest.skip(f"training photos not found under {data_root()}", allow_module_level=True)


def run(tmp: Path, name: str, train: str, **extra: object) -> Path:
    values = {"model.widths": "[8,8,16]", "model.num_blocks": 1, "data.crop": 32, "data.batch": 2,
              "data.val_images": 1, "data.val_crop": 64, "train.iters": 4, "train.threads": 1,
              "train.progress": "false", "train.val_every": 1000, "optim.warmup": 1, "out": str(tmp),
              "name": name, "data.train": train, **extra}
    return Trainer(load_config("auto", overrides=[f"{k}={v}" for k, v in values.items()])).fit()


def test_two_runs_average_into_a_run_folder_that_screen_holds_to_their_training_sets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = run(tmp_path, "a", "[clean/Set14]", seed=1)
    b = run(tmp_path, "b", "[clean/Set14,clean/CBSD68]", seed=2)
    out = tmp_path / "avg"
    assert main(["average", str(a), str(b), "--out", str(out)]) == 0
    assert "the mean of 2 runs' weights (8 steps among them)" in capsys.readouterr().out

    sa, sb = (safe_load(r / "model.pt")["state_dict"] for r in (a, b))
    info = safe_load(out / "model.pt")
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)  # two different runs, or the mean proves nothing
    for k, v in info["state_dict"].items():
        torch.testing.assert_close(v, (sa[k] + sb[k]) / 2)
    assert info["step"] == 8 and info["averaged"] == [str(a), str(b)] and not info["quantized"]
    model, _ = load_model(out / "model.pt")
    with torch.no_grad():
        restored = model(torch.rand(1, 3, 32, 32))
    assert restored.shape == (1, 3, 32, 32) and torch.isfinite(restored).all()

    weighted = tmp_path / "weighted"  # a run listed twice weighs twice; its steps count once
    assert main(["average", str(a), str(a), str(b), "--out", str(weighted)]) == 0
    info = safe_load(weighted / "model.pt")
    for k, v in info["state_dict"].items():
        torch.testing.assert_close(v, (2 * sa[k] + sb[k]) / 3)
    assert info["step"] == 8 and info["averaged"] == [str(a), str(a), str(b)]
    capsys.readouterr()

    cfg = load_config("auto", config_file=out / "config.yaml")  # a config the tools load like a trained run's
    assert cfg["data"]["train"] == ["clean/Set14", "clean/CBSD68"] and cfg["name"] == "avg" and cfg["init"] == ""
    # a member trained on CBSD68, so the average did too: no screen on it
    assert main(["screen", str(out / "model.pt"), "--data", "clean/CBSD68", "--limit", "1"]) == 2
    assert "clean/CBSD68 is in the data.train" in capsys.readouterr().err


def test_runs_that_cannot_be_averaged_are_refused_with_the_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = run(tmp_path, "a", "[clean/Set14]")
    wide = run(tmp_path, "wide", "[clean/Set14]", **{"model.widths": "[8,16,16]"})
    out = tmp_path / "avg"

    def refused(*runs: Path) -> str:
        assert main(["average", *map(str, runs), "--out", str(out)]) == 2
        return capsys.readouterr().err

    assert "another architecture" in refused(a, wide)
    assert "at least two runs" in refused(a)
    assert main(["average", str(a), str(wide), "--out", str(a)]) == 2  # the average would overwrite a member
    assert "one of the runs averaged" in capsys.readouterr().err
    assert "not a run folder" in refused(a, tmp_path / "missing")
    other = tmp_path / "other_levels"
    other.mkdir()
    (other / "model.pt").write_bytes((a / "model.pt").read_bytes())
    cfg = yaml.safe_load((a / "config.yaml").read_text())
    cfg["levels"]["denoise"]["sigma"] = 50.0
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert "another levels" in refused(a, other)
    assert not out.exists()  # nothing written for a refused average
