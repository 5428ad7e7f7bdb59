"""Screening FP32 candidates: the release gate's rules on the teachers, against the shipped one."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from qdr_train.cli import main
from qdr_train.data.datasets import data_root

COCO = "detection/coco8*/images/*"


@pytest.mark.timeout(900)  # CPU-heavy: room for a CI machine several times slower than the dev VM
@pytest.mark.skipif(not all((data_root() / d).is_dir() for d in ("clean/CBSD68", "detection/coco8")),
                    reason="selection photos not found")
def test_a_candidate_is_scored_on_every_set_and_held_to_the_gate_against_the_shipped_model(
        tmp_path: Path, repo_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    auto, derain = (str(repo_root / "models" / t / "efm_fp32.pt") for t in ("auto", "derain"))

    def screen(*models: str, against: str | None = None, max_drop: str = "0.3") -> int:
        return main(["screen", *models, "--data", "clean/CBSD68", "--also", COCO, "--limit", "1", "--max-drop",
                     max_drop, "--json", str(tmp_path / "screen.json"), *(["--against", against] if against else [])])

    assert screen(auto, derain) == 0  # no reference: a table only
    report = json.loads((tmp_path / "screen.json").read_text())
    assert list(report["models"]) == [auto, derain] and report["sets"] == ["clean/CBSD68", COCO]
    for scores in report["models"].values():
        for name in report["sets"]:
            row = scores[name]
            assert row["images"] == 1 and len(row["psnr"]) == 6 and row["clean"]["images"] == 1
    a, d = report["models"][auto]["clean/CBSD68"], report["models"][derain]["clean/CBSD68"]
    assert a["psnr"]["dehaze"] > d["psnr"]["dehaze"] + 3  # the specialist was never taught haze
    assert a["clean"]["exact"] == 1 and d["clean"]["exact"] == 0  # only auto leaves a clean photo alone
    out = capsys.readouterr().out
    assert f"FP32 screen on 1 images of {COCO}" in out and "clean exact" in out

    assert screen(derain, against=auto) == 3  # the specialist as a candidate for auto: refused, and why
    out = capsys.readouterr().out
    assert f"{derain} against {auto}:" in out and "NOT better" in out and "FEWER" in out and "FELL:" in out
    assert screen(auto, against=derain) == 3  # the other way round auto loses rain on the COCO photo ...
    assert re.search(r"FELL: derain -0\.\d\d dB", capsys.readouterr().out)  # by less than --max-drop 1 below
    assert screen(auto, against=derain, max_drop="1") == 0  # ... within a looser --max-drop it holds on both sets
    out = capsys.readouterr().out
    assert "): better" in out and "): not lower" in out and "FELL" not in out and "FEWER" not in out
    assert list(json.loads((tmp_path / "screen.json").read_text())["models"]) == [derain, auto]  # reference first

    run = tmp_path / "runs" / "trained_on_cbsd68"
    run.mkdir(parents=True)
    shutil.copy(derain, run / "model.pt")
    (run / "config.yaml").write_text("data:\n  train: [clean/CBSD432, clean/CBSD68]\n")
    assert screen(str(run / "model.pt"), against=auto) == 2  # a run that trained on the set: no honest screen
    assert "clean/CBSD68 is in the data.train" in capsys.readouterr().err
    assert screen(str(tmp_path / "missing.pt"), against=auto) == 2
    assert "missing.pt not found" in capsys.readouterr().err
