"""`qdr-train conditions`: the shipped auto head scored on real photos, in a report that reads the same anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from qdr_ros.core.frame_sources import sample_photos
from qdr_train.cli import main
from qdr_train.evaluation.condition_eval import CONDITIONS

REPO = Path(__file__).resolve().parents[2]
AUTO = REPO / "models" / "auto" / "efm_int8.onnx"


@pytest.fixture()
def photos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two bundled real photos, 192x128, in a folder under the working directory."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "photos"
    folder.mkdir()
    for frame in sample_photos()[:2]:
        small = cv2.resize(frame.rgb, (192, 128), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{Path(frame.name).stem}.png"), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    return folder


def test_every_condition_and_seed_is_scored_and_the_report_names_relative_paths(photos: Path) -> None:
    out = photos.parent / "conditions.json"
    assert main(["conditions", "--model", str(AUTO), "--clean", str(photos), "--seeds", "0", "1",
                 "--threads", "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["data"] == "photos"  # relative to the working folder, not this machine's absolute path
    assert report["labels"] == ["clean", "noise", "rain", "lowlight", "haze"]
    frames = report["frames"]
    assert len(frames) == report["summary"]["frames"] == len(CONDITIONS) * 2 * 2
    assert {(f["condition"], f["seed"]) for f in frames} == {(c, s) for c in CONDITIONS for s in (0, 1)}
    night = next(f for f in frames if f["condition"] == "night")
    assert set(night["truth"]) == {"lowlight", "noise"}
    for f in frames:
        assert len(f["probabilities"]) == 5 and all(0.0 <= p <= 1.0 for p in f["probabilities"])
    summary = report["summary"]  # the shipped head names what degrades two real photos, and calls them clean undegraded
    assert summary["clean_called_clean"] == 1.0
    assert all(recall >= 0.75 for recall in summary["recall"].values()), summary["recall"]


def test_with_noise_label_the_truth_follows_the_noise_each_frame_holds(photos: Path) -> None:
    """``data.noise_label``: scored by the rule a run trained with (documented low light holds ~13 levels)."""
    out = photos.parent / "conditions.json"
    assert main(["conditions", "--model", str(AUTO), "--clean", str(photos), "--seeds", "0",
                 "--threads", "1", "--json", str(out), "data.noise_label=5"]) == 0
    report = json.loads(out.read_text())
    assert report["noise_label"] == 5
    truth = {f["condition"]: set(f["truth"]) for f in report["frames"]}
    assert truth["lowlight"] == truth["night"] == {"lowlight", "noise"}
    assert truth["clean"] == {"clean"} and truth["rain_haze"] == {"rain", "haze"}


def test_a_model_without_a_condition_output_is_refused(photos: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conditions", "--model", str(REPO / "models" / "denoise" / "efm_int8.onnx"), "--clean", str(photos),
                 "--seeds", "0"]) == 2
    assert "has no condition output; only models such as models/auto can be scored" in capsys.readouterr().err
