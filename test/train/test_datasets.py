"""Image folders as sets: one folder, or a glob of folders whose shared photos count once."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from qdr_train.data.datasets import list_images


def _write(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((4, 4, 3), value, np.uint8))


def test_a_glob_of_folders_is_one_set_with_each_name_once(tmp_path: Path) -> None:
    _write(tmp_path / "set_b" / "val" / "photo_1.png", 1)
    _write(tmp_path / "set_a" / "train" / "photo_1.png", 2)  # the same photo in a second sample set
    _write(tmp_path / "set_a" / "train" / "photo_2.png", 3)
    (tmp_path / "set_a" / "train" / "notes.txt").write_text("not an image")
    found = list_images(tmp_path / "set_*" / "*")
    assert found == [tmp_path / "set_a" / "train" / "photo_1.png", tmp_path / "set_a" / "train" / "photo_2.png"]
    assert list_images(tmp_path / "set_b" / "val") == [tmp_path / "set_b" / "val" / "photo_1.png"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "set_c*" / "*")
    with pytest.raises(FileNotFoundError, match="no images"):
        list_images(tmp_path / "set_a")  # folders only: the glob is explicit, a folder is not searched below
