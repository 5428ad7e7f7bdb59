"""The ultralytics detector's start-up errors: ultralytics is optional, and its absence says what to do."""

from __future__ import annotations

from pathlib import Path
import sys

import pytest

from qdr_ros.detectors import DetectorError
from qdr_ros.detectors.yolo import Detector


def test_without_ultralytics_the_detector_says_what_to_install(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, 'ultralytics', None)  # `import ultralytics` now raises ImportError
    model = tmp_path / 'people.pt'
    model.write_bytes(b'weights')
    with pytest.raises(DetectorError, match=r'people.pt needs ultralytics.*detect-ultralytics.txt.*FastestDet'):
        Detector(model)
