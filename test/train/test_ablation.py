"""The ablation harness end to end on tiny runs: parallel jobs, seeds, tables, and resuming only what changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdr_train.cli import main
from qdr_train.data.datasets import data_root
from qdr_train.release.ablation import format_summary, target_verdict

TINY = ["train.iters=3", "data.crop=32", "data.batch=4", "quant.calib_batches=2", "train.progress=false",
        "train.val_every=1000", "train.save_every=1000", "data.val_images=1", "data.val_crop=64"]


@pytest.mark.timeout(900)  # CPU-heavy: room for a CI machine several times slower than the dev VM
@pytest.mark.skipif(not (data_root() / "clean" / "CBSD68").is_dir(), reason="training photos not found")
def test_two_tasks_two_seeds_in_parallel_then_rerun_trains_only_what_changed(tmp_path: Path) -> None:
    def ablate(*overrides: str) -> int:
        return main(["ablate", *TINY, *overrides, "--task", "derain", "lowlight", "--variants", "ptq", "qat_out",
                     "--seeds", "0", "1", "--jobs", "2", "--limit", "1", "--out", str(tmp_path)])

    assert ablate() == 0
    results = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/seed*/*/result.json")}
    assert len(results) == 2 * 2 * 2
    table = json.loads((tmp_path / "lowlight" / "ablation.json").read_text())
    row = table["rows"]["qat_out"]
    assert sorted(row["per_seed"]) == ["0", "1"] and row["missing_seeds"] == []
    assert row["psnr"] > table["rows"]["input"]["psnr"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["variants"]["ptq"]["complete"] and summary["best"] in ("ptq", "qat_out")
    assert "minus QDR" in (tmp_path / "summary.md").read_text()

    assert ablate() == 0  # nothing changed: every result is reused
    assert {p: p.stat().st_mtime_ns for p in results} == results

    assert ablate("distill.weight=2.0", "distill.lmr=bounded") == 0  # weight: output distillation; LMR: QDR only
    changed = {p for p in results if p.stat().st_mtime_ns != results[p]}
    assert changed == {p for p in results if p.parent.name == "qat_out"}


@pytest.mark.skipif(not (data_root() / "clean" / "CBSD68").is_dir(), reason="training photos not found")
def test_a_failed_run_is_reported_and_the_others_are_still_tabled(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "derain" / "seed0" / "qat_out" / "result.json").mkdir(parents=True)  # its result cannot be written
    assert main(["ablate", *TINY, "--task", "derain", "--variants", "ptq", "qat_out", "--limit", "1",
                 "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "1 run(s) failed" in err and "derain/qat_out seed 0: IsADirectoryError" in err
    rows = json.loads((tmp_path / "derain" / "ablation.json").read_text())["rows"]
    assert "ptq" in rows and "qat_out" not in rows


def test_the_summary_says_whether_qdr_meets_its_targets() -> None:
    def summary(**recovery: float) -> dict:
        return {"variants": {name: {"gain_recovery": value, "complete": True} for name, value in recovery.items()}}

    led = target_verdict(summary(ptq=0.96, qat_out=0.991, qdr=0.988))
    assert led == ("Targets: QDR's mean gain recovery >= 98%: 98.80%, met. QDR ahead of every baseline on the mean: "
                   "NOT met (qat_out 99.10% at or above QDR).")
    unmet = target_verdict(summary(ptq=0.96, qdr=0.97))
    assert unmet is not None and unmet.endswith("97.00%, NOT met. QDR ahead of every baseline on the mean: met.")
    assert target_verdict(summary(ptq=0.96)) is None
    alone = target_verdict(summary(qdr=0.99))
    assert alone is not None and alone.endswith("on the mean: no baseline in this table.")
    assert "Targets:" not in format_summary({"tasks": [], "variants": {}, "best": None})
